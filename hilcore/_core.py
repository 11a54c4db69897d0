"""The leaf of hilcore's import graph: types, constants and rules every layer shares.

This module imports nothing from hilcore (the import-layer contract in
``pyproject.toml`` checks it), so backends, op modules and the driver can all
depend on it without forming a cycle. What lives here is what more than one
backend needs and what must be defined exactly once (docs/design.md):

- :class:`SparseRows`, the CSR triple the Jaccard and DBSCAN stages exchange;
- :func:`half_k`, the expansion length round(k1 / 2) of the k-reciprocal sets;
- :data:`NORM_EPS`, the floor of a norm before dividing by it; :data:`DIST_EPS` and
  :data:`MARGIN`, the guards of the MCCL loss;
- :func:`dbscan_labels`, the DBSCAN numbering and border rule;
- :func:`interpreting`, whether Triton runs in its CPU interpreter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

#: ``||v||`` is floored at this before dividing (memory updates, every backend).
NORM_EPS = 1e-12

# MCCL (every backend):
#: Distance guard: ``d = sqrt(||x - M||^2 + DIST_EPS)``, so ``d >= 1e-4`` and ``1/d <= 1e4`` even when
#: a sample equals a slot. ``||x - M||^2`` is summed from the differences (not expanded as
#: ``||x||^2 + ||M||^2 - 2 x.M``, whose float32 cancellation near 0 would swamp the guard).
DIST_EPS = 1e-8
#: The constant of ``-log(pos / (pos + neg + 1e-8))``.
MARGIN = 1e-8


@dataclass
class SparseRows:
    """CSR triple on one device: ``indptr`` int64 [N+1], ``indices`` int64 [nnz], ``data`` float32 [nnz]."""

    indptr: torch.Tensor
    indices: torch.Tensor
    data: torch.Tensor
    n: int


def half_k(k1: int) -> int:
    """round(k1 / 2) with round-half-to-even, as np.around does in the widely used code."""
    return int(np.around(k1 / 2))


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels run in the interpreter, on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dbscan_labels(core: torch.Tensor, root: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                  reduce_min=None) -> torch.Tensor:
    """The DBSCAN numbering and border rule of docs/design.md, written once for every Python path.

    Args:
        core: ``[n]`` bool, the core points.
        root: ``[n]`` int64; for a core point, the smallest core index of its
            connected component of core points (other entries are ignored).
        u, v: the neighbour pairs ``(u[e], v[e])``, listed in both directions
            (pairs with ``u == v`` are allowed and change nothing). Sharded: the pairs
            of this shard's points ``u``.
        reduce_min: ``None`` in one process; sharded, the element-wise minimum over
            the shards (``hilcore.stages.rows``), applied to the border labels.

    Returns:
        ``[n]`` int64 labels: components numbered 0, 1, ... in order of their
        smallest core index (the order scikit-learn's DBSCAN discovers them); a
        border point (not core, with a core neighbour) takes the smallest label
        among its core neighbours; every other point is -1.
    """
    n = core.numel()
    ar = torch.arange(n, device=core.device)
    safe = torch.where(core, root, ar)
    is_root = core & (safe == ar)
    number = torch.cumsum(is_root.to(torch.int64), 0) - 1
    labels = torch.where(core, number[safe], torch.full_like(ar, -1))
    edge = ~core[u] & core[v]
    border = torch.full((n,), n, dtype=torch.int64, device=core.device)
    border.scatter_reduce_(0, u[edge], labels[v[edge]], reduce="amin")
    if reduce_min is not None:
        border = reduce_min(border)
    return torch.where(~core & (border < n), border, labels)
