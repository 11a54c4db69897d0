"""BRST row arg-max / column max through the C++ kernel (hilcore._native.brst_scan)."""
from __future__ import annotations

import torch

from ..._dispatch import native_module


def row_argmax_col_max(xb: torch.Tensor, protos: torch.Tensor):
    best, best_sim, col_max = native_module().brst_scan(xb.contiguous().numpy(), protos.contiguous().numpy())
    return torch.from_numpy(best), torch.from_numpy(best_sim), torch.from_numpy(col_max)
