"""Sharded DBSCAN (``hilcore.distributed.dbscan``): the stage core's union-find with the parent array reduced
over the ranks.

Core flags locally, all-gathered; :func:`hilcore.stages.dbscan.labels` on this rank's neighbour pairs with
:class:`~hilcore.distributed.comm.ShardedRows` (an ``all_reduce(MIN)`` of the hooked parent array per
round, then of the border labels), so every rank returns the same global labels (O(N) per rank).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from .. import _arrays
from ..stages.dbscan import core_counts, labels as dbscan_labels_of, neighbour_pairs, with_diagonal
from .comm import Comm, ShardedRows, finish, same_on_all_ranks, start

__all__ = ["dbscan"]


def local_csr(d_local, eps: float, name: str = "d_local"):
    """(indptr, indices, data float32 with entries > eps set to +inf, n_rows, n_cols, family) of any input."""
    if sp.issparse(d_local):
        if len(d_local.shape) != 2:
            raise ValueError(f"{name}: expected a 2-D [n_r, N] matrix, got shape {d_local.shape}")
        csr = d_local.asformat("csr")  # as scikit-learn converts: COO / CSC sum repeated entries, CSR keeps them
        data = torch.from_numpy(np.asarray(csr.data))
        ip = torch.from_numpy(csr.indptr.astype(np.int64))
        ix = torch.from_numpy(csr.indices.astype(np.int64))
        fam = _arrays.Family("numpy", torch.device("cpu"))
        shape = csr.shape
    elif isinstance(d_local, torch.Tensor) and d_local.layout in (torch.sparse_csr, torch.sparse_coo):
        t = d_local.coalesce().to_sparse_csr() if d_local.layout == torch.sparse_coo else d_local
        ip, ix, data = t.crow_indices().to(torch.int64), t.col_indices().to(torch.int64), t.values()
        fam = _arrays.Family("torch", d_local.device)
        shape = tuple(d_local.shape)
    else:
        t, fam = _arrays.as_tensor(d_local, name)
        t = t.detach()
        if t.dim() != 2:
            raise ValueError(f"{name}: expected a 2-D [n_r, N] matrix, got shape {tuple(t.shape)}")
        _arrays.distance_values(t, name)  # floating point, no NaN, no negative entry
        keep = t <= eps
        r, c = torch.nonzero(keep, as_tuple=True)
        data = t[r, c]
        ip = torch.zeros(t.shape[0] + 1, dtype=torch.int64, device=t.device)
        ip[1:] = torch.cumsum(torch.bincount(r, minlength=t.shape[0]), 0)
        ix = c.to(torch.int64)
        shape = tuple(t.shape)
    _arrays.distance_values(data, name)
    cut = torch.where(data <= eps, data.to(torch.float32), torch.full_like(data, math.inf, dtype=torch.float32))
    return ip, ix, cut, int(shape[0]), int(shape[1]), fam


def dbscan(d_local, eps: float, min_samples: int, *, group=None, info: dict | None = None,
           stats: dict | None = None):
    """DBSCAN over distance rows sharded by rank; every rank returns all N labels.

    Semantics are :func:`hilcore.dbscan`'s (scikit-learn's precomputed DBSCAN):
    the neighbours of i are the stored j with ``d(i, j) <= eps``, i itself only
    when ``d(i, i) <= eps`` (sparse rows: an unstored diagonal entry is 0), a
    repeated CSR entry counting each time; core iff at least ``min_samples`` neighbours; clusters numbered by their smallest
    core index; a border point takes the smallest label among its core
    neighbours; the rest -1. The matrix must be symmetric (the Jaccard one is).

    Args:
        d_local: this rank's rows ``[n_r, N]`` with global column indices:
            ``scipy.sparse`` (e.g. :func:`hilcore.distributed.jaccard_distance`'s output), torch
            sparse CSR/COO, or dense NumPy/torch.
        eps: neighbourhood radius (>= 0).
        min_samples: neighbours (self included) that make a core point (>= 1).
        group: torch.distributed process group (``None``: default / a world of one).
        info: optional dict that receives what this call did on this rank
            (``op``, ``bytes_sent``, ``timings`` (``total``), ``rounds``, ...).
        stats: deprecated name of ``info`` (DeprecationWarning).

    Returns:
        ``[N]`` int64 global labels, the same on every rank (NumPy for NumPy /
        SciPy input, torch otherwise).

    Example:
        >>> import numpy as np, hilcore.distributed as HD
        >>> d = np.array([[0, .1, .9], [.1, 0, .9], [.9, .9, 0]], dtype=np.float32)
        >>> HD.dbscan(d, eps=0.5, min_samples=2).tolist()  # a world of one: all the rows
        [0, 0, -1]
    """
    info, clock = start(info, stats, "dbscan")
    comm = Comm(group)
    eps = _arrays.nonneg_float(eps, "eps")
    min_samples = _arrays.positive_int(min_samples, "min_samples")
    same_on_all_ranks(comm, eps=eps, min_samples=min_samples)
    sparse_input = sp.issparse(d_local) or (isinstance(d_local, torch.Tensor) and d_local.layout != torch.strided)
    ip, ix, data, n_l, n_all, fam = local_csr(d_local, eps)
    dev = data.device
    ip, ix = ip.to(dev), ix.to(dev)
    sizes = comm.all_gather_int(n_l)
    widths = comm.all_gather_int(n_all)
    if len(set(widths)) != 1 or widths[0] != sum(sizes):
        raise ValueError(f"d_local: expected [n_r, N] rows with N = {sum(sizes)} (the rows over all ranks) "
                         f"columns on every rank, got N = {widths}")
    if ix.numel() and (int(ix.min()) < 0 or int(ix.max()) >= n_all):
        raise ValueError(f"d_local: column indices must lie in [0, {n_all}), got [{int(ix.min())}, {int(ix.max())}]")
    rows = ShardedRows(comm, sizes, dev)
    if sparse_input:  # scikit-learn's diagonal: an unstored one is an explicit 0
        ip, ix, data = with_diagonal(ip, ix, data, n_all, start=rows.start)
    u, v = neighbour_pairs(ip, ix, data, eps, n_all, start=rows.start)  # u: this rank's rows
    core_l = core_counts(ip, data, eps) >= min_samples
    core = comm.all_gather_var(core_l.to(torch.uint8)).to(torch.bool)
    uf: dict = {}
    out = dbscan_labels_of(core, u, v, rows, uf)
    finish("dbscan", comm, clock, info, n=n_all, rounds=uf["rounds"])
    return _arrays.to_family(out, fam)
