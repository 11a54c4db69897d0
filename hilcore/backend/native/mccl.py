"""Native (C++/OpenMP) multi-centre contrastive loss: fused forward and backward on CPU tensors, zero-copy."""
from __future__ import annotations

import torch

from ..._dispatch import native_module


class _MCCLFunction(torch.autograd.Function):
    """Per-sample MCCL of unit rows ``x`` against a constant ``mem``; returns ``(loss [B], cstar [B])``."""

    @staticmethod
    def forward(ctx, x, mem, eps, margin):
        loss, cstar, pos, neg = native_module().mccl_forward(x.numpy(), mem.numpy(), eps, margin)
        cstar = torch.from_numpy(cstar)
        ctx.save_for_backward(x, mem, cstar, torch.from_numpy(pos), torch.from_numpy(neg))
        ctx.eps, ctx.margin = eps, margin
        ctx.mark_non_differentiable(cstar)
        return torch.from_numpy(loss), cstar

    @staticmethod
    def backward(ctx, grad_loss, _grad_cstar):
        x, mem, cstar, pos, neg = ctx.saved_tensors
        g = grad_loss.detach().to(torch.float32).contiguous()
        grad = native_module().mccl_backward(x.numpy(), mem.numpy(), cstar.numpy(), pos.numpy(), neg.numpy(),
                                             g.numpy(), ctx.eps, ctx.margin)
        return torch.from_numpy(grad), None, None, None


def mccl(x: torch.Tensor, mem: torch.Tensor, eps: float, margin: float = 1e-8):
    """Per-sample MCCL and nearest cluster, differentiable in ``x`` (the memory gets no gradient).

    Args:
        x: ``[B, D]`` float32 unit rows on the CPU.
        mem: ``[C, S, D]`` float32 memory on the CPU.
        eps: the distance guard: ``d = sqrt(||x - M||^2 + eps)``.
        margin: the ``1e-8`` of ``-log(pos / (pos + neg + margin))``.

    Returns:
        ``(loss [B] float32, cstar [B] int64)``.
    """
    if x.dtype != torch.float32 or mem.dtype != torch.float32:
        raise ValueError("x, mem: the native MCCL expects float32 tensors")
    if x.device.type != "cpu" or mem.device.type != "cpu":
        raise ValueError(f"x: the native MCCL needs CPU tensors, got {x.device} and {mem.device}")
    return _MCCLFunction.apply(x.contiguous(), mem.detach().contiguous(), float(eps), float(margin))
