"""Optional faiss backend: exact kNN with ``faiss.IndexFlatIP``.

faiss is imported inside :func:`knn` only, so hilcore imports without it.
"""
from __future__ import annotations

import numpy as np
import torch

from ._dispatch import register

register("knn", "faiss", devices=("cpu", "cuda"), impl="hilcore.faiss_backend:knn",
         note="faiss.IndexFlatIP on the CPU; for comparisons")


def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN by inner product (cosine on normalised rows) with a flat faiss index.

    Args:
        x: ``[N, D]`` float32, contiguous, rows L2-normalised (CPU or CUDA; the
            search runs on the CPU index).
        k: neighbours per row, ``1 <= k <= M``.
        y: optional ``[M, D]`` database; ``None`` is self-search.

    Returns:
        ``(idx int64 [N, k], sim float32 [N, k])`` on ``x.device``, best first:
        faiss's order is re-sorted so equal similarities go to the lower index,
        and in self-search row i is rank 0 (with its computed similarity).

    Raises:
        ImportError: faiss is not installed.
        ValueError: ``k`` outside ``[1, M]``.

    Example:
        >>> import torch, hilcore
        >>> from hilcore.faiss_backend import knn
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.nn.functional.normalize(torch.randn(100, 16, generator=g), dim=1)
        >>> idx, sim = knn(x, 5)  # needs faiss
        >>> idx.shape, idx.dtype, sim.dtype, bool((idx[:, 0] == torch.arange(100)).all())
        (torch.Size([100, 5]), torch.int64, torch.float32, True)
        >>> bool((idx == hilcore.knn(x, 5, backend="torch")[0]).all())
        True
    """
    try:
        import faiss
    except ImportError:
        raise ImportError("the faiss backend needs the faiss package (pip install faiss-cpu)") from None
    self_search = y is None
    xs = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    ys = xs if self_search else np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.float32)
    n, m = xs.shape[0], ys.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k: expected an integer in [1, {m}], got {k}")
    index = faiss.IndexFlatIP(xs.shape[1])
    index.add(ys)
    # faiss may cut a run of equal similarities at the k-th place anywhere, and
    # in self-search among duplicates it may leave the row itself out: ask for
    # one more column and widen until every row holds itself and its k-th value
    # is strictly above its last column's, then sort by the exact key.
    want = min(m, k + 1)
    while True:
        sim, idx = index.search(xs, want)
        sim = sim.astype(np.float32, copy=False)
        done = np.ones(n, dtype=bool)
        if self_search:
            is_self = idx == np.arange(n)[:, None]
            done = is_self.any(axis=1)
            own = np.where(is_self, sim, 0).sum(axis=1, dtype=np.float32)
            sim = np.where(is_self, np.float32(np.inf), sim)
        if want == m or np.all(done & (sim[:, k - 1] > sim[:, want - 1])):
            break
        want = min(m, 2 * want)
    order = np.lexsort((idx, -sim), axis=1)[:, :k]
    idx = np.take_along_axis(idx, order, axis=1)
    sim = np.take_along_axis(sim, order, axis=1)
    if self_search:
        sim[:, 0] = own
    return (torch.from_numpy(idx.astype(np.int64)).to(x.device),
            torch.from_numpy(np.ascontiguousarray(sim)).to(x.device))
