"""Loop references for BRST label transfer and bidirectional matching (per-sample loops)."""
from __future__ import annotations

import numpy as np

from .centers import cluster_centers_ref, normalize_rows
from .knn import fma_f32


def fma_similarities(x_b, protos_a) -> np.ndarray:
    """``[M, C]`` float32 similarities of the native BRST scan (kernels/cpu/brst_tile.h), from its definition:
    ``s = fma(x_q, p_q, s)`` over the columns q in order from ``s = 0``, one rounding per column, rows used
    as given (float32). Slow (a Python loop over D): for tests."""
    x = np.asarray(x_b, dtype=np.float32)
    p = np.asarray(protos_a, dtype=np.float32)
    s = np.zeros((x.shape[0], p.shape[0]), dtype=np.float32)
    for q in range(x.shape[1]):
        s = fma_f32(x[:, q, None], p[None, :, q], s)
    return s


def brst_ref(x_b, labels_b, protos_a, ratio: float = 0.5) -> np.ndarray:
    """New labels of B in A's cluster space, one sample at a time (float64)."""
    xb = normalize_rows(x_b)
    pa = normalize_rows(protos_a)
    labels_b = np.asarray(labels_b)
    n, c = xb.shape[0], pa.shape[0]
    best = np.full(n, -1)
    best_sim = np.zeros(n)
    colmax = np.full(c, -np.inf)
    for i in range(n):
        if labels_b[i] < 0:
            continue
        for j in range(c):
            s = float(xb[i] @ pa[j])
            if best[i] < 0 or s > best_sim[i]:
                best[i], best_sim[i] = j, s
            colmax[j] = max(colmax[j], s)
    out = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if labels_b[i] >= 0 and best_sim[i] >= ratio * colmax[best[i]]:
            out[i] = best[i]
    return out


def _majority(src_labels, new_labels, n_src: int) -> dict:
    """f(a): the most frequent accepted new label among the samples of source cluster a (ties: lower)."""
    votes: dict[int, dict[int, int]] = {}
    for a, b in zip(src_labels, new_labels):
        if a >= 0 and b >= 0:
            votes.setdefault(int(a), {}).setdefault(int(b), 0)
            votes[int(a)][int(b)] += 1
    out = {}
    for a in range(n_src):
        if a in votes:
            out[a] = min(votes[a].items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return out


def bidirectional_match_ref(x_rgb, labels_rgb, x_ir, labels_ir, ratio: float = 0.5, mode: str = "rgb_to_ir"):
    """Dict with labels_rgb, labels_ir, pairs, unmatched_rgb, unmatched_ir, n_shared (see hilcore.brst)."""
    labels_rgb = np.asarray(labels_rgb)
    labels_ir = np.asarray(labels_ir)
    c_rgb = int(labels_rgb.max()) + 1
    c_ir = int(labels_ir.max()) + 1
    cen_rgb = cluster_centers_ref(x_rgb, labels_rgb)
    cen_ir = cluster_centers_ref(x_ir, labels_ir)
    if mode == "rgb_to_ir":
        new_rgb = brst_ref(x_rgb, labels_rgb, cen_ir, ratio)
        f = _majority(labels_rgb, new_rgb, c_rgb)
        pairs = [(a, f[a]) for a in range(c_rgb) if a in f]
        return dict(labels_rgb=new_rgb, labels_ir=labels_ir.astype(np.int64), pairs=pairs,
                    unmatched_rgb=[a for a in range(c_rgb) if a not in f],
                    unmatched_ir=[b for b in range(c_ir) if b not in set(new_rgb.tolist())], n_shared=c_ir)
    if mode == "ir_to_rgb":
        new_ir = brst_ref(x_ir, labels_ir, cen_rgb, ratio)
        g = _majority(labels_ir, new_ir, c_ir)
        pairs = sorted((g[b], b) for b in range(c_ir) if b in g)
        return dict(labels_rgb=labels_rgb.astype(np.int64), labels_ir=new_ir, pairs=pairs,
                    unmatched_rgb=[a for a in range(c_rgb) if a not in set(new_ir.tolist())],
                    unmatched_ir=[b for b in range(c_ir) if b not in g], n_shared=c_rgb)
    new_rgb = brst_ref(x_rgb, labels_rgb, cen_ir, ratio)
    new_ir = brst_ref(x_ir, labels_ir, cen_rgb, ratio)
    f = _majority(labels_rgb, new_rgb, c_rgb)
    g = _majority(labels_ir, new_ir, c_ir)
    pairs = [(a, f[a]) for a in range(c_rgb) if a in f and g.get(f[a]) == a]
    matched_rgb = {a for a, _ in pairs}
    matched_ir = {b for _, b in pairs}
    un_rgb = [a for a in range(c_rgb) if a not in matched_rgb]
    un_ir = [b for b in range(c_ir) if b not in matched_ir]
    map_rgb, map_ir = {}, {}
    for k, (a, b) in enumerate(pairs):
        map_rgb[a] = k
        map_ir[b] = k
    nxt = len(pairs)
    for a in un_rgb:
        map_rgb[a] = nxt
        nxt += 1
    for b in un_ir:
        map_ir[b] = nxt
        nxt += 1
    out_rgb = np.array([map_rgb[a] if a >= 0 else -1 for a in labels_rgb], dtype=np.int64)
    out_ir = np.array([map_ir[b] if b >= 0 else -1 for b in labels_ir], dtype=np.int64)
    return dict(labels_rgb=out_rgb, labels_ir=out_ir, pairs=pairs, unmatched_rgb=un_rgb, unmatched_ir=un_ir,
                n_shared=nxt)
