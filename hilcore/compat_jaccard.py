"""The dense Jaccard matrix of the widely used ``compute_jaccard_distance``, its arithmetic kept, fast.

``hilcore.compat.compute_jaccard_distance`` returns this by default. The steps and their precision are those
of the original (SpCL / cluster-contrast ``faiss_rerank.py``; slow reference: ``hilcore.ref.compat_jaccard``):

1. ranking: a flat L2 index on the float32 copies of the features as given, the row itself first. Rows of
   unit norm (within 1e-5) go to hilcore's exact cosine kNN (the same order up to float32 near-ties); other
   rows (unnormalised, float16, ...) to an exact blocked L2 search here;
2. k-reciprocal expansion sets (the sets of hilcore's Jaccard stage 1, in C++: ``_native.compat_expansion_sets``,
   equal to the torch stages' ``expansion``; integer sets, no rounding);
3. weights ``softmax(-(2 - 2 x_i . x_E))`` by the very ``torch.mm`` / ``F.softmax`` calls of the original, one
   row at a time on the features' device and dtype (a batched product could round differently), then V in
   float32 (float16 with ``use_float16``);
4. query expansion in ranking order, summed in float32 one row at a time, divided in float64 and rounded
   to float32 (then float16), as ``np.mean`` does (in C++: ``_native.compat_query_expansion``);
5. ``m(i, j)`` summed in ascending t in the matrix dtype, ``1 - m / (2 - m)`` one operation at a time in
   that dtype, negative values set to 0, in C++ (``_native.compat_dense_jaccard``).

Rows with the same expanded set and neighbours give ``m`` close to 1, and ``1 - m / (2 - m)`` is then a
tiny positive (float32 rounding of ``m`` below 1) or 0: the original's matrix holds these and so does this
one, which is what a percentile eps computed from the matrix sees.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import _arrays
from ._dispatch import native_module
from .knn import knn_tensors

#: Rows whose float32 norm is within this of 1 are "normalised": ranked by hilcore's cosine kNN.
UNIT_TOL = 1e-5
# Elements of one [block, N] distance tile of the L2 search.
_TILE = 1 << 24


def _l2_rank(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, k]`` int64: ascending squared L2 distance of float32 rows (``||y||^2 - 2 x.y``; ``||x||^2`` is
    the same along a row), the row itself first, ties to the lower index."""
    from .backend.torch.knn import _select

    n = x.shape[0]
    sq = (x * x).sum(1)
    out = torch.empty((n, k), dtype=torch.int64, device=x.device)
    block = max(1, min(n, _TILE // max(n, 1)))
    for s in range(0, n, block):
        e = min(n, s + block)
        score = 2.0 * torch.mm(x[s:e], x.t()) - sq  # larger is nearer
        rows = torch.arange(e - s, device=x.device)
        score[rows, rows + s] = float("inf")
        out[s:e] = _select(score, k)[1]
    return out


def ranking(x: torch.Tensor, k1: int, backend: str = "auto") -> torch.Tensor:
    """The original's ``initial_rank[:, :k1]`` for features ``x`` as given (see the module docstring)."""
    xf = x.to(torch.float32)
    norms = torch.linalg.vector_norm(xf, dim=1)
    if x.dtype in (torch.float32, torch.float64) and bool(((norms - 1).abs() <= UNIT_TOL).all()):
        xn, _ = _arrays.features(x, "target_features")
        return knn_tensors(xn, k1, None, backend)[0]
    return _l2_rank(xf.contiguous(), k1)


def _weights(x: torch.Tensor, eptr: torch.Tensor, eidx: torch.Tensor, mat: np.dtype) -> np.ndarray:
    """V's values, as the original computes them: ``F.softmax(-(2 - 2 x_i . x_E))`` with the same torch calls
    (so the same bits). The product runs row by row (MKL's bits depend on the shapes, and on torch's thread
    count, left as the caller set it) on the rows ``x_E`` gathered into one reused buffer (the values, layout
    and alignment of the original's fresh ``x[E]``, without fresh memory per row: first touches of new pages
    are what a gather costs most on a VM); ``-(2 - 2 s)`` is element-wise (the same two roundings per element
    however many run together); the softmax runs once per group of rows with the same expanded-set size
    (torch's softmax of an ``[R, K]`` tensor is row by row the softmax of each ``[1, K]`` row). Cast to the
    matrix dtype as NumPy casts."""
    sizes = (eptr[1:] - eptr[:-1]).tolist()
    flat = torch.empty(int(eptr[-1]), dtype=x.dtype, device=x.device)
    buf = torch.empty((max(sizes, default=0), x.shape[1]), dtype=x.dtype, device=x.device)
    blocks = {k: (buf[:k], buf[:k].t()) for k in set(sizes)}  # buf[:k] and its transpose, made once per size
    # per-row views made by one call each: the rows x[i:i + 1], the sets E(i), the [1, k] outputs
    outs = [o.view(1, o.shape[0]) for o in flat.split(sizes)]
    mm, select = torch.mm, torch.index_select
    for xi, ei, oi, k in zip(x.split(1), eidx.to(x.device).split(sizes), outs, sizes):
        if k:
            rows, rows_t = blocks[k]
            select(x, 0, ei, out=rows)
            mm(xi, rows_t, out=oi)
    neg = -(2 - 2 * flat)
    out = torch.empty_like(neg)
    sizes = eptr[1:] - eptr[:-1]
    for k in torch.unique(sizes).tolist():
        if k == 0:
            continue
        rows = torch.nonzero(sizes == k).flatten().to(x.device)
        pos = (eptr[:-1].to(x.device)[rows].unsqueeze(1) + torch.arange(k, device=x.device)).reshape(-1)
        out[pos] = F.softmax(neg[pos].view(-1, k), dim=1).reshape(-1)
    return out.cpu().numpy().astype(mat)


def dense_jaccard(x: torch.Tensor, k1: int, k2: int, use_float16: bool, backend: str = "auto") -> np.ndarray:
    """The original's dense matrix for features ``x`` (torch, as given, detached), k1/k2 already clamped."""
    nat = native_module()
    if nat is None or not hasattr(nat, "compat_dense_jaccard"):
        from ._dispatch import BackendUnavailable

        raise BackendUnavailable("hilcore.compat.compute_jaccard_distance: the original's arithmetic needs the "
                                 "native extension (pip install builds it); exact=True runs without it")
    n = x.shape[0]
    mat = np.dtype(np.float16 if use_float16 else np.float32)
    rank = ranking(x, k1, backend).cpu()
    eptr, eidx = (torch.from_numpy(a) for a in nat.compat_expansion_sets(rank.contiguous().numpy(), k1))
    vals = _weights(x, eptr, eidx, mat)
    if not np.isfinite(vals).all():  # |x|^2 beyond the dtype's range: the original's weights are NaN too
        raise ValueError("target_features: the original's arithmetic overflows on these features (x_i . x_j "
                         "beyond the range of their dtype gives NaN weights, in the original too); normalise "
                         "the features first, or pass exact=True for hilcore's distance")
    # V' = V at k2 = 1; zeros dropped either way (the original's support is V' != 0; float16 can round to 0)
    qptr, qidx, v = nat.compat_query_expansion(eptr.numpy(), eidx.numpy(), vals.astype(np.float32),
                                               rank[:, :k2].contiguous().numpy(), bool(use_float16))
    return nat.compat_dense_jaccard(qptr, qidx, v, n, bool(use_float16))
