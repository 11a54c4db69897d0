"""Tile building blocks shared by hilcore's Triton kernels."""
from __future__ import annotations

import triton
import triton.language as tl


# dot_tile: s[i, j] = a[rows[i]] . b[cols[j]] for a [*, D], b [*, D] float32
#   with unit stride along D (row strides given), accumulated over BLOCK_K
#   chunks of D in IEEE fp32 (no TF32). Masked rows/columns read as 0.
@triton.jit
def dot_tile(a_ptr, b_ptr, rows64, row_ok, cols64, col_ok, D, stride_a, stride_b,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_k = tl.arange(0, BLOCK_K)
    s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < D
        a = tl.load(a_ptr + rows64[:, None] * stride_a + kk[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + cols64[None, :] * stride_b + kk[:, None],
                    mask=col_ok[None, :] & k_ok[:, None], other=0.0)
        s = tl.dot(a, b, s, input_precision="ieee")
    return s


# dot_tile_f16: s[i, j] = a[rows[i]] . b[cols[j]] for a [*, DP], b [*, DP] float16
#   with unit stride along DP, DP a multiple of BLOCK_K (zero-padded: no mask
#   along D), on tensor cores: float16 products (exact in float32) accumulated
#   in float32. Both operands are loaded row-major along D (16-byte vector
#   loads) and B enters the dot transposed, so Triton stages them in its
#   swizzled (NVMMA) shared layouts read by ldmatrix / wgmma descriptors
#   without bank conflicts. Masked rows/columns read as 0.
@triton.jit
def dot_tile_f16(a_ptr, b_ptr, rows64, row_ok, cols64, col_ok, DP, stride_a, stride_b,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_k = tl.arange(0, BLOCK_K)
    s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, DP, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(a_ptr + rows64[:, None] * stride_a + kk[None, :], mask=row_ok[:, None], other=0.0)
        b = tl.load(b_ptr + cols64[:, None] * stride_b + kk[None, :], mask=col_ok[:, None], other=0.0)
        s = tl.dot(a, tl.trans(b), s, out_dtype=tl.float32)
    return s


# slot_sqdist: sq[i, s] = ||x[rows[i]] - M[srow[s]]||^2 for x [*, D] and the
#   slots of one cluster (srow: element offsets of its slot rows), summed over
#   BLOCK_D chunks of D as direct differences (no |x|^2 + |m|^2 - 2 x.m
#   cancellation near 0). Masked rows/slots read as 0.
@triton.jit
def slot_sqdist(x_ptr, m_ptr, rows64, row_ok, srow, slot_ok, D,
                BLOCK_B: tl.constexpr, S_P: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_d = tl.arange(0, BLOCK_D)
    sq = tl.zeros([BLOCK_B, S_P], dtype=tl.float32)
    for k0 in range(0, D, BLOCK_D):
        kk = k0 + offs_d
        k_ok = kk < D
        a = tl.load(x_ptr + rows64[:, None] * D + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        m = tl.load(m_ptr + srow[:, None] + kk[None, :], mask=slot_ok[:, None] & k_ok[None, :], other=0.0)
        diff = a[:, None, :] - m[None, :, :]
        sq += tl.sum(diff * diff, axis=2)
    return sq
