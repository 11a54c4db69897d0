"""DBSCAN on CSR distances in pure PyTorch (any device): the stage core in one process.

Neighbourhood of i (scikit-learn's count): every stored entry of row i with
distance <= eps, the diagonal only when it is (hilcore.dbscan stores the
diagonal as scikit-learn reads it), a repeated entry each time; i is core when
that count reaches min_samples. Core points are joined along core-core edges by the
union-find of :mod:`hilcore.stages.dbscan` (min-label hooking with pointer
jumping, so every component's root is its smallest core index); components are
numbered in order of that index (the order scikit-learn's DBSCAN discovers
them), border points take the smallest label among their core neighbours, the
rest are -1 (:func:`hilcore._core.dbscan_labels`).
"""
from __future__ import annotations

import torch

from ...stages.dbscan import core_counts, labels, neighbour_pairs


def dbscan(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n: int, eps: float,
           min_samples: int) -> torch.Tensor:
    """Labels int64 [n] (-1 noise) for CSR distances (indptr [n+1], indices [nnz], data [nnz])."""
    u, v = neighbour_pairs(indptr, indices, data, eps, n)
    core = core_counts(indptr, data, eps) >= min_samples
    return labels(core, u, v)
