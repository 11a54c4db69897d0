"""Reference k-reciprocal Jaccard distance: dense N x N, per-row loops, straight from docs/design.md."""
from __future__ import annotations

import numpy as np

from .knn import knn, normalize


def reciprocal(rank: np.ndarray, i: int, k: int) -> list[int]:
    """R(i, k): the j among the first k+1 entries of i's ranking whose own first k+1 entries contain i."""
    return [int(j) for j in rank[i, :k + 1] if i in rank[j, :k + 1]]


def jaccard_distance(x, k1: int, k2: int, *, rank=None) -> np.ndarray:
    """Dense float32 [N, N] k-reciprocal Jaccard distance; 1 where supports do not meet, 0 on the diagonal.

    k1 is clamped to N and k2 to k1. ``rank`` ([N, k1], self first) replaces the
    reference kNN when given (tests pass a backend's own ranking where the
    data has near-ties at the 1e-7 level).
    """
    xn = normalize(x)
    n = xn.shape[0]
    k1 = min(k1, n)
    k2 = min(k2, k1)
    if rank is None:
        rank, _ = knn(x, k1)
    rank = np.asarray(rank, dtype=np.int64)[:, :k1]
    dist = 2.0 - 2.0 * (xn @ xn.T)
    kh = int(np.around(k1 / 2))  # round half to even

    v = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        r_i = reciprocal(rank, i, k1)
        expanded = set(r_i)
        for c in r_i:
            r_c = reciprocal(rank, c, kh)
            if len(set(r_c) & set(r_i)) > 2 / 3 * len(r_c):
                expanded |= set(r_c)
        cols = np.array(sorted(expanded))
        w = np.exp(-dist[i, cols])
        v[i, cols] = w / w.sum()

    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])

    d = np.ones((n, n), dtype=np.float64)
    for i in range(n):
        support = np.flatnonzero(v[i])
        m = np.minimum(v[i, support], v[:, support]).sum(axis=1)
        met = m > 0
        d[i, met] = np.maximum(0.0, 1.0 - m[met] / (2.0 - m[met]))
    np.fill_diagonal(d, 0.0)
    return d.astype(np.float32)
