"""Multi-centre contrastive loss (MCCL) of HIL, docs/design.md."""
from __future__ import annotations

import torch

from . import _arrays, _dispatch
from ._core import DIST_EPS, MARGIN
from .memory import ClusterMemory, MultiCenterMemory, batch_features
from .backend.torch.mccl import mccl as mccl_torch  # noqa: F401  (the reference, as before)

__all__ = ["DIST_EPS", "MARGIN", "mccl_loss", "mccl_torch"]


def _bank(memory) -> torch.Tensor:
    if isinstance(memory, MultiCenterMemory):
        return memory.features
    if isinstance(memory, ClusterMemory):
        return memory.features.unsqueeze(1)
    if isinstance(memory, torch.Tensor):
        if memory.dim() != 3 or 0 in memory.shape:
            raise ValueError(f"memory: expected a non-empty [C, S, D] tensor, got shape {tuple(memory.shape)}")
        if not torch.is_floating_point(memory):
            raise TypeError(f"memory: expected a floating dtype, got {memory.dtype}")
        if not bool(torch.isfinite(memory).all()):
            raise ValueError("memory: contains NaN or Inf")
        return memory
    raise TypeError(f"memory: expected a MultiCenterMemory (or a [C, S, D] tensor), got {type(memory).__name__}")


def mccl_loss(x, memory, temp=None, *, reduction: str = "mean", return_nearest: bool = False,
              backend: str = "auto"):
    """Multi-centre contrastive loss of HIL (docs/design.md), differentiable in ``x``.

    For each sample (row of ``x``, L2-normalised here, differentiably) against
    the memory ``M`` ``[C, S, D]``:
    ``d_cs = ||x - M_cs||``, guarded as ``sqrt(||x - M_cs||^2 + 1e-8)``
    (so a sample equal to a slot gives ``d = 1e-4``, not a division by zero);
    ``c*`` = the cluster of the overall nearest slot (the nearest cluster, not
    the pseudo label; the lowest (c, s) on exact ties);
    ``pos = mean_s 1/d_{c* s}``; ``neg = mean_{c != c*} 1 / min_s d_cs``
    (``neg = 0`` when C == 1); ``loss = -log(pos / (pos + neg + 1e-8))``.
    The memory receives no gradient (it is read detached).

    Backends: ``"torch"`` (autograd on the ``[B, C, S]`` distances, any
    device, float64 when ``x`` is float64, else float32), ``"native"`` (C++/
    OpenMP on CPU tensors, float32) and ``"triton"`` (float32; CUDA, or CPU
    under ``TRITON_INTERPRET=1``): both fused, a forward that streams over the
    clusters keeping per-sample running statistics and a backward that
    recomputes the distances, so no ``[B, C, S]`` tensor.
    ``"auto"`` picks triton on CUDA and native on CPU (7-9x faster than
    torch at B=128, C=500, S=10, D=1536), torch when the extension is not built.

    Args:
        x: ``[B, D]`` torch features (B >= 1), on the memory's device.
        memory: a :class:`MultiCenterMemory` (a :class:`ClusterMemory` counts as
            S = 1), or a ``[C, S, D]`` tensor.
        temp: must be ``None``. MCCL has no temperature (docs/design.md); a
            temperature dividing the distances would cancel in ``pos / (pos + neg)``,
            so any other value is rejected rather than silently ignored.
        reduction: ``"mean"`` over the batch (default), ``"sum"``, or
            ``"none"`` for the ``[B]`` per-sample losses (e.g. to average over the
            samples whose two feature heads agree on ``c*``).
        return_nearest: also return ``c*`` ``[B]`` int64.
        backend: ``"auto"``, ``"torch"``, ``"native"`` or ``"triton"``.

    Returns:
        the loss (scalar, or ``[B]`` for ``reduction="none"``), and ``c*`` when
        ``return_nearest``.

    Raises:
        ValueError: ``temp`` not None, unknown ``reduction``, an empty batch,
            ``x`` not ``[B, D]`` with the memory's D and device, NaN/Inf values.
        TypeError: ``memory`` of another type, non-float ``x`` or memory.
        hilcore.BackendUnavailable: a backend named explicitly cannot run here.

    Example:
        >>> import torch, hilcore
        >>> from hilcore.synthetic import reid_features
        >>> feats, labels, _ = reid_features(5, 40, dim=32, seed=0, outliers=0.0)  # 5 clusters
        >>> mem = hilcore.MultiCenterMemory.from_tensor(hilcore.subcluster(feats, labels, n_sub=3))
        >>> x = torch.tensor(feats[:8], requires_grad=True)
        >>> loss, cstar = hilcore.mccl_loss(x, mem, reduction="none", return_nearest=True)
        >>> loss.shape, cstar.tolist() == labels[:8].tolist()   # nearest cluster = own cluster here
        (torch.Size([8]), True)
        >>> loss.mean().backward()      # e.g. loss[cstar == cstar_other_head].mean() in HIL
        >>> x.grad.shape
        torch.Size([8, 32])
    """
    if temp is not None:
        raise ValueError(f"temp: MCCL has no temperature (docs/design.md); pass temp=None, got {temp!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    bank = _bank(memory).detach()
    xt = batch_features(x, bank.shape[-1], bank.device)
    if xt.shape[0] == 0:
        raise ValueError("x: expected at least one sample")
    impl = _dispatch.resolve("mccl_loss", backend, bank.device)
    dt = torch.float64 if xt.dtype == torch.float64 and torch.float64 in impl.dtypes else torch.float32
    xn = _arrays.unit_rows(xt.to(torch.promote_types(xt.dtype, dt)), "x").to(dt)  # scaled first: no under/overflow
    loss, cstar = impl(xn, bank.to(dt), DIST_EPS, MARGIN)
    loss = loss.to(xt.dtype if xt.dtype == torch.float64 else torch.float32)
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return (loss, cstar) if return_nearest else loss
