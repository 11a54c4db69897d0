"""Fused momentum memory update in Triton, with the sequential per-sample semantics of docs/design.md.

The batch is grouped by target in torch (a stable sort, so the occurrences of
a target keep their batch order) and one program runs per DISTINCT target: it
applies that target's occurrences one after the other to its own memory row
(or its S slots), so no two programs touch the same row and there are no races.
For a multi-centre memory each occurrence first picks the slot with the largest
dot product with the sample at that moment (the lowest slot on ties, as the
torch path's ``argmax``), then moves only that slot.

float32 memories run the kernel; a float64 memory is updated by the torch path
(``hilcore.backend.torch.memory.update``) instead, so ``backend="triton"`` (and
``"auto"`` on a GPU) gives float64 answers for float64 memories. On CPU the
kernel runs under the Triton interpreter (``TRITON_INTERPRET=1`` set before
triton is imported).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._core import NORM_EPS, interpreting
from ..._device import on_device
from ..torch.memory import update as update_torch


# _memory_update_kernel
# Layout: mem [R, S, D] float32 contiguous; x [B, D] float32 unit rows,
#   contiguous; order [B] int64 = the sample indices sorted by target (stable);
#   seg [G + 1] int64 segment offsets into order; tgt [G] int64 the target row
#   of each segment (distinct).
# Program g owns memory row tgt[g]. For j in seg[g]..seg[g+1] (batch order):
#   i = order[j]; s = the slot with the largest x_i . m[row, s] (the lowest on
#   ties; s = 0 when S == 1); m[row, s] <- v / max(||v||, EPS) with
#   v = MU m[row, s] + (1 - MU) x_i. D is streamed in BLOCK_D chunks: one pass
#   for the slot dots, one for ||v||^2, one that recomputes v and stores it.
#   The barrier after each occurrence makes the stores visible to the whole
#   program before the next occurrence reads the row with another layout.
# Preconditions: 1 <= S <= S_P, S_P and BLOCK_D powers of two, R * S * D < 2^62.
@triton.jit
def _memory_update_kernel(m_ptr, x_ptr, order_ptr, seg_ptr, tgt_ptr, S, D, MU, EPS,
                          S_P: tl.constexpr, BLOCK_D: tl.constexpr):
    g = tl.program_id(0)
    row = tl.load(tgt_ptr + g).to(tl.int64)
    start = tl.load(seg_ptr + g)
    end = tl.load(seg_ptr + g + 1)
    base = row * S * D
    offs = tl.arange(0, BLOCK_D)
    slots = tl.arange(0, S_P)
    slot_ok = slots < S
    for j in range(start, end):
        i = tl.load(order_ptr + j).to(tl.int64)
        x_row = x_ptr + i * D
        if S_P > 1:
            dots = tl.zeros([S_P], dtype=tl.float32)
            for k0 in range(0, D, BLOCK_D):
                kk = k0 + offs
                k_ok = kk < D
                xv = tl.load(x_row + kk, mask=k_ok, other=0.0)
                mv = tl.load(m_ptr + base + slots[:, None].to(tl.int64) * D + kk[None, :],
                             mask=slot_ok[:, None] & k_ok[None, :], other=0.0)
                dots += tl.sum(mv * xv[None, :], axis=1)
            dots = tl.where(slot_ok, dots, float("-inf"))
            best = tl.max(dots, axis=0)
            s = tl.min(tl.where(dots == best, slots, S_P), axis=0)  # first maximum
            s_row = m_ptr + base + s.to(tl.int64) * D
        else:
            s_row = m_ptr + base
        # ||v||^2, v = MU m + (1 - MU) x
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for k0 in range(0, D, BLOCK_D):
            kk = k0 + offs
            k_ok = kk < D
            xv = tl.load(x_row + kk, mask=k_ok, other=0.0)
            mv = tl.load(s_row + kk, mask=k_ok, other=0.0)
            v = MU * mv + (1.0 - MU) * xv
            acc += v * v
        nrm = tl.maximum(tl.sqrt(tl.sum(acc, axis=0)), EPS)
        for k0 in range(0, D, BLOCK_D):
            kk = k0 + offs
            k_ok = kk < D
            xv = tl.load(x_row + kk, mask=k_ok, other=0.0)
            mv = tl.load(s_row + kk, mask=k_ok, other=0.0)
            v = MU * mv + (1.0 - MU) * xv
            tl.store(s_row + kk, v / nrm, mask=k_ok)
        tl.debug_barrier()


def _blocks(s: int, d: int, interpret: bool) -> tuple[int, int, int]:
    """(S_P, BLOCK_D, num_warps): the [S_P, BLOCK_D] slot tile kept near 4K elements on a GPU."""
    s_p = triton.next_power_of_2(s)
    dp = triton.next_power_of_2(d)
    if interpret:
        return s_p, min(256, dp), 1  # few, large block ops: each is one NumPy call
    bd = max(32, min(dp, 4096 // s_p, 1024))
    return s_p, bd, 4


def update(mem: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, momentum: float) -> None:
    """In-place update of ``mem`` ``[R, S, D]`` with unit rows ``x`` ``[B, D]`` (mem's dtype) and int64
    ``targets`` ``[B]`` in ``[0, R)``, sequential per-sample semantics (see the module docstring).

    Args:
        mem: contiguous ``[R, S, D]`` float32 memory on CUDA (or CPU under ``TRITON_INTERPRET=1``);
            a float64 memory is updated by the torch path instead.
        x: ``[B, D]`` L2-normalised rows, same dtype and device.
        targets: ``[B]`` integer row ids.
        momentum: ``mu`` in ``[0, 1]``, the weight the old memory keeps.
    """
    if mem.dtype == torch.float64:
        update_torch(mem, x, targets, momentum)  # documented fallback: the kernel is float32 only
        return
    if mem.dtype != torch.float32:
        raise TypeError(f"memory: the triton update supports float32 (or float64, via torch) memories, "
                        f"got {mem.dtype}")
    if mem.device.type != "cuda" and not interpreting():
        raise ValueError(f"memory: the triton update needs a CUDA tensor (or TRITON_INTERPRET=1 on CPU), "
                         f"got device {mem.device}")
    if mem.dim() != 3 or not mem.is_contiguous():
        raise ValueError(f"memory: expected a contiguous [R, S, D] buffer, got shape {tuple(mem.shape)}")
    r_n, s_n, d = mem.shape
    b = x.shape[0]
    if b == 0:
        return
    x = x.to(torch.float32).contiguous()
    t = targets.to(device=mem.device, dtype=torch.int64)
    order = torch.argsort(t, stable=True)  # occurrences of a target stay in batch order
    uniq, counts = torch.unique_consecutive(t[order], return_counts=True)
    seg = torch.zeros(uniq.numel() + 1, dtype=torch.int64, device=mem.device)
    torch.cumsum(counts, 0, out=seg[1:])
    s_p, bd, warps = _blocks(s_n, d, interpreting())
    with on_device(mem):
        _memory_update_kernel[(uniq.numel(),)](mem, x, order, seg, uniq.contiguous(), s_n, d, float(momentum),
                                               NORM_EPS, S_P=s_p, BLOCK_D=bd, num_warps=warps)
    # the kernel wrote behind autograd's back: bump the version counter (in-place guard of the loss)
    torch.autograd.graph.increment_version(mem)
