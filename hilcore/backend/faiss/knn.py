"""Optional faiss backends: exact kNN with ``faiss.IndexFlatIP`` and, on a GPU, ``faiss.GpuIndexFlatIP``.

``faiss`` (:func:`knn`): the flat CPU index, re-sorted to hilcore's order.
``faiss_gpu`` (:func:`knn_gpu`): the flat GPU index gives ``candidates(k)``
columns per row, which hilcore's fp32 rescoring and certificate turn into the
exact ranking (``hilcore.backend.triton.knn.rescore_candidates``): a comparison backend
that ``auto`` never picks. faiss (and triton) are imported inside the functions
only, so hilcore imports without them.
"""
from __future__ import annotations

import numpy as np
import torch

from ..._info import info_arg

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
        >>> from hilcore.backend.faiss.knn import knn
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


_GPU_RES: dict = {}  # one faiss.StandardGpuResources per GPU (it holds a scratch allocation)


def _faiss_gpu():
    try:
        import faiss
    except ImportError:
        raise ImportError("the faiss_gpu backend needs faiss with GPU support (e.g. conda install faiss-gpu)") from None
    if not (hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "GpuIndexFlatIP")):
        raise ImportError("the faiss_gpu backend needs faiss with GPU support: this faiss has no GpuIndexFlatIP")
    try:  # lets GPU indexes take torch tensors in place (no host copy)
        import faiss.contrib.torch_utils  # noqa: F401
        torch_io = True
    except ImportError:
        torch_io = False
    return faiss, torch_io


def knn_gpu(x: torch.Tensor, k: int, y: torch.Tensor | None = None, *,
            info: dict | None = None, stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN from ``faiss.GpuIndexFlatIP`` candidates, rescored and certified by hilcore.

    The flat GPU index (float32 storage, ``useFloat16=False``) returns
    ``C = min(M, candidates(k))`` columns per row; ``rescore_candidates``
    recomputes their similarities in IEEE fp32, keeps the best k (self first,
    ties to the lower index) and certifies each row with a bound that holds
    even if faiss's GEMM rounds its inputs to TF32; rows it cannot certify go
    through the Triton fp32 kernel. So the answer equals hilcore's exact kNN.

    Args:
        x: ``[N, D]`` float32, rows L2-normalised, on a CUDA device (the index
            lives on that GPU).
        k: neighbours per row, ``1 <= k <= M``.
        y: optional ``[M, D]`` database like ``x``; ``None`` is self-search.
        info: receives ``candidates``, ``rows``, ``uncertified_rows``.
        stats: deprecated name of ``info`` (DeprecationWarning).

    Returns:
        ``(idx int64 [N, k], sim float32 [N, k])`` on ``x.device``, best first.

    Raises:
        ImportError: faiss with GPU support (or triton) is not installed.
        ValueError: ``k`` outside ``[1, M]``.

    Example:
        >>> import torch, hilcore
        >>> from hilcore.backend.faiss.knn import knn_gpu
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.nn.functional.normalize(torch.randn(100, 16, generator=g), dim=1).cuda()  # needs a CUDA GPU
        >>> idx, sim = knn_gpu(x, 5)  # needs faiss-gpu
        >>> bool((idx == hilcore.knn(x, 5, backend="torch")[0]).all())
        True
    """
    faiss, torch_io = _faiss_gpu()
    from ..triton import knn as tknn

    info = info_arg(info, stats, "hilcore.backend.faiss.knn.knn_gpu")

    self_search = y is None
    x = x.contiguous()
    db = x if self_search else y.contiguous()
    n, d = x.shape
    m = db.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m:
        raise ValueError(f"k: expected an integer in [1, {m}], got {k!r}")
    want = min(m, tknn.candidates(k))
    if tknn.candidates(k) <= tknn.MAX_KC:
        dev = x.device.index if x.device.type == "cuda" else 0
        dev = torch.cuda.current_device() if dev is None else dev
        res = _GPU_RES.get((faiss.StandardGpuResources, dev))
        if res is None:
            res = _GPU_RES[(faiss.StandardGpuResources, dev)] = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = dev
        cfg.useFloat16 = False  # float32 storage and products: the bound assumes at least TF32 inputs
        index = faiss.GpuIndexFlatIP(res, d, cfg)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)  # faiss runs on its own stream
        if torch_io:
            index.add(db)
            sim, idx = index.search(x, want)
        else:
            index.add(np.ascontiguousarray(db.detach().cpu().numpy()))
            sim, idx = index.search(np.ascontiguousarray(x.detach().cpu().numpy()), want)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        del index
    else:  # too many candidates to rescore: rescore_candidates answers with the fp32 kernel
        idx = sim = None
    return tknn.rescore_candidates(x, db, k, idx, sim, self_search, info=info)
