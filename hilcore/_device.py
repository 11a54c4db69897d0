"""Launch guard: kernels run on their tensors' GPU whatever the current CUDA device is."""
from __future__ import annotations

import contextlib

import torch


def on_device(t: torch.Tensor):
    """``torch.cuda.device(t.device)`` for a CUDA tensor (Triton launches on the current device), else a no-op."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
