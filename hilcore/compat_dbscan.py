"""scikit-learn's ``DBSCAN.fit`` on a precomputed distance matrix, on every container, fast where it can be.

What scikit-learn 1.x does (``sklearn/cluster/_dbscan.py`` and ``sklearn/neighbors/_base.py``), and so what
:class:`hilcore.compat.DBSCAN` reproduces:

- the neighbours of ``i`` are the ``j`` with ``X[i, j] <= eps`` in row ``i``; the diagonal counts only when
  ``X[i, i] <= eps`` (dense) or, in sparse input, when the diagonal entry is (an entry not stored is set to
  an explicit 0 first, ``X.setdiag(X.diagonal())``, so it counts);
- dense input is compared in float32 when it is float32 and in float64 otherwise, against ``eps`` rounded
  as NumPy rounds a scalar of its type there (a Python float to float32 on a float32 matrix); sparse input is
  compared in its own dtype the same way; every stored entry of a sparse row is counted, repeated ones each
  (CSR); COO and CSC input are converted to CSR first, which sums repeated entries;
- ``i`` is core when its neighbours number (weigh, with ``sample_weight``) at least ``min_samples``;
- clusters are grown depth-first from the core points in index order. When the neighbour relation is
  symmetric this is the union-find rule of hilcore (components of core points numbered by their smallest
  index, a border point in the cluster of the smallest label among its core neighbours); when it is not,
  the fit is handed to scikit-learn itself, whose search order then decides.

Containers: NumPy and SciPy input go through scikit-learn's validation; torch (dense, CSR, CSC, COO, CPU or
CUDA) and CuPy input are read as the same matrix would be as a NumPy / SciPy array. Dense rows are thresholded
by C++ (``_native.compat_dense_eps_rows``) on CPU, in row blocks of torch operations on a GPU.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from ._dispatch import native_module
from .stages.dbscan import labels as dbscan_labels_of

_TORCH_TO_NUMPY = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
# elements of one row block of a dense GPU matrix
_BLOCK = 1 << 24


def eps_threshold(dtype, eps, sparse: bool) -> float:
    """The float64 value that ``X[i, j] <= eps`` compares against, as scikit-learn's NumPy comparison does.

    Dense input is compared as float32 when float32, else as float64 (``pairwise_distances``' conversion);
    sparse data in its own dtype; ``eps`` is cast as NumPy casts a scalar of its type (NEP 50: a Python float
    takes the array's dtype, a NumPy float64 keeps float64).
    """
    dtype = np.dtype(dtype)
    if not sparse:
        dtype = np.dtype(np.float32 if dtype == np.float32 else np.float64)
    cd = np.result_type(dtype, eps)
    if cd.kind not in "f":
        cd = np.dtype(np.float64)
    return float(cd.type(eps))


def torch_sparse_to_scipy(t: torch.Tensor):
    """The SciPy matrix with the same stored entries (repeated ones kept) as a torch sparse matrix."""
    if t.dim() != 2:
        raise ValueError(f"X: expected a 2-D sparse matrix, got {t.dim()} dimensions")
    t = t.detach()
    if t.dtype not in _TORCH_TO_NUMPY:
        raise TypeError(f"X: expected float16/float32/float64 distances, got {t.dtype}")
    if t.layout == torch.sparse_coo:
        if t.sparse_dim() != 2:
            raise ValueError(f"X: expected a 2-D sparse matrix, got {t.sparse_dim()} sparse dimensions")
        ij = t._indices().cpu().numpy()
        return sp.coo_matrix((t._values().cpu().numpy(), (ij[0], ij[1])), shape=tuple(t.shape))
    if t.layout == torch.sparse_csr:
        return sp.csr_matrix((t.values().cpu().numpy(), t.col_indices().cpu().numpy(),
                              t.crow_indices().cpu().numpy()), shape=tuple(t.shape))
    if t.layout == torch.sparse_csc:
        return sp.csc_matrix((t.values().cpu().numpy(), t.row_indices().cpu().numpy(),
                              t.ccol_indices().cpu().numpy()), shape=tuple(t.shape))
    raise TypeError(f"X: expected a dense, CSR, CSC or COO tensor, got layout {t.layout}")


def _negative(what: str):
    return ValueError(f"X: Negative values in data passed to {what}; a precomputed distance matrix holds "
                      f"distances >= 0")


def dense_rows_cpu(a: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(indptr, indices, prints) of the entries ``<= eps`` (float64 compare) of a dense square NumPy matrix, in
    C++; ``prints`` are the rows' fingerprints (``_native.compat_row_fingerprints``; ``None`` without the
    extension or when ``a`` is not float16/32/64)."""
    nat = native_module()
    printable = a.dtype in (np.float16, np.float32, np.float64)
    if not printable:
        a = a.astype(np.float64)
    if a.shape[0] and (a.strides[1] != a.itemsize or a.strides[0] % a.itemsize):
        a = np.ascontiguousarray(a)
    if nat is None:  # no extension: NumPy in row blocks
        step = max(1, _BLOCK // max(a.shape[1], 1))
        counts, cols = [], []
        for s in range(0, a.shape[0], step):
            blk = a[s:s + step].astype(np.float64)
            if np.isnan(blk).any() or np.isinf(blk).any():
                raise ValueError("X: Input contains NaN or infinity")
            if (blk < 0).any():
                raise _negative("precomputed distance matrix")
            r, c = np.nonzero(blk <= eps)
            counts.append(np.bincount(r, minlength=blk.shape[0]))
            cols.append(c)
        indptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.concatenate(counts)) if counts else 0
        return indptr, np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64), None
    indptr, indices, bad, prints = nat.compat_dense_eps_rows(a, float(eps))
    if bad >= 0:
        row = a[bad].astype(np.float64)
        if not np.isfinite(row).all():
            raise ValueError(f"X: Input contains NaN or infinity (row {bad})")
        raise _negative("precomputed distance matrix")
    return indptr, indices, prints if printable else None


class LazyRows:
    """``X[idx]`` as scikit-learn's ``components_`` holds it (a copy, C order), made on first use.

    scikit-learn copies the core samples' rows in ``fit``: ~0.5 GB for a 12,000-row float32 matrix, written to
    fresh memory (slow on first touch), though the pipelines never read ``components_``. This keeps ``X``
    (the caller's matrix, not a copy) and the rows' fingerprints taken in ``fit`` (``prints``, from the
    thresholding pass, which reads every row anyway), and copies on first use; the copy's fingerprints must
    equal the recorded ones, and a torch tensor's version counter must not have moved, else ``X`` was changed in
    place since ``fit`` and the rows scikit-learn would hold are gone: ``RuntimeError``, never other values.
    """

    def __init__(self, x, idx: np.ndarray, prints: np.ndarray):
        self.x, self.idx, self.prints = x, idx, prints
        self.version = x._version if isinstance(x, torch.Tensor) else None

    def rows(self):
        x = self.x
        changed = self.version is not None and x._version != self.version
        if isinstance(x, torch.Tensor):
            out = x.detach()[torch.from_numpy(self.idx)]
            arr = out.numpy()
        else:
            out = arr = np.ascontiguousarray(x[self.idx])
        if changed or not np.array_equal(native_module().compat_row_fingerprints(arr), self.prints[self.idx]):
            raise RuntimeError("components_: the matrix passed to fit was changed in place since; DBSCAN copies "
                               "the core samples' rows on first access of components_ (scikit-learn copies them in "
                               "fit), so they are gone: read components_ before changing X, or fit again")
        return out


def dense_rows_torch(t: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The same on a dense torch tensor on its device (row blocks of torch operations)."""
    n = t.shape[0]
    step = max(1, _BLOCK // max(n, 1))
    counts, cols = [], []
    for s in range(0, n, step):
        blk = t[s:s + step].to(torch.float64)
        if not bool(torch.isfinite(blk).all()):
            raise ValueError("X: Input contains NaN or infinity")
        if bool((blk < 0).any()):
            raise _negative("precomputed distance matrix")
        r, c = torch.nonzero(blk <= eps, as_tuple=True)
        counts.append(torch.bincount(r, minlength=blk.shape[0]))
        cols.append(c)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=t.device)
    if counts:
        indptr[1:] = torch.cumsum(torch.cat(counts), 0)
    return indptr, torch.cat(cols) if cols else torch.zeros(0, dtype=torch.int64, device=t.device)


def sparse_with_diagonal(x) -> sp.csr_matrix:
    """scikit-learn's preprocessing of a validated sparse precomputed matrix: a copy with the diagonal set to
    explicit values (``X.setdiag(X.diagonal())``); its stored entries are the candidate neighbours."""
    x = x.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
        x.setdiag(x.diagonal())
    x = sp.csr_matrix(x) if x.format != "csr" else x
    if x.nnz and x.data.min() < 0:
        raise _negative("precomputed distance matrix")
    return x


def sparse_rows(x: sp.csr_matrix, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the stored entries ``<= eps`` (each repeated entry counted)."""
    x_data = x.data[:x.indptr[-1]]
    keep = x_data <= eps if x_data.dtype == np.float64 else x_data.astype(np.float64) <= eps
    indptr = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))[x.indptr]
    return indptr, x.indices[:x.indptr[-1]][keep].astype(np.int64)


def weighted_counts(order_rows: list, weights: np.ndarray) -> np.ndarray:
    """``np.array([np.sum(weights[nb]) for nb in order_rows])`` with rows of one length summed together
    (NumPy sums a row of an [R, L] array exactly as it sums a 1-D array of length L)."""
    n = len(order_rows)
    out = np.empty(n, dtype=np.result_type(weights.dtype, np.float64) if weights.dtype.kind != "f"
                   else weights.dtype)
    lengths = np.array([len(r) for r in order_rows], dtype=np.int64)
    for ln in np.unique(lengths):
        who = np.flatnonzero(lengths == ln)
        if ln == 0:
            out[who] = np.sum(weights[np.zeros(0, dtype=np.int64)])
            continue
        idx = np.stack([order_rows[w] for w in who])
        out[who] = np.sum(weights[idx], axis=1)
    return out


def split_rows(indptr: np.ndarray, indices: np.ndarray) -> list:
    return np.split(indices, indptr[1:-1]) if len(indptr) > 1 else []


def labels_native(indptr: np.ndarray, indices: np.ndarray, min_samples) -> np.ndarray | None:
    """The unweighted fit on CPU in C++: scikit-learn's labels from neighbour rows (every stored entry a
    neighbour; the count is the row's length), or ``None`` when the relation (i != j, as sets) is not symmetric
    or the extension is missing. NumPy and one native call, so small matrices cost microseconds, not a chain of
    torch operations."""
    nat = native_module()
    if nat is None:
        return None
    n = indptr.shape[0] - 1
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    sym = nat.compat_csr_symmetric(indptr, indices)  # rows strictly ascending (dense input): binary searches
    if sym < 0:  # unsorted or repeated columns (sparse input): as sets
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        off = rows != indices
        a, b = rows[off], indices[off]
        sym = int(np.array_equal(np.unique(a * n + b), np.unique(b * n + a)))
    if not sym:
        return None
    ms = int(min(int(min_samples), indices.shape[0] + 1))  # beyond every count: no core point either way
    zeros = np.zeros(indices.shape[0], dtype=np.float32)  # every listed entry is within eps
    return nat.dbscan(indptr, indices, zeros, n, 0.0, ms)


def labels_from_rows(indptr: torch.Tensor, indices: torch.Tensor, core: torch.Tensor) -> torch.Tensor | None:
    """scikit-learn's labels from neighbour rows and the core mask when the relation (i != j, as sets) is
    symmetric; ``None`` when it is not (the caller then runs scikit-learn's own search)."""
    n = core.numel()
    dev = indices.device
    rows = torch.repeat_interleave(torch.arange(n, device=dev), indptr[1:] - indptr[:-1])
    off = rows != indices
    key = torch.unique(rows[off] * n + indices[off])
    u, v = key // n, key % n
    if not torch.equal(key, torch.sort(v * n + u).values):
        return None
    return dbscan_labels_of(core, u, v)  # hilcore's one numbering and border rule (hilcore.stages.dbscan)
