"""BRST row arg-max / column max through the C++ kernel (hilcore._native.brst_scan)."""
from __future__ import annotations

import torch

from ..._dispatch import native_module


def row_argmax_col_max(xb: torch.Tensor, protos: torch.Tensor, rows: torch.Tensor | None = None):
    """As the torch backend's; ``rows`` are read in place by the kernel (no gathered copy of ``xb[rows]``)."""
    r = None if rows is None else rows.contiguous().numpy()
    best, best_sim, col_max = native_module().brst_scan(xb.contiguous().numpy(), protos.contiguous().numpy(), r)
    return torch.from_numpy(best), torch.from_numpy(best_sim), torch.from_numpy(col_max)
