"""Reference momentum memory updates: a Python loop over the batch, one sample at a time (docs/design.md)."""
from __future__ import annotations

import numpy as np


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def update(memory, x, targets, momentum: float) -> np.ndarray:
    """Updated copy of a ``[C, D]`` memory: for i in batch order, ``m[y_i] <- normalize(mu m[y_i] + (1 - mu) x_i)``.

    ``x`` rows are L2-normalised first (the memories store unit vectors of normalised features).
    Computed in float64.
    """
    m = np.array(memory, dtype=np.float64, copy=True)
    x = np.asarray(x, dtype=np.float64)
    for xi, y in zip(x, np.asarray(targets).tolist()):
        m[y] = _unit(momentum * m[y] + (1.0 - momentum) * _unit(xi))
    return m


def update_multi(memory, x, targets, momentum: float) -> np.ndarray:
    """Updated copy of a ``[C, S, D]`` memory: per sample in batch order, only the slot of cluster ``y``
    with the largest dot product with the (normalised) sample at that moment (the lowest slot on ties)
    is updated as in :func:`update`."""
    m = np.array(memory, dtype=np.float64, copy=True)
    x = np.asarray(x, dtype=np.float64)
    for xi, y in zip(x, np.asarray(targets).tolist()):
        xi = _unit(xi)
        s = int(np.argmax(m[y] @ xi))
        m[y, s] = _unit(momentum * m[y, s] + (1.0 - momentum) * xi)
    return m
