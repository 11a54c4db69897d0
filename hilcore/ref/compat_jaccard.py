"""Reference for ``hilcore.compat.compute_jaccard_distance``: the widely used ``compute_jaccard_distance``
(SpCL / cluster-contrast ``faiss_rerank.py``), step by step, with its dense matrices and its dtypes.

Written from that code's formulas, not copied: per-row weights by ``torch.mm`` and ``F.softmax`` on the
features as given (no normalisation), dense ``V`` in float32 (``np.float16`` with ``use_float16``), query
expansion by ``np.mean`` over the first k2 rows of the ranking in ranking order, an inverted index of the
non-zero entries of each column, ``temp_min`` accumulated per row in the matrix dtype, then
``1 - temp_min / (2 - temp_min)`` in that dtype with negative results set to 0. The ranking is a flat L2
index's: squared L2 distance of the float32 copies, ascending, the row itself first, lower index on ties.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def l2_rank(x, k: int) -> np.ndarray:
    """``[N, k]`` int64: a flat L2 index's answer on the float32 copy of ``x`` (float64 distances, exact for
    test data), the row itself first, ties to the lower index."""
    xf = np.asarray(torch.as_tensor(x).detach().cpu().float().numpy(), dtype=np.float64)
    sq = (xf * xf).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (xf @ xf.T)
    np.fill_diagonal(d2, -np.inf)
    return np.argsort(d2, axis=1, kind="stable")[:, :k].astype(np.int64)


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[np.where(backward == i)[0]]


def jaccard_dense(features, k1: int = 20, k2: int = 6, use_float16: bool = False, *, rank=None) -> np.ndarray:
    """The widely used dense ``[N, N]`` k-reciprocal Jaccard matrix (float32, float16 with ``use_float16``).

    ``features``: a torch tensor (as the original requires) or an array, used as given (dtype, no
    normalisation). ``rank``: ``[N, >= k1]`` ranking (default :func:`l2_rank`); k1 is clamped to N, k2 to k1.
    """
    x = features.detach() if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    n = x.shape[0]
    k1 = min(int(k1), n)
    k2 = min(int(k2), k1)
    mat = np.float16 if use_float16 else np.float32
    rank = l2_rank(x, k1) if rank is None else np.asarray(rank, dtype=np.int64)[:, :k1]
    kh = int(np.around(k1 / 2))
    v = np.zeros((n, n), dtype=mat)
    for i in range(n):
        r_i = _reciprocal(rank, i, k1)
        expansion = r_i
        for c in r_i:
            r_c = _reciprocal(rank, c, kh)
            if len(np.intersect1d(r_c, r_i)) > 2 / 3 * len(r_c):
                expansion = np.append(expansion, r_c)
        expansion = np.unique(expansion)
        dist = 2 - 2 * torch.mm(x[i].unsqueeze(0).contiguous(), x[expansion].t())
        v[i, expansion] = F.softmax(-dist, dim=1).view(-1).cpu().numpy().astype(mat)
    if k2 != 1:
        qe = np.zeros_like(v, dtype=mat)
        for i in range(n):
            qe[i, :] = np.mean(v[rank[i, :k2], :], axis=0)
        v = qe
    inverted = [np.where(v[:, t] != 0)[0] for t in range(n)]
    out = np.zeros((n, n), dtype=mat)
    for i in range(n):
        acc = np.zeros((1, n), dtype=mat)
        support = np.where(v[i, :] != 0)[0]
        for t in support:
            js = inverted[t]
            acc[0, js] = acc[0, js] + np.minimum(v[i, t], v[js, t])
        out[i] = 1 - acc / (2 - acc)
    out[out < 0] = 0.0
    return out
