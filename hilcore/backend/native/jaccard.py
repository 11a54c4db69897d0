"""Native sparse k-reciprocal Jaccard distance (all stages in C++/OpenMP)."""
from __future__ import annotations

import math

import torch

from ..._dispatch import native_module

#: The stages the C++ code times, in order.
STAGES = ("reciprocal_weights", "query_expansion", "inverted_index", "jaccard")


def jaccard(x: torch.Tensor, rank: torch.Tensor, k1: int, k2: int, max_distance: float = math.inf, *,
            timings: dict | None = None):
    """CSR of the pairs with ``d <= max_distance`` (float32 compare), diagonal stored as 0.

    ``x`` float32 ``[N, D]`` normalised CPU rows, ``rank`` int64 ``[N, >=k1]``
    self-search ranking with self first. Returns torch ``(indptr int64 [N+1],
    indices int64 [nnz], data float32 [nnz])``, sorted indices, symmetric. With
    ``timings``, the seconds of each of :data:`STAGES` measured in C++ are stored in it.
    """
    nat = native_module()
    xa = x.to(torch.float32).contiguous().numpy()
    ra = rank.to(torch.int64).contiguous().numpy()
    indptr, indices, data, secs = nat.jaccard(xa, ra, int(k1), int(k2), float(max_distance))
    if timings is not None:
        timings.update(zip(STAGES, secs))
    return torch.from_numpy(indptr), torch.from_numpy(indices), torch.from_numpy(data)
