"""Fused exact kNN in Triton: tiles of the product with a running top-k per row.

The similarity matrix is never formed: each program holds ``BLOCK_M`` query
rows and their best ``KP`` candidates in registers while it sweeps the
database in tiles of ``BLOCK_N`` columns. On CPU the kernel runs under the
Triton interpreter (``TRITON_INTERPRET=1`` set before triton is imported).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._core import interpreting
from ._tiles import dot_tile

# Largest k served by the kernel; larger k goes to the torch backend.
MAX_K = 256

# Keys: a candidate is (ordered float bits) << 32 | (2^31 - 1 - idx), so a larger
# key is a better neighbour (higher similarity, then lower index). Empty slots
# of the running list start at _KEY_EMPTY + 1 + slot (distinct, below every real
# key); padded tile entries and spent candidates are _KEY_EMPTY.
_KEY_EMPTY = tl.constexpr(-(2**63))
_HI_SELF = tl.constexpr(2**31 - 1)  # above the ordered bits of every finite float (+inf is 0x7F800000)


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
# Preconditions: 1 <= K <= KP, K <= M, N and M < 2^31, block sizes powers of two
#   with BLOCK_M, BLOCK_N, BLOCK_K >= 16 (tl.dot), no NaN inputs.
@triton.jit
def _knn_topk_kernel(x_ptr, y_ptr, idx_ptr, sim_ptr, N, M, D, K,
                     stride_x, stride_y, stride_o,
                     SELF: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
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
        bits = s.to(tl.int32, bitcast=True)
        hi = tl.where(bits < 0, (bits ^ 0x7FFFFFFF) + 1, bits)
        if SELF:
            is_self = rows[:, None] == cols[None, :]
            self_sim += tl.sum(tl.where(is_self, s, 0.0), axis=1)
            hi = tl.where(is_self, _HI_SELF, hi)
        lo = (0x7FFFFFFF - cols).to(tl.int64)  # equal sims: the lower index wins
        cand = (hi.to(tl.int64) << 32) | lo[None, :]
        cand = tl.where(row_ok[:, None] & col_ok[None, :], cand, _KEY_EMPTY)

        # rounds needed: the most tile keys that beat one row's current worst
        worst = tl.min(best, axis=1)
        beats = tl.sum((cand > worst[:, None]).to(tl.int32), axis=1)
        rounds = tl.minimum(tl.max(beats, axis=0), KP)
        for _ in range(rounds):
            c = tl.max(cand, axis=1)
            cand = tl.where(cand == c[:, None], _KEY_EMPTY, cand)
            worst = tl.min(best, axis=1)
            swap = (best == worst[:, None]) & (c > worst)[:, None]
            best = tl.where(swap, c[:, None], best)

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


def _blocks(kp: int, d: int, interpret: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) for padded k ``kp`` and width ``d``."""
    if interpret:
        # every block op is one numpy call: few programs and few tiles run fastest
        return 32, 64, max(16, min(64, triton.next_power_of_2(d))), 1
    # the running list is [BLOCK_M, KP] int64 in registers: fewer rows for large k
    bm = 64 if kp <= 64 else (32 if kp <= 128 else 16)
    return bm, 64, 32, 8  # 8 warps: no spills at KP <= 256 on sm_80/sm_90 (ptxas -v)


def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN of the rows of ``x`` among the rows of ``y`` (or of ``x``).

    Args:
        x: ``[N, D]`` float32, contiguous, rows L2-normalised; CUDA, or CPU
            under ``TRITON_INTERPRET=1``.
        k: neighbours per row, ``1 <= k <= M``; ``k > MAX_K`` (256) is served by
            the torch backend with the same semantics.
        y: optional ``[M, D]`` database like ``x``; ``None`` is self-search
            (each row is its own rank 0).

    Returns:
        ``(idx, sim)``: ``[N, k]`` int64 and ``[N, k]`` float32 on ``x.device``,
        best first (similarity descending, ties to the lower index).

    Example:
        On a CPU, set ``TRITON_INTERPRET=1`` before triton is imported.

        >>> import torch, hilcore
        >>> from hilcore.triton.knn import knn
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # needs CUDA or TRITON_INTERPRET=1
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.nn.functional.normalize(torch.randn(50, 32, generator=g), dim=1).to(device)
        >>> idx, sim = knn(x, 4)
        >>> idx.shape, idx.dtype, sim.dtype, bool((idx[:, 0] == torch.arange(50, device=device)).all())
        (torch.Size([50, 4]), torch.int64, torch.float32, True)
        >>> bool((idx.cpu() == hilcore.knn(x.cpu(), 4, backend="torch")[0]).all())
        True
    """
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
            from ..torch_backend.knn import knn as torch_knn
        except ImportError:
            raise ValueError(f"k: the triton kNN kernel supports k <= {MAX_K}, got {k}") from None
        return torch_knn(x, k, y)
    interpret = interpreting()
    if x.device.type != "cuda" and not interpret:
        raise ValueError(f"x: the triton kNN needs a CUDA tensor (or TRITON_INTERPRET=1 on CPU), "
                         f"got device {x.device}")
    x = x.contiguous()
    db = x if y is None else db.contiguous()
    kp = triton.next_power_of_2(k)
    bm, bn, bk, warps = _blocks(kp, d, interpret)
    idx = torch.empty((n, k), dtype=torch.int64, device=x.device)
    sim = torch.empty((n, k), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, bm),)
    _knn_topk_kernel[grid](x, db, idx, sim, n, m, d, k, x.stride(0), db.stride(0), idx.stride(0),
                           SELF=y is None, KP=kp, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                           num_warps=warps, num_stages=1 if interpret else 2)
    return idx, sim
