"""Native kNN: BLAS tiles through torch and the C++ running top-k merges.

Every path returns the same bits: the exact top-k of each row under
(``v_ij`` desc, ``j`` asc), the row itself first in self-search, where

    v_ij = dot_f32(x_i, x_j)

is the float32 dot product in the fixed summation order of
``knn_simd::Ops::dot_f32`` (32 FMA partial sums, a fixed reduction tree, an
FMA tail; identical on the AVX2 and the scalar code, a pure function of the
two rows; ``hilcore.ref.knn.dot_f32`` writes it out). The answer depends
neither on the path (fp32 or int8), the tile size, the thread count nor the
number of candidates, and a row's list depends only on the rows, not on the
other queries: :func:`exact_rows` (gathered rows against a database block,
each with its own column) returns the same lists, which is how
:func:`hilcore.distributed.knn` equals :func:`knn` bit for bit.

Both paths take candidates from fast approximate products, rescore them with
``dot_f32`` and certify each row (``knn_rescore``: the own column first, then
the candidates in their approximate order until the next one's approximate
value plus the row's bound ``B_i`` is below the list's k-th exact value,
strictly, so that no column not rescored can enter or tie; a row that runs out
of candidates first is not certified):

- ``fp32``: float32 ``torch.mm`` on ``TILE x TILE`` tiles merged into running
  lists of ``K' = k + extra`` candidates (:func:`default_extra_fp32`) by the
  GEMM value ``g_ij``. With ``t_ij = x_i . x_j`` (real) and IEEE float32
  products and sums in any order (``ieee_fp32`` keeps TF32 / bf16 out),

      |g_ij - t_ij| <= γ_{D+1} ||x_i|| ||x_j||,   |v_ij - t_ij| <= γ_{D+1} ||x_i|| ||x_j||,
      γ_n = n u / (1 - n u),  u = 2^-24,

  so ``B_i = 2 γ_{D+1} ||x_i|| NX + D 2^-120`` (NX = the database's largest norm;
  the last term covers underflow; norms bounded above from float64 sums of
  squares, B_i rounded up to float32, :func:`fp32_bounds`; the arithmetic of
  every kNN certificate lives in :mod:`hilcore._certificate`) bounds
  ``|v_ij - g_ij|`` for every column. Every column outside the candidates has
  ``g_ij <=`` the last candidate's value ``c_i``, hence ``v_ij <= c_i + B_i``.
  An uncertified row (ties, duplicates) takes the exact completion
  (``knn_refine_f32``): its GEMM row against every column again, and every
  column with ``g_ij + B_i >=`` the current k-th value is rescored and merged
  (no other can enter). For unit rows ``B_i`` is about ``2 D 2^-24``
  (3e-5 at D = 256).
- ``int8``: int8 candidates, the same rescoring and certificate with the int8
  bound below, an int8 second pass for the uncertified rows, and the fp32
  path's :func:`exact_rows` for rows that would rescore too many columns. Per row ``x_i ~ p_i = s_i q_i`` with
  ``s_i = max|x_i| / 127`` and ``q_i`` int8; residual ``e_i = x_i - p_i``. The
  int8 product ``q_i . q_j`` is exact in int32 (``D * 127^2 < 2^31``), and
  torch's int8 GEMM runs it about 2-3x faster than the float32 GEMM here. That
  GEMM is ``torch._int_mm``, a private API: :func:`int8_matmul` finds it and
  checks it once against an exact product; where it is missing or wrong the
  int8 path is unavailable and every call takes the fp32 path. The
  tile merges keep ``K' = k + extra`` candidates per row by the approximate
  similarity ``a_ij = fl(fl(s_i s_j) fl(q_i . q_j))``; the C++ rescoring
  computes ``v_ij`` for them and certifies the row when no other column can
  beat its k-th entry:

  Let ``a*_ij = p_i . p_j`` (real). Since
  ``x_i . x_j - p_i . p_j = x_i . e_j + e_i . p_j``,

      |t_ij - a*_ij| <= ||x_i|| ||e_j|| + ||e_i|| ||p_j||
      |a_ij - a*_ij| <= ((1 + u)^3 - 1) |a*_ij| <= 4u ||p_i|| ||p_j||   (three roundings)
      |v_ij - t_ij|  <= γ_D ||x_i|| ||x_j||                              (any summation order)

  so with the database maxima EN = max ||e_j||, NP = max ||p_j||, NX = max ||x_j||,

      B_i = ||x_i|| EN + ||e_i|| NP + 4u ||p_i|| NP + γ_D ||x_i|| NX + 1e-6

  bounds ``|v_ij - a_ij|`` for every column j (1e-6 absorbs underflow of
  ``s_i s_j`` and the double sums of the check). The norms are float64 sums
  rounded up to float32, and B_i is rounded up. An uncertified row gets a second int8 pass against every column:
  each column with ``a_ij + B_i >=`` the row's current k-th value is rescored and
  merged (no other can enter); a row that would rescore more than
  ``max(256, M / 16)`` columns (crowded data) is completed by :func:`exact_rows`.

``precision="auto"`` takes the int8 path for ``D >= 64`` and a database of at
least 4096 rows (and when :func:`int8_matmul` found a working int8 GEMM). The
C++ row kernels of both paths (tile merges, rescoring dot products) run the
AVX2/FMA code on x86-64 CPUs that have it, else portable scalar code with the
same results (``hilcore._native.cpu_features()["knn_path"]``).
``knn(..., info={})`` reports what the call did.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ... import _certificate as cert
from ... import _progress
from ..._dispatch import native_module
from ..._info import Stopwatch
from ..._precision import ieee_fp32

# Square tiles of TILE x TILE similarities (16 MiB in float32 / int32): memory O(TILE x N).
TILE = 2048
# auto: the int8 path from these sizes on (below, the fp32 GEMM is short anyway)
INT8_MIN_DIM = 64
INT8_MIN_ROWS = 4096
# int32 accumulation of D products of int8 in [-127, 127] is exact while D * 127^2 < 2^31
INT8_MAX_DIM = (2**31 - 1) // (127 * 127)

_INT8_MATMUL: list = []  # [] before the first probe, then [the function or None]


def int8_matmul():
    """torch's int8 x int8 -> int32 CPU matrix product, or None where this torch has none that works.

    The product is ``torch._int_mm`` (a private API, so it may change or go): it
    is looked up without failing and checked once on a small product against an
    exact int64 reference; anything missing, raising or wrong gives None (the
    int8 path then falls back to fp32).
    """
    if not _INT8_MATMUL:
        f = getattr(torch, "_int_mm", None)
        ok = False
        if callable(f):
            g = torch.Generator().manual_seed(0)
            a = torch.randint(-127, 128, (37, 96), dtype=torch.int8, generator=g)
            b = torch.randint(-127, 128, (40, 96), dtype=torch.int8, generator=g)
            try:
                got = f(a, b.t().contiguous()[:, 3:35])
                want = a.to(torch.int64) @ b[3:35].to(torch.int64).t()
                ok = got.dtype == torch.int32 and got.shape == want.shape and bool((got.to(torch.int64) == want).all())
            except Exception:  # noqa: BLE001 - any failure of a private API means "not available"
                ok = False
        _INT8_MATMUL.append(f if ok else None)
    return _INT8_MATMUL[0]


def default_extra(k: int, n: int = 0) -> int:
    """The fewest extra candidates per row (K' = k + extra) of the int8 path, for ``n`` query rows: ``2k + 8``.

    :func:`choose_extra` raises it when a sample of rows says most rows would not be certified with it.
    """
    return 2 * k + 8


def max_extra(k: int, n: int) -> int:
    """The most extra candidates :func:`choose_extra` picks: ``8k + 256``, the lists (12 bytes a candidate)
    within 1 GiB for ``n`` rows (never under :func:`default_extra`)."""
    extra = 8 * k + 256
    if n * (k + extra) * 12 > 1 << 30:
        extra = (1 << 30) // (12 * max(n, 1)) - k
    return max(default_extra(k, n), extra)


#: rows :func:`choose_extra` samples (fewer when the database is long: [rows, M] float32 at most 256 MiB; none
#: past 4M columns, where the floor is kept)
CHOOSE_SAMPLE = 64
#: the share of sample rows whose candidate lists :func:`choose_extra` makes long enough to certify
CHOOSE_QUANTILE = 0.9


def choose_extra(x, db, qx, sx, qyT, sy, bound, k: int, self_search: bool, tile: int) -> int:
    """Extra candidates for the int8 pass from a sample of rows: enough that ~90 % of rows certify.

    The int8 bound ``B_i`` is loose (about 0.02 for unit rows at D = 1536-2048): a row certifies only when
    its candidate list reaches past every column with ``a_ij + B_i >= `` its k-th exact value. In data with
    large clusters (SYSU-MM01: ~56 images an identity) ``k + 2k + 8`` candidates do that for almost every
    row; in a dense crowd of small clusters (~15 an identity) most rows then fail and take the second int8
    pass against every column, which costs more than longer lists (the tile merges take their offers in
    batches, ``knn_simd::BatchedList``, and the rescoring stops as soon as the next candidate cannot
    enter). So: evenly spaced sample rows, their approximate rows against every column (int8 products, the
    same tiles), their k-th value from the float32 products of their best approximate candidates, and the
    number of columns within ``B_i`` of it; the 90th percentile, between :func:`default_extra` and
    :func:`max_extra`. Only the time depends on it: every candidate count returns the same bits.
    """
    int_mm = int8_matmul()
    n, m = x.shape[0], db.shape[0]
    lo, hi = default_extra(k, n), max_extra(k, n)
    s = min(CHOOSE_SAMPLE, n, (1 << 26) // max(m, 1))  # [s, M] float32 within 256 MiB
    kk = k - 1 if self_search else k  # the row itself is first, not a competitor
    if hi <= lo or m <= k + lo or s < 16 or n < 4 * s or kk == 0:
        return lo
    rows = torch.linspace(0, n - 1, s).round().to(torch.int64).unique()
    s = rows.numel()
    qs, ss = qx[rows], sx[rows, None]
    a = torch.empty((s, m), dtype=torch.float32)
    for j0 in range(0, m, tile):
        a[:, j0:j0 + tile] = (ss * sy[None, j0:j0 + tile]) * int_mm(qs, qyT[:, j0:j0 + tile]).to(torch.float32)
    if self_search:
        a[torch.arange(s), rows] = float("-inf")
    cand = torch.topk(a, min(m - int(self_search), k + lo), dim=1).indices
    kth = torch.empty(s, dtype=torch.float32)
    g = max(1, min(s, (1 << 27) // (cand.shape[1] * x.shape[1] * 4)))  # gathered rows within 128 MiB
    for r0 in range(0, s, g):  # float32 products of the sample rows' best candidates (an estimate suffices)
        prod = torch.bmm(db[cand[r0:r0 + g]], x[rows[r0:r0 + g]].unsqueeze(2)).squeeze(2)
        kth[r0:r0 + g] = torch.topk(prod, kk, dim=1).values[:, -1]
    within = (a.add_(bound[rows, None]) >= kth[:, None]).sum(1)
    need = int(torch.quantile(within.to(torch.float64), CHOOSE_QUANTILE)) + 1 - kk
    return int(min(hi, max(lo, need)))


@ieee_fp32()  # the float32 tiles stay IEEE (no bf16 / TF32) whatever the caller set
def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None, *, tile: int = TILE, precision: str = "auto",
        extra: int | None = None, info: dict | None = None):
    """Exact cosine kNN of normalised float32 CPU rows ``x [N, D]`` against ``y [M, D]`` (or ``x``).

    Returns ``(idx int64 [N, k], sim float32 [N, k])``, best first by (sim desc,
    index asc), ``sim = dot_f32`` (module docstring): the same bits on every
    path; in self-search each row's own index is first. Self-search
    computes only the tiles on and above the diagonal and merges each
    off-diagonal tile into both its rows and its columns.

    ``precision``: ``"auto"`` (int8 candidates for ``D >= 64`` and ``M >= 4096``,
    else fp32), ``"fp32"`` or ``"int8"`` (falls back to fp32 when ``D`` is too
    large for exact int32 accumulation, or when :func:`int8_matmul` is None). ``extra``: candidates beyond k per row
    (default :func:`choose_extra` on the int8 path, :func:`default_extra_fp32` on the fp32 path). Both are
    internal knobs for tests and benchmarks; every choice returns the same bits.

    ``info``: optional dict that receives what the call did: ``precision``
    ("fp32" or "int8"), ``candidates`` (K'), ``rows``, ``uncertified_rows`` /
    ``uncertified_fraction`` (rows the candidates did not certify: they took the
    second int8 pass, or the fp32 path's exact completion), ``fallback_rows`` /
    ``fallback_fraction`` (int8 rows completed by :func:`exact_rows`), measured stage ``timings``.
    """
    if precision not in ("auto", "fp32", "int8"):
        raise ValueError(f"precision: expected 'auto', 'fp32' or 'int8', got {precision!r}")
    if extra is not None and (not isinstance(extra, int) or extra < 0):
        raise ValueError(f"extra: expected a non-negative int or None, got {extra!r}")
    x = x.to(torch.float32).contiguous()
    db = x if y is None else y.to(torch.float32).contiguous()
    n, d = x.shape
    m = db.shape[0]
    if precision == "auto":
        use_int8 = d >= INT8_MIN_DIM and m >= INT8_MIN_ROWS
    else:
        use_int8 = precision == "int8"
    if use_int8 and (d > INT8_MAX_DIM or int8_matmul() is None):
        use_int8 = False
    if not use_int8 or n == 0:
        return _knn_fp32(x, k, y is None, db, tile, extra, info)
    return _knn_int8(x, k, y is None, db, tile, extra, info)


# ---------------------------------------------------------------------------------------------- fp32


def default_extra_fp32(k: int) -> int:
    """Extra candidates per row (K' = k + extra) of the fp32 path (its bound is far tighter than int8's).

    Few: the rescoring stops once the next candidate cannot enter, so the extra
    candidates cost only in the tile merges (longer sorted lists), and only rows
    with about ``extra`` columns tied within the bound at their k-th value need
    the exact completion.
    """
    return 8 + k // 16


# an own-column id that is no column: outside every database, and safe to subtract column offsets from
NO_SELF = -(2**62)


def _fp32_candidates(x, kc, self_search, db, tile):
    """The kc best columns per row by the float32 GEMM tiles, key (GEMM value desc, index asc), self first."""
    nat = native_module()
    n, m = x.shape[0], db.shape[0]
    best_sim = torch.full((n, kc), float("-inf"), dtype=torch.float32)
    best_idx = torch.full((n, kc), -1, dtype=torch.int64)
    bs, bi = best_sim.numpy(), best_idx.numpy()
    tick = _TileTicker(n, m, tile, self_search)
    if self_search:
        for i0 in range(0, n, tile):
            xi = x[i0:i0 + tile]
            for j0 in range(i0, n, tile):
                s = torch.mm(xi, x[j0:j0 + tile].t())
                nat.knn_topk_merge(s.numpy(), i0, j0, bs, bi, True)
                if j0 != i0:
                    nat.knn_topk_merge(s.t().contiguous().numpy(), j0, i0, bs, bi, True)
                del s
            tick(i0)
    else:
        for i0 in range(0, n, tile):
            xi = x[i0:i0 + tile]
            for j0 in range(0, m, tile):
                s = torch.mm(xi, db[j0:j0 + tile].t())
                nat.knn_topk_merge(s.numpy(), i0, j0, bs, bi, False)
                del s
            tick(i0)
    return best_idx, best_sim


class _TileTicker:
    """Reports the rows of a candidate pass done so far to :mod:`hilcore._progress`, after each row tile:
    ``("knn", rows, N)``, the rows whose candidate lists are complete (in self-search the tiles on and above
    the diagonal are computed, each merged into its rows and its columns, so a row tile's rows are complete
    once it and every tile before it are merged)."""

    def __init__(self, n: int, m: int, tile: int, self_search: bool):
        self.n, self.tile = n, tile

    def __call__(self, i0: int) -> None:
        _progress.report("knn", min(self.n, i0 + self.tile), self.n)


def _norm_up(a: torch.Tensor) -> np.ndarray:
    """Upper bounds (float64) of the row norms of ``a`` (:func:`hilcore._certificate.norms_up`)."""
    return cert.norms_up(a).numpy()


def fp32_bounds(xq: torch.Tensor, db: torch.Tensor) -> np.ndarray:
    """B_i (float32, rounded up) bounding |dot_f32(x_i, y_j) - GEMM(x_i, y_j)| for every column j
    (:func:`hilcore._certificate.gemm_bound` with IEEE float32 inputs: the GEMM runs under ``ieee_fp32``)."""
    d = xq.shape[1]
    nx = float(_norm_up(db).max()) if db.shape[0] else 0.0
    return cert.round_up_f32(cert.gemm_bound(d, _norm_up(xq), nx))


def _rescore_and_certify(xq, db, cand_idx, cand_sim, bound, k, self_search, self_ids):
    nat = native_module()
    n = xq.shape[0]
    best_idx = torch.empty((n, k), dtype=torch.int64)
    best_sim = torch.empty((n, k), dtype=torch.float32)
    certified = torch.empty(n, dtype=torch.uint8)
    nat.knn_rescore(xq.numpy(), db.numpy(), cand_idx.numpy(), cand_sim.numpy(), bound, self_search,
                    best_idx.numpy(), best_sim.numpy(), certified.numpy(),
                    None if self_ids is None else self_ids.numpy())
    return best_idx, best_sim, certified


def _refine_fp32(xq, self_ids, bound, db, best_idx, best_sim, tile):
    """Exact completion of the gathered rows ``xq`` whose lists hold their rescored candidates (in place)."""
    nat = native_module()
    r, m = xq.shape[0], db.shape[0]
    counts = torch.zeros(r, dtype=torch.int64)
    for b0 in range(0, r, tile):
        xb = xq[b0:b0 + tile]
        for j0 in range(0, m, tile):
            s = torch.mm(xb, db[j0:j0 + tile].t())
            nat.knn_refine_f32(s.numpy(), j0, self_ids[b0:b0 + tile].numpy(), bound[b0:b0 + tile], xb.numpy(),
                               db.numpy(), best_sim[b0:b0 + tile].numpy(), best_idx[b0:b0 + tile].numpy(),
                               counts[b0:b0 + tile].numpy())
            del s
    return counts


def _certify_and_complete(xq, db, cand_idx, cand_sim, k, self_search, self_ids, tile, times=None):
    """Rescore the candidates with dot_f32, certify every row, complete the uncertified ones exactly.

    ``self_ids`` (int64 ``[n]`` or None) names each row's own column; with None and
    ``self_search`` row i's own column is i. Returns ``(best_idx, best_sim, uncertified rows)``;
    ``times`` (optional dict) receives the ``rescore`` and ``refine`` seconds.
    """
    sw = Stopwatch(times)
    bound = fp32_bounds(xq, db)
    best_idx, best_sim, cert = _rescore_and_certify(xq, db, cand_idx, cand_sim, bound, k, self_search, self_ids)
    sw.split("rescore")
    failed = torch.nonzero(cert == 0).flatten()
    if failed.numel():
        if self_ids is not None:
            own = self_ids[failed].contiguous()
        else:
            own = failed.clone() if self_search else torch.full_like(failed, NO_SELF)
        fi, fs = best_idx[failed].contiguous(), best_sim[failed].contiguous()
        _refine_fp32(xq[failed].contiguous(), own, np.ascontiguousarray(bound[failed.numpy()]), db, fi, fs, tile)
        best_idx[failed], best_sim[failed] = fi, fs
    sw.split("refine")
    return best_idx, best_sim, int(failed.numel())


def _knn_fp32(x, k, self_search, db, tile, extra=None, info=None):
    """The fp32 path: GEMM candidates, dot_f32 rescoring, certificate, exact completion of the rest."""
    times = {}
    sw = Stopwatch(times)
    n, m = x.shape[0], db.shape[0]
    if n == 0:
        if info is not None:
            info.update(precision="fp32", candidates=0, rows=0, uncertified_rows=0, uncertified_fraction=0.0,
                         fallback_rows=0, fallback_fraction=0.0, timings={})
        return torch.empty((0, k), dtype=torch.int64), torch.empty((0, k), dtype=torch.float32)
    kc = min(m, k + (default_extra_fp32(k) if extra is None else extra))
    cand_idx, cand_sim = _fp32_candidates(x, kc, self_search, db, tile)
    sw.split("candidates")
    best_idx, best_sim, failed = _certify_and_complete(x, db, cand_idx, cand_sim, k, self_search, None, tile, times)
    if info is not None:
        info.update(precision="fp32", candidates=kc, rows=n, uncertified_rows=failed,
                     uncertified_fraction=failed / max(n, 1), fallback_rows=0, fallback_fraction=0.0,
                     timings=times)
    return best_idx, best_sim


def exact_rows(xq: torch.Tensor, k: int, db: torch.Tensor, self_ids: torch.Tensor | None = None, *,
               tile: int = TILE, extra: int | None = None, info: dict | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The native answer for gathered query rows: exact top-k of ``xq [n, D]`` against ``db [m, D]``.

    ``self_ids`` (int64 ``[n]``, optional) is each row's own column in ``db``
    (any value outside ``[0, m)``: none), ranked first. The lists are the top-k
    under (v desc, column asc), ``v = dot_f32`` (see the module docstring), the
    same bits :func:`knn` returns for those rows on the concatenated database:
    float32 GEMM candidates, rescoring, the fp32 certificate, exact completion.
    Used by the fallback of the int8 path and by :func:`hilcore.distributed.knn`
    (one streamed chunk at a time). Returns ``(idx [n, k] int64, sim [n, k] float32)``;
    ``info`` (optional dict) receives ``uncertified_rows`` (rows the exact completion ran for).
    """
    with ieee_fp32():
        xq = xq.to(torch.float32).contiguous()
        db = db.to(torch.float32).contiguous()
        n, m = xq.shape[0], db.shape[0]
        if self_ids is None:
            self_ids = torch.full((n,), NO_SELF, dtype=torch.int64)
        self_ids = self_ids.to(torch.int64).contiguous()
        self_ids = torch.where((self_ids >= 0) & (self_ids < m), self_ids, torch.full_like(self_ids, NO_SELF))
        if info is not None:
            info["uncertified_rows"] = 0
        if n == 0:
            return torch.empty((0, k), dtype=torch.int64), torch.empty((0, k), dtype=torch.float32)
        nat = native_module()
        kc = min(m, k + (default_extra_fp32(k) if extra is None else extra))
        cand_sim = torch.full((n, kc), float("-inf"), dtype=torch.float32)
        cand_idx = torch.full((n, kc), -1, dtype=torch.int64)
        for b0 in range(0, n, tile):
            xb = xq[b0:b0 + tile]
            cs, ci, sid = cand_sim[b0:b0 + tile].numpy(), cand_idx[b0:b0 + tile].numpy(), self_ids[b0:b0 + tile]
            for j0 in range(0, m, tile):
                s = torch.mm(xb, db[j0:j0 + tile].t())
                nat.knn_topk_merge_rows(s.numpy(), sid.numpy(), j0, cs, ci, True)
                del s
        best_idx, best_sim, failed = _certify_and_complete(xq, db, cand_idx, cand_sim, k, True, self_ids, tile)
        if info is not None:
            info["uncertified_rows"] = failed
        return best_idx, best_sim


# ---------------------------------------------------------------------------------------------- int8


def _quantize(nat, a):
    n, d = a.shape
    q = torch.empty((n, d), dtype=torch.int8)
    scale, xnorm, pnorm, enorm = (torch.empty(n, dtype=torch.float32) for _ in range(4))
    nat.knn_quantize(a.numpy(), q.numpy(), scale.numpy(), xnorm.numpy(), pnorm.numpy(), enorm.numpy())
    return q, scale, xnorm, pnorm, enorm


def row_bounds(d, xnorm, pnorm, enorm, db_xnorm, db_pnorm, db_enorm) -> np.ndarray:
    """B_i (float32, rounded up) bounding |rescored - approximate| of row i against every column
    (:func:`hilcore._certificate.quantized_bound` with the int8 candidates' three roundings)."""
    xn, pn, en = (np.asarray(a, np.float64) for a in (xnorm, pnorm, enorm))
    b = cert.quantized_bound(d, xn, pn, en, float(np.max(db_xnorm)), float(np.max(db_pnorm)),
                             float(np.max(db_enorm)), cert.INT8_PRODUCT_ERROR)
    return cert.round_up_f32(b)


def _knn_int8(x, k, self_search, db, tile, extra, info):
    nat = native_module()
    int_mm = int8_matmul()
    n, d = x.shape
    m = db.shape[0]
    times = {}
    sw = Stopwatch(times)
    qx, sx, nx, px, ex = _quantize(nat, x)
    if self_search:
        qy, sy, ny, py, ey = qx, sx, nx, px, ex
    else:
        qy, sy, ny, py, ey = _quantize(nat, db)
    qyT = qy.t().contiguous()  # [D, M]: int_mm(qx[i0:i1], qyT[:, j0:j1]) is the fast layout
    bound = torch.from_numpy(row_bounds(d, nx.numpy(), px.numpy(), ex.numpy(), ny.numpy(), py.numpy(), ey.numpy()))
    sw.split("quantize")
    if extra is None:
        extra = choose_extra(x, db, qx, sx, qyT, sy, bound, k, self_search, tile)
        sw.split("choose_extra")
    kc = min(m, k + extra)

    sw.restart()
    cand_sim = torch.full((n, kc), float("-inf"), dtype=torch.float32)
    cand_idx = torch.full((n, kc), -1, dtype=torch.int64)
    cs, ci = cand_sim.numpy(), cand_idx.numpy()
    sxn, syn = sx.numpy(), sy.numpy()
    tick = _TileTicker(n, m, tile, self_search)
    for i0 in range(0, n, tile):
        qi = qx[i0:i0 + tile]
        for j0 in range(i0 if self_search else 0, m, tile):
            s = int_mm(qi, qyT[:, j0:j0 + tile]).numpy()
            nat.knn_topk_merge_i8(s, i0, j0, sxn, syn, cs, ci, self_search, False)
            if self_search and j0 != i0:
                nat.knn_topk_merge_i8(s, i0, j0, sxn, syn, cs, ci, True, True)
            del s
        tick(i0)
    sw.split("candidates")

    sw.restart()
    best_idx = torch.empty((n, k), dtype=torch.int64)
    best_sim = torch.empty((n, k), dtype=torch.float32)
    certified = torch.empty(n, dtype=torch.uint8)
    n_cert = nat.knn_rescore(x.numpy(), db.numpy(), ci, cs, bound.numpy(), self_search, best_idx.numpy(),
                             best_sim.numpy(), certified.numpy())
    sw.split("rescore")

    # uncertified rows: an int8 pass against every column rescoring each column that
    # could still enter (approx + B_i >= the k-th value); rows that would rescore
    # more than `cap` columns go to the fp32 path
    sw.restart()
    failed = torch.nonzero(certified == 0).flatten()
    n_over = 0
    if failed.numel():
        f = failed.numel()
        ri, rsim = best_idx[failed].contiguous(), best_sim[failed].contiguous()
        qf, sf, bf = qx[failed], sx[failed], bound[failed]
        counts = torch.zeros(f, dtype=torch.int64)
        cap = max(256, m // 16)
        for b0 in range(0, f, tile):
            ids = failed[b0:b0 + tile]
            qb = qf[b0:b0 + tile]
            for j0 in range(0, m, tile):
                s = int_mm(qb, qyT[:, j0:j0 + tile]).numpy()
                nat.knn_refine_i8(s, ids.numpy(), j0, sf[b0:b0 + tile].numpy(), syn, bf[b0:b0 + tile].numpy(),
                                  x.numpy(), db.numpy(), rsim[b0:b0 + tile].numpy(), ri[b0:b0 + tile].numpy(),
                                  self_search, counts[b0:b0 + tile].numpy(), cap)
                del s
        best_idx[failed] = ri
        best_sim[failed] = rsim
        over = failed[counts < 0]
        n_over = over.numel()
        sw.split("refine")
        if n_over:
            fi, fs = exact_rows(x[over], k, db, over if self_search else None, tile=tile)
            best_idx[over] = fi
            best_sim[over] = fs
    sw.split("fallback")
    if info is not None:
        info.update(precision="int8", candidates=kc, rows=n, uncertified_rows=int(n - n_cert),
                     uncertified_fraction=(n - n_cert) / n, fallback_rows=int(n_over),
                     fallback_fraction=n_over / n, timings=times,
                     bound_median=float(np.median(bound.numpy())) if n else math.nan)
    return best_idx, best_sim
