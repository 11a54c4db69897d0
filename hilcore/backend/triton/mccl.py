"""Fused multi-centre contrastive loss (MCCL) in Triton, forward and backward.

No ``[B, C, S]`` tensor is formed: the forward kernel streams over the
clusters, computing the ``[BLOCK_B, S]`` distance tile of one cluster at a
time and keeping per-sample running statistics (nearest distance and its
cluster c*, the sum of 1/d over the slots of the current c*, the sum of the
per-cluster max 1/d over the other clusters). The backward kernel recomputes
the tiles and accumulates the gradient ``sum w (M - x)`` for one chunk of
the feature dimension per program. On CPU both run under the Triton
interpreter (``TRITON_INTERPRET=1`` set before triton is imported).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._core import interpreting
from ..._device import on_device
from ._tiles import slot_sqdist


# _mccl_fwd_kernel
# Layout: x [B, D] float32 unit rows (row stride D), mem [C, S, D] float32
#   contiguous. Outputs pos, neg [B]
#   float32 (the mean terms of docs/design.md's MCCL) and cstar [B] int64.
# Program pid owns samples [pid*BLOCK_B, (pid+1)*BLOCK_B). For each cluster c
#   in order it accumulates sq [BLOCK_B, S_P] = sum_k (x_k - M_csk)^2 over
#   BLOCK_D chunks of D (direct differences, not ||x||^2 + ||M||^2 - 2 x.M, so
#   no cancellation near d = 0), d = sqrt(sq + EPS) (padded slots: +inf), and folds the tile into the running stats: a strictly smaller
#   minimum makes c the new c* (so the lowest cluster wins ties); the max 1/d
#   of every cluster that is not the final c* ends in neg_sum (the displaced
#   c* is moved there when a better one appears).
# Preconditions: 1 <= S <= S_P, block sizes powers of two, C * S < 2^31.
@triton.jit
def _mccl_fwd_kernel(x_ptr, m_ptr, pos_ptr, neg_ptr, cstar_ptr, B, C, S, D, EPS,
                     BLOCK_B: tl.constexpr, S_P: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    rows64 = rows.to(tl.int64)
    slots = tl.arange(0, S_P)
    slot_ok = slots < S

    best_d = tl.full([BLOCK_B], float("inf"), tl.float32)
    best_c = tl.zeros([BLOCK_B], dtype=tl.int64)
    pos_sum = tl.zeros([BLOCK_B], dtype=tl.float32)
    umax_best = tl.zeros([BLOCK_B], dtype=tl.float32)
    neg_sum = tl.zeros([BLOCK_B], dtype=tl.float32)
    for c in range(0, C):
        srow = (c * S + slots).to(tl.int64) * D  # row offsets of the cluster's slots
        sq = slot_sqdist(x_ptr, m_ptr, rows64, row_ok, srow, slot_ok, D, BLOCK_B, S_P, BLOCK_D)
        d = tl.sqrt(sq + EPS)
        d = tl.where(slot_ok[None, :], d, float("inf"))
        u = tl.where(slot_ok[None, :], 1.0 / d, 0.0)
        dmin = tl.min(d, axis=1)
        umax = tl.max(u, axis=1)
        usum = tl.sum(u, axis=1)
        better = dmin < best_d
        neg_sum += tl.where(better, umax_best, umax)
        umax_best = tl.where(better, umax, umax_best)
        pos_sum = tl.where(better, usum, pos_sum)
        best_c = tl.where(better, c, best_c)
        best_d = tl.where(better, dmin, best_d)
    pos = pos_sum / S
    neg = neg_sum / tl.maximum(C - 1, 1)
    tl.store(pos_ptr + rows64, pos, mask=row_ok)
    tl.store(neg_ptr + rows64, neg, mask=row_ok)
    tl.store(cstar_ptr + rows64, best_c, mask=row_ok)


# _mccl_bwd_kernel
# Layout as the forward; coef_pos, coef_neg [B] float32 are dL/dpos / S and
#   dL/dneg / (C - 1) times the incoming gradient; grad [B, D] float32.
# Program (pid_b, pid_d) owns samples [pid_b*BLOCK_B, ...) and feature columns
#   [pid_d*BLOCK_O, ...). It recomputes every cluster's distance tile over the
#   whole of D, weights w = coef / d^3 on every slot of c* and on the nearest
#   slot (the lowest on ties) of the other clusters, and accumulates
#   grad = sum w (M - x) over its columns, from the differences (since
#   d(1/d)/dx = -(x - M)/d^3); the expanded -x sum w + sum w M would cancel
#   catastrophically when x sits on a slot (w ~ 1/EPS^1.5).
@triton.jit
def _mccl_bwd_kernel(x_ptr, m_ptr, cstar_ptr, cpos_ptr, cneg_ptr, grad_ptr, B, C, S, D, EPS,
                     BLOCK_B: tl.constexpr, S_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_O: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_o = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    rows64 = rows.to(tl.int64)
    slots = tl.arange(0, S_P)
    slot_ok = slots < S
    cols = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    col_ok = cols < D
    cstar = tl.load(cstar_ptr + rows64, mask=row_ok, other=-1)
    cpos = tl.load(cpos_ptr + rows64, mask=row_ok, other=0.0)
    cneg = tl.load(cneg_ptr + rows64, mask=row_ok, other=0.0)

    xo = tl.load(x_ptr + rows64[:, None] * D + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    acc = tl.zeros([BLOCK_B, BLOCK_O], dtype=tl.float32)
    for c in range(0, C):
        srow = (c * S + slots).to(tl.int64) * D  # row offsets of the cluster's slots
        sq = slot_sqdist(x_ptr, m_ptr, rows64, row_ok, srow, slot_ok, D, BLOCK_B, S_P, BLOCK_D)
        d = tl.sqrt(sq + EPS)
        d = tl.where(slot_ok[None, :], d, float("inf"))
        dmin = tl.min(d, axis=1)
        smin = tl.min(tl.where(d == dmin[:, None], slots[None, :], S_P), axis=1)
        inv3 = 1.0 / (d * d * d)
        is_star = (cstar == c)[:, None]
        w = tl.where(is_star, cpos[:, None] * inv3,
                     tl.where(slots[None, :] == smin[:, None], cneg[:, None] * inv3, 0.0))
        w = tl.where(slot_ok[None, :], w, 0.0)
        mo = tl.load(m_ptr + srow[:, None] + cols[None, :], mask=slot_ok[:, None] & col_ok[None, :],
                     other=0.0)
        # sum_s w (M - x), from the differences: no cancellation when a slot is at d ~ sqrt(EPS)
        acc += tl.sum(w[:, :, None] * (mo[None, :, :] - xo[:, None, :]), axis=1)
    tl.store(grad_ptr + rows64[:, None] * D + cols[None, :], acc, mask=row_ok[:, None] & col_ok[None, :])


def _blocks(s: int, d: int, interpret: bool) -> tuple[int, int, int, int, int]:
    """(BLOCK_B, S_P, BLOCK_D, BLOCK_O, num_warps).

    The [BLOCK_B, S_P, BLOCK_D] / [BLOCK_B, S_P, BLOCK_O] difference tiles are
    kept near 8K elements on a GPU. The backward recomputes the distances once
    per BLOCK_O columns of the output.
    """
    s_p = triton.next_power_of_2(s)
    dp = triton.next_power_of_2(d)
    if interpret:
        # every block op is one NumPy call: few, large blocks run fastest
        return 16, s_p, min(128, dp), min(128, dp), 1
    bb = 16 if s_p <= 16 else 8
    bd = max(8, min(64, 8192 // (bb * s_p)))
    return bb, s_p, bd, bd, 4


def _launch_forward(x: torch.Tensor, mem: torch.Tensor, eps: float):
    b, d = x.shape
    c, s, _ = mem.shape
    bb, s_p, bd, _, warps = _blocks(s, d, interpreting())
    pos = torch.empty(b, dtype=torch.float32, device=x.device)
    neg = torch.empty_like(pos)
    cstar = torch.empty(b, dtype=torch.int64, device=x.device)
    with on_device(x):
        _mccl_fwd_kernel[(triton.cdiv(b, bb),)](x, mem, pos, neg, cstar, b, c, s, d, eps,
                                                BLOCK_B=bb, S_P=s_p, BLOCK_D=bd, num_warps=warps)
    return pos, neg, cstar


class _MCCLFunction(torch.autograd.Function):
    """Per-sample MCCL of unit rows ``x`` against a constant ``mem``; returns ``(loss [B], cstar [B])``."""

    @staticmethod
    def forward(ctx, x, mem, eps, margin):
        pos, neg, cstar = _launch_forward(x, mem, eps)
        total = pos + neg + margin
        loss = -torch.log(pos / total)
        ctx.save_for_backward(x, mem, cstar, pos, total)
        ctx.eps = eps
        ctx.mark_non_differentiable(cstar)
        return loss, cstar

    @staticmethod
    def backward(ctx, grad_loss, _grad_cstar):
        x, mem, cstar, pos, total = ctx.saved_tensors
        b, d = x.shape
        c, s, _ = mem.shape
        g = grad_loss.to(torch.float32).contiguous()
        # loss = -log(pos) + log(pos + neg + margin)
        cpos = (g * (1.0 / total - 1.0 / pos) / s).contiguous()
        cneg = (g / total / max(c - 1, 1)).contiguous() if c > 1 else torch.zeros_like(g)
        grad = torch.empty_like(x)
        bb, s_p, bd, bo, warps = _blocks(s, d, interpreting())
        grid = (triton.cdiv(b, bb), triton.cdiv(d, bo))
        with on_device(x):
            _mccl_bwd_kernel[grid](x, mem, cstar, cpos, cneg, grad, b, c, s, d, ctx.eps,
                                   BLOCK_B=bb, S_P=s_p, BLOCK_D=bd, BLOCK_O=bo, num_warps=warps)
        return grad, None, None, None


def mccl(x: torch.Tensor, mem: torch.Tensor, eps: float, margin: float = 1e-8):
    """Per-sample MCCL and nearest cluster, differentiable in ``x`` (the memory gets no gradient).

    Args:
        x: ``[B, D]`` float32 unit rows (CUDA, or CPU under ``TRITON_INTERPRET=1``).
        mem: ``[C, S, D]`` float32 memory on the same device.
        eps: the distance guard: ``d = sqrt(||x - M||^2 + eps)``.
        margin: the ``1e-8`` of ``-log(pos / (pos + neg + margin))``.

    Returns:
        ``(loss [B] float32, cstar [B] int64)``.
    """
    if x.dtype != torch.float32 or mem.dtype != torch.float32:
        raise ValueError("x, mem: the triton MCCL expects float32 tensors")
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(f"x: the triton MCCL needs a CUDA tensor (or TRITON_INTERPRET=1 on CPU), got {x.device}")
    if mem.shape[0] * mem.shape[1] * mem.shape[2] >= 2**62:
        raise ValueError("mem: too large")
    return _MCCLFunction.apply(x.contiguous(), mem.detach().contiguous(), float(eps), float(margin))
