"""DBSCAN on a precomputed (dense or sparse) distance matrix, as union-find."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from . import _arrays, _dispatch
from ._core import SparseRows
from .stages.dbscan import with_diagonal

def _check_square(shape, name="dist"):
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name}: expected a square [N, N] distance matrix, got shape {tuple(shape)}")


def _check_values(data: torch.Tensor, name="dist"):
    _arrays.distance_values(data, name)


def _cut(data: torch.Tensor, eps: float) -> torch.Tensor:
    """float32 distances, with entries > eps (compared in the input's own dtype) set to +inf.

    The kernels compare in float32; rounding a float64 distance just above eps
    down to float32(eps) would otherwise make it a neighbour.
    """
    return torch.where(data <= eps, data.to(torch.float32), float("inf"))  # a scalar: no nnz-sized inf array


def _sparse_parts(dist):
    """``(indptr, indices, data, n, family)`` of any accepted sparse input, structure-checked in O(nnz)
    before any conversion reads the indices; ``None`` for dense input."""
    name = "dist"
    if sp.issparse(dist):
        _check_square(dist.shape)
        n = dist.shape[0]
        if dist.format in ("csr", "csc"):  # scipy's conversions trust the structure: check it first
            _arrays.csr_structure(torch.from_numpy(np.asarray(dist.indptr)), torch.from_numpy(np.asarray(dist.indices)),
                                  len(dist.data), n, name, "column" if dist.format == "csr" else "row")
        # as scikit-learn converts: COO / CSC (and the other formats) sum repeated entries; CSR keeps them
        csr = dist if dist.format == "csr" else dist.asformat("csr")
        if csr.indices.shape[0] != csr.nnz:  # spare capacity past indptr[-1]
            csr = sp.csr_matrix((csr.data[:csr.nnz], csr.indices[:csr.nnz], csr.indptr), shape=csr.shape)
        data = torch.from_numpy(np.asarray(csr.data))
        return (torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64)), data,
                n, _arrays.Family("numpy", torch.device("cpu")))
    if type(dist).__module__.startswith("cupyx"):
        _check_square(dist.shape)
        csr = dist.tocsr()
        ip, ix = torch.from_dlpack(csr.indptr).to(torch.int64), torch.from_dlpack(csr.indices).to(torch.int64)
        data = torch.from_dlpack(csr.data)
        _arrays.csr_structure(ip, ix, data.numel(), csr.shape[0], name)
        return ip, ix, data, csr.shape[0], _arrays.Family("cupy", data.device)
    if isinstance(dist, torch.Tensor) and dist.layout != torch.strided:
        _check_square(dist.shape)
        t = dist.detach()
        if t.layout == torch.sparse_csc:  # read as COO: its CSR conversion sums repeated entries, as scipy's
            t = t.to_sparse_coo()
        if t.layout == torch.sparse_coo:
            if t.sparse_dim() != 2:
                raise ValueError(f"{name}: expected a 2-D sparse matrix, got {t.sparse_dim()} sparse dimensions")
            t = t.coalesce()  # sums repeated entries, as scipy's COO -> CSR conversion does
            ij = t.indices()
            n = t.shape[0]
            if ij.numel() and bool(((ij < 0) | (ij >= n)).any()):
                raise ValueError(f"{name}: a stored COO entry lies outside [0, {n}) x [0, {n}]")
            t = t.to_sparse_csr()
        elif t.layout != torch.sparse_csr:
            raise TypeError(f"{name}: expected a dense, CSR, CSC or COO tensor, got layout {t.layout}")
        ip, ix, data = t.crow_indices().to(torch.int64), t.col_indices().to(torch.int64), t.values()
        _arrays.csr_structure(ip, ix, data.numel(), t.shape[0], name)
        return ip, ix, data, t.shape[0], _arrays.Family("torch", data.device)
    return None


def as_rows(dist, eps: float, symmetrize=None) -> tuple[SparseRows, _arrays.Family]:
    """Any accepted distance input as CSR rows on its device (entries <= eps kept, the rest +inf),
    after checking the structure, the values and the symmetry of the eps-neighbour relation."""
    name = "dist"
    parts = _sparse_parts(dist)
    if parts is not None:
        ip, ix, data, n, fam = parts
        nnz = int(ip[-1])
        data = data[:nnz]
        ix = ix[:nnz]
        _check_values(data)
        ip, ix, data = with_diagonal(ip, ix, data, n)  # scikit-learn's diagonal (an unstored one is 0)
    else:
        t, fam = _arrays.as_tensor(dist, name)
        t = t.detach()
        _check_square(t.shape)
        n = t.shape[0]
        # blocked scan: values, symmetry and the kept entries, no N x N temporary
        ip, ix, data = _arrays.dense_distance_rows(t, eps, name, symmetrize)
        # every kept entry is <= eps in its own dtype, so <= float32(eps) in float32: no cut needed
        return SparseRows(ip, ix, data.to(torch.float32), n), fam
    ip, ix, data = _arrays.symmetric_neighbours(ip, ix, data, n, eps, symmetrize, name)
    return SparseRows(ip, ix, _cut(data, eps), n), fam


def dbscan(dist, eps: float = 0.6, min_samples: int = 4, *, symmetrize: str | None = None, backend: str = "auto"):
    """DBSCAN on precomputed distances; identical to scikit-learn's
    ``DBSCAN(eps, min_samples=min_samples, metric="precomputed").fit_predict``
    on the dense matrix.

    Neighbourhoods are scikit-learn's: the neighbours of ``i`` are the ``j``
    with ``d(i, j) <= eps``, ``i`` itself only when ``d(i, i) <= eps``. In
    sparse input entries not stored are not neighbours, stored zeros are, an
    unstored diagonal entry is 0 (scikit-learn sets it explicitly), a CSR entry
    stored twice counts twice (COO / CSC input is converted to CSR first, which
    sums repeated entries; a diagonal entry stored twice makes SciPy sum every
    repeated entry). ``i`` is core when it has ``>= min_samples`` neighbours. Clusters are the
    connected components of core points (union-find over core-core edges),
    numbered in order of their smallest core index; a border point takes the
    smallest label among its core neighbours; the rest are -1.

    ``dist`` must be symmetric in the sense that decides the result:
    ``d[i, j] <= eps`` exactly when ``d[j, i] <= eps`` (the Jaccard distance
    is). Otherwise ``ValueError`` names the first offending pair, unless
    ``symmetrize`` says how to make it so. The checks (CSR structure: indptr
    monotone from 0 to nnz, indices in range; no NaN or negative value;
    symmetry) cost O(nnz); dense input is scanned in row blocks, so no N x N
    temporary is made.

    Args:
        dist: ``[N, N]`` distances: dense (NumPy, torch, CuPy) or sparse
            (``scipy.sparse``, torch sparse CSR/COO, ``cupyx.scipy.sparse``).
        eps: neighbourhood radius (>= 0).
        min_samples: neighbours (self included) that make a core point (>= 1).
        symmetrize: ``None`` (asymmetric input raises), ``"max"`` (cluster
            ``max(d, d.T)``: a pair is a neighbour when both directions are within
            eps; an entry not stored counts as +inf) or ``"min"`` (``min(d, d.T)``:
            either direction).
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
    # any neighbourhood is smaller than MAX_INT: a larger min_samples (2**63, 10**30) gives the same (no core point)
    min_samples = min(_arrays.positive_int(min_samples, "min_samples"), _arrays.MAX_INT)
    rows, fam = as_rows(dist, eps, symmetrize)
    impl = _dispatch.resolve("dbscan", backend, rows.data.device)
    labels = impl(rows.indptr, rows.indices, rows.data, rows.n, eps, min_samples)
    return _arrays.to_family(labels, fam)
