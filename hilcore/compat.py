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

The memories of ``clustercontrast/models/cm.py`` have drop-ins too, with the
same constructors, buffers and ``forward``; their momentum update still runs
inside the autograd backward, in batch order, but on hilcore's fused
memory-update kernels instead of a per-sample Python loop::

    from hilcore.compat import ClusterMemory            # cm.ClusterMemory (CM / CM_Hard)
    from hilcore.compat import MultiCenterClusterMemory  # HIL's features_d [C, 10, D] (CM_D)
    from hilcore.compat import ClusterMemory_shared     # the HIL release's name (features_d [C, 10, D])
    from hilcore.compat import Memory_wise_v3           # HIL's instance memory (EM, updateEM)
    from hilcore.compat import Memory                   # HIL's cm.Memory (soft loss, updateEM not renormalised)

See docs/switching.md for a before/after training loop.
"""
from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from . import _arrays, _dispatch
from ._extras import require
from . import memory as _memory
from .jaccard import jaccard_distance as _jaccard_distance

# the estimator follows scikit-learn's API (get_params, fit_predict): scikit-learn is the 'compat' extra
_sk_base = require("sklearn.base", "hilcore.compat", "compat")
BaseEstimator, ClusterMixin = _sk_base.BaseEstimator, _sk_base.ClusterMixin
# scikit-learn's own estimator, taken once at import: metrics other than "precomputed" (and asymmetric
# precomputed neighbourhoods) are handed to it
_SkDBSCAN = require("sklearn.cluster", "hilcore.compat", "compat").DBSCAN

__all__ = ["compute_jaccard_distance", "DBSCAN", "ClusterMemory", "ClusterMemory_shared", "MultiCenterClusterMemory",
           "Memory", "Memory_wise_v3", "cm", "cm_hard", "cm_d", "em"]


def compute_jaccard_distance(target_features, k1: int = 20, k2: int = 6, print_flag: bool = True,
                             search_option: int = 3, use_float16: bool = False, *, exact: bool = False,
                             backend: str = "auto"):
    """The dense k-reciprocal Jaccard matrix of the widely used ``compute_jaccard_distance``, its values included.

    By default this returns what SpCL / cluster-contrast's ``faiss_rerank.compute_jaccard_distance``
    returns, to float32 rounding of its weights (docs/switching.md says exactly what is identical), in the
    original's arithmetic (:mod:`hilcore.compat_jaccard`): features used as given (no normalisation; the
    ranking is a flat L2 index's), ``d = 1 - m / (2 - m)`` in float32 with its tiny positives where two rows
    have the same weights (and on the diagonal), pairs whose supports do not meet exactly 1.0;
    ``use_float16`` computes V, the query expansion, ``m`` and ``d`` in float16 as the original does;
    float16 features are multiplied in half precision as the original multiplies them.

    ``exact=True`` gives hilcore's own distance instead (:func:`hilcore.jaccard_distance` made dense: rows
    L2-normalised, ``d = 1 - m / (s_i + s_j - m)``, identical weight rows exactly 0, the diagonal 0).

    Args:
        target_features: ``[N, D]`` features, a torch tensor (CPU or CUDA) or a NumPy array, float16,
            float32 or float64 (bfloat16, which NumPy and so the original cannot hold, raises ``TypeError``).
        k1: ranking length (values above N are clamped to N).
        k2: query-expansion length (1: none).
        print_flag: print the original's two lines (the second with the time taken).
        search_option: accepted and ignored: in the original it picks the kNN implementation (GPU/CPU,
            faiss index type); every one is exact, as is hilcore's.
        use_float16: the original's half-precision matrices (float16 result).
        exact: hilcore's distance instead of the original's arithmetic (float16 result with ``use_float16``,
            computed in float32).
        backend: hilcore backend of the kNN (``exact=True``: of the whole distance); not in the original.

    Returns:
        ``[N, N]`` dense NumPy float32 (float16 with ``use_float16``) matrix.

    Raises:
        ValueError, TypeError: bad features (not 2-D, empty, NaN/Inf, not floating point, bfloat16) or
            parameters, naming the argument.
        hilcore.BackendUnavailable: a backend named explicitly cannot run here; the original's arithmetic
            without the native extension.

    Example:
        >>> import numpy as np, hilcore
        >>> from hilcore.compat import compute_jaccard_distance
        >>> from hilcore.synthetic import reid_features
        >>> features, _, _ = reid_features(20, 15, dim=64, seed=0)    # 300 unit rows
        >>> rerank_dist = compute_jaccard_distance(features, k1=20, k2=6, print_flag=False)
        >>> rerank_dist.shape, rerank_dist.dtype, float(rerank_dist.max())
        ((300, 300), dtype('float32'), 1.0)
        >>> exact = compute_jaccard_distance(features, k1=20, k2=6, print_flag=False, exact=True)
        >>> bool(np.abs(rerank_dist - exact).max() < 1e-5), bool((exact.diagonal() == 0).all())
        (True, True)
    """
    from . import compat_jaccard

    if print_flag:
        print("Computing jaccard distance...")
    start = time.perf_counter()
    if not isinstance(exact, (bool, np.bool_)):
        raise TypeError(f"exact: expected True or False, got {type(exact).__name__}")
    if not isinstance(use_float16, (bool, np.bool_, int)) or isinstance(use_float16, float):
        raise TypeError(f"use_float16: expected True or False, got {type(use_float16).__name__}")
    raw, _ = _arrays.as_tensor(target_features, "target_features")
    raw = raw.detach()
    if raw.dtype == torch.bfloat16 and not exact:
        raise TypeError("target_features: bfloat16 features: the original computes them through NumPy, which has "
                        "no bfloat16 (pass .float(), or exact=True)")
    if exact:  # hilcore's distance validates (and normalises) the features itself
        d = _jaccard_distance(raw, k1, k2, max_distance=None, backend=backend)
        n = d.shape[0]
        if isinstance(d, torch.Tensor):  # CUDA input gives a torch sparse CSR on the GPU
            d = sp.csr_matrix((d.values().cpu().numpy(), d.col_indices().cpu().numpy(),
                               d.crow_indices().cpu().numpy()), shape=(n, n))
        elif not sp.issparse(d):  # CuPy input gives a cupyx CSR
            d = d.get()
        dense = np.ones((n, n), dtype=np.float16 if use_float16 else np.float32)
        coo = d.tocoo()
        dense[coo.row, coo.col] = coo.data
    else:
        # shape, dtype and finiteness (in float32: the original's flat index holds float32 copies)
        xt, _ = _arrays.features(raw, "target_features", normalize=False)
        k1 = _arrays.ranking_length(k1, "k1", xt.shape[0])
        k2 = _arrays.ranking_length(k2, "k2", k1, limit_name="k1")
        _dispatch.check_backend(backend)
        dense = compat_jaccard.dense_jaccard(raw, k1, k2, bool(use_float16), backend)
    if print_flag:
        print(f"Jaccard distance computing time cost: {time.perf_counter() - start}")
    return dense


def _validate_X(est, X, **kw):
    """scikit-learn's own input validation (sets ``n_features_in_``), on versions before and after 1.6."""
    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6
        return est._validate_data(X, **kw)
    return validate_data(est, X, **kw)


class DBSCAN(ClusterMixin, BaseEstimator):
    """scikit-learn's ``DBSCAN``: the same estimator, its precomputed fit on hilcore's code.

    Same constructor, defaults, parameter validation and attributes as ``sklearn.cluster.DBSCAN``. With
    ``metric="precomputed"`` the fit gives exactly scikit-learn's ``labels_``, ``core_sample_indices_`` and
    ``components_`` on any matrix scikit-learn accepts, in any container (NumPy, SciPy CSR/CSC/COO/LIL,
    torch dense/CSR/CSC/COO on CPU or CUDA, CuPy): a point is its own neighbour only when ``X[i, i] <= eps``
    (in sparse input an unstored diagonal entry is 0), repeated CSR entries count each, COO/CSC input is
    summed into CSR first, the comparison is made in scikit-learn's dtype (:mod:`hilcore.compat_dbscan`).
    Dense rows are thresholded in C++ (on a GPU, in row blocks of torch operations), then the clusters come
    from hilcore's union-find; an asymmetric neighbour relation, where scikit-learn's depth-first order
    decides, is handed to scikit-learn. Any other metric hands the whole fit to ``sklearn.cluster.DBSCAN``.

    Args:
        eps, min_samples, metric, metric_params, algorithm, leaf_size, p, n_jobs: scikit-learn's (checked
            by scikit-learn's parameter validation in :meth:`fit`).
        backend: hilcore backend name (checked); not in scikit-learn's signature.

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

    _parameter_constraints: dict = {**_SkDBSCAN._parameter_constraints, "backend": [str]}

    def __init__(self, eps=0.5, *, min_samples=5, metric="euclidean", metric_params=None, algorithm="auto",
                 leaf_size=30, p=None, n_jobs=None, backend: str = "auto"):
        self.eps = eps
        self.min_samples = min_samples
        self.metric = metric
        self.metric_params = metric_params
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.p = p
        self.n_jobs = n_jobs
        self.backend = backend

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.metric == "precomputed"
        tags.input_tags.positive_only = self.metric == "precomputed"  # distances
        tags.input_tags.sparse = True
        return tags

    def _sklearn_fit(self, X, sample_weight):
        params = {k: v for k, v in self.get_params().items() if k != "backend"}
        est = _SkDBSCAN(**params).fit(X, sample_weight=sample_weight)
        for name in ("labels_", "core_sample_indices_", "components_", "n_features_in_", "feature_names_in_"):
            if hasattr(est, name):
                setattr(self, name, getattr(est, name))
        return self

    def fit(self, X, y=None, sample_weight=None):
        """Cluster ``X`` (scikit-learn's ``fit``): with ``metric="precomputed"`` an ``[N, N]`` distance matrix.

        Sets ``labels_`` (int64 NumPy, -1 noise), ``core_sample_indices_`` (int64 NumPy), ``components_``
        (the core samples' rows: scikit-learn's for NumPy / SciPy input, ``X``'s kind for torch and CuPy;
        from a dense CPU matrix copied on first access, see the property) and ``n_features_in_``; returns
        ``self``.
        """
        from . import compat_dbscan as cd
        from sklearn.utils.validation import _check_sample_weight

        self._validate_params()
        _dispatch.check_backend(self.backend)
        if self.metric != "precomputed":
            return self._sklearn_fit(X, sample_weight)
        native = isinstance(X, torch.Tensor) or type(X).__module__.split(".")[0] in ("cupy", "cupyx")
        if native and not isinstance(X, torch.Tensor):  # CuPy: sparse to SciPy, dense to torch on its device
            X = X.get() if type(X).__module__.startswith("cupyx") else torch.from_dlpack(X)
            native = isinstance(X, torch.Tensor)
        if isinstance(X, torch.Tensor) and X.layout != torch.strided:
            X = cd.torch_sparse_to_scipy(X)
            native = False
        ref = X  # the matrix scikit-learn would see (for a fallback)
        prints = None  # fingerprints of X's rows (dense CPU input): components_ is then copied on first access
        if native:
            t = X.detach()
            if t.dim() != 2 or t.shape[0] != t.shape[1]:
                raise ValueError(f"X: expected a square [N, N] precomputed distance matrix, got shape {tuple(t.shape)}")
            if t.shape[0] == 0:
                raise ValueError("X: Found array with 0 sample(s) (shape (0, 0)) while a minimum of 1 is required")
            if t.dtype not in cd._TORCH_TO_NUMPY:
                if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                    raise TypeError(f"X: expected float16/float32/float64 or integer distances, got {t.dtype}")
                t = t.to(torch.float64)
            eps_c = cd.eps_threshold(cd._TORCH_TO_NUMPY[t.dtype], self.eps, sparse=False)
            self.n_features_in_ = int(t.shape[1])
            if t.device.type == "cpu":
                indptr, indices, prints = cd.dense_rows_cpu(t.numpy(), eps_c)
                indptr, indices = torch.from_numpy(indptr), torch.from_numpy(indices)
            else:
                indptr, indices = cd.dense_rows_torch(t, eps_c)
            ref = t.cpu().numpy()
            base = np.empty((t.shape[0], 0), dtype=cd._TORCH_TO_NUMPY[t.dtype])
        else:
            X = _validate_X(self, X, accept_sparse="csr")
            if X.shape[0] != X.shape[1]:
                raise ValueError(f"X: expected a square [N, N] precomputed distance matrix, got shape {X.shape}")
            base = X
            if sp.issparse(X):
                X = cd.sparse_with_diagonal(X)
                if sample_weight is not None:  # scikit-learn sums the weights in its neighbour order
                    from sklearn.neighbors import sort_graph_by_row_values

                    X = sort_graph_by_row_values(X, copy=False, warn_when_not_sorted=False)
                rows = cd.sparse_rows(X, cd.eps_threshold(X.dtype, self.eps, sparse=True))
            else:
                *rows, prints = cd.dense_rows_cpu(X, cd.eps_threshold(X.dtype, self.eps, sparse=False))
            indptr, indices = torch.from_numpy(rows[0]), torch.from_numpy(rows[1])
        n = int(indptr.numel()) - 1
        if sample_weight is None:
            n_neighbors = np.diff(indptr.cpu().numpy())
        else:
            w = _check_sample_weight(sample_weight, base)
            n_neighbors = cd.weighted_counts(cd.split_rows(indptr.cpu().numpy(), indices.cpu().numpy()), w)
        core_np = np.asarray(n_neighbors >= self.min_samples)
        if sample_weight is None and indptr.device.type == "cpu" and _dispatch.has_native():
            labels = cd.labels_native(indptr.numpy(), indices.numpy(), self.min_samples)
        else:
            labels = cd.labels_from_rows(indptr, indices, torch.from_numpy(core_np).to(indptr.device))
            labels = None if labels is None else labels.cpu().numpy()
        if labels is None:  # asymmetric neighbourhoods: scikit-learn's own search order decides
            return self._sklearn_fit(ref, sample_weight)
        self.labels_ = labels.astype(np.intp)
        idx = np.flatnonzero(core_np).astype(np.intp)
        self.core_sample_indices_ = idx
        if prints is not None and idx.size and (not isinstance(X, torch.Tensor) or X.dtype in cd._TORCH_TO_NUMPY):
            self.__dict__.pop("_components", None)
            self._lazy_components = cd.LazyRows(X, idx, prints)
        else:
            self.components_ = self._rows_of(X, idx, n)
        return self

    @property
    def components_(self):
        """The core samples' rows of ``X`` (scikit-learn's attribute), copied from ``X`` on first access.

        scikit-learn copies them in ``fit``; here a dense CPU matrix's rows are copied when first read (the
        pipelines never read them, and the copy is ~0.5 GB at N = 12,000). If ``X`` was changed in place
        since ``fit`` (its rows' fingerprints or a tensor's version differ), the copy raises ``RuntimeError``
        rather than return other rows than scikit-learn's (:class:`hilcore.compat_dbscan.LazyRows`).
        """
        lazy = self.__dict__.get("_lazy_components")
        if lazy is not None:
            self.__dict__["_components"] = lazy.rows()
            del self.__dict__["_lazy_components"]
        try:
            return self.__dict__["_components"]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'components_'") from None

    @components_.setter
    def components_(self, value):
        self.__dict__.pop("_lazy_components", None)
        self.__dict__["_components"] = value

    def __getstate__(self):  # a pickle holds the rows, not X
        if "_lazy_components" in self.__dict__:
            self.components_  # noqa: B018 (materialises)
        return super().__getstate__()

    @staticmethod
    def _rows_of(X, idx: np.ndarray, n: int):
        """The rows ``idx`` of ``X``, in ``X``'s kind (scikit-learn: an empty ``[0, N]`` array when none)."""
        if isinstance(X, torch.Tensor):
            sel = torch.from_numpy(idx).to(X.device)
            return X.detach()[sel]
        if not isinstance(X, np.ndarray) and not sp.issparse(X):  # CuPy
            import cupy

            return X[cupy.asarray(idx)]
        if idx.size == 0:
            return np.empty((0, n))
        return np.ascontiguousarray(X[idx]) if isinstance(X, np.ndarray) else X[idx]  # scikit-learn's .copy()

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X, sample_weight=sample_weight)`` and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_


# ------------------------------------------------------------------ memories (clustercontrast/models/cm.py)
def _momentum_arg(m, name: str = "momentum") -> float:
    """A momentum given as a number or a one-element tensor (cm.py wraps it in ``torch.Tensor([m])``)."""
    if isinstance(m, torch.Tensor):
        if m.numel() != 1:
            raise ValueError(f"{name}: expected one number, got a tensor of shape {tuple(m.shape)}")
        m = m.detach().reshape(()).item()
    if isinstance(m, bool):
        raise TypeError(f"{name}: expected a number in [0, 1], got a bool")
    return _memory._check_momentum(m, name)


def _backend_arg(backend) -> str:
    _dispatch.check_backend(backend)
    if not _dispatch.implements("memory.update", backend):
        raise ValueError(f"backend: expected 'auto' or one of {_dispatch.implemented('memory.update')} (the "
                         f"memory-update kernels), got {backend!r}")
    return backend


def _bank_arg(features, dims: int, name: str) -> torch.Tensor:
    """The memory tensor, detached (same storage), checked: ``[C, D]`` or ``[C, S, D]``, float32/64, contiguous."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor, got {type(features).__name__}")
    shape = "[C, D]" if dims == 2 else "[C, S, D]"
    if features.dim() != dims or 0 in features.shape:
        raise ValueError(f"{name}: expected a non-empty {shape} memory, got shape {tuple(features.shape)}")
    if features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected a float32 or float64 memory, got {features.dtype} "
                        f"(fill it with a .float() tensor)")
    if not features.is_contiguous():
        raise ValueError(f"{name}: the memory must be contiguous (it is updated in place); pass .contiguous()")
    return features.detach()


def _hardest(x: torch.Tensor, t: torch.Tensor, bank: torch.Tensor, sims: torch.Tensor | None = None) -> torch.Tensor:
    """Per class present in ``t``, the index of its least similar sample ``argmin_i <x_i, m[t_i]>`` (first on ties).

    The choice is the argmin of the exact (float64) similarities. ``sims`` are the similarities in the memory's
    precision (the forward's logits ``out[i, t_i]`` when the memory has not changed since); every sample within the
    rounding bound of the dot product (``2 gamma_D ||x_i|| ||m_c||``) of its class minimum is a candidate and only
    the candidates are recomputed in float64, so the answer is exact at the cost of a few rows.
    """
    b, c = x.shape[0], bank.shape[0]
    if sims is None:
        sims = torch.linalg.vecdot(x, bank.index_select(0, t))
    low = torch.full((c,), math.inf, dtype=sims.dtype, device=x.device).scatter_reduce(0, t, sims, "amin")
    d = x.shape[1]
    u = torch.finfo(sims.dtype).eps / 2
    gamma = d * u / (1.0 - d * u)
    uniq = torch.unique(t)
    norms = torch.zeros(c, dtype=sims.dtype, device=x.device)
    norms[uniq] = torch.linalg.vector_norm(bank.index_select(0, uniq), dim=1).to(sims.dtype)
    tol = 2.0 * gamma * norms[t] * torch.linalg.vector_norm(x, dim=1).to(sims.dtype) + 1e-30
    cand = torch.nonzero(sims <= low[t] + tol).view(-1)
    exact = torch.linalg.vecdot(x.index_select(0, cand).double(), bank.index_select(0, t[cand]).double())
    tc = t[cand]
    low64 = torch.full((c,), math.inf, dtype=torch.float64, device=x.device).scatter_reduce(0, tc, exact, "amin")
    pick = torch.where(exact == low64[tc], cand, b)
    first = torch.full((c,), b, dtype=torch.int64, device=x.device).scatter_reduce(0, tc, pick, "amin")
    return first[first < b]


def _update(bank: torch.Tensor, x: torch.Tensor, t: torch.Tensor, momentum: float, mode: str, impl,
            sims: torch.Tensor | None = None) -> None:
    """The momentum update of ``bank`` in place, on the fused kernels (sequential batch-order semantics)."""
    if x.shape[0] == 0:
        return
    if mode == "hard":  # one move per class: towards its hardest sample; distinct rows, so order is moot
        sel = _hardest(x, t, bank, sims)
        x, t = x[sel], t[sel]
    mem = bank if bank.dim() == 3 else bank.unsqueeze(1)
    impl(mem, x.contiguous(), t.contiguous(), momentum)  # the registry's memory.update kernel


class _MemoryFunction(torch.autograd.Function):
    """``out = xn @ m.T`` (mode "all"/"hard") or ``max_s xn . m[c, s]`` (mode "multi"), gradient to ``xn`` through
    the memory as it is when backward runs, then the momentum update of ``m`` (cm.py's CM, CM_Hard, CM_D, EM)."""

    @staticmethod
    def forward(ctx, xn, targets, bank, momentum, mode, impl):
        ctx.bank, ctx.momentum, ctx.mode, ctx.impl = bank, momentum, mode, impl
        ctx.save_for_backward(xn, targets)
        if mode == "multi":
            c, s, d = bank.shape
            scores = xn.mm(bank.view(c * s, d).t()).view(xn.shape[0], c, s)
            out, ctx.slot = scores.max(dim=2)
            return out
        out = xn.mm(bank.t())
        if mode == "hard":  # <x_i, m[y_i]> as the forward saw them, reused in backward if m is unchanged by then
            ctx.sims, ctx.version = out.detach().gather(1, targets.unsqueeze(1)).squeeze(1), bank._version
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xn, targets = ctx.saved_tensors
        bank = ctx.bank
        grad = None
        if ctx.needs_input_grad[0]:
            g = grad_out.to(bank.dtype)
            if ctx.mode == "multi":  # through the slot each (sample, class) took in forward
                grad = torch.zeros_like(xn)
                for s in range(bank.shape[1]):
                    grad += torch.where(ctx.slot == s, g, 0.0).mm(bank[:, s])
            else:
                grad = g.mm(bank)
        sims = ctx.sims if ctx.mode == "hard" and bank._version == ctx.version else None
        _update(bank, xn.detach(), targets, ctx.momentum, ctx.mode, ctx.impl, sims)
        return grad, None, None, None, None, None


def _apply(inputs, indexes, features, momentum, mode: str, dims: int, backend: str, name: str = "features"):
    bank = _bank_arg(features, dims, name)
    x = _memory.batch_features(inputs, bank.shape[-1], bank.device, "inputs")
    y = _memory.batch_targets(indexes, x.shape[0], bank.shape[0], bank.device, "indexes",
                              what="instance" if mode == "em" else "cluster")
    b = _dispatch.resolve("memory.update", _backend_arg(backend), bank.device,
                          name=f"hilcore.compat.{'cm_d' if mode == 'multi' else mode}")
    with torch.autocast(bank.device.type, enabled=False):  # logits and update in the memory's precision
        return _MemoryFunction.apply(x.to(bank.dtype), y, bank, _momentum_arg(momentum),
                                     "all" if mode == "em" else mode, b)


def cm(inputs, indexes, features, momentum=0.5, *, backend: str = "auto") -> torch.Tensor:
    """cm.py's ``cm``: ``inputs @ features.T`` whose backward updates ``features[indexes[i]]`` sample by sample.

    Args:
        inputs: ``[B, D]`` features, L2-normalised by the caller (as in cm.py).
        indexes: ``[B]`` cluster ids in ``[0, C)``.
        features: ``[C, D]`` float32/float64 memory, contiguous, updated in place during backward:
            for i in batch order, ``m[y] <- (mu m[y] + (1 - mu) x_i) / ||.||``.
        momentum: ``mu`` in ``[0, 1]`` (a number or a one-element tensor).
        backend: the update kernel: ``"auto"``, ``"torch"``, ``"native"`` or ``"triton"``.

    Returns:
        ``[B, C]`` similarities in the memory's dtype (autocast does not lower them).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from hilcore.compat import cm
        >>> g = torch.Generator().manual_seed(0)
        >>> features = F.normalize(torch.randn(5, 16, generator=g), dim=1)      # [C, D] memory
        >>> x = F.normalize(torch.randn(4, 16, generator=g), dim=1).requires_grad_()
        >>> y = torch.tensor([0, 2, 2, 4])
        >>> before = features.clone()
        >>> out = cm(x, y, features, momentum=0.5)
        >>> out.shape, torch.allclose(out, x @ before.T)
        (torch.Size([4, 5]), True)
        >>> out.sum().backward()              # the gradient, then the update of rows 0, 2 and 4
        >>> (features != before).any(1).tolist()
        [True, False, True, False, True]
    """
    return _apply(inputs, indexes, features, momentum, "all", 2, backend)


def cm_hard(inputs, indexes, features, momentum=0.5, *, backend: str = "auto") -> torch.Tensor:
    """cm.py's ``cm_hard``: like :func:`cm`, but backward moves each class of the batch once, towards its hardest
    (least similar, ``argmin_i <x_i, m[y]>``, first on ties) sample.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from hilcore.compat import cm_hard
        >>> g = torch.Generator().manual_seed(0)
        >>> features = F.normalize(torch.randn(5, 16, generator=g), dim=1)
        >>> x = F.normalize(torch.randn(4, 16, generator=g), dim=1).requires_grad_()
        >>> y = torch.tensor([0, 2, 2, 4])
        >>> before = features.clone()
        >>> cm_hard(x, y, features, momentum=0.5).sum().backward()
        >>> hard = 1 + int((x.detach()[1:3] @ before[2]).argmin())     # class 2's least similar sample
        >>> torch.allclose(features[2], F.normalize(0.5 * before[2] + 0.5 * x.detach()[hard], dim=0))
        True
    """
    return _apply(inputs, indexes, features, momentum, "hard", 2, backend)


def em(inputs, indexes, features, momentum=0.5, *, backend: str = "auto") -> torch.Tensor:
    """cm.py's ``em`` (instance memory): :func:`cm` with image indices into a ``[N, D]`` memory.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from hilcore.compat import em
        >>> g = torch.Generator().manual_seed(0)
        >>> features = F.normalize(torch.randn(10, 16, generator=g), dim=1)     # [N, D], one row per image
        >>> x = F.normalize(torch.randn(4, 16, generator=g), dim=1).requires_grad_()
        >>> before = features.clone()
        >>> out = em(x, torch.tensor([7, 1, 3, 0]), features)
        >>> out.sum().backward()
        >>> out.shape, (features != before).any(1).nonzero().flatten().tolist()
        (torch.Size([4, 10]), [0, 1, 3, 7])
    """
    return _apply(inputs, indexes, features, momentum, "em", 2, backend)


def cm_d(inputs, indexes, features_d, momentum=0.5, *, backend: str = "auto") -> torch.Tensor:
    """The HIL release's ``cm_d`` on a multi-centre memory ``[C, S, D]`` (its ``features_d``, S = 10).

    Forward: ``out[b, c] = max_s <x_b, m[c, s]>`` (the gradient flows through the chosen slot). Backward: for i in
    batch order, only the slot of ``m[y_i]`` most similar to ``x_i`` at that moment (the lowest on ties) moves,
    ``m[y_i, s] <- (mu m[y_i, s] + (1 - mu) x_i) / ||.||``. The release hard-codes D = 768 and S = 10; any sizes
    work here.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from hilcore.compat import cm_d
        >>> g = torch.Generator().manual_seed(0)
        >>> features_d = F.normalize(torch.randn(5, 3, 16, generator=g), dim=2)   # [C, S, D]
        >>> x = F.normalize(torch.randn(4, 16, generator=g), dim=1).requires_grad_()
        >>> before = features_d.clone()
        >>> out = cm_d(x, torch.tensor([0, 2, 2, 4]), features_d)
        >>> out.shape, torch.allclose(out, torch.einsum("bd,csd->bcs", x, before).amax(2))
        (torch.Size([4, 5]), True)
    """
    return _apply(inputs, indexes, features_d, momentum, "multi", 3, backend, "features_d")


def _weights(ca, b: int, like: torch.Tensor) -> torch.Tensor:
    w = ca if isinstance(ca, torch.Tensor) else torch.as_tensor(np.asarray(ca, dtype=np.float64))
    if not (torch.is_floating_point(w) or w.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"ca: expected numeric per-sample weights, got {w.dtype}")
    if w.dim() > 1 or (w.dim() == 1 and w.shape[0] != b):
        raise ValueError(f"ca: expected one weight per sample, shape ({b},) (or a scalar), got shape {tuple(w.shape)}")
    w = w.to(device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(w.detach()).all()):
        raise ValueError("ca: contains NaN or Inf")
    return w


class _CompatMemory(nn.Module):
    """Shared parts of the cm.py drop-ins: the memory buffer as the pipeline left it, the loss."""

    _mode = "all"

    def __init__(self, num_features, num_samples, temp, momentum, backend):
        super().__init__()
        self.num_features = _arrays.positive_int(num_features, "num_features")
        self.num_samples = _arrays.positive_int(num_samples, "num_samples")
        self.temp = _memory._check_temp(temp)
        self.momentum = _momentum_arg(momentum)
        self.backend = _backend_arg(backend)

    def _buffer(self, name: str, dims: int) -> torch.Tensor:
        """The buffer ``name`` (pipelines replace it: ``memory.features = F.normalize(centres).cuda()``)."""
        f = getattr(self, name)
        if isinstance(f, torch.Tensor) and not f.is_contiguous():
            setattr(self, name, f.contiguous())
            f = getattr(self, name)
        return _bank_arg(f, dims, name)

    def _loss(self, bank, inputs, targets, ca, training_momentum, mode, what="cluster"):
        x = _memory.batch_features(inputs, bank.shape[-1], bank.device, "inputs")
        if x.shape[0] == 0:
            raise ValueError("inputs: expected at least one sample")
        y = _memory.batch_targets(targets, x.shape[0], bank.shape[0], bank.device,
                                  "indexes" if what == "instance" else "targets", what=what)
        mu = self.momentum if training_momentum is None else _momentum_arg(training_momentum, "training_momentum")
        b = _dispatch.resolve("memory.update", self.backend, bank.device, name=f"hilcore.compat.{type(self).__name__}")
        with torch.autocast(bank.device.type, enabled=False):  # loss, logits and update in the memory's dtype
            xn = F.normalize(x.to(bank.dtype), dim=1)
            out = _MemoryFunction.apply(xn, y, bank, mu, mode, b) / self.temp
            if what == "instance":
                p = F.softmax(out, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
                return -p.clamp_min(1e-8).log().mean()
            if what == "soft":  # HIL's Memory: soft targets softmax(z / 10) against log_softmax(z), both with grad
                return -(F.softmax(out / 10, dim=1) * F.log_softmax(out, dim=1)).sum(1).mean()
            if ca is None:
                return F.cross_entropy(out, y)
            return (F.cross_entropy(out, y, reduction="none") * _weights(ca, x.shape[0], out)).mean()

    def extra_repr(self) -> str:
        return (f"num_features={self.num_features}, num_samples={self.num_samples}, temp={self.temp}, "
                f"momentum={self.momentum}, backend={self.backend!r}")


class ClusterMemory(_CompatMemory):
    """Drop-in for ``clustercontrast.models.cm.ClusterMemory`` (and the HIL release's, ``ca`` and
    ``training_momentum`` included), its update on hilcore's fused kernels.

    The pipeline fills ``features`` ``[C, D]`` with the L2-normalised cluster
    centres (assigning the buffer, as cluster-contrast does, is fine). ``forward``
    returns ``cross_entropy(normalize(inputs) @ features.T / temp, targets)``
    (with ``ca``: per-sample losses times ``ca``, averaged); its backward gives
    the input gradient through ``features`` as they are when backward runs, then
    updates them in place: for i in batch order, ``m[y_i] <- (mu m[y_i] +
    (1 - mu) x_i) / ||.||`` (``x_i`` normalised); with ``use_hard`` every class
    of the batch moves once, towards its least similar sample. Loss, gradients
    and memory are those of cm.py's ``CM`` / ``CM_Hard`` loops (to float32
    rounding), computed in the memory's dtype even under autocast.

    Args:
        num_features: D.
        num_samples: C, the number of clusters (cm.py's name).
        temp: temperature.
        momentum: ``mu``, the weight the old memory keeps.
        use_hard: update each class with its hardest sample only (CM_Hard).
        num_centers: when > 0, a zero ``features_d`` buffer ``[C, num_centers, D]``, as the HIL release's
            ClusterMemory registers (``num_centers=10``) for its MCCL loss; this memory's forward does not
            read it (nor does the release's). With 0, ``features_d`` is a registered buffer holding None:
            assigning a tensor to it (as the release's trainer does) or loading a state dict that has it
            makes it a buffer of that shape, so it is saved and ``load_state_dict`` of a release memory
            works either way. See :class:`MultiCenterClusterMemory` for its loss.
        backend: the update kernel, ``"auto"`` (native on CPU, triton on CUDA), ``"torch"``, ``"native"``,
            ``"triton"``.

    Example:
        On a GPU, add ``.cuda()`` to the memory and the features, as the pipelines do.

        >>> import torch, torch.nn.functional as F, hilcore
        >>> from hilcore.compat import ClusterMemory
        >>> from hilcore.synthetic import reid_features
        >>> feats, labels, _ = reid_features(5, 40, dim=32, seed=0, outliers=0.0)   # 5 clusters
        >>> memory = ClusterMemory(32, 5, temp=0.05, momentum=0.2, use_hard=False)
        >>> memory.features = F.normalize(torch.as_tensor(hilcore.cluster_centers(feats, labels)), dim=1)
        >>> f_out = torch.tensor(feats[:16], requires_grad=True)
        >>> loss = memory(f_out, torch.as_tensor(labels[:16]))
        >>> before = memory.features.clone()
        >>> loss.backward()  # gradients, then the momentum update of memory.features
        >>> loss.shape, f_out.grad.shape, bool((memory.features != before).any())
        (torch.Size([]), torch.Size([16, 32]), True)
    """

    def __init__(self, num_features, num_samples, temp=0.05, momentum=0.2, use_hard=False, *, num_centers: int = 0,
                 backend: str = "auto"):
        super().__init__(num_features, num_samples, temp, momentum, backend)
        self.use_hard = bool(use_hard)
        self.register_buffer("features", torch.zeros(self.num_samples, self.num_features))
        s = _arrays.positive_int(num_centers, "num_centers", minimum=0)
        # always a registered buffer: None (not in state_dict) until a tensor is assigned or loaded
        self.register_buffer("features_d", torch.zeros(self.num_samples, s, self.num_features) if s else None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "features_d"
        if self._buffers.get("features_d") is None and isinstance(state_dict.get(key), torch.Tensor):
            # a checkpoint of the HIL release's memory (features_d [C, 10, D]) into one built without it
            self._buffers["features_d"] = torch.empty_like(state_dict[key], device=self.features.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, inputs, targets, ca=None, training_momentum=None):
        """Cluster-contrast loss of ``inputs`` ``[B, D]`` (any float dtype, on the memory's device) with
        ``targets`` ``[B]`` in ``[0, C)``; ``ca`` ``[B]`` optional per-sample weights; ``training_momentum``
        replaces ``momentum`` for this call's update."""
        return self._loss(self._buffer("features", 2), inputs, targets, ca, training_momentum,
                          "hard" if self.use_hard else "all")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", use_hard={self.use_hard}"


class MultiCenterClusterMemory(_CompatMemory):
    """The HIL release's multi-centre cluster memory: buffer ``features_d`` ``[C, S, D]`` (S = 10 there) and the
    loss of its ``cm_d``: ``cross_entropy(max_s normalize(x) . m[c, s] / temp, y)``, whose backward moves, per sample
    in batch order, only the slot of its class most similar to it (see :func:`cm_d`).

    The release fills ``features_d`` with the normalised k-means sub-cluster centres of each cluster
    (:func:`hilcore.subcluster` computes them) and reads it in MCCL (:func:`hilcore.mccl_loss`).

    Example:
        >>> import torch, torch.nn.functional as F, hilcore
        >>> from hilcore.compat import MultiCenterClusterMemory
        >>> from hilcore.synthetic import reid_features
        >>> feats, labels, _ = reid_features(5, 40, dim=32, seed=0, outliers=0.0)
        >>> memory = MultiCenterClusterMemory(32, 5, num_centers=4)
        >>> memory.features_d = F.normalize(torch.as_tensor(hilcore.subcluster(feats, labels, n_sub=3)), dim=2)
        >>> f_out = torch.tensor(feats[:16], requires_grad=True)
        >>> loss = memory(f_out, torch.as_tensor(labels[:16]))
        >>> loss.backward()
        >>> loss.shape, f_out.grad.shape, memory.features_d.shape
        (torch.Size([]), torch.Size([16, 32]), torch.Size([5, 4, 32]))
    """

    def __init__(self, num_features, num_samples, num_centers: int = 10, temp=0.05, momentum=0.2, *,
                 backend: str = "auto"):
        super().__init__(num_features, num_samples, temp, momentum, backend)
        self.num_centers = _arrays.positive_int(num_centers, "num_centers")
        self.register_buffer("features_d", torch.zeros(self.num_samples, self.num_centers, self.num_features))

    def forward(self, inputs, targets, ca=None, training_momentum=None):
        """As :meth:`ClusterMemory.forward`, each cluster scored by its best slot."""
        return self._loss(self._buffer("features_d", 3), inputs, targets, ca, training_momentum, "multi")


class ClusterMemory_shared(ClusterMemory):  # noqa: N801 - the HIL release's name
    """The HIL release's ``ClusterMemory_shared`` (one memory both modalities train against): the release's
    ``ClusterMemory`` under its other name, ``features`` ``[C, D]`` and a zero ``features_d`` ``[C, 10, D]``
    registered (``num_centers=10``). Everything else is :class:`ClusterMemory`.

    Example:
        >>> import torch
        >>> from hilcore.compat import ClusterMemory_shared
        >>> memory = ClusterMemory_shared(32, 5)
        >>> sorted(memory.state_dict()), tuple(memory.features_d.shape)
        (['features', 'features_d'], (5, 10, 32))
    """

    def __init__(self, num_features, num_samples, temp=0.05, momentum=0.2, use_hard=False, *, num_centers: int = 10,
                 backend: str = "auto"):
        super().__init__(num_features, num_samples, temp, momentum, use_hard, num_centers=num_centers,
                         backend=backend)


class _InstanceMemory(_CompatMemory):
    """Buffers of the release's instance memories: ``features`` ``[N, D]``, ``labels`` and ``cam`` ``[N]``."""

    _label_dtype = torch.int64

    def __init__(self, num_features, num_samples, num_cluster=None, temp=0.05, momentum=0.2, *,
                 backend: str = "auto"):
        super().__init__(num_features, num_samples, temp, momentum, backend)
        if num_cluster is not None:
            num_cluster = _arrays.positive_int(num_cluster, "num_cluster", minimum=0)
        self.num_cluster = num_cluster
        self.register_buffer("features", torch.zeros(self.num_samples, self.num_features))
        self.register_buffer("labels", torch.zeros(self.num_samples, dtype=self._label_dtype))
        self.register_buffer("cam", torch.zeros(self.num_samples, dtype=self._label_dtype))

    def _batch(self, inputs, indexes):
        bank = self._buffer("features", 2)
        x = _memory.batch_features(inputs, bank.shape[-1], bank.device, "inputs").detach()
        y = _memory.batch_targets(indexes, x.shape[0], bank.shape[0], bank.device, "indexes", what="instance")
        return bank, x.to(bank.dtype), y


class Memory_wise_v3(_InstanceMemory):  # noqa: N801 - the HIL release's name
    """The HIL release's ``Memory_wise_v3``: the instance memory its trainer uses, one vector per image.

    Buffers ``features`` ``[N, D]`` (the pipeline fills it with normalised features), ``labels`` and ``cam``
    ``[N]`` int32 (as the release's). ``forward(inputs, indexes, cameras, neighbor_eps=0.9)`` is the instance
    loss ``mean_i -log max(softmax(normalize(x_i) @ m.T / temp)[idx_i], 1e-8)`` with the per-index momentum
    update of ``em`` inside its backward (renormalised); :meth:`updateEM` is the no-grad update the trainer
    calls after each step, ``m[j] <- (mu m[j] + (1 - mu) x) / ||.||`` in batch order. Both run on the fused
    kernels. The release's camera helpers (``cam2uid_``, ``cam_mem_gen``) are not provided.

    Example:
        >>> import torch
        >>> from hilcore.compat import Memory_wise_v3
        >>> from hilcore.synthetic import reid_features
        >>> feats, _, _ = reid_features(5, 40, dim=32, seed=0)      # 200 unit rows
        >>> memory = Memory_wise_v3(32, 200, 5)
        >>> memory.features = torch.as_tensor(feats).clone()
        >>> x = torch.tensor(feats[:8], requires_grad=True)
        >>> loss = memory(x, torch.arange(8), None)          # each image against its own slot
        >>> loss.backward()
        >>> before = memory.features.clone()
        >>> memory.updateEM(torch.as_tensor(feats[:4]), torch.arange(8, 12))
        >>> loss.shape, (memory.features != before).any(1).nonzero().flatten().tolist()
        (torch.Size([]), [8, 9, 10, 11])
    """

    _label_dtype = torch.int32

    def forward(self, inputs, indexes, cameras=None, neighbor_eps=0.9):
        """Instance loss of ``inputs`` ``[B, D]`` against their own slots ``indexes`` ``[B]`` (``cameras`` and
        ``neighbor_eps`` are accepted and unused, as in the release)."""
        return self._loss(self._buffer("features", 2), inputs, indexes, None, None, "all", what="instance")

    @torch.no_grad()
    def updateEM(self, inputs, indexes) -> None:  # noqa: N802 - the release's name
        """For i in batch order: ``m[j_i] <- (mu m[j_i] + (1 - mu) x_i) / ||.||``, ``x_i`` as given (not
        normalised first, as in the release)."""
        bank, x, y = self._batch(inputs, indexes)
        b = _dispatch.resolve("memory.update", self.backend, bank.device,
                              name=f"hilcore.compat.{type(self).__name__}.updateEM")
        _update(bank, x, y, self.momentum, "all", b)


class Memory(_InstanceMemory):
    """The HIL release's ``cm.Memory``: an instance memory with a soft loss and an update that does not
    renormalise.

    Buffers ``features`` ``[N, D]``, ``labels`` and ``cam`` ``[N]`` int64. ``forward(inputs, indexes,
    cameras, symmetric=False)``: with ``z = normalize(x) @ m.T / temp`` (through ``em``, whose backward
    moves ``m[idx_i]`` towards ``x_i`` and renormalises, in batch order), the loss is
    ``mean_i -sum_c softmax(z_i / 10)_c log_softmax(z_i)_c``, gradients through both factors (the release
    divides the em output in place, so both read ``z``). The release's forward also averages the logits per
    pseudo label into a tensor it never uses; that is skipped. :meth:`updateEM` is
    ``m[j] <- mu m[j] + (1 - mu) x`` in batch order, without renormalising (as the release's).

    Example:
        >>> import torch
        >>> from hilcore.compat import Memory
        >>> from hilcore.synthetic import reid_features
        >>> feats, _, _ = reid_features(5, 40, dim=32, seed=0)
        >>> memory = Memory(32, 200, 5)
        >>> memory.features = torch.as_tensor(feats).clone()
        >>> loss = memory(torch.tensor(feats[:8], requires_grad=True), torch.arange(8), None)
        >>> memory.updateEM(torch.as_tensor(feats[:2]), torch.tensor([9, 9]))
        >>> f = torch.as_tensor(feats)
        >>> m9 = 0.2 * (0.2 * f[9] + 0.8 * f[0]) + 0.8 * f[1]      # twice, in order, not renormalised
        >>> loss.shape, torch.allclose(memory.features[9], m9)
        (torch.Size([]), True)
    """

    def forward(self, inputs, indexes, cameras=None, symmetric=False):
        """Soft instance loss of ``inputs`` ``[B, D]`` (``indexes`` ``[B]`` their slots, updated in backward);
        ``cameras`` and ``symmetric`` are accepted and unused, as in the release."""
        return self._loss(self._buffer("features", 2), inputs, indexes, None, None, "all", what="soft")

    @torch.no_grad()
    def updateEM(self, inputs, indexes) -> None:  # noqa: N802 - the release's name
        """For i in batch order: ``m[j_i] <- mu m[j_i] + (1 - mu) x_i`` (no renormalisation), vectorised in
        rounds (round r applies the r-th occurrence of every index), so repeated indexes apply in order."""
        from .backend.torch.memory import occurrence

        bank, x, y = self._batch(inputs, indexes)
        if x.shape[0] == 0:
            return
        occ = occurrence(y)
        for r in range(int(occ.max()) + 1):
            sel = occ == r
            rows = y[sel]
            bank[rows] = self.momentum * bank[rows] + (1.0 - self.momentum) * x[sel]
