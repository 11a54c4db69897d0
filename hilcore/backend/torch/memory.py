"""The momentum memory update in pure PyTorch (any device, float32 or float64).

The batch is applied in rounds: round r applies the r-th occurrence of every
target at once, so a batch costs ``max multiplicity`` vectorised steps and no
per-sample Python loop, with the sequential semantics of docs/design.md.
"""
from __future__ import annotations

import torch

from ..._core import NORM_EPS


def occurrence(targets: torch.Tensor) -> torch.Tensor:
    """``occ[i]`` = how many ``j < i`` have ``targets[j] == targets[i]`` (the round of sample i)."""
    b = targets.shape[0]
    order = torch.argsort(targets, stable=True)
    st = targets[order]
    ar = torch.arange(b, device=targets.device)
    starts = torch.ones(b, dtype=torch.bool, device=targets.device)
    starts[1:] = st[1:] != st[:-1]
    group_start = torch.cummax(torch.where(starts, ar, torch.zeros_like(ar)), 0).values
    occ = torch.empty_like(ar)
    occ[order] = ar - group_start
    return occ


def _rounds(targets: torch.Tensor):
    """Sample indices of each round, in round order (every target at most once per round)."""
    occ = occurrence(targets)
    order = torch.argsort(occ, stable=True)
    counts = torch.bincount(occ).tolist()
    return torch.split(order, counts)


def update(mem: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, momentum: float) -> None:
    """In-place update of ``mem`` ``[R, S, D]`` with unit rows ``x`` ``[B, D]`` (mem's dtype), vectorised by rounds."""
    r_n, s_n, d = mem.shape
    flat = mem.view(r_n * s_n, d)
    for sel in _rounds(targets):
        rows, xs = targets[sel], x[sel]
        if s_n == 1:
            idx = rows
        else:
            dots = torch.bmm(mem[rows], xs.unsqueeze(2)).squeeze(2)  # [b, S]
            idx = rows * s_n + torch.argmax(dots, dim=1)  # first maximum: the lowest slot on ties
        v = momentum * flat[idx] + (1.0 - momentum) * xs
        flat[idx] = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(NORM_EPS)
