"""DBSCAN on CSR distances in pure PyTorch (any device), as vectorised union-find.

Neighbours of i: i itself and every j != i with a stored distance <= eps
(stored zeros count). Core points are joined along core-core edges by
min-label hooking with pointer jumping, so every component's root is its
smallest core index; components are numbered in order of that index (the
order scikit-learn's DBSCAN discovers them), border points take the smallest
label among their core neighbours, the rest are -1.
"""
from __future__ import annotations

import torch

from ..._core import dbscan_labels


def _components(u: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
    """parent [n]: for every node, the smallest node of its component in the graph of edges (u, v)."""
    parent = torch.arange(n, device=u.device)
    while True:
        pu, pv = parent[u], parent[v]
        low = torch.minimum(pu, pv)
        # hook both roots of every edge onto the smaller one
        hooked = parent.scatter_reduce(0, pu, low, reduce="amin").scatter_reduce(0, pv, low, reduce="amin")
        while True:  # pointer jumping until every node points at a root
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            return parent
        parent = hooked


def dbscan(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n: int, eps: float,
           min_samples: int) -> torch.Tensor:
    """Labels int64 [n] (-1 noise) for CSR distances (indptr [n+1], indices [nnz], data [nnz])."""
    dev = data.device
    indptr, indices = indptr.to(dev, torch.int64), indices.to(dev, torch.int64)
    rows = torch.repeat_interleave(torch.arange(n, device=dev), indptr[1:] - indptr[:-1])
    near = (data <= eps) & (indices != rows)
    # neighbourhoods are sets: an (i, j) stored twice counts once
    key = torch.unique(rows[near] * n + indices[near])
    u, v = key // n, key % n
    count = 1 + torch.bincount(u, minlength=n)  # + 1: the point itself
    core = count >= min_samples
    both = core[u] & core[v]
    root = _components(u[both], v[both], n)
    return dbscan_labels(core, root, u, v)
