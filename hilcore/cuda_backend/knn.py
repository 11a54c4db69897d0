"""kNN for ``backend="cuda"``.

The CUDA build of hilcore has no hand-written kNN kernel: on CUDA tensors the
fused Triton kernel (:mod:`hilcore.triton.knn`, tiles of the product with a
running top-k, never the N x M matrix) already does the job, and where Triton
is not installed the blocked cuBLAS + ``torch.topk`` path of the torch backend
gives the same exact result.
"""
from __future__ import annotations

import torch

from .._dispatch import has_triton


def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN of ``x`` [N, D] among ``y`` [M, D] (``x`` when None) on CUDA tensors.

    Inputs are L2-normalised contiguous float32; returns ``(idx int64 [N, k],
    sim float32 [N, k])`` on ``x.device``, best first, self at rank 0 in
    self-search, ties to the lower index.

    Raises:
        ValueError: ``x`` is not a CUDA tensor.

    Example:
        >>> import torch, hilcore
        >>> from hilcore.cuda_backend.knn import knn
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.nn.functional.normalize(torch.randn(1000, 64, generator=g), dim=1).cuda()  # needs a CUDA GPU
        >>> idx, sim = knn(x, 10)
        >>> idx.shape, idx.dtype, sim.dtype, idx.device.type
        (torch.Size([1000, 10]), torch.int64, torch.float32, 'cuda')
        >>> ref_idx, _ = hilcore.knn(x.cpu(), 10, backend="torch")     # the same neighbours on the CPU
        >>> bool((idx.cpu() == ref_idx).float().mean() > 0.999)
        True
    """
    if not isinstance(x, torch.Tensor) or x.device.type != "cuda":
        where = x.device if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: the cuda kNN needs a CUDA tensor, got {where}")
    if has_triton():
        from ..triton.knn import knn as impl
    else:
        from ..torch_backend.knn import knn as impl
    return impl(x, k, y)
