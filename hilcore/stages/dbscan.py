"""DBSCAN's graph stages on torch tensors, written once for one process and for shards.

- :func:`with_diagonal`: scikit-learn's reading of a sparse precomputed matrix (an unstored diagonal entry is an
  explicit 0; a diagonal stored more than once makes it sum every repeated entry);
- :func:`core_counts`: the neighbourhood sizes as scikit-learn counts them (every stored entry ``<= eps`` of
  a row, the diagonal only when stored so, a repeated entry each time);
- :func:`neighbour_pairs`: the neighbour relation of CSR distance rows (``d <= eps``, i != j, as a set);
- :func:`components`: vectorised union-find (min-label hooking of both roots of every edge, the hooked
  parent array reduced over the shards, pointer jumping) to a fixpoint: every node ends pointing at the
  smallest node of its component;
- :func:`labels`: the core points' components, then the one numbering and border rule
  (:func:`hilcore._core.dbscan_labels`).

``rows`` is the interface of :mod:`hilcore.stages.rows` (``None``: one process). The torch backend,
``hilcore.compat.DBSCAN`` (weighted core points) and ``hilcore.distributed.dbscan`` are these
functions with their own core test.
"""
from __future__ import annotations

import torch

from .._core import dbscan_labels

__all__ = ["with_diagonal", "core_counts", "neighbour_pairs", "components", "labels"]


def with_diagonal(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n_cols: int, start: int = 0):
    """CSR rows ``start ..`` of a sparse distance as scikit-learn's DBSCAN reads them (``X.setdiag(X.diagonal())``
    on a copy): a row whose diagonal entry is not stored gets an explicit 0 there (a point is then its own
    neighbour); when some diagonal entry is stored more than once, SciPy sums every repeated entry of the
    matrix (off-diagonal ones too) first, and so does this. Other repeated entries stay, each one counting.
    Returns ``(indptr, indices, data)`` with columns in row order (not necessarily sorted)."""
    dev = data.device
    indptr, indices = indptr.to(dev, torch.int64), indices.to(dev, torch.int64)
    n_l = indptr.shape[0] - 1
    r = torch.repeat_interleave(torch.arange(n_l, device=dev), indptr[1:] - indptr[:-1])
    on_diag = indices == r + start
    per_row = torch.bincount(r[on_diag], minlength=n_l)
    if bool((per_row > 1).any()):  # scipy sums the duplicates of the whole matrix
        key, inv = torch.unique(r * n_cols + indices, return_inverse=True)
        data = torch.zeros(key.shape[0], dtype=data.dtype, device=dev).index_add_(0, inv, data)
        r, indices = key // n_cols, key % n_cols
        per_row = torch.bincount(r[indices == r + start], minlength=n_l)
    missing = torch.nonzero(per_row == 0).flatten()
    if missing.numel() == 0:
        counts = torch.bincount(r, minlength=n_l)
    else:
        r = torch.cat([r, missing])
        indices = torch.cat([indices, missing + start])
        data = torch.cat([data, torch.zeros(missing.shape[0], dtype=data.dtype, device=dev)])
        order = torch.sort(r, stable=True).indices
        r, indices, data = r[order], indices[order], data[order]
        counts = torch.bincount(r, minlength=n_l)
    out = torch.zeros(n_l + 1, dtype=torch.int64, device=dev)
    out[1:] = torch.cumsum(counts, 0)
    return out, indices, data


def core_counts(indptr: torch.Tensor, data: torch.Tensor, eps: float) -> torch.Tensor:
    """int64 ``[n_rows]``: the stored entries ``<= eps`` of each CSR row (scikit-learn's ``len(neighbours)``:
    the diagonal counts when it is stored within eps, a repeated entry counts each time)."""
    dev = data.device
    indptr = indptr.to(dev, torch.int64)
    n_l = indptr.shape[0] - 1
    r = torch.repeat_interleave(torch.arange(n_l, device=dev), indptr[1:] - indptr[:-1])
    return torch.bincount(r[data <= eps], minlength=n_l)


def neighbour_pairs(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, eps: float, n_cols: int,
                    start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique pairs ``(u, v)``, u != v, of the stored entries ``d(u, v) <= eps`` (stored zeros count).

    CSR rows ``start .. start + len(indptr) - 2`` of an ``[N, n_cols]`` distance (global column ids);
    ``u`` are global row ids. An entry stored twice counts once (neighbourhoods are sets).
    """
    dev = data.device
    indptr, indices = indptr.to(dev, torch.int64), indices.to(dev, torch.int64)
    n_l = indptr.shape[0] - 1
    r = start + torch.repeat_interleave(torch.arange(n_l, device=dev), indptr[1:] - indptr[:-1])
    near = (data <= eps) & (indices != r)
    key = torch.unique(r[near] * n_cols + indices[near])
    return key // n_cols, key % n_cols


def components(u: torch.Tensor, v: torch.Tensor, n: int, rows=None, info: dict | None = None) -> torch.Tensor:
    """parent ``[n]``: for every node, the smallest node of its component in the graph of edges ``(u, v)``.

    With ``rows`` (sharded), each shard passes its own edges and every round's hooked array is reduced
    (minimum) over the shards, so every shard returns the same array. ``info`` gets ``rounds``.

    Example:
        >>> import torch
        >>> from hilcore.stages.dbscan import components
        >>> components(torch.tensor([3, 1]), torch.tensor([1, 4]), 5).tolist()
        [0, 1, 2, 1, 1]
    """
    parent = torch.arange(n, device=u.device)
    rounds = 0
    while True:
        rounds += 1
        pu, pv = parent[u], parent[v]
        low = torch.minimum(pu, pv)
        # hook both roots of every edge onto the smaller one
        hooked = parent.scatter_reduce(0, pu, low, reduce="amin").scatter_reduce(0, pv, low, reduce="amin")
        if rows is not None:
            hooked = rows.reduce_min(hooked)  # every shard now holds the same array
        while True:  # pointer jumping until every node points at a root
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            break
        parent = hooked
    if info is not None:
        info["rounds"] = rounds
    return parent


def labels(core: torch.Tensor, u: torch.Tensor, v: torch.Tensor, rows=None, info: dict | None = None) -> torch.Tensor:
    """DBSCAN labels ``[n]`` from the core mask of all n points and neighbour pairs ``(u, v)`` (u != v,
    both directions; sharded: the pairs of this shard's rows u): components of the core-core pairs,
    numbered by their smallest core index, border points the smallest label of a core neighbour, -1 else."""
    n = core.numel()
    both = core[u] & core[v]
    root = components(u[both], v[both], n, rows, info)
    return dbscan_labels(core, root, u, v, reduce_min=None if rows is None else rows.reduce_min)
