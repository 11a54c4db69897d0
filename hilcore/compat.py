"""Drop-in replacements for the clustering step of existing ReID pipelines.

Cluster-contrast style code (SpCL, Cluster-Contrast, ADCA, PGM, SDCL, HIL, ...)
calls ``compute_jaccard_distance(features, k1, k2, ...)`` for a dense N x N
matrix and clusters it with scikit-learn's ``DBSCAN(metric="precomputed")``.
Switching such a pipeline to hilcore is one import line::

    from hilcore.compat import compute_jaccard_distance, DBSCAN

Both keep the signatures and return types the pipelines rely on. The dense
matrix is still N x N (4 N^2 bytes), because that is what the caller asked
for; new code should call :func:`hilcore.jaccard_distance` with
``max_distance=eps`` and :func:`hilcore.dbscan` instead, which stay O(N).
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch

from . import _arrays
from .dbscan import dbscan as _dbscan
from .jaccard import jaccard_distance as _jaccard_distance

__all__ = ["compute_jaccard_distance", "DBSCAN"]


def compute_jaccard_distance(target_features, k1: int = 20, k2: int = 6, print_flag: bool = True,
                             search_option: int = 0, use_float16: bool = False, *, backend: str = "auto"):
    """Dense k-reciprocal Jaccard distance, the signature existing pipelines call.

    Same semantics as :func:`hilcore.jaccard_distance` (docs/design.md); pairs
    whose k-reciprocal supports do not meet are exactly 1.0 and the diagonal
    is 0.

    Args:
        target_features: ``[N, D]`` features, a torch tensor (CPU or CUDA) or a
            NumPy array, any float dtype; rows are L2-normalised first.
        k1: ranking length.
        k2: query-expansion length (1: none).
        print_flag: print one line with the time taken, as the original does.
        search_option: accepted and ignored. In the original it selects the
            kNN implementation (GPU/CPU, faiss index type) by a magic integer;
            hilcore picks its backend from the device of ``target_features``
            and what is installed, and every backend is exact.
        use_float16: return float16 instead of float32 (the computation
            itself stays float32).
        backend: hilcore backend (``"auto"``, ``"torch"``, ``"native"``, ...);
            not in the original signature.

    Returns:
        ``[N, N]`` dense NumPy float32 (float16 with ``use_float16``) matrix.

    Raises:
        ValueError, TypeError: bad features (not 2-D, empty, NaN/Inf rows, not
            floating point) or parameters, naming the argument.
        hilcore.BackendUnavailable: a backend named explicitly cannot run here.

    Example:
        >>> import numpy as np, hilcore
        >>> from hilcore.compat import compute_jaccard_distance
        >>> from hilcore.synthetic import reid_features
        >>> features, _, _ = reid_features(20, 15, dim=64, seed=0)    # 300 rows
        >>> rerank_dist = compute_jaccard_distance(features, k1=20, k2=6, print_flag=False)
        >>> rerank_dist.shape, rerank_dist.dtype, float(rerank_dist.max())
        ((300, 300), dtype('float32'), 1.0)
        >>> sparse = hilcore.jaccard_distance(features, k1=20, k2=6)   # the same values, stored sparse
        >>> bool(np.array_equal(rerank_dist[sparse.nonzero()], sparse.data[sparse.data > 0]))
        True
    """
    start = time.perf_counter()
    if isinstance(target_features, torch.Tensor):
        target_features = target_features.detach()
    d = _jaccard_distance(target_features, k1, k2, max_distance=None, backend=backend)
    n = d.shape[0]
    if isinstance(d, torch.Tensor):  # CUDA input gives a torch sparse CSR on the GPU
        d = sp.csr_matrix((d.values().cpu().numpy(), d.col_indices().cpu().numpy(),
                           d.crow_indices().cpu().numpy()), shape=(n, n))
    elif not sp.issparse(d):  # CuPy input gives a cupyx CSR
        d = d.get()
    dense = np.ones((n, n), dtype=np.float16 if use_float16 else np.float32)
    coo = d.tocoo()
    dense[coo.row, coo.col] = coo.data
    if print_flag:
        print(f"Jaccard distance computing time cost: {time.perf_counter() - start:.3f}s "
              f"(hilcore, N={n}, k1={k1}, k2={k2})")
    return dense


class DBSCAN:
    """scikit-learn-compatible DBSCAN for precomputed distances, backed by :func:`hilcore.dbscan`.

    Gives exactly ``sklearn.cluster.DBSCAN(eps, min_samples=min_samples,
    metric="precomputed").fit_predict`` on a dense matrix (same numbering and
    border assignment). Sparse input follows hilcore's rule: every stored entry
    ``<= eps`` is a neighbour, stored zeros included (scikit-learn skips them).

    Args:
        eps: neighbourhood radius.
        min_samples: neighbours (self included) that make a core point.
        metric: only ``"precomputed"`` is supported.
        n_jobs: accepted and ignored (the native backend uses OpenMP threads).
        backend: hilcore backend; not in scikit-learn's signature.

    Raises:
        ValueError: ``metric`` other than ``"precomputed"``, ``eps < 0``,
            ``min_samples < 1``; in :meth:`fit`, a distance matrix that is not
            square or holds NaN / negative values.

    Example:
        >>> import numpy as np, sklearn.cluster
        >>> from hilcore.compat import compute_jaccard_distance, DBSCAN
        >>> from hilcore.synthetic import reid_features
        >>> features, _, _ = reid_features(20, 15, dim=64, seed=0)
        >>> rerank_dist = compute_jaccard_distance(features, k1=20, k2=6, print_flag=False)
        >>> labels = DBSCAN(eps=0.6, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(rerank_dist)
        >>> ref = sklearn.cluster.DBSCAN(eps=0.6, min_samples=4, metric="precomputed").fit_predict(rerank_dist)
        >>> labels.dtype, bool((labels == ref).all()), int(labels.max()) + 1
        (dtype('int64'), True, 20)
    """

    def __init__(self, eps: float = 0.6, min_samples: int = 4, metric: str = "precomputed", n_jobs: int | None = -1,
                 *, backend: str = "auto"):
        if metric != "precomputed":
            raise ValueError(f"metric: hilcore.compat.DBSCAN supports only metric='precomputed' (a distance "
                             f"matrix, e.g. from compute_jaccard_distance), got {metric!r}")
        self.eps = _arrays.nonneg_float(eps, "eps")
        self.min_samples = _arrays.positive_int(min_samples, "min_samples")
        self.metric = metric
        self.n_jobs = n_jobs
        self.backend = backend
        self.labels_ = None

    def fit(self, X, y=None):
        """Cluster the ``[N, N]`` distance matrix ``X``; sets ``labels_`` (int64 NumPy, -1 noise)."""
        labels = _dbscan(X, self.eps, self.min_samples, backend=self.backend)
        if isinstance(labels, torch.Tensor):
            labels = labels.cpu().numpy()
        elif not isinstance(labels, np.ndarray):  # CuPy
            labels = labels.get()
        self.labels_ = labels
        return self

    def fit_predict(self, X, y=None):
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_

    def __repr__(self) -> str:
        return f"DBSCAN(eps={self.eps}, min_samples={self.min_samples}, metric={self.metric!r})"
