"""Optional cuVS backend (``backend="cuvs"``): exact kNN from cuVS brute-force candidates, for comparisons.

``cuvs.neighbors.brute_force`` (inner product) returns ``candidates(k)``
columns per row; hilcore's fp32 rescoring and certificate
(``hilcore.backend.triton.knn.rescore_candidates``) turn them into the exact ranking
(ties to the lower index, self first), rows it cannot certify going through
the Triton fp32 kernel. ``auto`` never picks it. cuVS (and triton) are
imported inside :func:`knn` only, so hilcore imports without them.
"""
from __future__ import annotations

import torch

from ..._info import info_arg

def _brute_force():
    try:
        from cuvs.neighbors import brute_force
    except ImportError as e:
        raise ImportError(f"the cuvs backend needs the cuvs package (RAPIDS cuVS): {e}") from None
    return brute_force


def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None, *,
        info: dict | None = None, stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN from ``cuvs.neighbors.brute_force`` candidates, rescored and certified by hilcore.

    ``brute_force.build(db, metric="inner_product")`` and ``search`` give
    ``C = min(M, candidates(k))`` columns per row; the rest is
    ``rescore_candidates`` (the bound holds even if cuVS's GEMM rounds its
    inputs to TF32), so the answer equals hilcore's exact kNN.

    Args:
        x: ``[N, D]`` float32, rows L2-normalised, on a CUDA device.
        k: neighbours per row, ``1 <= k <= M``.
        y: optional ``[M, D]`` database like ``x``; ``None`` is self-search.
        info: receives ``candidates``, ``rows``, ``uncertified_rows``.
        stats: deprecated name of ``info`` (DeprecationWarning).

    Returns:
        ``(idx int64 [N, k], sim float32 [N, k])`` on ``x.device``, best first.

    Raises:
        ImportError: cuvs (or triton) is not installed.
        ValueError: ``k`` outside ``[1, M]``.

    Example:
        >>> import torch, hilcore
        >>> from hilcore.backend.cuvs.knn import knn
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.nn.functional.normalize(torch.randn(100, 16, generator=g), dim=1).cuda()  # needs a CUDA GPU
        >>> idx, sim = knn(x, 5)  # needs cuvs
        >>> bool((idx == hilcore.knn(x, 5, backend="torch")[0]).all())
        True
    """
    brute_force = _brute_force()
    from ..triton import knn as tknn

    info = info_arg(info, stats, "hilcore.backend.cuvs.knn.knn")

    self_search = y is None
    x = x.contiguous()
    db = x if self_search else y.contiguous()
    m = db.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m:
        raise ValueError(f"k: expected an integer in [1, {m}], got {k!r}")
    idx = sim = None
    if tknn.candidates(k) <= tknn.MAX_KC:  # else rescore_candidates answers with the fp32 kernel
        if x.is_cuda:
            torch.cuda.synchronize(x.device)  # cuVS runs on its own stream (and syncs it before returning)
        index = brute_force.build(db, metric="inner_product")
        dist, nbr = brute_force.search(index, x, min(m, tknn.candidates(k)))
        # device arrays (CUDA array interface / DLPack) -> torch on x's device; inner products, best first
        sim = torch.as_tensor(dist, device=x.device)
        idx = torch.as_tensor(nbr, device=x.device)
        del index
    return tknn.rescore_candidates(x, db, k, idx, sim, self_search, info=info)
