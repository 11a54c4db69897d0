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
  (The arithmetic of B_i, shared with every other kNN, is :mod:`hilcore._certificate`.)

The candidate kernel multiplies 128 x 128 tiles on the tensor cores (sm_90; 128 x 64
on sm_80): operand traffic ``N M D 2 (1/BLOCK_N + 1/BLOCK_M)`` bytes, a third of the
64 x 32 tiles it had before. Its selection never forms an int64 tile of keys: the
float tile stays in the accumulator's registers and ``_keep_best_f`` moves, per
round, each row's next entry in key order into the running list, for as many
rounds as the most entries of one row at or above its current KC-th value. The
column sweep is split over a second grid axis when that lowers waves x column
tiles per program (one CTA per SM); the rescoring kernel merges the splits'
lists (the ``KC`` best keys of all splits: every dropped column is below the
merged minimum). The rescoring reads only the candidates whose approximate value
is at least ``a_(k) - 2 B_i`` (``a_(k)`` the k-th approximate value: a column below
it has ``ê <= a + B_i < a_(k) - B_i <=`` the k-th rescored value, so it cannot enter).
The uncertified rows' fp32 sweep is split over columns too (a 2-D grid of row
tiles x column ranges, then ``_knn_merge_kernel``), so one bad row does not
sweep the database on one SM. ``benchmarks/knn_model.py`` models the cost of
these launches on an H100 (a model, not a measurement; docs/gpu.md).

In self-search (unless the stored tiles below would exceed ``SYM_MAX_BYTES``, ~1 GB at
22,258 rows) the candidate pass multiplies each unordered pair of 128-row blocks once
(``_knn_sym_kernel``, as the native CPU path does): the tile feeds the running lists of its
rows and, off the diagonal, is stored (float32, through a TMA tensor descriptor on sm_90) for
its columns; ``_knn_sym_merge_kernel`` starts from the row-side lists and merges each row's
stored tiles read transposed, leaving the KC best keys per row. Half the products and the
operand loads, for ~N^2 / 2 x 4 bytes written and read back through HBM. The bound is the
same: ``|a_ji - p_i . p_j| <= G_tc ||p_i|| ||p_j||`` is symmetric, so every column still has
``ê_ij <= c_i + B_i`` whichever tile computed its value.

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

try:  # host-side tensor descriptors (Triton >= 3.4): the symmetric pass's tile store needs them
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton: every self-search sweeps the full tiles
    TensorDescriptor = None

from ... import _certificate as cert
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
def _key_value(key):
    """The float32 similarity of a key's high word (``-inf`` for an empty slot, ``+inf`` for the self key)."""
    hi = (key >> 32).to(tl.int32)
    bits = tl.where(hi < 0, (hi - 1) ^ 0x7FFFFFFF, hi)
    v = bits.to(tl.float32, bitcast=True)
    v = tl.where(key >= _KEY_VALID, v, float("-inf"))
    return tl.where(hi == _HI_SELF, float("inf"), v)


@triton.jit
def _keep_best_f(best, s, rows, cols, SELF: tl.constexpr, KP: tl.constexpr):
    """Merge the float tile ``s`` [BM, BN] (columns ``cols``; ``-inf``: no column; ``+inf``: the row itself in
    self-search) into the running KP best keys ``best`` [BM, KP] of each row; returns the new ``best``.

    The tile is only read (it can stay in the accumulator's registers): round r takes each row's largest
    entry below the previous round's in key order (value desc, column asc), makes its key and moves it into
    the slot of the row's worst kept key when larger. The rounds are as many as the most entries of one row
    at or above its worst kept value (capped at KP), so every entry whose key beats the worst is taken."""
    worst = tl.min(best, axis=1)
    wv = _key_value(worst)
    beats = tl.sum(((s > float("-inf")) & (s >= wv[:, None])).to(tl.int32), axis=1)
    rounds = tl.minimum(tl.max(beats, axis=0), KP)
    pv = tl.zeros_like(wv) + float("inf")
    pc = tl.zeros_like(rows) - 1
    for _ in range(rounds):
        below = (s < pv[:, None]) | ((s == pv[:, None]) & (cols[None, :] > pc[:, None]))
        c, j = tl.max(tl.where(below, s, float("-inf")), axis=1, return_indices=True,
                      return_indices_tie_break_left=True)
        ci = tl.min(cols, axis=0) + j  # cols are consecutive
        pv, pc = c, ci
        hi = _ordered_bits(c)
        if SELF:
            hi = tl.where(ci == rows, _HI_SELF, hi)
        key = (hi.to(tl.int64) << 32) | (0x7FFFFFFF - ci).to(tl.int64)
        key = tl.where(c > float("-inf"), key, _KEY_EMPTY)
        worst = tl.min(best, axis=1)
        swap = (best == worst[:, None]) & (key > worst)[:, None]
        best = tl.where(swap, key[:, None], best)
    return best


# _knn_topk_kernel
# Layout: x [N, D] and y [M, D] float32, rows L2-normalised, unit stride along D
#   (row strides given); out_idx [N, K] int64 and out_sim [N, K] float32, unit
#   stride along K. In self-search (SELF) the launcher passes y = x.
# Program (pid, sp) owns query rows [pid*BLOCK_M, (pid+1)*BLOCK_M) and the column
#   range [sp*COLS, min(M, (sp+1)*COLS)). For every tile of BLOCK_N database rows
#   it forms the [BLOCK_M, BLOCK_N] similarity tile with tl.dot over BLOCK_K
#   chunks of D (IEEE fp32, no TF32) and merges it into the running best KP keys
#   per row ([BLOCK_M, KP], unordered) with _keep_best_f, so a tile that beats no
#   row's k-th best costs only the dot and two reductions.
# Without SPLIT (one column range) K max-extractions emit the list best first.
#   With SPLIT the KP kept keys go to keys [N, S, KP] (S = the grid's second
#   axis) and the self similarity to ssim [N] (from the split holding the row's
#   own column); _knn_merge_kernel emits the lists. So an uncertified row of the
#   fp16 path does not sweep the whole database on one SM.
# Self-search: the key of (i, i) gets the highest float field, so row i is its
#   own rank 0; its reported similarity is the one computed in the tile.
# GATHER: the query rows are qid[0..N) (int64 row numbers of x, the rows the
#   certificate of the fp16 path left over); row qid[r] is read, is its own
#   self and is written at output row qid[r] (SPLIT: keys and ssim at r).
#   Otherwise the rows are 0..N.
# Preconditions: 1 <= K <= KP, K <= M, N and M < 2^31, block sizes powers of two
#   with BLOCK_M, BLOCK_N, BLOCK_K >= 16 (tl.dot), no NaN inputs.
@triton.jit
def _knn_topk_kernel(x_ptr, y_ptr, idx_ptr, sim_ptr, qid_ptr, key_ptr, ssim_ptr, N, M, D, K, COLS,
                     stride_x, stride_y, stride_o,
                     SELF: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GATHER: tl.constexpr,
                     SPLIT: tl.constexpr = False):
    pid = tl.program_id(0)
    sp = tl.program_id(1)
    r_loc = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = r_loc < N
    rows = r_loc
    if GATHER:
        rows = tl.load(qid_ptr + r_loc, mask=row_ok, other=0).to(tl.int32)
    rows64 = rows.to(tl.int64)

    slot = tl.arange(0, KP).to(tl.int64)
    best = tl.zeros([BLOCK_M, KP], dtype=tl.int64) + (slot + (_KEY_EMPTY + 1))[None, :]
    self_sim = tl.zeros([BLOCK_M], dtype=tl.float32)
    self_in = row_ok & False

    c_lo = sp * COLS
    c_hi = tl.minimum(M, c_lo + COLS)
    for n0 in range(c_lo, c_hi, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < c_hi
        s = dot_tile(x_ptr, y_ptr, rows64, row_ok, cols.to(tl.int64), col_ok, D, stride_x, stride_y,
                     BLOCK_M, BLOCK_N, BLOCK_K)
        s = tl.where(row_ok[:, None] & col_ok[None, :], s, float("-inf"))
        if SELF:
            is_self = rows[:, None] == cols[None, :]
            self_sim += tl.sum(tl.where(is_self, s, 0.0), axis=1)
            self_in = self_in | (tl.sum(is_self.to(tl.int32), axis=1) > 0)
            s = tl.where(is_self, float("inf"), s)
        best = _keep_best_f(best, s, rows, cols, SELF, KP)

    if SPLIT:
        r64 = r_loc.to(tl.int64)
        out = r64[:, None] * (tl.num_programs(1) * KP) + sp * KP + slot[None, :]
        tl.store(key_ptr + out, best, mask=row_ok[:, None])
        if SELF:
            tl.store(ssim_ptr + r64, self_sim, mask=row_ok & self_in)
    else:
        _emit(best, self_sim, rows64, row_ok, idx_ptr, sim_ptr, stride_o, K, SELF)


@triton.jit
def _emit(best, self_sim, rows64, row_ok, idx_ptr, sim_ptr, stride_o, K, SELF: tl.constexpr):
    """K max-extractions of the keys ``best`` [R, *] into row ``rows64`` of idx/sim, best first: the column
    from the low word, the similarity from the high word (the self key: ``self_sim``)."""
    out = rows64 * stride_o
    for j in range(K):
        top = tl.max(best, axis=1)
        best = tl.where(best == top[:, None], _KEY_EMPTY, best)
        hi = (top >> 32).to(tl.int32)
        lo = (top - (hi.to(tl.int64) << 32)).to(tl.int32)
        bits = tl.where(hi < 0, (hi - 1) ^ 0x7FFFFFFF, hi)
        sim = bits.to(tl.float32, bitcast=True)
        if SELF:
            sim = tl.where(hi == _HI_SELF, self_sim, sim)
        tl.store(idx_ptr + out + j, (0x7FFFFFFF - lo).to(tl.int64), mask=row_ok)
        tl.store(sim_ptr + out + j, sim, mask=row_ok)


# _knn_merge_kernel: the lists of a split _knn_topk_kernel launch. keys [N, NCAND]
#   int64 (the S * KP kept keys of each gathered row r), ssim [N] its self
#   similarity; row r's best K keys are emitted into output row qid[r] (GATHER)
#   or r. CP = next power of two >= NCAND.
@triton.jit
def _knn_merge_kernel(key_ptr, ssim_ptr, idx_ptr, sim_ptr, qid_ptr, N, NCAND, K, stride_o,
                      SELF: tl.constexpr, CP: tl.constexpr, BLOCK_R: tl.constexpr, GATHER: tl.constexpr):
    r_loc = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = r_loc < N
    r64 = r_loc.to(tl.int64)
    offs = tl.arange(0, CP)
    keys = tl.load(key_ptr + r64[:, None] * NCAND + offs[None, :],
                   mask=row_ok[:, None] & (offs < NCAND)[None, :], other=_KEY_EMPTY)
    self_sim = tl.zeros([BLOCK_R], dtype=tl.float32)
    if SELF:
        self_sim = tl.load(ssim_ptr + r64, mask=row_ok, other=0.0)
    rows64 = r64
    if GATHER:
        rows64 = tl.load(qid_ptr + r64, mask=row_ok, other=0)
    _emit(keys, self_sim, rows64, row_ok, idx_ptr, sim_ptr, stride_o, K, SELF)


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
        # no column: -inf (a NaN from a float16 overflow too: its bound is then not finite, the row
        # uncertified); the row itself: +inf
        s = tl.where(row_ok[:, None] & col_ok[None, :] & (s == s), s, float("-inf"))
        if SELF:
            s = tl.where(rows[:, None] == cols[None, :], float("inf"), s)
        best = _keep_best_f(best, s, rows, cols, SELF, KP)
    out = rows64[:, None] * (n_split * KP) + sp * KP + slot[None, :]
    tl.store(key_ptr + out, best, mask=row_ok[:, None])


# _knn_sym_kernel: the candidate pass of the fp16 path in self-search, over the symmetric tiles.
# Layout: xh [N, DP] float16 as for _knn_cand_kernel; keys [N, NK] int64 (NK = S * KP: the lists of the S
#   splits, unordered); tt a tensor descriptor over a float32
#   [NB * HT * BT, BT] buffer (HT = NB // 2), block [BT, BT]: tile slot b * HT + t - 1 holds tile (b, t).
# Row blocks of BT rows, NB = cdiv(N, BT). Program (b, sp) owns block b and sweeps the tiles (b, b + t mod NB)
#   for t in its part [sp*TS, (sp+1)*TS) of 0..T_b, T_b = (NB - 1) // 2, plus NB / 2 when NB is even and
#   b < NB / 2: every unordered pair of blocks exactly once (the diagonal tile at t = 0), as many tiles per
#   block +-1. The tile s = a(p_i . p_j) feeds the running list of its rows (as in _knn_cand_kernel, self key
#   on top) and, off the diagonal, is stored as it is (rows or columns past N: -inf) through the descriptor
#   (TMA on sm_90: from shared memory, no pointer tile in registers) for the lists of its columns. The bound
#   B_i covers the columns' use of it: |a_ij - p_i . p_j| <= G_tc ||p_i|| ||p_j|| is symmetric.
@triton.jit
def _knn_sym_kernel(xh_ptr, key_ptr, tt_desc, N, NB, DP, TS, NK,
                    KP: tl.constexpr, BT: tl.constexpr, BLOCK_K: tl.constexpr):
    b = tl.program_id(0)
    sp = tl.program_id(1)
    rows = b * BT + tl.arange(0, BT)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    q = tl.arange(0, BT)

    slot = tl.arange(0, KP).to(tl.int64)
    best = tl.zeros([BT, KP], dtype=tl.int64) + (slot + (_KEY_EMPTY + 1))[None, :]
    half = NB // 2
    t_end = (NB - 1) // 2 + 1 + ((NB % 2 == 0) & (b < half)).to(tl.int32)
    t_lo = sp * TS
    t_hi = tl.minimum(t_end, t_lo + TS)
    for t in range(t_lo, t_hi):
        j = b + t
        j = j - NB * (j >= NB).to(tl.int32)
        cols = j * BT + q
        col_ok = cols < N
        s = dot_tile_f16(xh_ptr, xh_ptr, rows64, row_ok, cols.to(tl.int64), col_ok, DP, DP, DP, BT, BT, BLOCK_K)
        s = tl.where(row_ok[:, None] & col_ok[None, :] & (s == s), s, float("-inf"))
        if t > 0:  # the diagonal tile is not stored
            tt_desc.store([(b * half + t - 1) * BT, 0], s)
        s = tl.where(rows[:, None] == cols[None, :], float("inf"), s)  # only in the diagonal tile
        best = _keep_best_f(best, s, rows, cols, True, KP)
    tl.store(key_ptr + rows64[:, None] * NK + sp * KP + slot[None, :], best, mask=row_ok[:, None])


@triton.jit
def _keep_best_k(best, cand, KP: tl.constexpr):
    """Merge the keys ``cand`` [R, C] (distinct from the keys of ``best``; below _KEY_VALID: none) into the running
    KP best keys ``best`` [R, KP]; returns the new ``best``. Round r moves each row's r-th largest candidate into
    the slot of its worst kept key when larger, for as many rounds as the most candidates of a row above its
    worst kept key (capped at KP)."""
    worst = tl.min(best, axis=1)
    beats = tl.sum(((cand >= _KEY_VALID) & (cand > worst[:, None])).to(tl.int32), axis=1)
    rounds = tl.minimum(tl.max(beats, axis=0), KP)
    prev = tl.full([cand.shape[0]], 2**63 - 1, tl.int64)
    for _ in range(rounds):
        c = tl.max(tl.where(cand < prev[:, None], cand, _KEY_EMPTY), axis=1)
        prev = c
        worst = tl.min(best, axis=1)
        swap = (best == worst[:, None]) & ((c >= _KEY_VALID) & (c > worst))[:, None]
        best = tl.where(swap, c[:, None], best)
    return best


# _knn_sym_merge_kernel: the lists of _knn_sym_kernel. Program p owns rows [p*BR, (p+1)*BR) (BR divides BT: one
#   block c). It starts from the S row-side lists of its rows (keys [N, S * KP]) and merges the stored tiles
#   (b, c) of the blocks b = c - t mod NB that computed them (t = 1..(NB - 1) // 2, plus NB / 2 when NB is even
#   and c >= NB / 2), read transposed (row r of block c is column r - c * BT of the tile); the KP best keys of
#   every column of the row go to out [N, KP] (unordered).
@triton.jit
def _knn_sym_merge_kernel(tt_ptr, key_ptr, out_ptr, N, NB, S,
                          KP: tl.constexpr, BR: tl.constexpr, BT: tl.constexpr):
    r0 = tl.program_id(0) * BR
    rows = r0 + tl.arange(0, BR)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    q = tl.arange(0, BT)
    c = r0 // BT
    slot = tl.arange(0, KP).to(tl.int64)
    empty = tl.zeros([BR, KP], dtype=tl.int64) + (slot + (_KEY_EMPTY + 1))[None, :]
    row_keys = key_ptr + rows64[:, None] * (S * KP) + slot[None, :]
    best = tl.load(row_keys, mask=row_ok[:, None], other=empty)
    for sp in range(1, S):
        best = _keep_best_k(best, tl.load(row_keys + sp * KP, mask=row_ok[:, None], other=_KEY_EMPTY), KP)
    half = NB // 2
    t_end = (NB - 1) // 2 + 1 + ((NB % 2 == 0) & (c >= half)).to(tl.int32)
    for t in range(1, t_end):
        b = c - t
        b = b + NB * (b < 0).to(tl.int32)
        tile = tt_ptr + (b * half + t - 1).to(tl.int64) * (BT * BT)
        s = tl.load(tile + q[None, :] * BT + (rows - c * BT)[:, None], mask=row_ok[:, None], other=float("-inf"))
        best = _keep_best_f(best, s, rows, b * BT + q, False, KP)
    tl.store(out_ptr + rows64[:, None] * KP + slot[None, :], best, mask=row_ok[:, None])


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

    bnd = tl.load(bound_ptr + rows64, mask=row_ok, other=0.0)
    if not CHECK:
        # a candidate whose approximate value is below a_(K) - 2 B_i cannot enter the top K (its exact value is
        # <= a + B_i < a_(K) - B_i <= the K-th exact value): its row is not read. The threshold is lowered by
        # 2^-22 (|a_(K)| + 1) for its own float32 rounding; a non-finite bound keeps every candidate.
        # the K-th largest key, by K max-extractions (2-D only: a 3-D comparison here trips Triton 3.6's
        # layout pass next to the 3-D gather below)
        rest = keys
        kth = tl.max(rest, axis=1)
        for _ in range(K):
            kth = tl.max(rest, axis=1)
            rest = tl.where(rest == kth[:, None], _KEY_EMPTY, rest)
        kv = _key_value(kth)
        floor = kv - 2.0 * bnd - 2.0**-22 * (tl.abs(kv) + 1.0)
        floor = tl.where((bnd == bnd) & (bnd < float("inf")) & (kv < float("inf")), floor, float("-inf"))
        valid = valid & (_key_value(keys) >= floor[:, None])
        cols = tl.where(valid, cols, 0)

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


def _blocks(kp: int, d: int, interpret: bool, major: int = 9) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the fp32 kernel for padded k ``kp``, width ``d``, compute
    capability ``major``."""
    if interpret:
        # every block op is one numpy call: few programs and few tiles run fastest
        return 32, 64, max(16, min(64, triton.next_power_of_2(d))), 1
    # the running list is [BLOCK_M, KP] int64 in registers: fewer rows for large k; no spills on sm_80 / sm_90
    # under Triton 3.6 and 3.9 at the SYSU-MM01 cases (gpu_static.py; 64 x 64 and 32 x 64 spilled on sm_90
    # under 3.6, 32 x 32 over 4 warps on sm_80)
    if kp <= 64:
        return (32, 32, 32, 4) if major >= 9 else (64, 32, 32, 8)
    return (32 if kp <= 128 else 16), 32, 32, 8


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



def candidates(k: int) -> int:
    """KC, the candidates kept per row by the fp16 pass for ``k`` neighbours."""
    return triton.next_power_of_2(k + max(8, k // 4))


def _cc_major(x: torch.Tensor, interpret: bool) -> int:
    """The compute capability's major number of x's GPU (9 in the interpreter)."""
    if interpret or x.device.type != "cuda":
        return 9
    return torch.cuda.get_device_capability(x.device)[0]


def _sm_count(x: torch.Tensor, interpret: bool) -> int:
    if interpret or x.device.type != "cuda":
        return INTERPRET_SMS
    return torch.cuda.get_device_properties(x.device).multi_processor_count


def _exact(x, db, k, self_search, rows=None, idx=None, sim=None, splits=None):
    """The fp32 kernel for all rows of x, or (GATHER) for the rows ``rows`` written into idx/sim.

    Few row tiles (a handful of uncertified rows) split the column sweep over a second grid axis
    (:func:`_splits`, up to :data:`FALLBACK_KEYS` merged keys per row) and :func:`_knn_merge_kernel` emits the
    lists; ``splits`` forces the number of column ranges (tests)."""
    n, d = x.shape
    m = db.shape[0]
    kp = triton.next_power_of_2(k)
    interpret = interpreting()
    bm, bn, bk, warps = _blocks(kp, d, interpret, _cc_major(x, interpret))
    if idx is None:
        idx = torch.empty((n, k), dtype=torch.int64, device=x.device)
        sim = torch.empty((n, k), dtype=torch.float32, device=x.device)
    nq = n if rows is None else rows.numel()
    row_tiles = triton.cdiv(nq, bm)
    if splits is None:
        splits = _splits(row_tiles, m, bn, kp, _sm_count(x, interpret), FALLBACK_KEYS)
    cols = triton.cdiv(triton.cdiv(m, max(1, splits)), bn) * bn
    splits = triton.cdiv(m, cols)
    qid = idx if rows is None else rows  # any pointer when not gathering
    split = splits > 1
    keys = torch.empty((nq, splits * kp) if split else (1,), dtype=torch.int64, device=x.device)
    ssim = torch.empty(nq if split else 1, dtype=torch.float32, device=x.device)
    _knn_topk_kernel[(row_tiles, splits)](x, db, idx, sim, qid, keys, ssim, nq, m, d, k, cols,
                                          x.stride(0), db.stride(0), idx.stride(0),
                                          SELF=self_search, KP=kp, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                          GATHER=rows is not None, SPLIT=split,
                                          num_warps=warps, num_stages=1 if interpret else 2)
    if split:
        cp = triton.next_power_of_2(splits * kp)
        br, mwarps = (16, 1) if interpret else (1, 4)
        _knn_merge_kernel[(triton.cdiv(nq, br),)](keys, ssim, idx, sim, qid, nq, splits * kp, k, idx.stride(0),
                                                  SELF=self_search, CP=cp, BLOCK_R=br, GATHER=rows is not None,
                                                  num_warps=mwarps)
    return idx, sim


def _tc_blocks(kc: int, d: int, interpret: bool, major: int = 9) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the candidate kernel for KC ``kc``, width ``d``.

    The operand traffic of the column sweep is ``N M D 2 (1/BLOCK_N + 1/BLOCK_M)`` bytes, so the
    tiles are as large as the registers allow: the [BLOCK_M, BLOCK_N] float32 accumulator and the
    [BLOCK_M, KC] int64 running list (benchmarks/gpu_static.py, tests/test_gpu_static.py). On sm_90
    (``major`` 9+, wgmma) 128 x 128 tiles hold both without spilling; on sm_80 (mma.sync) 128 x 64."""
    if interpret:
        return 32, 64, max(16, min(64, triton.next_power_of_2(d))), 1
    if kc <= 64:
        return 128, (128 if major >= 9 else 64), 64, 8
    if kc <= 128:
        return 64, 128, 64, 8
    return 32, 128, 64, 8


#: merged keys per row of a split fp32 sweep (the uncertified rows' fallback)
FALLBACK_KEYS = 4096


def _splits(row_tiles: int, m: int, bn: int, kc: int, sms: int, max_keys: int = 256) -> int:
    """Column splits of a sweep of ``row_tiles`` row tiles over ``m`` columns (tiles of ``bn``): the count that
    minimises waves x column tiles per program with one program per SM (the candidate kernel's registers
    allow one CTA of 8 warps; the fp32 kernel's about the same), fewest on ties, each split >= 4 column
    tiles, <= ``max_keys`` merged keys per row."""
    tiles = triton.cdiv(m, bn)
    best, best_s = None, 1
    for s in range(1, max(1, min(max_keys // kc, tiles // 4)) + 1):
        cost = triton.cdiv(row_tiles * s, sms) * triton.cdiv(tiles, s)
        if best is None or cost < best:
            best, best_s = cost, s
    return best_s


def _rescore_blocks(cp: int, kc: int, d: int, interpret: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_D, num_warps) of the rescoring kernel."""
    if interpret:
        return 32, max(16, min(128, triton.next_power_of_2(d))), 1
    return 1, max(16, min(128, 4096 // kc)), 4


def _norms_up(sq: torch.Tensor, d: int) -> torch.Tensor:
    """Upper bounds (float64) of the norms whose float32 sums of d squares are ``sq``."""
    return cert.norms_up_from_f32_squares(sq, d)


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
    """B_i (float32, rounded up) from the norm bounds ``[3, N]`` (x, p, e) of the queries and ``ys`` of the database
    (:func:`hilcore._certificate.quantized_bound` with the tensor-core accumulation error, threshold rounding
    included)."""
    big_x, big_p, big_e = (float(v) for v in ys.max(dim=1).values)
    b = cert.quantized_bound(d, xs[0], xs[1], xs[2], big_x, big_p, big_e, cert.TENSOR_CORE_PER_DIM * d,
                             threshold=True)
    return cert.round_up_f32(b)


#: self-search of the fp16 path over the symmetric tiles (:func:`_sym_pass`); False: the full sweep
SYMMETRIC = True
#: largest buffer of stored tiles (NB x (NB // 2) tiles of BT x BT float32, ~N^2 / 2 x 4 bytes) the symmetric
#: pass allocates; larger self-searches sweep every tile (_knn_cand_kernel)
SYM_MAX_BYTES = 2 * 2**30


def symmetric(n: int, kc: int, d: int, interpret: bool, major: int = 9) -> bool:
    """Whether the fp16 self-search of ``n`` rows takes the symmetric pass (:data:`SYMMETRIC` and its stored
    tiles within :data:`SYM_MAX_BYTES`, on a Triton with host tensor descriptors)."""
    bm, bn, _, _ = _tc_blocks(kc, d, interpret, major)
    bt = min(bm, bn)
    nb = triton.cdiv(n, bt)
    return SYMMETRIC and TensorDescriptor is not None and nb * (nb // 2) * bt * bt * 4 <= SYM_MAX_BYTES


def _sym_pass(xh, kc: int, bt: int, bk: int, warps: int, sms: int, interpret: bool):
    """The candidate keys of a self-search over the symmetric tiles: ``_knn_sym_kernel`` over (block, split)
    (splits chosen like the full sweep's, over the ~NB / 2 + 1 tiles of a block), then
    ``_knn_sym_merge_kernel``; returns (keys [N, KC], S)."""
    n, dp = xh.shape
    nb = triton.cdiv(n, bt)
    tiles = (nb - 1) // 2 + 1 + (1 if nb % 2 == 0 else 0)  # the most tiles of one block
    n_split = _splits(nb, tiles * bt, bt, kc, sms)
    ts = triton.cdiv(tiles, n_split)
    n_split = triton.cdiv(tiles, ts)
    nk = n_split * kc
    ht = nb // 2
    keys = torch.empty((n, nk), dtype=torch.int64, device=xh.device)
    tt = torch.empty((max(nb * ht, 1) * bt, bt), dtype=torch.float32, device=xh.device)
    desc = TensorDescriptor.from_tensor(tt, [bt, bt])
    # KC = 256 (32-row tiles): 4 warps; 8 spilled 2 instructions on sm_90 under Triton 3.9 (D = 1536)
    _knn_sym_kernel[(nb, n_split)](xh, keys, desc, n, nb, dp, ts, nk, KP=kc, BT=bt, BLOCK_K=bk,
                                   num_warps=warps if interpret or kc <= 128 else 4,
                                   num_stages=1 if interpret else 2)
    out = torch.empty((n, kc), dtype=torch.int64, device=xh.device)
    br, mwarps = (bt, 1) if interpret else (min(bt, 16), 8)
    _knn_sym_merge_kernel[(triton.cdiv(n, br),)](tt, keys, out, n, nb, n_split, KP=kc, BR=br, BT=bt,
                                                 num_warps=mwarps)
    return out, n_split


def _fp16_path(x, db, k, kc, self_search, interpret, info):
    n, d = x.shape
    m = db.shape[0]
    bm, bn, bk, warps = _tc_blocks(kc, d, interpret, _cc_major(x, interpret))
    dp = triton.cdiv(d, bk) * bk
    xh, xs = _prep(x, dp, interpret)
    yh, ys = (xh, xs) if self_search else _prep(db, dp, interpret)
    bound = bounds(d, xs, ys)

    sym = self_search and symmetric(n, kc, d, interpret, _cc_major(x, interpret))
    if sym:
        keys, n_split = _sym_pass(xh, kc, min(bm, bn), bk, warps, _sm_count(x, interpret), interpret)
    else:
        row_tiles = triton.cdiv(n, bm)
        n_split = _splits(row_tiles, m, bn, kc, _sm_count(x, interpret))
        cols = triton.cdiv(triton.cdiv(m, n_split), bn) * bn
        n_split = triton.cdiv(m, cols)
        keys = torch.empty((n, n_split * kc), dtype=torch.int64, device=x.device)
        _knn_cand_kernel[(row_tiles, n_split)](xh, yh, keys, n, m, dp, cols,
                                               SELF=self_search, KP=kc, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                               num_warps=warps, num_stages=1 if interpret else 2)

    ncand = keys.shape[1]
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
        info.update(precision="fp16", rows=n, candidates=kc, splits=n_split, symmetric=sym,
                    uncertified_rows=int(bad.numel()))
    return idx, sim


# ------------------------------------------------------------------ candidates from another library
#: relative rounding of the inputs the certificate of foreign candidates allows: 10 explicit mantissa bits
#: (TF32, truncated or rounded), so a library that enables TF32 in its GEMM is still covered.
FOREIGN_INPUT_ROUNDING = cert.TF32_ROUNDING


def foreign_bounds(d: int, xn: torch.Tensor, big_y: float, u_in: float = FOREIGN_INPUT_ROUNDING) -> torch.Tensor:
    """B_i (float32, rounded up) for candidates ranked by another library's inner products.

    ``xn`` [N] upper bounds of ||x_i||, ``big_y`` of max_j ||y_j||. The library's value a_ij is assumed
    to be the float32 sum, in any order, of products of inputs each rounded with relative error at most
    ``u_in`` (float32: 0; TF32: 2^-10) and its selection exact on its own values:
    :func:`hilcore._certificate.gemm_bound` with the fp32 rescoring, the float32 rounding of
    ``c_i + B_i`` in the kernel and slack for underflow."""
    return cert.round_up_f32(cert.gemm_bound(d, xn.to(torch.float64), big_y, u_in, threshold=True))


def _norms64(a: torch.Tensor) -> torch.Tensor:
    """Upper bounds of the row norms (:func:`hilcore._certificate.norms_up`)."""
    return cert.norms_up(a)


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
