"""Native sparse k-reciprocal Jaccard distance (all stages in C++/OpenMP)."""
from __future__ import annotations

import math

import torch

from ... import _progress
from ..._dispatch import native_module

#: The stages the C++ code times, in order.
STAGES = ("reciprocal_weights", "query_expansion", "inverted_index", "jaccard")
#: Rows per progress report of the row passes, when a :mod:`hilcore._progress` hook is set (without one the
#: rows are not counted); the result does not depend on it.
BLOCK_ROWS = 4096


def jaccard(x: torch.Tensor, rank: torch.Tensor, k1: int, k2: int, max_distance: float = math.inf, *,
            timings: dict | None = None):
    """CSR of the pairs with ``d <= max_distance`` (float32 compare), diagonal stored as 0.

    ``x`` float32 ``[N, D]`` normalised CPU rows, ``rank`` int64 ``[N, >=k1]``
    self-search ranking with self first. Returns torch ``(indptr int64 [N+1],
    indices int64 [nnz], data float32 [nnz])``, sorted indices, symmetric. With
    ``timings``, the seconds of each of :data:`STAGES` measured in C++ are stored in it.

    Under a :mod:`hilcore._progress` hook, the C++ row passes (expansion and
    weights, query expansion when ``k2 > 1``, pairs) report ``("stages", done,
    passes * N)`` from the calling thread each time another :data:`BLOCK_ROWS`
    rows are finished (the other threads go on meanwhile) and after each pass,
    ``done`` counting the rows over the passes (as :func:`hilcore._progress.rows_pass`).
    """
    nat = native_module()
    xa = x.to(torch.float32).contiguous().numpy()
    ra = rank.to(torch.int64).contiguous().numpy()
    tick = (lambda done, total: _progress.report("stages", done, total)) if _progress.active() else None
    indptr, indices, data, secs = nat.jaccard(xa, ra, int(k1), int(k2), float(max_distance), tick, BLOCK_ROWS)
    if timings is not None:
        timings.update(zip(STAGES, secs))
    return torch.from_numpy(indptr), torch.from_numpy(indices), torch.from_numpy(data)
