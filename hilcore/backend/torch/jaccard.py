"""Sparse k-reciprocal Jaccard distance in pure PyTorch (any device): the stage core in one process.

The stages are written once in :mod:`hilcore.stages.jaccard` (reciprocal masks,
expansion, weights, query expansion, pair sums through an inverted index, mirror);
this backend runs them with :class:`hilcore.stages.rows.LocalRows` (every row
local), ``hilcore.distributed.jaccard_distance`` with rows sharded over ranks.
They follow the summation orders of docs/design.md, as the native C++ stages do,
so both return bitwise the same CSR on CPU tensors.
"""
from __future__ import annotations

import torch

from ...stages.jaccard import DOT_LANES, dot_rows, exp_f32, jaccard_rows  # noqa: F401  (DOT_LANES.. re-exported)

__all__ = ["jaccard"]


def jaccard(x: torch.Tensor, rank: torch.Tensor, k1: int, k2: int, max_distance: float, *,
            timings: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-reciprocal Jaccard distance as CSR (indptr int64 [N+1], indices int64, data float32).

    ``x`` [N, D] normalised float32, ``rank`` [N, k1] int64 (self at column 0),
    ``k2 <= k1 <= N``; keeps pairs whose supports meet and ``d <= max_distance``
    (``math.inf`` keeps all). Rows sorted, diagonal stored as 0.0, symmetric.
    ``timings`` is accepted for the common stage interface; this backend does not
    time its sub-stages (the caller times the whole).
    """
    return jaccard_rows(x, rank, k1, k2, max_distance)
