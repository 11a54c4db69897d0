"""DBSCAN on a precomputed (dense or sparse) distance matrix, as union-find."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from . import _arrays, _dispatch
from ._core import SparseRows

def _check_square(shape, name="dist"):
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name}: expected a square [N, N] distance matrix, got shape {tuple(shape)}")


def _check_values(data: torch.Tensor, name="dist"):
    if not torch.is_floating_point(data):
        raise TypeError(f"{name}: expected floating-point distances, got {data.dtype}")
    if data.numel() and bool(torch.isnan(data).any()):
        raise ValueError(f"{name}: contains NaN distances")
    if data.numel() and bool((data < 0).any()):
        raise ValueError(f"{name}: contains negative distances (min {float(data.min())})")


def _cut(data: torch.Tensor, eps: float) -> torch.Tensor:
    """float32 distances, with entries > eps (compared in the input's own dtype) set to +inf.

    The kernels compare in float32; rounding a float64 distance just above eps
    down to float32(eps) would otherwise make it a neighbour.
    """
    return torch.where(data <= eps, data.to(torch.float32), torch.full_like(data, float("inf"), dtype=torch.float32))


def as_rows(dist, eps: float) -> tuple[SparseRows, _arrays.Family]:
    """Any accepted distance input as CSR rows on its device (dense input keeps entries <= eps)."""
    if sp.issparse(dist):
        _check_square(dist.shape)
        csr = sp.csr_matrix(dist)  # copies COO/CSC; CSR input is shared
        if not csr.has_canonical_format:  # repeated entries are summed, as scipy does, on a copy
            csr = csr.copy()
            csr.sum_duplicates()
        data = torch.from_numpy(np.asarray(csr.data))
        _check_values(data)
        rows = SparseRows(torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64)),
                          _cut(data, eps), csr.shape[0])
        return rows, _arrays.Family("numpy", torch.device("cpu"))
    if type(dist).__module__.startswith("cupyx"):
        _check_square(dist.shape)
        csr = dist.tocsr()
        data = torch.from_dlpack(csr.data)
        _check_values(data)
        rows = SparseRows(torch.from_dlpack(csr.indptr).to(torch.int64), torch.from_dlpack(csr.indices).to(torch.int64),
                          _cut(data, eps), csr.shape[0])
        return rows, _arrays.Family("cupy", data.device)
    if isinstance(dist, torch.Tensor) and dist.layout in (torch.sparse_csr, torch.sparse_coo):
        _check_square(dist.shape)
        t = dist.to_sparse_csr() if dist.layout == torch.sparse_coo else dist
        data = t.values()
        _check_values(data)
        rows = SparseRows(t.crow_indices().to(torch.int64), t.col_indices().to(torch.int64), _cut(data, eps),
                          t.shape[0])
        return rows, _arrays.Family("torch", data.device)
    t, fam = _arrays.as_tensor(dist, "dist")
    _check_square(t.shape)
    _check_values(t)
    n = t.shape[0]
    keep = t <= eps
    counts = keep.sum(dim=1)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=t.device)
    indptr[1:] = torch.cumsum(counts, 0)
    r, c = torch.nonzero(keep, as_tuple=True)
    return SparseRows(indptr, c.to(torch.int64), t[r, c].to(torch.float32), n), fam


def dbscan(dist, eps: float = 0.6, min_samples: int = 4, *, backend: str = "auto"):
    """DBSCAN on precomputed distances; identical to scikit-learn's
    ``DBSCAN(eps, min_samples=min_samples, metric="precomputed").fit_predict``
    on the dense matrix.

    The neighbours of ``i`` are ``i`` itself and every ``j`` whose stored
    distance is ``<= eps`` (in sparse input, entries not stored are not
    neighbours; stored zeros count, unlike scikit-learn's sparse path).
    ``i`` is core when it has ``>= min_samples`` neighbours. Clusters are the
    connected components of core points (union-find over core-core edges),
    numbered in order of their smallest core index; a border point takes the
    smallest label among its core neighbours; the rest are -1. ``dist`` must be
    symmetric (the Jaccard distance is).

    Args:
        dist: ``[N, N]`` distances: dense (NumPy, torch, CuPy) or sparse
            (``scipy.sparse``, torch sparse CSR/COO, ``cupyx.scipy.sparse``).
        eps: neighbourhood radius (>= 0).
        min_samples: neighbours (self included) that make a core point (>= 1).
        backend: ``"auto"``, ``"torch"``, ``"native"``, ``"cuda"`` or ``"cuml"``.

    Returns:
        ``[N]`` int64 labels, -1 for noise: NumPy for NumPy/SciPy input, torch
        for torch input (same device), CuPy for CuPy input.

    Raises:
        ValueError: ``dist`` not square, or with NaN or negative distances;
            ``eps`` < 0; ``min_samples`` < 1.
        TypeError: non-floating ``dist``, non-integer ``min_samples``.
        hilcore.BackendUnavailable: ``backend`` named explicitly cannot run here (the message says why).

    Example:
        >>> import numpy as np, hilcore
        >>> d = np.array([[0, .1, .9], [.1, 0, .9], [.9, .9, 0]], dtype=np.float32)
        >>> hilcore.dbscan(d, eps=0.5, min_samples=2).tolist()
        [0, 0, -1]
    """
    eps = _arrays.nonneg_float(eps, "eps")
    min_samples = _arrays.positive_int(min_samples, "min_samples")
    rows, fam = as_rows(dist, eps)
    impl = _dispatch.resolve("dbscan", backend, rows.data.device)
    labels = impl(rows.indptr, rows.indices, rows.data, rows.n, eps, min_samples)
    return _arrays.to_family(labels, fam)
