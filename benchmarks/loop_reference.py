"""The loop-based HIL clustering step, re-implemented as the benchmark baseline of the HIL operators.

What today's reference training code does between the DBSCAN labels and the
loss, with the same data layout and the same costs:

- cluster centres: a Python loop over clusters, ``x[labels == c].mean(0)``;
- sub-centres: a Python loop over clusters running scikit-learn
  ``KMeans(n_clusters=n_sub, n_init=10)`` on each cluster's members;
- memory updates: a Python loop over the batch samples (cluster-contrast's
  ``for x, y in zip(inputs, targets)``), multi-centre picking the slot per sample;
- BRST: per-sample NumPy loops (one prototype product per sample, a running
  column max), then a per-sample acceptance loop and dict-based majority votes;
- MCCL: a loop over the batch samples, vectorised over the memory;
- the whole epoch step: :func:`benchmarks.baseline.baseline_cluster` (dense
  Jaccard + scikit-learn DBSCAN) per modality, then the loops above.

Semantics follow docs/design.md and hilcore's documented choices (slot layout,
shared-label numbering of ``bidirectional_match``), so results are comparable.
"""
from __future__ import annotations

import time

import numpy as np
import torch


def _unit_rows(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def loop_centers(x, labels) -> np.ndarray:
    """``[C, D]`` float32 cluster means, one Python iteration per cluster."""
    x = _unit_rows(x)
    labels = np.asarray(labels)
    c_n = int(labels.max()) + 1
    return np.stack([x[labels == c].mean(axis=0) for c in range(c_n)]).astype(np.float32)


def loop_subcluster(x, labels, n_sub: int = 9, weight: float = 0.9, seed: int = 0, n_init: int = 10):
    """``(multi [C, 1 + n_sub, D], sub_centres list)``: per-cluster scikit-learn KMeans(n_init=10).

    Slot layout of docs/design.md step 4 (slot 0 = centre, slot s = w*centre + (1-w)*sub_s,
    sub-centres sorted by size descending); clusters with <= n_sub members repeat the centre
    (their entry in ``sub_centres`` is None).
    """
    from sklearn.cluster import KMeans

    x = _unit_rows(x)
    labels = np.asarray(labels)
    c_n = int(labels.max()) + 1
    d = x.shape[1]
    multi = np.empty((c_n, 1 + n_sub, d), dtype=np.float32)
    subs = []
    for c in range(c_n):
        members = x[labels == c]
        centre = members.mean(axis=0)
        multi[c, :] = centre
        if len(members) <= n_sub:
            subs.append(None)
            continue
        km = KMeans(n_clusters=n_sub, n_init=n_init, random_state=seed).fit(members)
        sizes = np.bincount(km.labels_, minlength=n_sub)
        order = np.argsort(-sizes, kind="stable")
        sub = km.cluster_centers_[order].astype(np.float32)
        multi[c, 1:] = weight * centre + (1 - weight) * sub
        subs.append(sub)
    return multi, subs


def subcluster_inertia(x, labels, sub_centres) -> float:
    """Total within-sub-cluster inertia: every member to its nearest sub-centre (squared L2), summed;
    a cluster without sub-centres (None) counts its distances to its centre."""
    x = _unit_rows(x).astype(np.float64)
    labels = np.asarray(labels)
    total = 0.0
    for c, sub in enumerate(sub_centres):
        members = x[labels == c]
        s = members.mean(axis=0, keepdims=True) if sub is None else np.asarray(sub, dtype=np.float64)
        d2 = ((members[:, None, :] - s[None, :, :]) ** 2).sum(-1)
        total += float(d2.min(axis=1).sum())
    return total


def sub_centres_from_multi(multi, weight: float) -> list:
    """Invert the slot layout: the sub-centres ``(slot - w*centre) / (1 - w)`` of every cluster, or None
    when every slot repeats the centre."""
    multi = np.asarray(multi, dtype=np.float64)
    out = []
    for m in multi:
        if np.all(m[1:] == m[0]):
            out.append(None)
        else:
            out.append((m[1:] - weight * m[0]) / (1 - weight))
    return out


def loop_memory_update(mem: torch.Tensor, x: torch.Tensor, targets, momentum: float) -> None:
    """In place, one sample at a time (``[C, D]`` or ``[C, S, D]`` memory; multi: most similar slot)."""
    x = torch.nn.functional.normalize(x, dim=1)
    for xi, y in zip(x, targets.tolist()):
        if mem.dim() == 3:
            s = int(torch.argmax(mem[y] @ xi))
            row = mem[y, s]
        else:
            row = mem[y]
        row.mul_(momentum).add_((1 - momentum) * xi)
        row.div_(row.norm())


def loop_mccl(x: torch.Tensor, mem: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean MCCL over the batch with autograd, one sample at a time (vectorised over the memory)."""
    x = torch.nn.functional.normalize(x, dim=1)
    c_n, s_n, d = mem.shape
    flat = mem.reshape(c_n * s_n, d)
    losses = []
    for xi in x:
        dist = torch.sqrt(((xi[None, :] - flat) ** 2).sum(1) + eps).reshape(c_n, s_n)
        cs = int(torch.argmin(dist.detach())) // s_n
        pos = (1.0 / dist[cs]).mean()
        mins = dist.min(dim=1).values
        keep = torch.ones(c_n, dtype=torch.bool)
        keep[cs] = False
        neg = (1.0 / mins[keep]).mean() if c_n > 1 else torch.zeros(())
        losses.append(-torch.log(pos / (pos + neg + 1e-8)))
    return torch.stack(losses).mean()


def loop_brst(x_b, labels_b, protos_a, ratio: float = 0.5) -> np.ndarray:
    """One BRST direction with per-sample NumPy loops: labels of B in A's space, -1 when rejected."""
    xb = _unit_rows(x_b)
    pa = _unit_rows(protos_a)
    labels_b = np.asarray(labels_b)
    n = xb.shape[0]
    best = np.full(n, -1, dtype=np.int64)
    best_sim = np.zeros(n, dtype=np.float32)
    col_max = np.full(pa.shape[0], -np.inf, dtype=np.float32)
    for i in range(n):
        if labels_b[i] < 0:
            continue
        sims = pa @ xb[i]
        best[i] = int(np.argmax(sims))
        best_sim[i] = sims[best[i]]
        np.maximum(col_max, sims, out=col_max)
    out = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if best[i] >= 0 and best_sim[i] >= ratio * col_max[best[i]]:
            out[i] = best[i]
    return out


def _majority(src, new) -> dict:
    votes: dict = {}
    for a, b in zip(src.tolist(), new.tolist()):
        if a >= 0 and b >= 0:
            votes.setdefault(a, {}).setdefault(b, 0)
            votes[a][b] += 1
    return {a: min(v.items(), key=lambda kv: (-kv[1], kv[0]))[0] for a, v in votes.items()}


def loop_match_both(x_rgb, labels_rgb, x_ir, labels_ir, ratio: float = 0.5):
    """Bidirectional ("both") matching with loops; ``(shared_rgb, shared_ir, pairs, n_shared)`` numbered
    as :func:`hilcore.bidirectional_match` documents (pairs, then unmatched RGB, then unmatched IR)."""
    lr, li = np.asarray(labels_rgb), np.asarray(labels_ir)
    c_rgb, c_ir = int(lr.max()) + 1, int(li.max()) + 1
    cen_rgb = loop_centers(x_rgb, lr)
    cen_ir = loop_centers(x_ir, li)
    f = _majority(lr, loop_brst(x_rgb, lr, cen_ir, ratio))
    g = _majority(li, loop_brst(x_ir, li, cen_rgb, ratio))
    pairs = [(a, f[a]) for a in range(c_rgb) if a in f and g.get(f[a]) == a]
    map_rgb, map_ir = {}, {}
    for k, (a, b) in enumerate(pairs):
        map_rgb[a], map_ir[b] = k, k
    nxt = len(pairs)
    for a in range(c_rgb):
        if a not in map_rgb:
            map_rgb[a] = nxt
            nxt += 1
    for b in range(c_ir):
        if b not in map_ir:
            map_ir[b] = nxt
            nxt += 1
    sr = np.array([map_rgb[a] if a >= 0 else -1 for a in lr.tolist()], dtype=np.int64)
    si = np.array([map_ir[b] if b >= 0 else -1 for b in li.tolist()], dtype=np.int64)
    return sr, si, np.array(pairs, dtype=np.int64).reshape(-1, 2), nxt


def loop_epoch(x_rgb, x_ir, k1=30, k2=6, eps=0.6, min_samples=4, n_sub=9, weight=0.9, ratio=0.5, seed=0):
    """The whole clustering step, loop style. Returns a dict of labels, memories and per-stage seconds."""
    from benchmarks.baseline import baseline_cluster

    t = {}
    out = {}
    t_all = time.perf_counter()
    for name, x in (("rgb", x_rgb), ("ir", x_ir)):
        t0 = time.perf_counter()
        lab = baseline_cluster(x, k1, k2, eps, min_samples)
        t[f"cluster_{name}"] = time.perf_counter() - t0
        if not np.any(lab >= 0):
            raise ValueError(f"loop_epoch: the {name.upper()} modality ended all-noise")
        t0 = time.perf_counter()
        out[f"centers_{name}"] = loop_centers(x, lab)
        t[f"centers_{name}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out[f"multi_{name}"], _ = loop_subcluster(x, lab, n_sub, weight, seed)
        t[f"subcluster_{name}"] = time.perf_counter() - t0
        out[f"labels_{name}"] = lab
    t0 = time.perf_counter()
    sr, si, pairs, n_shared = loop_match_both(x_rgb, out["labels_rgb"], x_ir, out["labels_ir"], ratio)
    t["match"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    xs = np.concatenate([_unit_rows(x_rgb), _unit_rows(x_ir)])
    ls = np.concatenate([sr, si])
    out["shared_centers"] = loop_centers(xs, ls)
    out["shared_multi"], _ = loop_subcluster(xs, ls, n_sub, weight, seed)
    t["shared"] = time.perf_counter() - t0
    t["total"] = time.perf_counter() - t_all
    out.update(shared_labels_rgb=sr, shared_labels_ir=si, pairs=pairs, n_shared=n_shared, timings=t)
    return out
