"""Fused exact kNN in Triton: tiles of the product with a running top-k per row.

The similarity matrix is never formed: each program holds ``BLOCK_M`` query
rows and their best ``KP`` candidates in registers while it sweeps the
database in tiles of ``BLOCK_N`` columns. On CPU the kernels run under the
Triton interpreter (``TRITON_INTERPRET=1`` set before triton is imported).

Two paths give the same answer, the exact top-k of the float32 similarities:

- ``fp32``: one kernel, IEEE float32 ``tl.dot`` (FFMA, no tensor cores).
- ``fp16`` (the default when ``k`` leaves room for candidates): float16
  candidates on tensor cores, float32 rescoring and a per-row certificate;
  rows that cannot be certified go through the ``fp32`` kernel. Per row
  ``p_i = fl16(x_i)`` (round to nearest), residual ``e_i = x_i - p_i`` (exact
  in float32). ``_knn_cand_kernel`` keeps the ``KC`` best columns per row by
  ``a_ij``, the tensor-core value of ``p_i . p_j`` (float16 products are exact
  in float32; float32 accumulation). ``_knn_rescore_kernel`` computes
  ``ê_ij = fl32(x_i . x_j)`` for them, keeps the best k by ``ê`` (self first,
  then similarity descending, then index ascending) and certifies the row when
  no other column can beat its k-th entry. With ``t_ij = x_i . x_j`` (real),

      |t_ij - p_i . p_j| <= ||x_i|| ||e_j|| + ||e_i|| ||p_j||
      |a_ij - p_i . p_j| <= G_tc ||p_i|| ||p_j||,  G_tc = 2.02 D 2^-22
      |ê_ij - t_ij|      <= γ_D ||x_i|| ||x_j||,   γ_D = D u / (1 - D u), u = 2^-24

  G_tc assumes only that the tensor core adds each (exact) product and the
  accumulator with at most 2^-22 relative truncation error of the largest
  operand of the step (measured hardware truncates at 2^-23, Fasi et al.,
  PeerJ CS 2021); every partial sum is at most ||p_i|| ||p_j|| (Cauchy-Schwarz),
  and there are at most 2D operands in all. With EN, NP, NX the database maxima
  of ||e_j||, ||p_j||, ||x_j|| (upper bounds from float32 sums of squares),

      B_i = ||x_i|| EN + ||e_i|| NP + G_tc ||p_i|| NP + γ_D ||x_i|| NX
            + 2^-22 (||p_i|| NP + 1) + 1e-6

  bounds ``|ê_ij - a_ij|`` for every column (the 2^-22 term covers the float32
  rounding of the threshold ``c_i + B_i`` in the kernel), rounded up to float32.
  Every column outside the candidates has ``a_ij <= c_i``, the smallest kept
  candidate value, so ``ê_ij <= c_i + B_i``: the row is certified iff its k-th
  value ``ê > c_i + B_i`` (strict, or a lower index could tie its way in), or
  iff fewer than ``KC`` columns exist (all are candidates). A float16 overflow
  makes B infinite or NaN: every row is uncertified and answered in fp32.

The column sweep is split over a second grid axis when there are fewer row tiles
than twice the SMs; the rescoring kernel merges the splits' lists (the ``KC``
best keys of all splits: every dropped column is below the merged minimum).

The rescoring kernel also serves candidates found by another library
(:func:`rescore_candidates`, used by the ``faiss_gpu`` and ``cuvs`` backends):
the same certificate with the bound of :func:`foreign_bounds` (the library's
inner products may come from TF32-rounded inputs), and a row is certified only
if each candidate's library value lies within ``B_i`` of its fp32 value (for the
fp16 pass that holds by the bound itself).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._core import interpreting
from ..._device import on_device
from ..._info import info_arg
from ._tiles import dot_tile, dot_tile_f16

# Largest k served by the kernel; larger k goes to the torch backend.
MAX_K = 256

# Keys: a candidate is (ordered float bits) << 32 | (2^31 - 1 - idx), so a larger
# key is a better neighbour (higher similarity, then lower index). Empty slots
# of the running list start at _KEY_EMPTY + 1 + slot (distinct, below every real
# key); padded tile entries and spent candidates are _KEY_EMPTY.
_KEY_EMPTY = tl.constexpr(-(2**63))
_HI_SELF = tl.constexpr(2**31 - 1)  # above the ordered bits of every finite float (+inf is 0x7F800000)
# every real key (high word > -2^31) is >= _KEY_VALID; empty slots are below it
_KEY_VALID = tl.constexpr(-(2**63) + 2**32)


@triton.jit
def _ordered_bits(s):
    """float32 -> int32 with the same order (-0.0 and +0.0 both map to 0): the high word of a key."""
    bits = s.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, (bits ^ 0x7FFFFFFF) + 1, bits)


@triton.jit
def _keep_best(best, cand, KP: tl.constexpr):
    """Merge the tile keys ``cand`` [BM, BN] into the running KP best keys ``best`` [BM, KP] of each row:
    as many rounds as the most keys of one row that beat its current worst, each moving the row's largest
    remaining tile key into the slot of its worst kept key when larger. Returns the new ``best``."""
    worst = tl.min(best, axis=1)
    beats = tl.sum((cand > worst[:, None]).to(tl.int32), axis=1)
    rounds = tl.minimum(tl.max(beats, axis=0), KP)
    for _ in range(rounds):
        c = tl.max(cand, axis=1)
        cand = tl.where(cand == c[:, None], _KEY_EMPTY, cand)
        worst = tl.min(best, axis=1)
        swap = (best == worst[:, None]) & (c > worst)[:, None]
        best = tl.where(swap, c[:, None], best)
    return best


# _knn_topk_kernel
# Layout: x [N, D] and y [M, D] float32, rows L2-normalised, unit stride along D
#   (row strides given); out_idx [N, K] int64 and out_sim [N, K] float32, unit
#   stride along K. In self-search (SELF) the launcher passes y = x.
# Program pid owns query rows [pid*BLOCK_M, (pid+1)*BLOCK_M). For every tile of
#   BLOCK_N database rows it forms the [BLOCK_M, BLOCK_N] similarity tile with
#   tl.dot over BLOCK_K chunks of D (IEEE fp32, no TF32) and turns it into int64
#   keys. The running best KP keys per row ([BLOCK_M, KP], unordered) absorb the
#   tile by replace-the-minimum: the tile's best remaining key replaces the row's
#   worst kept key while it is larger. The loop runs at most
#   max_row #{tile keys > row's worst} times (capped at KP), so a tile that
#   beats no row's k-th best costs only the dot and two reductions. At the end K
#   max-extractions emit the list best first.
# Self-search: the key of (i, i) gets the highest float field, so row i is its
#   own rank 0; its reported similarity is the one computed in the tile.
# GATHER: the query rows are qid[0..N) (int64 row numbers of x, the rows the
#   certificate of the fp16 path left over); row qid[r] is read, is its own
#   self and is written at output row qid[r]. Otherwise the rows are 0..N.
# Preconditions: 1 <= K <= KP, K <= M, N and M < 2^31, block sizes powers of two
#   with BLOCK_M, BLOCK_N, BLOCK_K >= 16 (tl.dot), no NaN inputs.
@triton.jit
def _knn_topk_kernel(x_ptr, y_ptr, idx_ptr, sim_ptr, qid_ptr, N, M, D, K,
                     stride_x, stride_y, stride_o,
                     SELF: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GATHER: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    if GATHER:
        rows = tl.load(qid_ptr + rows, mask=row_ok, other=0).to(tl.int32)
    rows64 = rows.to(tl.int64)

    slot = tl.arange(0, KP).to(tl.int64)
    best = tl.zeros([BLOCK_M, KP], dtype=tl.int64) + (slot + (_KEY_EMPTY + 1))[None, :]
    self_sim = tl.zeros([BLOCK_M], dtype=tl.float32)

    for n0 in range(0, M, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < M
        cols64 = cols.to(tl.int64)
        s = dot_tile(x_ptr, y_ptr, rows64, row_ok, cols64, col_ok, D, stride_x, stride_y,
                     BLOCK_M, BLOCK_N, BLOCK_K)

        # float bits -> int32 with the same order (-0.0 and +0.0 both map to 0)
        hi = _ordered_bits(s)
        if SELF:
            is_self = rows[:, None] == cols[None, :]
            self_sim += tl.sum(tl.where(is_self, s, 0.0), axis=1)
            hi = tl.where(is_self, _HI_SELF, hi)
        lo = (0x7FFFFFFF - cols).to(tl.int64)  # equal sims: the lower index wins
        cand = (hi.to(tl.int64) << 32) | lo[None, :]
        cand = tl.where(row_ok[:, None] & col_ok[None, :], cand, _KEY_EMPTY)

        best = _keep_best(best, cand, KP)

    # emit best first: K max-extractions, idx from the low word, sim from the high
    out = rows64 * stride_o
    for j in range(K):
        top = tl.max(best, axis=1)
        best = tl.where(best == top[:, None], _KEY_EMPTY, best)
        hi = (top >> 32).to(tl.int32)
        lo = (top - (hi.to(tl.int64) << 32)).to(tl.int32)
        bits = tl.where(hi < 0, (hi - 1) ^ 0x7FFFFFFF, hi)
        sim = bits.to(tl.float32, bitcast=True)
        if SELF:
            sim = tl.where(j == 0, self_sim, sim)
        tl.store(idx_ptr + out + j, (0x7FFFFFFF - lo).to(tl.int64), mask=row_ok)
        tl.store(sim_ptr + out + j, sim, mask=row_ok)


# _knn_prep_kernel: per row r of a [N, D] float32 (unit stride along D, row
#   stride given), ah[r, :D] = fl16(a[r]) (round to nearest) and ah[r, D:DP] = 0
#   (ah [N, DP] contiguous float16), and the float32 sums of squares of a[r],
#   p = float(ah[r]) and e = a[r] - p (exact) into sq [3, N].
@triton.jit
def _knn_prep_kernel(a_ptr, ah_ptr, sq_ptr, N, D, DP, stride_a,
                     BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    sx = tl.zeros([BLOCK_R], dtype=tl.float32)
    sp = tl.zeros([BLOCK_R], dtype=tl.float32)
    se = tl.zeros([BLOCK_R], dtype=tl.float32)
    for d0 in range(0, DP, BLOCK_D):
        kk = d0 + tl.arange(0, BLOCK_D)
        a = tl.load(a_ptr + rows64[:, None] * stride_a + kk[None, :],
                    mask=row_ok[:, None] & (kk < D)[None, :], other=0.0)
        h = a.to(tl.float16)
        tl.store(ah_ptr + rows64[:, None] * DP + kk[None, :], h, mask=row_ok[:, None] & (kk < DP)[None, :])
        p = h.to(tl.float32)
        e = a - p
        sx += tl.sum(a * a, axis=1)
        sp += tl.sum(p * p, axis=1)
        se += tl.sum(e * e, axis=1)
    tl.store(sq_ptr + rows64, sx, mask=row_ok)
    tl.store(sq_ptr + N + rows64, sp, mask=row_ok)
    tl.store(sq_ptr + N + N + rows64, se, mask=row_ok)  # no int32 2 * N


# _knn_cand_kernel: the candidate pass of the fp16 path.
# Layout: xh [N, DP], yh [M, DP] float16 contiguous, DP a multiple of BLOCK_K,
#   zero-padded; keys [N, S, KP] int64 (S = the grid's second axis).
# Program (pid, sp) owns query rows [pid*BLOCK_M, (pid+1)*BLOCK_M) and the column
#   range [sp*COLS, min(M, (sp+1)*COLS)) (COLS a multiple of BLOCK_N). It sweeps
#   that range in tiles of BLOCK_N columns, s = the tensor-core tile of p_i . p_j,
#   and keeps the best KP keys per row exactly like _knn_topk_kernel (self key
#   forced to the top). It writes the KP kept keys unordered (slots never filled
#   stay below _KEY_VALID).
@triton.jit
def _knn_cand_kernel(xh_ptr, yh_ptr, key_ptr, N, M, DP, COLS,
                     SELF: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    sp = tl.program_id(1)
    n_split = tl.num_programs(1)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)

    slot = tl.arange(0, KP).to(tl.int64)
    best = tl.zeros([BLOCK_M, KP], dtype=tl.int64) + (slot + (_KEY_EMPTY + 1))[None, :]
    c_lo = sp * COLS
    c_hi = tl.minimum(M, c_lo + COLS)
    for n0 in range(c_lo, c_hi, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < c_hi
        s = dot_tile_f16(xh_ptr, yh_ptr, rows64, row_ok, cols.to(tl.int64), col_ok, DP, DP, DP,
                         BLOCK_M, BLOCK_N, BLOCK_K)
        hi = _ordered_bits(s)
        if SELF:
            hi = tl.where(rows[:, None] == cols[None, :], _HI_SELF, hi)
        lo = (0x7FFFFFFF - cols).to(tl.int64)
        cand = (hi.to(tl.int64) << 32) | lo[None, :]
        cand = tl.where(row_ok[:, None] & col_ok[None, :], cand, _KEY_EMPTY)
        best = _keep_best(best, cand, KP)
    out = rows64[:, None] * (n_split * KP) + sp * KP + slot[None, :]
    tl.store(key_ptr + out, best, mask=row_ok[:, None])


# _knn_rescore_kernel: rescoring and certificate of the fp16 path for BLOCK_R
#   query rows per program. keys [N, NCAND] int64 (NCAND = S * KP candidate keys
#   per row, CP = next power of two >= NCAND); bound [N] float32 (B_i); out_idx
#   [N, K] int64, out_sim [N, K] float32 (unit stride along K); cert [N] int8.
# The KC best keys of a row (all of them when CP == KC) are its candidates,
#   c = the approximate value of the smallest (-inf when it is an empty slot:
#   then fewer than KC columns exist and every column is a candidate). Their
#   float32 dot products with the query row (BLOCK_D chunks of D, gathered
#   candidate rows) become exact keys (self on top), and K max-extractions emit
#   the list best first. The row is certified iff its K-th entry is the row
#   itself (K = 1) or its value is > fl32(c + B_i) and (CHECK: candidates from
#   another library) every candidate's approximate value lies within B_i of its
#   fp32 value (for the fp16 pass that holds by the bound itself).
@triton.jit
def _knn_rescore_kernel(x_ptr, y_ptr, key_ptr, bound_ptr, idx_ptr, sim_ptr, cert_ptr,
                        N, D, K, NCAND, stride_x, stride_y, stride_o,
                        SELF: tl.constexpr, KC: tl.constexpr, CP: tl.constexpr, BLOCK_R: tl.constexpr,
                        BLOCK_D: tl.constexpr, CHECK: tl.constexpr = False):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    offs = tl.arange(0, CP)
    keys = tl.load(key_ptr + rows64[:, None] * NCAND + offs[None, :],
                   mask=row_ok[:, None] & (offs < NCAND)[None, :], other=_KEY_EMPTY)
    if CP > KC:
        keys = tl.topk(keys, KC, dim=1)
    tau = tl.min(keys, axis=1)
    valid = (keys >= _KEY_VALID) & row_ok[:, None]
    hi = (keys >> 32).to(tl.int32)
    lo = (keys - (hi.to(tl.int64) << 32)).to(tl.int32)
    cols = tl.where(valid, (0x7FFFFFFF - lo).to(tl.int64), 0)

    tau_hi = (tau >> 32).to(tl.int32)
    tau_bits = tl.where(tau_hi < 0, (tau_hi - 1) ^ 0x7FFFFFFF, tau_hi)
    c = tl.where(tau >= _KEY_VALID, tau_bits.to(tl.float32, bitcast=True), float("-inf"))
    if SELF:
        c = tl.where(tau_hi == _HI_SELF, float("inf"), c)  # cannot happen for KC >= 2: fail safe

    kd = tl.arange(0, BLOCK_D)
    acc = tl.zeros([BLOCK_R, KC], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        kk = d0 + kd
        k_ok = kk < D
        xv = tl.load(x_ptr + rows64[:, None] * stride_x + kk[None, :], mask=row_ok[:, None] & k_ok[None, :],
                     other=0.0)
        yv = tl.load(y_ptr + cols[:, :, None] * stride_y + kk[None, None, :],
                     mask=valid[:, :, None] & k_ok[None, None, :], other=0.0)
        acc += tl.sum(yv * xv[:, None, :], axis=2)

    ehi = _ordered_bits(acc)
    if SELF:
        ehi = tl.where(cols == rows64[:, None], _HI_SELF, ehi)
    ex = (ehi.to(tl.int64) << 32) | (0x7FFFFFFF - cols)
    ex = tl.where(valid, ex, _KEY_EMPTY)

    out = rows64 * stride_o
    last = tl.zeros([BLOCK_R], dtype=tl.float32)
    last_self = row_ok & False
    for j in range(K):
        top = tl.max(ex, axis=1)
        sel = ex == top[:, None]
        ex = tl.where(sel, _KEY_EMPTY, ex)
        col = tl.max(tl.where(sel, cols, -1), axis=1)
        sim = tl.max(tl.where(sel, acc, float("-inf")), axis=1)
        tl.store(idx_ptr + out + j, col, mask=row_ok)
        tl.store(sim_ptr + out + j, sim, mask=row_ok)
        last = sim
        last_self = col == rows64
    bnd = tl.load(bound_ptr + rows64, mask=row_ok, other=0.0)
    thr = c + bnd
    ok = last > thr
    if CHECK:
        # another library's candidate values must lie within B_i of their fp32 values (the bound assumes
        # it; for the fp16 pass it holds by the bound itself): a row where one does not is not certified
        a_bits = tl.where(hi < 0, (hi - 1) ^ 0x7FFFFFFF, hi)
        off = valid & (hi != _HI_SELF) & (tl.abs(acc - a_bits.to(tl.float32, bitcast=True)) > bnd[:, None])
        ok = ok & (tl.max(off.to(tl.int32), axis=1) == 0)
    if SELF:
        ok = ok | last_self
    tl.store(cert_ptr + rows64, ok.to(tl.int8), mask=row_ok)


def _blocks(kp: int, d: int, interpret: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) for padded k ``kp`` and width ``d``."""
    if interpret:
        # every block op is one numpy call: few programs and few tiles run fastest
        return 32, 64, max(16, min(64, triton.next_power_of_2(d))), 1
    # the running list is [BLOCK_M, KP] int64 in registers: fewer rows for large k
    bm = 64 if kp <= 64 else (32 if kp <= 128 else 16)
    # 32-column tiles, 8 warps: <= 128 registers, no spills at KP <= 256 on sm_80/sm_90 (gpu_static.py)
    return bm, 32, 32, 8


def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None, *,
        precision: str = "auto", info: dict | None = None,
        stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN of the rows of ``x`` among the rows of ``y`` (or of ``x``).

    Args:
        x: ``[N, D]`` float32, contiguous, rows L2-normalised; CUDA, or CPU
            under ``TRITON_INTERPRET=1``.
        k: neighbours per row, ``1 <= k <= M``; ``k > MAX_K`` (256) is served by
            the torch backend with the same semantics.
        y: optional ``[M, D]`` database like ``x``; ``None`` is self-search
            (each row is its own rank 0).
        precision: ``"auto"`` (float16 tensor-core candidates with a certificate
            when ``candidates(k) <= MAX_KC``, else fp32), ``"fp16"`` (the same) or
            ``"fp32"`` (the IEEE float32 kernel alone); an internal knob for tests and
            benchmarks: every choice returns the exact answer.
        info: optional dict that receives what the call did: ``precision``,
            ``rows``, ``candidates`` (KC), ``splits``, ``uncertified_rows`` (rows
            answered by the fp32 kernel).
        stats: deprecated name of ``info`` (DeprecationWarning).

    Returns:
        ``(idx, sim)``: ``[N, k]`` int64 and ``[N, k]`` float32 on ``x.device``,
        best first (similarity descending, ties to the lower index).

    Example:
        On a CPU, set ``TRITON_INTERPRET=1`` before triton is imported.

        >>> import torch, hilcore
        >>> from hilcore.backend.triton.knn import knn
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # needs CUDA or TRITON_INTERPRET=1
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.nn.functional.normalize(torch.randn(50, 32, generator=g), dim=1).to(device)
        >>> idx, sim = knn(x, 4)
        >>> idx.shape, idx.dtype, sim.dtype, bool((idx[:, 0] == torch.arange(50, device=device)).all())
        (torch.Size([50, 4]), torch.int64, torch.float32, True)
        >>> bool((idx.cpu() == hilcore.knn(x.cpu(), 4, backend="torch")[0]).all())
        True
    """
    info = info_arg(info, stats, "hilcore.backend.triton.knn.knn")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.float32:
        raise ValueError("x: expected a 2-D float32 torch tensor [N, D]")
    if y is not None and (not isinstance(y, torch.Tensor) or y.dim() != 2 or y.dtype != torch.float32):
        raise ValueError("y: expected a 2-D float32 torch tensor [M, D] or None")
    db = x if y is None else y
    if db.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} columns like x, got shape {tuple(db.shape)}")
    if db.device != x.device:
        raise ValueError(f"y: expected the same device as x ({x.device}), got {db.device}")
    n, d = x.shape
    m = db.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m:
        raise ValueError(f"k: expected an integer in [1, {m}], got {k!r}")
    if n >= 2**31 or m >= 2**31:
        raise ValueError(f"x: expected fewer than 2^31 rows, got N={n}, M={m}")
    if k > MAX_K:
        try:
            from ..torch.knn import knn as torch_knn
        except ImportError:
            raise ValueError(f"k: the triton kNN kernel supports k <= {MAX_K}, got {k}") from None
        return torch_knn(x, k, y)
    interpret = interpreting()
    if x.device.type != "cuda" and not interpret:
        raise ValueError(f"x: the triton kNN needs a CUDA tensor (or TRITON_INTERPRET=1 on CPU), "
                         f"got device {x.device}")
    if precision not in ("auto", "fp16", "fp32"):
        raise ValueError(f"precision: expected 'auto', 'fp16' or 'fp32', got {precision!r}")
    x = x.contiguous()
    db = x if y is None else db.contiguous()
    kc = candidates(k)
    use_fp16 = precision != "fp32" and kc <= MAX_KC
    with on_device(x):  # launch on x's GPU whatever the current device is
        if not use_fp16:
            if info is not None:
                info.update(precision="fp32", rows=n, uncertified_rows=0)
            return _exact(x, db, k, y is None)
        return _fp16_path(x, db, k, kc, y is None, interpret, info)


# candidates of the fp16 path: KC = next power of two >= k + max(8, k / 4), at most MAX_KC
MAX_KC = 256
# the triton interpreter has no SMs: split the column sweep as if the device had this many
INTERPRET_SMS = 1
_U = 2.0**-24  # float32 unit roundoff



def candidates(k: int) -> int:
    """KC, the candidates kept per row by the fp16 pass for ``k`` neighbours."""
    return triton.next_power_of_2(k + max(8, k // 4))


def _sm_count(x: torch.Tensor, interpret: bool) -> int:
    if interpret or x.device.type != "cuda":
        return INTERPRET_SMS
    return torch.cuda.get_device_properties(x.device).multi_processor_count


def _exact(x, db, k, self_search, rows=None, idx=None, sim=None):
    """The fp32 kernel for all rows of x, or (GATHER) for the rows ``rows`` written into idx/sim."""
    n, d = x.shape
    m = db.shape[0]
    kp = triton.next_power_of_2(k)
    bm, bn, bk, warps = _blocks(kp, d, interpreting())
    if idx is None:
        idx = torch.empty((n, k), dtype=torch.int64, device=x.device)
        sim = torch.empty((n, k), dtype=torch.float32, device=x.device)
    nq = n if rows is None else rows.numel()
    grid = (triton.cdiv(nq, bm),)
    _knn_topk_kernel[grid](x, db, idx, sim, idx if rows is None else rows, nq, m, d, k,
                           x.stride(0), db.stride(0), idx.stride(0),
                           SELF=self_search, KP=kp, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GATHER=rows is not None,
                           num_warps=warps, num_stages=1 if interpreting() else 2)
    return idx, sim


def _tc_blocks(kc: int, d: int, interpret: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the candidate kernel for KC ``kc``, width ``d``."""
    if interpret:
        return 32, 64, max(16, min(64, triton.next_power_of_2(d))), 1
    # [BLOCK_M, KC] + [BLOCK_M, BLOCK_N] int64 keys in registers: <= 128 registers and no
    # spills on sm_80 and sm_90 for every KC (benchmarks/gpu_static.py, tests/test_gpu_static.py)
    if kc <= 32:
        return 64, 64, 64, 8
    if kc <= 64:
        return 64, 32, 64, 8
    return (32 if kc <= 128 else 16), 64, 64, 8


def _splits(row_tiles: int, m: int, bn: int, kc: int, sms: int) -> int:
    """Column splits: enough programs for 2 per SM, >= 4 column tiles each, <= 512 merged keys."""
    if row_tiles >= 2 * sms:
        return 1
    s = min(triton.cdiv(2 * sms, row_tiles), max(1, m // (4 * bn)), max(1, 512 // kc))
    return max(1, s)


def _rescore_blocks(cp: int, kc: int, d: int, interpret: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_D, num_warps) of the rescoring kernel."""
    if interpret:
        return 32, max(16, min(128, triton.next_power_of_2(d))), 1
    return 1, max(16, min(128, 4096 // kc)), 4


def _round_up_f32(v: torch.Tensor) -> torch.Tensor:
    f = v.to(torch.float32)
    return torch.where(f.to(torch.float64) < v, torch.nextafter(f, torch.tensor(float("inf"), device=f.device)), f)


def _norms_up(sq: torch.Tensor, d: int) -> torch.Tensor:
    """Upper bounds (float64) of the norms whose float32 sums of d squares are ``sq``: |err| <= γ_{d+1} sum."""
    g = (d + 1) * _U / (1.0 - (d + 1) * _U)
    return torch.sqrt(sq.to(torch.float64) * (1.0 + 2.0 * g)) * (1.0 + 2.0**-50)


def _prep(a: torch.Tensor, dp: int, interpret: bool):
    n, d = a.shape
    ah = torch.empty((n, dp), dtype=torch.float16, device=a.device)
    sq = torch.empty((3, n), dtype=torch.float32, device=a.device)
    br = 16 if interpret else 4
    bd = max(16, min(128, triton.next_power_of_2(dp)))
    _knn_prep_kernel[(triton.cdiv(n, br),)](a, ah, sq, n, d, dp, a.stride(0), BLOCK_R=br, BLOCK_D=bd,
                                           num_warps=1 if interpret else 4)
    return ah, _norms_up(sq, d)


def bounds(d: int, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """B_i (float32, rounded up) from the norm bounds ``[3, N]`` (x, p, e) of the queries and ``ys`` of the database."""
    xn, pn, en = xs[0], xs[1], xs[2]
    big_x, big_p, big_e = ys.max(dim=1).values
    g_tc = 2.02 * d * 2.0**-22
    g_d = d * _U / (1.0 - d * _U)
    b = (xn * big_e + en * big_p + g_tc * pn * big_p + g_d * xn * big_x
         + 2.0**-22 * (pn * big_p + 1.0) + 1e-6)
    return _round_up_f32(b * (1.0 + 1e-12))


def _fp16_path(x, db, k, kc, self_search, interpret, info):
    n, d = x.shape
    m = db.shape[0]
    bm, bn, bk, warps = _tc_blocks(kc, d, interpret)
    dp = triton.cdiv(d, bk) * bk
    xh, xs = _prep(x, dp, interpret)
    yh, ys = (xh, xs) if self_search else _prep(db, dp, interpret)
    bound = bounds(d, xs, ys)

    row_tiles = triton.cdiv(n, bm)
    n_split = _splits(row_tiles, m, bn, kc, _sm_count(x, interpret))
    cols = triton.cdiv(triton.cdiv(m, n_split), bn) * bn
    n_split = triton.cdiv(m, cols)
    keys = torch.empty((n, n_split * kc), dtype=torch.int64, device=x.device)
    _knn_cand_kernel[(row_tiles, n_split)](xh, yh, keys, n, m, dp, cols,
                                           SELF=self_search, KP=kc, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                           num_warps=warps, num_stages=1 if interpret else 2)

    ncand = n_split * kc
    cp = triton.next_power_of_2(ncand)
    br, bd, rwarps = _rescore_blocks(cp, kc, d, interpret)
    idx = torch.empty((n, k), dtype=torch.int64, device=x.device)
    sim = torch.empty((n, k), dtype=torch.float32, device=x.device)
    cert = torch.empty(n, dtype=torch.int8, device=x.device)
    _knn_rescore_kernel[(triton.cdiv(n, br),)](x, db, keys, bound, idx, sim, cert, n, d, k, ncand,
                                               x.stride(0), db.stride(0), idx.stride(0),
                                               SELF=self_search, KC=kc, CP=cp, BLOCK_R=br, BLOCK_D=bd,
                                               num_warps=rwarps)
    bad = torch.nonzero(cert == 0).flatten()  # the one host sync
    if bad.numel():
        _exact(x, db, k, self_search, rows=bad, idx=idx, sim=sim)
    if info is not None:
        info.update(precision="fp16", rows=n, candidates=kc, splits=n_split, uncertified_rows=int(bad.numel()))
    return idx, sim


# ------------------------------------------------------------------ candidates from another library
#: relative rounding of the inputs the certificate of foreign candidates allows: 10 explicit mantissa bits
#: (TF32, truncated or rounded), so a library that enables TF32 in its GEMM is still covered.
FOREIGN_INPUT_ROUNDING = 2.0**-10


def foreign_bounds(d: int, xn: torch.Tensor, big_y: float, u_in: float = FOREIGN_INPUT_ROUNDING) -> torch.Tensor:
    """B_i (float32, rounded up) for candidates ranked by another library's inner products.

    ``xn`` [N] upper bounds of ||x_i||, ``big_y`` of max_j ||y_j||. The library's value a_ij is assumed
    to be the float32 sum, in any order, of products of inputs each rounded with relative error at most
    ``u_in`` (float32: 0; TF32: 2^-10): ``|a_ij - t_ij| <= (2 u_in + u_in^2 + γ_{D+1} (1 + u_in)^2)
    ||x_i|| ||y_j||``, and its selection exact on its own values. With the rescoring's
    ``|ê_ij - t_ij| <= γ_D ||x_i|| ||y_j||``, every column j the library left out has
    ``ê_ij <= c_i + B_i`` (c_i the smallest library value kept), plus 2^-22 (||x_i|| NY + 1) for the
    float32 rounding of ``c_i + B_i`` in the kernel and 1e-6 of slack."""
    g1 = (d + 1) * _U / (1.0 - (d + 1) * _U)
    g = d * _U / (1.0 - d * _U)
    lib = 2.0 * u_in + u_in * u_in + g1 * (1.0 + u_in) ** 2
    xy = xn.to(torch.float64) * float(big_y)
    b = (lib + g) * xy + 2.0**-22 * (xy + 1.0) + 1e-6
    return _round_up_f32(b * (1.0 + 1e-12))


def _norms64(a: torch.Tensor) -> torch.Tensor:
    """Upper bounds of the row norms: float64 sums of the (exact) float64 squares, rounded up."""
    return torch.sqrt((a.to(torch.float64) ** 2).sum(dim=1)) * (1.0 + 1e-12)


def _ordered_bits_t(v: torch.Tensor) -> torch.Tensor:
    """torch twin of _ordered_bits: float32 -> int32 with the same order."""
    bits = v.contiguous().view(torch.int32)
    return torch.where(bits < 0, (bits ^ 0x7FFFFFFF) + 1, bits)


def rescore_candidates(x: torch.Tensor, db: torch.Tensor, k: int, cand_idx, cand_sim, self_search: bool, *,
                       input_rounding: float = FOREIGN_INPUT_ROUNDING, info: dict | None = None,
                       stats: dict | None = None):
    """The exact top-k from another library's candidates (faiss-GPU, cuVS): fp32 rescoring, certificate.

    Args:
        x, db: ``[N, D]`` / ``[M, D]`` float32 rows, L2-normalised (``db is x`` in self-search), on the
            device the kernels run on (CUDA, or CPU under ``TRITON_INTERPRET=1``).
        k: neighbours per row, ``1 <= k <= M``.
        cand_idx, cand_sim: ``[N, C]`` the library's best columns per row and its inner products, best
            first, ``C = min(M, candidates(k))`` (any array torch.as_tensor takes).
        self_search: row i must be its own rank 0.
        input_rounding: the input rounding the bound allows (:func:`foreign_bounds`).
        info: receives ``candidates``, ``rows``, ``uncertified_rows``.
        stats: deprecated name of ``info`` (DeprecationWarning).

    Returns:
        ``(idx, sim)`` exactly as :func:`knn` returns them (the exact ranking of the float32
        similarities, ties to the lower index, self first): the candidates are rescored with the fp32
        kernel, and a row is kept only when its certificate holds; every other row (also a row whose
        candidates are not distinct valid columns sorted best first) goes through the fp32 kernel.
        In self-search a row missing from its own candidates replaces its worst one. ``k`` whose
        ``candidates(k)`` exceeds ``MAX_KC`` is answered by the fp32 kernel alone.
    """
    info = info_arg(info, stats, "hilcore.backend.triton.knn.rescore_candidates")
    n, d = x.shape
    m = db.shape[0]
    kc = candidates(k)
    if kc > MAX_KC:
        idx, sim = knn(x, k, None if self_search else db, precision="fp32")
        if info is not None:
            info.update(candidates=0, rows=n, uncertified_rows=n)
        return idx, sim
    want = min(m, kc)
    ci = torch.as_tensor(cand_idx, device=x.device).to(torch.int64)
    cv = torch.as_tensor(cand_sim, device=x.device).to(torch.float32)
    if ci.shape != (n, want) or cv.shape != (n, want):
        raise ValueError(f"cand_idx, cand_sim: expected shape {(n, want)}, got {tuple(ci.shape)} and {tuple(cv.shape)}")
    with on_device(x):
        # what the certificate relies on, checked: distinct valid columns, finite values, best first
        ok = ((ci >= 0) & (ci < m)).all(dim=1) & torch.isfinite(cv).all(dim=1)
        if want > 1:
            srt = ci.sort(dim=1).values
            ok &= (srt[:, 1:] != srt[:, :-1]).all(dim=1) & (cv[:, :-1] >= cv[:, 1:]).all(dim=1)
        ci = ci.clamp(0, m - 1).contiguous()  # a row that is not ok is answered by the fp32 kernel
        hi = _ordered_bits_t(cv)
        if self_search:
            rows = torch.arange(n, device=x.device)
            lost = ~(ci == rows[:, None]).any(dim=1)  # a duplicate of row i may have taken its place
            worst = cv.argmin(dim=1)  # every column left out stays <= the smallest value kept
            ci[lost, worst[lost]] = rows[lost]
            hi = torch.where(ci == rows[:, None], torch.full_like(hi, 2**31 - 1), hi)
        keys = (hi.to(torch.int64) << 32) | (2**31 - 1 - ci)
        if want < kc:  # every column is a candidate: empty slots below every real key
            empty = (-(2**63) + 1 + torch.arange(want, kc, device=x.device)).expand(n, kc - want)
            keys = torch.cat([keys, empty], dim=1)
        keys = keys.contiguous()
        bound = foreign_bounds(d, _norms64(x), float(_norms64(db).max()), input_rounding)
        bound = torch.where(ok, bound, torch.full_like(bound, float("inf")))

        interpret = interpreting()
        br, bd, rwarps = _rescore_blocks(kc, kc, d, interpret)
        idx = torch.empty((n, k), dtype=torch.int64, device=x.device)
        sim = torch.empty((n, k), dtype=torch.float32, device=x.device)
        cert = torch.empty(n, dtype=torch.int8, device=x.device)
        _knn_rescore_kernel[(triton.cdiv(n, br),)](x, db, keys, bound, idx, sim, cert, n, d, k, kc,
                                                   x.stride(0), db.stride(0), idx.stride(0),
                                                   SELF=self_search, KC=kc, CP=kc, BLOCK_R=br, BLOCK_D=bd,
                                                   CHECK=True, num_warps=rwarps)
        bad = torch.nonzero(cert == 0).flatten()
        if bad.numel():
            _exact(x, db, k, self_search, rows=bad, idx=idx, sim=sim)
    if info is not None:
        info.update(candidates=kc, rows=n, uncertified_rows=int(bad.numel()))
    return idx, sim
