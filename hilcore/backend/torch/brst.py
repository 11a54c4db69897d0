"""BRST in PyTorch: blocked row arg-max and column max over similarity tiles."""
from __future__ import annotations

import torch

_BLOCK = 4096  # rows of B per tile; the [block, C] tile is the only similarity storage


def row_argmax_col_max(xb: torch.Tensor, protos: torch.Tensor, rows: torch.Tensor | None = None):
    """For normalised ``xb`` [M, D] and ``protos`` [C, D]: (best [M] int64, best_sim [M] float32,
    col_max [C] float32) with ties in the row arg-max going to the lower column. ``rows``: int64 row ids,
    the scan is then over ``xb[rows]`` (M = their number)."""
    if rows is not None:
        xb = xb[rows]
    m, c = xb.shape[0], protos.shape[0]
    best = torch.empty(m, dtype=torch.int64, device=xb.device)
    best_sim = torch.empty(m, dtype=torch.float32, device=xb.device)
    col_max = torch.full((c,), float("-inf"), dtype=torch.float32, device=xb.device)
    pt = protos.t()
    for s in range(0, m, _BLOCK):
        e = min(s + _BLOCK, m)
        tile = xb[s:e] @ pt
        v, i = torch.max(tile, dim=1)  # first maximum on ties
        best[s:e], best_sim[s:e] = i, v
        col_max = torch.maximum(col_max, tile.max(dim=0).values)
    return best, best_sim, col_max
