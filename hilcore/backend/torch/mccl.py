"""Multi-centre contrastive loss in pure PyTorch: autograd on the ``[B, C, S]`` distances (any device)."""
from __future__ import annotations

import torch

from ..._core import DIST_EPS, MARGIN


def mccl(x: torch.Tensor, mem: torch.Tensor, eps: float = DIST_EPS, margin: float = MARGIN):
    """Reference implementation with autograd: ``(loss [B], cstar [B])`` for unit rows ``x`` and ``mem``
    ``[C, S, D]`` of the same dtype. Forms the ``[B, C, S]`` distances (direct differences, cdist)."""
    b = x.shape[0]
    c, s, _ = mem.shape
    r = torch.cdist(x, mem.reshape(c * s, -1), compute_mode="donot_use_mm_for_euclid_dist").reshape(b, c, s)
    d = torch.sqrt(r * r + eps)
    cstar = torch.argmin(d.detach().reshape(b, c * s), dim=1) // s  # first minimum: lowest (c, s) on ties
    u = 1.0 / d
    rows = torch.arange(b, device=x.device)
    pos = u[rows, cstar].mean(dim=1)
    if c > 1:
        umax = 1.0 / d.min(dim=2).values  # [B, C]: 1 / min_s d_cs
        others = torch.ones(b, c, dtype=torch.bool, device=x.device)
        others[rows, cstar] = False
        neg = (umax * others).sum(dim=1) / (c - 1)
    else:
        neg = torch.zeros_like(pos)
    loss = -torch.log(pos / (pos + neg + margin))
    return loss, cstar
