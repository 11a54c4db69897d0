"""Sharded k-reciprocal Jaccard distance (``hilcore.distributed.jaccard_distance``): the stage core on
this rank's rows.

The ranking is the sharded kNN (:func:`hilcore.distributed.knn_sharded.knn_tensors`); the stages are
:func:`hilcore.stages.jaccard.jaccard_rows` with :class:`~hilcore.distributed.comm.ShardedRows`: the rank
rows, reciprocal masks, features and weight rows of referenced neighbours are fetched from their owners
(``all_to_all`` of requests), the inverted index is keyed by column owner (each rank fetches the columns its
rows' supports touch, in super-blocks of :data:`hilcore.stages.jaccard.PAIR_BUDGET` pairs); as in one
process only the pairs j >= i are summed, and the kept ones are mirrored to the owner of j.
"""
from __future__ import annotations

import math

import scipy.sparse as sp
import torch

from .. import _arrays
from ..stages.jaccard import jaccard_rows
from .comm import Comm, ShardedRows, finish, global_rows, local_features, same_on_all_ranks, start
from .knn_sharded import knn_tensors

__all__ = ["jaccard_distance"]


def jaccard_distance(x_local, k1: int = 30, k2: int = 6, *, max_distance: float | None = None, group=None,
                     chunk_rows: int | None = None, info: dict | None = None, stats: dict | None = None):
    """This rank's rows of the k-reciprocal Jaccard distance of the rows sharded over ``group``.

    The semantics are :func:`hilcore.jaccard_distance`'s (DESIGN.md); the
    ranking is :func:`hilcore.distributed.knn` (on CPU bitwise ``hilcore.knn``'s). Only the sparse
    rows the local rows reference cross the network: rank rows and reciprocal
    masks of the kNN neighbours, feature rows of the expanded sets, weight rows
    of the first k2 neighbours, and the inverted-index columns (keyed by the
    rank owning the column) of the local supports, and the row masses. Sums run
    in the orders of docs/design.md ("Summation orders"), so the rows are bitwise
    those of ``hilcore.backend.torch.jaccard.jaccard`` (and of the native stages)
    on the concatenated rows with the same ranking: on CPU that is
    ``hilcore.knn``'s default (native) ranking, so the result is bitwise
    ``hilcore.jaccard_distance`` with the default backend (and with
    ``backend="torch"`` whenever the torch kNN ranks the rows the same, i.e.
    without float32 near-ties).

    Args:
        x_local: ``[n_r, D]`` this rank's rows (consecutive blocks in rank order).
        k1, k2: ranking and query-expansion lengths (clamped to N and k1).
        max_distance: keep pairs with ``d <= max_distance`` (``None``: every pair whose supports meet).
        group: torch.distributed process group (``None``: default / a world of one).
        chunk_rows: rows per streamed kNN chunk.
        info: optional dict that receives what this call did on this rank
            (``op``, ``bytes_sent``, ``timings`` (``knn``, ``total``), ``nnz``, ...).
        stats: deprecated name of ``info`` (DeprecationWarning).

    Returns:
        ``[n_r, N]`` float32 CSR with global column indices, sorted, the
        diagonal stored as 0: ``scipy.sparse.csr_matrix`` for CPU input, a
        torch sparse CSR tensor for CUDA input. :func:`hilcore.distributed.dbscan` takes it as is.

    Example:
        >>> import numpy as np, hilcore, hilcore.distributed as HD
        >>> x = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
        >>> d = HD.jaccard_distance(x, 20, 6, max_distance=0.6)  # this rank's rows (here: all)
        >>> d.shape, float(d.diagonal().max())
        ((200, 200), 0.0)
        >>> ref = hilcore.jaccard_distance(x, 20, 6, max_distance=0.6, backend="torch")
        >>> bool((d != ref).nnz == 0)
        True
    """
    info, clock = start(info, stats, "jaccard_distance")
    comm = Comm(group)
    xl, fam = local_features(x_local, "x_local", comm)
    sizes, n_all = global_rows(comm, xl)
    k1 = min(_arrays.positive_int(k1, "k1"), n_all)
    k2 = min(_arrays.positive_int(k2, "k2"), k1)
    md = math.inf if max_distance is None else _arrays.nonneg_float(max_distance, "max_distance")
    same_on_all_ranks(comm, k1=k1, k2=k2, max_distance=md)
    rank_l, _ = clock.run("knn", knn_tensors, comm, xl, k1, sizes, chunk_rows)
    indptr, cols, data = jaccard_rows(xl, rank_l, k1, k2, md, ShardedRows(comm, sizes, xl.device))
    finish("jaccard_distance", comm, clock, info, n=n_all, nnz=int(cols.numel()))
    n_l = xl.shape[0]
    if fam.kind == "numpy" or not fam.is_cuda:
        return sp.csr_matrix((data.cpu().numpy(), cols.cpu().numpy(), indptr.cpu().numpy()), shape=(n_l, n_all))
    return torch.sparse_csr_tensor(indptr, cols, data, size=(n_l, n_all))
