"""Native kNN: BLAS tiles through torch (float32) and the C++ running top-k merge."""
from __future__ import annotations

import torch

from .._dispatch import native_module

# Square tiles of TILE x TILE similarities (16 MiB in float32): memory O(TILE x N).
TILE = 2048


def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None, *, tile: int = TILE):
    """Exact cosine kNN of normalised float32 CPU rows ``x [N, D]`` against ``y [M, D]`` (or ``x``).

    Returns ``(idx int64 [N, k], sim float32 [N, k])``, best first by (sim desc,
    index asc); in self-search each row's own index is first. Self-search
    computes only the tiles on and above the diagonal and merges each
    off-diagonal tile into both its rows and (transposed) its columns.
    """
    nat = native_module()
    x = x.to(torch.float32).contiguous()
    n = x.shape[0]
    best_sim = torch.full((n, k), float("-inf"), dtype=torch.float32)
    best_idx = torch.full((n, k), -1, dtype=torch.int64)
    bs, bi = best_sim.numpy(), best_idx.numpy()
    if y is None:
        for i0 in range(0, n, tile):
            xi = x[i0:i0 + tile]
            for j0 in range(i0, n, tile):
                s = torch.mm(xi, x[j0:j0 + tile].t())
                nat.knn_topk_merge(s.numpy(), i0, j0, bs, bi, True)
                if j0 != i0:
                    nat.knn_topk_merge(s.t().contiguous().numpy(), j0, i0, bs, bi, True)
                del s
    else:
        y = y.to(torch.float32).contiguous()
        m = y.shape[0]
        for i0 in range(0, n, tile):
            xi = x[i0:i0 + tile]
            for j0 in range(0, m, tile):
                s = torch.mm(xi, y[j0:j0 + tile].t())
                nat.knn_topk_merge(s.numpy(), i0, j0, bs, bi, False)
                del s
    return best_idx, best_sim
