"""Sparse k-reciprocal Jaccard distance (the re-ranking distance of cluster-contrast ReID)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from . import _arrays, _dispatch
from .knn import knn_tensors

IMPLEMENTED = ("torch", "native", "triton", "cuda")

# kNN used by each jaccard backend's pipeline.
_KNN_FOR = {"torch": "torch", "native": "native", "triton": "triton", "cuda": "cuda"}


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


def _impl(backend: str, device: torch.device):
    """The k-reciprocal/Jaccard stages for ``backend``.

    ``triton`` only brings the kNN; its stages are the CUDA kernels when they
    are built and the input is on a GPU, else the torch ones.
    """
    if backend == "triton":
        backend = "cuda" if (device.type == "cuda" and _dispatch.has_cuda()) else "torch"
    if backend == "torch":
        from .torch_backend.jaccard import jaccard as f
    elif backend == "native":
        from .native_backend.jaccard import jaccard as f
    elif backend == "cuda":
        from .cuda_backend.jaccard import jaccard as f
    else:  # pragma: no cover
        raise AssertionError(backend)
    return f


def jaccard_rows(x: torch.Tensor, k1: int, k2: int, max_distance: float, backend: str) -> SparseRows:
    """Internal entry on a validated, normalised float32 tensor. k1, k2 already clamped."""
    rank, _ = knn_tensors(x, k1, None, _KNN_FOR[backend])
    indptr, indices, data = _impl(backend, x.device)(x, rank, k1, k2, max_distance)
    return SparseRows(indptr, indices, data, x.shape[0])


def to_output(rows: SparseRows, fam: _arrays.Family):
    """CPU: scipy.sparse.csr_matrix; CUDA torch: torch sparse CSR; CuPy: cupyx CSR."""
    n = rows.n
    if fam.kind == "numpy" or not fam.is_cuda:
        return sp.csr_matrix((rows.data.cpu().numpy(), rows.indices.cpu().numpy(), rows.indptr.cpu().numpy()),
                             shape=(n, n))
    if fam.kind == "cupy":
        import cupy
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix((cupy.from_dlpack(rows.data), cupy.from_dlpack(rows.indices.to(torch.int32)),
                               cupy.from_dlpack(rows.indptr.to(torch.int32))), shape=(n, n))
    return torch.sparse_csr_tensor(rows.indptr, rows.indices, rows.data, size=(n, n))


def jaccard_distance(x, k1: int = 30, k2: int = 6, *, max_distance: float | None = None,
                     backend: str = "auto"):
    """k-reciprocal Jaccard distance, sparse.

    The semantics are those of DESIGN.md (and of the widely used
    ``compute_jaccard_distance``): k1-column exact ranking with self first,
    k-reciprocal sets with expansion by the round(k1/2)-reciprocal sets,
    softmax weights over ``-(2 - 2 cos)``, local query expansion over the
    first ``k2`` neighbours, then ``d = 1 - m / (2 - m)`` with
    ``m = sum_t min(V'[i, t], V'[j, t])``. Pairs whose supports do not meet
    have ``d = 1`` and are not stored. Rows are L2-normalised first. When
    ``k1 > N`` the ranking holds all N rows (k1 is clamped to N, k2 to k1),
    for values up to 1000; a larger k1 above N (or k2 above k1) raises
    ``ValueError`` instead of starting an O(N^3) run.

    Args:
        x: ``[N, D]`` features (NumPy, torch CPU/CUDA or CuPy; any float dtype).
        k1: ranking length (>= 1).
        k2: query-expansion length (>= 1; 1 means none).
        max_distance: keep pairs with ``d <= max_distance``; ``None`` keeps every
            pair whose supports meet (``d < 1``). DBSCAN needs only ``max_distance=eps``.
        backend: ``"auto"``, ``"torch"``, ``"native"``, ``"triton"`` or ``"cuda"``.

    Returns:
        ``[N, N]`` sparse CSR, float32, sorted indices, symmetric, the diagonal
        stored explicitly as 0 (and exact duplicates stored even at distance 0):
        ``scipy.sparse.csr_matrix`` for CPU input, a torch sparse CSR tensor for
        CUDA torch input, a ``cupyx.scipy.sparse.csr_matrix`` for CuPy input.

    Example:
        >>> import numpy as np, hilcore
        >>> x = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
        >>> d = hilcore.jaccard_distance(x, k1=20, k2=6, max_distance=0.6)
        >>> d.shape, float(d.diagonal().max())
        ((200, 200), 0.0)
    """
    xt, fam = _arrays.features(x, "x")
    n = xt.shape[0]
    k1 = _arrays.ranking_length(k1, "k1", n)
    k2 = _arrays.ranking_length(k2, "k2", k1, limit_name="k1")
    md = math.inf if max_distance is None else _arrays.nonneg_float(max_distance, "max_distance")
    b = _dispatch.resolve("jaccard_distance", backend, xt.device, IMPLEMENTED)
    return to_output(jaccard_rows(xt, k1, k2, md, b), fam)
