"""BRST scan in Triton: row arg-max and column max in one pass over similarity tiles.

The [M, C] similarity matrix is never formed: each program owns ``BLOCK_M``
rows of B, sweeps the prototypes in tiles of ``BLOCK_N`` and keeps the running
row maximum / arg-max in registers; the tile's column maxima go to a small
``[cdiv(M, BLOCK_M), C]`` partial buffer that one ``max`` over dim 0 reduces
(no float atomics, so the result is deterministic). On CPU the kernel runs
under the Triton interpreter (``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._core import interpreting
from ..._device import on_device
from ._tiles import dot_tile


# _brst_scan_kernel
# Layout: xb [M, D], protos [C, D] float32, rows L2-normalised, unit stride along D
#   (row strides given). Outputs: best [M] int64, best_sim [M] float32,
#   col_part [cdiv(M, BLOCK_M), C] float32 (row stride stride_p).
# Program pid owns rows [pid*BLOCK_M, (pid+1)*BLOCK_M). Per tile of BLOCK_N
#   prototypes: s = xb_blk @ protos_tile^T via tl.dot over BLOCK_K chunks of D
#   (IEEE fp32); padded rows/columns are -inf. Row arg-max: tl.argmax picks the
#   lowest column on ties inside a tile and a later tile replaces the running
#   best only when strictly larger, so ties go to the lower column overall.
# Preconditions: M, C >= 1, block sizes powers of two >= 16, no NaN inputs.
@triton.jit
def _brst_scan_kernel(x_ptr, p_ptr, best_ptr, sim_ptr, part_ptr, M, C, D,
                      stride_x, stride_pr, stride_part,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows64 = rows.to(tl.int64)
    run_val = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    run_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
    for n0 in range(0, C, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < C
        cols64 = cols.to(tl.int64)
        s = dot_tile(x_ptr, p_ptr, rows64, row_ok, cols64, col_ok, D, stride_x, stride_pr,
                     BLOCK_M, BLOCK_N, BLOCK_K)
        s = tl.where(row_ok[:, None] & col_ok[None, :], s, float("-inf"))
        # row side: best column of this tile, lowest index on ties
        tile_val = tl.max(s, axis=1)
        is_max = s == tile_val[:, None]
        tile_idx = tl.min(tl.where(is_max, cols[None, :], 2147483647), axis=1)
        upd = tile_val > run_val
        run_idx = tl.where(upd, tile_idx, run_idx)
        run_val = tl.where(upd, tile_val, run_val)
        # column side: this row block's maximum of every prototype column
        cmax = tl.max(s, axis=0)
        tl.store(part_ptr + pid * stride_part + cols64, cmax, mask=col_ok)
    tl.store(best_ptr + rows64, run_idx.to(tl.int64), mask=row_ok)
    tl.store(sim_ptr + rows64, run_val, mask=row_ok)


def _blocks(d: int, interpret: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the scan for width ``d``."""
    if interpret:
        return 16, 16, max(16, min(64, triton.next_power_of_2(d))), 1
    # 64 x 32 tiles over 8 warps: 114 registers on sm_90, 80 on sm_80, no spills
    # (64 x 64 over 4 warps held 210 / 255 registers and spilled on sm_80; benchmarks/gpu_static.py)
    return 64, 32, 32, 8


def row_argmax_col_max(xb: torch.Tensor, protos: torch.Tensor, rows: torch.Tensor | None = None):
    """(best [M] int64, best_sim [M] float32, col_max [C] float32) of ``xb @ protos.T`` (of ``xb[rows]``
    when int64 row ids ``rows`` are given)."""
    if rows is not None:
        xb = xb[rows]
    xb = xb.contiguous()
    protos = protos.contiguous()
    m, d = xb.shape
    c = protos.shape[0]
    bm, bn, bk, warps = _blocks(d, interpreting())
    grid = triton.cdiv(m, bm)
    best = torch.empty(m, dtype=torch.int64, device=xb.device)
    best_sim = torch.empty(m, dtype=torch.float32, device=xb.device)
    part = torch.empty(grid, c, dtype=torch.float32, device=xb.device)
    with on_device(xb):
        _brst_scan_kernel[(grid,)](xb, protos, best, best_sim, part, m, c, d,
                                   xb.stride(0), protos.stride(0), part.stride(0),
                                   BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)
    return best, best_sim, part.max(dim=0).values
