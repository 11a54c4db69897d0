"""Reference exact kNN: the full similarity matrix, sorted with the exact key."""
from __future__ import annotations

import numpy as np


def normalize(x) -> np.ndarray:
    """Rows as float32 (the library's working precision), then L2-normalised in float64."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def knn(x, k: int, y=None) -> tuple[np.ndarray, np.ndarray]:
    """``(idx int64 [N, k], sim float32 [N, k])``: cosine similarity descending, index ascending on ties.

    Self-search (``y is None``) puts row i first in its own list, reported
    with its similarity to itself.
    """
    xn = normalize(x)
    yn = xn if y is None else normalize(y)
    sim = xn @ yn.T  # float64: exact for the tie data used in tests
    key = sim.copy()
    if y is None:
        np.fill_diagonal(key, np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]  # stable: equal keys keep index order
    return order.astype(np.int64), np.take_along_axis(sim, order, axis=1).astype(np.float32)
