"""Reference DBSCAN on a dense precomputed distance matrix: the textbook algorithm."""
from __future__ import annotations

from collections import deque

import numpy as np


def dbscan(dist, eps: float, min_samples: int) -> np.ndarray:
    """Labels int64 [N]: clusters grown breadth-first from core points taken in index order; -1 noise.

    Neighbours of i: every j with ``dist[i, j] <= eps``, i itself only when ``dist[i, i] <= eps`` (as
    scikit-learn reads a dense matrix); i is core with at least ``min_samples`` neighbours. A border point
    keeps the first (smallest) cluster that reaches it.
    """
    dist = np.asarray(dist)
    n = dist.shape[0]
    neighbours = [np.flatnonzero(dist[i] <= eps) for i in range(n)]
    core = np.array([len(nb) >= min_samples for nb in neighbours], dtype=bool)
    labels = np.full(n, -1, dtype=np.int64)
    cluster = 0
    for i in range(n):
        if labels[i] != -1 or not core[i]:
            continue
        labels[i] = cluster
        queue = deque([i])
        while queue:
            p = queue.popleft()
            for q in neighbours[p]:
                if labels[q] == -1:
                    labels[q] = cluster
                    if core[q]:
                        queue.append(q)
        cluster += 1
    return labels
