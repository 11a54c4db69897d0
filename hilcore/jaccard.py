"""Sparse k-reciprocal Jaccard distance (the re-ranking distance of cluster-contrast ReID)."""
from __future__ import annotations

import math

import scipy.sparse as sp
import torch

from . import _arrays, _dispatch, _progress
from ._core import SparseRows, half_k  # noqa: F401  (re-exported)
from ._info import Stopwatch


def jaccard_rows(x: torch.Tensor, k1: int, k2: int, max_distance: float, impl: _dispatch.Impl,
                 timings: dict | None = None) -> SparseRows:
    """Internal entry on a validated, normalised float32 tensor. k1, k2 already clamped.

    ``impl`` is the resolved ``jaccard_distance`` pipeline (its ``knn`` and
    ``stages`` parts). With ``timings``, the measured seconds of each part are
    stored in it (``knn``, ``stages``; the native stages add their own sub-stages
    as ``stages.<name>``), the device synchronised around each. Each part's start is reported to
    :mod:`hilcore._progress` (``"knn"``, ``"stages"``; the kNN backends report their tiles).
    """
    sw = Stopwatch(timings, x.device)
    _progress.report("knn", 0, 0)
    with sw("knn"):
        rank, _ = impl.part("knn")(x, k1, None)
    _progress.report("stages", 0, 0)
    if timings is None:
        indptr, indices, data = impl.part("stages")(x, rank, k1, k2, max_distance)
    else:
        sub: dict = {}
        with sw("stages"):
            indptr, indices, data = impl.part("stages")(x, rank, k1, k2, max_distance, timings=sub)
        timings.update({f"stages.{k}": v for k, v in sub.items()})
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
                     backend: str = "auto", info: dict | None = None):
    """k-reciprocal Jaccard distance, sparse.

    The semantics are those of docs/design.md (and of the widely used
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
        backend: ``"auto"``, ``"torch"``, ``"native"``, ``"triton"`` or ``"cuda"``. The
            distance is a pipeline, a kNN then the k-reciprocal stages: ``"triton"``
            runs the Triton kNN and the CUDA stages (torch ones without the CUDA
            build or on CPU); ``"cuda"`` runs the CUDA stages after the Triton kNN
            (torch without Triton).
        info: optional dict that receives what ran and how long it took:
            ``backend`` (the label, e.g. ``"knn=triton, stages=cuda"``), ``knn``,
            ``stages`` and ``timings`` (measured seconds: ``knn``, ``stages``, their
            native sub-stages ``stages.<name>``, ``output`` and ``total``).

    Returns:
        ``[N, N]`` sparse CSR, float32, sorted indices, symmetric, the diagonal
        stored explicitly as 0 (and exact duplicates stored even at distance 0):
        ``scipy.sparse.csr_matrix`` for CPU input, a torch sparse CSR tensor for
        CUDA torch input, a ``cupyx.scipy.sparse.csr_matrix`` for CuPy input.

    Raises:
        ValueError: ``x`` not 2-D, empty, or with NaN/Inf or all-zero rows;
            ``k1`` / ``k2`` < 1; ``max_distance`` < 0 or NaN.
        TypeError: non-numeric ``x``, non-integer ``k1`` / ``k2``.
        hilcore.BackendUnavailable: ``backend`` named explicitly cannot run here (the message says why).

    Example:
        >>> import numpy as np, hilcore
        >>> x = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
        >>> d = hilcore.jaccard_distance(x, k1=20, k2=6, max_distance=0.6)
        >>> d.shape, float(d.diagonal().max())
        ((200, 200), 0.0)
    """
    if info is not None and not isinstance(info, dict):
        raise TypeError(f"info: expected a dict to receive the diagnostics (or None), got {type(info).__name__}")
    xt, fam = _arrays.features(x, "x")
    n = xt.shape[0]
    k1 = _arrays.ranking_length(k1, "k1", n)
    k2 = _arrays.ranking_length(k2, "k2", k1, limit_name="k1")
    md = math.inf if max_distance is None else _arrays.nonneg_float(max_distance, "max_distance")
    impl = _dispatch.resolve("jaccard_distance", backend, xt.device)
    if info is None:
        return to_output(jaccard_rows(xt, k1, k2, md, impl), fam)
    tm: dict = {}
    sw = Stopwatch(tm, xt.device)
    rows = jaccard_rows(xt, k1, k2, md, impl, tm)
    out = sw.run("output", to_output, rows, fam)
    sw.total("total")
    info.update(backend=impl.label, knn=impl.part("knn").label, stages=impl.part("stages").label, timings=tm)
    return out
