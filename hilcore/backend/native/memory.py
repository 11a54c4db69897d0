"""Native (C++) momentum memory update: one sequential loop over the CPU buffers, zero-copy."""
from __future__ import annotations

import torch

from ..._dispatch import native_module


def update(mem: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, momentum: float) -> None:
    """In-place update of the contiguous CPU tensor ``mem`` ``[R, S, D]`` with unit rows ``x`` ``[B, D]``
    (mem's dtype) and int64 ``targets`` ``[B]``; the C++ loop writes into mem's own storage."""
    if mem.device.type != "cpu" or not mem.is_contiguous():
        raise ValueError(f"memory: the native update needs a contiguous CPU buffer, got device {mem.device}")
    nat = native_module()
    nat.memory_update(mem.numpy(), x.contiguous().numpy(), targets.contiguous().numpy(), float(momentum))
    # the write bypassed torch: bump the version counter so autograd still sees an in-place change
    torch.autograd.graph.increment_version(mem)
