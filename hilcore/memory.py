"""Memory banks of cluster-contrast training: cluster, multi-centre and instance memories.

Each bank is a :class:`torch.nn.Module` whose vectors live in buffers (so
``state_dict`` checkpoints them and ``.to(device)`` moves them) and never
receive gradients. A training step reads them through :meth:`logits` /
:func:`cluster_contrast_loss` / :func:`hilcore.mccl_loss`, runs backward and
the optimiser step, and then calls :meth:`update` explicitly with the batch.

The update is docs/design.md's momentum rule with exactly the semantics of a Python
loop over the batch: for i in batch order,
``m[y_i] <- normalize(mu * m[y_i] + (1 - mu) * x_i)`` (x_i L2-normalised), so a
target that occurs several times in a batch is updated once per occurrence, in
order. In a :class:`MultiCenterMemory` only the slot of cluster ``y_i`` with
the largest dot product with ``x_i`` at that moment (the lowest slot on ties)
is updated.

Backends of ``update``: ``"torch"`` (any device: the batch is applied in
rounds, round r applying the r-th occurrence of every target at once, so
``max multiplicity`` vectorised rounds and no per-sample Python loop),
``"native"`` (one C++ loop over the CPU buffers, zero-copy) and ``"triton"`` (one
program per distinct target applying its occurrences in order; float32, a
float64 memory goes through the torch path; see :mod:`hilcore.backend.triton.memory`).

Example:
    >>> import torch, hilcore
    >>> g = torch.Generator().manual_seed(0)
    >>> centres = torch.randn(10, 64, generator=g)
    >>> mem = hilcore.ClusterMemory.from_centers(centres, temp=0.05, momentum=0.1)
    >>> x = torch.randn(32, 64, generator=g, requires_grad=True)
    >>> y = torch.randint(0, 10, (32,), generator=g)
    >>> loss = hilcore.cluster_contrast_loss(x, mem, y)
    >>> loss.backward()          # gradients reach x only
    >>> x.grad.shape, mem.features.requires_grad
    (torch.Size([32, 64]), False)
    >>> before = mem.features.clone()
    >>> mem.update(x.detach(), y)  # then the momentum update, in place
    >>> sorted(torch.nonzero((mem.features != before).any(1)).flatten().tolist()) == sorted(set(y.tolist()))
    True
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _arrays, _dispatch
from ._core import NORM_EPS  # noqa: F401  (||v|| is floored here before dividing; v = 0 only when x = -m, mu = 1/2)
from .backend.torch.memory import occurrence, update as update_torch  # noqa: F401  (re-exported)

_MEM_DTYPES = (torch.float32, torch.float64)


# ------------------------------------------------------------------ validation
#: The smallest temperature accepted: logits ``s / temp`` (|s| <= 1) and their gradients stay far from float32's
#: overflow (1/temp <= 1e30); a smaller one (1e-45, a float32 subnormal) would turn the loss into inf - inf = NaN.
MIN_TEMP = 1e-30


def _number(v, name: str, expected: str) -> float:
    """``float(v)`` for a real number (Python, NumPy or a one-element tensor); strings and bools raise TypeError."""
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.dtype.is_complex and v.dtype != torch.bool:
        v = v.detach().reshape(()).item()
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected {expected}, got {type(v).__name__} {v!r}")
    return float(v)


def _check_temp(temp, name: str = "temp") -> float:
    t = _number(temp, name, f"a number >= {MIN_TEMP:g}")
    if not math.isfinite(t) or t < MIN_TEMP:
        raise ValueError(f"{name}: expected a finite number >= {MIN_TEMP:g} (the logits are divided by it), got {temp}")
    return t


def _check_momentum(momentum, name: str = "momentum") -> float:
    m = _number(momentum, name, "a number in [0, 1]")
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1] (the weight kept by the old memory), got {momentum}")
    return m


def batch_features(x, num_features: int, device: torch.device, name: str = "x") -> torch.Tensor:
    """Validate a batch ``[B, D]`` (B >= 0) as a torch tensor on ``device``; keeps dtype and autograd."""
    t, _ = _arrays.as_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D batch [B, D], got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{name}: expected a floating dtype, got {t.dtype}")
    if t.shape[1] != num_features:
        raise ValueError(f"{name}: expected {num_features} feature columns like the memory, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected the memory's device ({device}), got {t.device}")
    if t.numel():
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            k, rows = _arrays._rows_message(bad)
            raise ValueError(f"{name}: {k} row(s) contain NaN or Inf (first rows: {rows})")
    return t


def batch_targets(targets, batch: int, upper: int, device: torch.device, name: str = "targets",
                  what: str = "cluster") -> torch.Tensor:
    """Validate ``[B]`` integer targets in ``[0, upper)`` and return them as int64 on ``device``."""
    t = _arrays.int_vector(targets, name, batch, device, what=f"{what} ids", noun="ids", per="one per row of x")
    if batch:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= upper:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: {what} ids must lie in [0, {upper}) for this memory, got {bad} "
                             f"(noise samples, label -1, must be filtered out before the loss/update)")
    return t


def _normalize_rows(t: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    """Unit rows in ``dtype``, normalised in the wider of ``t``'s dtype and ``dtype`` first (so 1e-22 or 1e20 rows, or float64
    rows beyond the float32 range, stay exact); all-zero rows raise as :func:`hilcore.knn` does."""
    return _arrays.unit_rows(t.to(torch.promote_types(t.dtype, dtype)), name).to(dtype)


def _check_bank_values(t: torch.Tensor, name: str) -> None:
    if not torch.is_floating_point(t):
        raise TypeError(f"{name}: expected a floating dtype, got {t.dtype}")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        k, rows = _arrays._rows_message(bad)
        raise ValueError(f"{name}: {k} row(s) contain NaN or Inf (first rows: {rows})")


# ------------------------------------------------------------------ modules
class _Memory(nn.Module):
    """Shared parts: a ``features`` buffer ``[R, S, D]`` viewed as ``[R, D]`` when S == 1."""

    _what = "cluster"

    def __init__(self, shape, temp: float, momentum: float, device, dtype):
        super().__init__()
        if dtype not in _MEM_DTYPES:
            raise TypeError(f"dtype: expected torch.float32 or torch.float64 for a memory, got {dtype}")
        self.temp = _check_temp(temp)
        self.momentum = _check_momentum(momentum)
        self.register_buffer("features", torch.zeros(shape, device=device, dtype=dtype))

    @property
    def num_features(self) -> int:
        return self.features.shape[-1]

    def _bank(self) -> torch.Tensor:
        """The buffer as ``[R, S, D]``."""
        f = self.features
        return f if f.dim() == 3 else f.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.features.shape)}, temp={self.temp}, momentum={self.momentum}"

    def _x(self, x, name="x") -> torch.Tensor:
        t = batch_features(x, self.num_features, self.features.device, name)
        return _normalize_rows(t, name, self.features.dtype)

    @torch.no_grad()
    def update(self, x, targets, *, backend: str = "auto") -> None:
        """Momentum update in place, sequential per-sample semantics (see the module docstring).

        Args:
            x: ``[B, D]`` batch features (rows L2-normalised here; detached), on the memory's device.
            targets: ``[B]`` integer ids in ``[0, R)`` (R = clusters, or instances for an
                :class:`InstanceMemory`); duplicates are applied one after the other in batch order.
            backend: ``"auto"``, ``"torch"``, ``"native"`` (CPU buffers) or ``"triton"`` (CUDA, or CPU
                under ``TRITON_INTERPRET=1``).
        """
        xt = batch_features(x, self.num_features, self.features.device).detach()
        bank = self._bank()
        tt = batch_targets(targets, xt.shape[0], bank.shape[0], bank.device, what=self._what)
        impl = _dispatch.resolve("memory.update", backend, bank.device, name=f"{type(self).__name__}.update")
        if xt.shape[0] == 0:
            return
        if not self.features.is_contiguous():
            raise ValueError("features: the memory buffer must be contiguous for an in-place update")
        xt = _normalize_rows(xt, "x", bank.dtype).contiguous()
        impl(bank, xt, tt, self.momentum)

    def forward(self, x, targets):
        """The cluster-contrast loss of ``x`` against this memory (see :func:`cluster_contrast_loss`)."""
        return cluster_contrast_loss(x, self, targets)


class ClusterMemory(_Memory):
    """One unit vector per cluster: buffer ``features`` ``[C, D]``.

    Args:
        num_features: D, the feature width.
        num_clusters: C, the number of clusters.
        temp: temperature of :meth:`logits` (``x @ m.T / temp``).
        momentum: ``mu``, the weight the old memory keeps in :meth:`update`.
        device, dtype: of the buffer (float32 or float64). Starts at zeros;
            use :meth:`from_centers` to start from cluster centres.

    Example:
        >>> import hilcore
        >>> from hilcore.synthetic import reid_features
        >>> x, labels, _ = reid_features(5, 40, dim=32, seed=0, outliers=0.0)   # 5 clusters of 40
        >>> mem = hilcore.ClusterMemory.from_centers(hilcore.cluster_centers(x, labels))
        >>> mem
        ClusterMemory(shape=(5, 32), temp=0.05, momentum=0.1)
        >>> logits = mem.logits(x[:8])  # [B, C]
        >>> logits.shape, logits.argmax(1).tolist() == labels[:8].tolist()
        (torch.Size([8, 5]), True)
    """

    def __init__(self, num_features: int, num_clusters: int, temp: float = 0.05, momentum: float = 0.1, *,
                 device=None, dtype=torch.float32):
        d = _arrays.positive_int(num_features, "num_features")
        c = _arrays.positive_int(num_clusters, "num_clusters")
        super().__init__((c, d), temp, momentum, device, dtype)

    @classmethod
    def from_centers(cls, centers, temp: float = 0.05, momentum: float = 0.1, *, dtype=torch.float32):
        """A memory holding the L2-normalised ``centers`` ``[C, D]`` (same device; NumPy goes to CPU)."""
        t, _ = _arrays.as_tensor(centers, "centers")
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"centers: expected a non-empty 2-D array [C, D], got shape {tuple(t.shape)}")
        _check_bank_values(t, "centers")
        mem = cls(t.shape[1], t.shape[0], temp, momentum, device=t.device, dtype=dtype)
        mem.features.copy_(_normalize_rows(t.detach(), "centers", dtype))
        return mem

    @property
    def num_clusters(self) -> int:
        return self.features.shape[0]

    def logits(self, x) -> torch.Tensor:
        """``[B, C]`` = ``normalize(x) @ m.T / temp`` (differentiable in x; the memory gets no gradient)."""
        return self._x(x) @ self.features.T / self.temp


class MultiCenterMemory(_Memory):
    """``S`` unit vectors (slots) per cluster: buffer ``features`` ``[C, S, D]``.

    Slot 0 is the cluster centre and slots 1.. the sub-cluster centres when built
    from :func:`hilcore.subcluster`. :meth:`logits` scores a sample against a
    cluster by its most similar slot: ``max_s <normalize(x), m[c, s]> / temp``.
    :meth:`update` moves only the slot of the target cluster most similar to the
    sample (largest dot product; the lowest slot on ties).

    Example:
        >>> import hilcore
        >>> from hilcore.synthetic import reid_features
        >>> x, labels, _ = reid_features(5, 40, dim=32, seed=0, outliers=0.0)   # 5 clusters of 40
        >>> mem = hilcore.MultiCenterMemory.from_tensor(hilcore.subcluster(x, labels, n_sub=3))
        >>> mem
        MultiCenterMemory(shape=(5, 4, 32), temp=0.05, momentum=0.1)
        >>> mem.logits(x[:8]).argmax(1).tolist() == labels[:8].tolist()
        True
    """

    def __init__(self, num_features: int, num_clusters: int, num_slots: int, temp: float = 0.05,
                 momentum: float = 0.1, *, device=None, dtype=torch.float32):
        d = _arrays.positive_int(num_features, "num_features")
        c = _arrays.positive_int(num_clusters, "num_clusters")
        s = _arrays.positive_int(num_slots, "num_slots")
        super().__init__((c, s, d), temp, momentum, device, dtype)

    @classmethod
    def from_tensor(cls, multi, temp: float = 0.05, momentum: float = 0.1, *, dtype=torch.float32):
        """A memory holding ``multi`` ``[C, S, D]`` (e.g. :func:`hilcore.subcluster`'s output), every slot
        L2-normalised."""
        t, _ = _arrays.as_tensor(multi, "multi")
        if t.dim() != 3 or 0 in t.shape:
            raise ValueError(f"multi: expected a non-empty 3-D array [C, S, D], got shape {tuple(t.shape)}")
        _check_bank_values(t, "multi")
        c, s, d = t.shape
        mem = cls(d, c, s, temp, momentum, device=t.device, dtype=dtype)
        mem.features.copy_(_normalize_rows(t.detach(), "multi", dtype))
        return mem

    @property
    def num_clusters(self) -> int:
        return self.features.shape[0]

    @property
    def num_slots(self) -> int:
        return self.features.shape[1]

    def logits(self, x) -> torch.Tensor:
        """``[B, C]`` = ``max_s normalize(x) . m[c, s] / temp`` (forms ``[B, C, S]`` scores)."""
        xn = self._x(x)
        return torch.einsum("bd,csd->bcs", xn, self.features).amax(dim=2) / self.temp


class InstanceMemory(_Memory):
    """One unit vector per image, ``features`` ``[N, D]``, and its pseudo label, ``labels`` ``[N]`` int64
    (-1 for noise). :meth:`update` takes image indices as targets.

    Example:
        >>> import torch, hilcore
        >>> from hilcore.synthetic import reid_features
        >>> x, labels, _ = reid_features(5, 40, dim=32, seed=0)
        >>> mem = hilcore.InstanceMemory.from_features(x, labels)
        >>> mem, mem.logits(x[:3]).argmax(1).tolist()     # each image is most similar to itself
        (InstanceMemory(shape=(200, 32), temp=0.05, momentum=0.1), [0, 1, 2])
        >>> mem.update(x[:3], torch.tensor([0, 1, 2]))    # targets: image indices
    """

    _what = "instance"

    def __init__(self, num_features: int, num_instances: int, temp: float = 0.05, momentum: float = 0.1, *,
                 device=None, dtype=torch.float32):
        d = _arrays.positive_int(num_features, "num_features")
        n = _arrays.positive_int(num_instances, "num_instances")
        super().__init__((n, d), temp, momentum, device, dtype)
        self.register_buffer("labels", torch.full((n,), -1, dtype=torch.int64, device=device))

    @classmethod
    def from_features(cls, features, labels=None, temp: float = 0.05, momentum: float = 0.1, *,
                      dtype=torch.float32):
        """A memory holding the L2-normalised ``features`` ``[N, D]`` and their ``labels`` ``[N]`` (-1 noise)."""
        t, _ = _arrays.features(features, "features", normalize=True)
        mem = cls(t.shape[1], t.shape[0], temp, momentum, device=t.device, dtype=dtype)
        mem.features.copy_(t.to(dtype))
        if labels is not None:
            mem.set_labels(labels)
        return mem

    @property
    def num_instances(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def set_labels(self, labels) -> None:
        """Replace the pseudo labels (``[N]`` integers, -1 for noise)."""
        t = _arrays.int_vector(labels, "labels", self.num_instances, self.labels.device,
                               what="pseudo labels, -1 for noise", noun="labels", per="one per instance")
        if t.numel() and int(t.min()) < -1:
            raise ValueError(f"labels: expected ids >= 0 or -1 for noise, got {int(t.min())}")
        self.labels.copy_(t)

    def logits(self, x) -> torch.Tensor:
        """``[B, N]`` = ``normalize(x) @ m.T / temp``."""
        return self._x(x) @ self.features.T / self.temp


# ------------------------------------------------------------------ loss
def cluster_contrast_loss(x, memory, targets, temp: float | None = None, *, reduction: str = "mean"):
    """Cluster-contrast (ClusterNCE) loss: cross-entropy of ``normalize(x) @ m.T / temp`` with ``targets``.

    Autograd flows to ``x`` only: the memory is a buffer read without gradient,
    so backward never touches it; call ``memory.update(x.detach(), targets)``
    after the optimiser step. Reading the memory and then updating it in place
    before ``backward`` raises autograd's "modified by an inplace operation"
    error, which guards that order.

    Args:
        x: ``[B, D]`` torch features (rows L2-normalised inside, differentiably).
        memory: a :class:`ClusterMemory`, :class:`MultiCenterMemory` (a cluster
            scores by its most similar slot), :class:`InstanceMemory`, or a
            tensor ``[C, D]`` / ``[C, S, D]`` used as is.
        targets: ``[B]`` integer ids in ``[0, C)``.
        temp: temperature; ``None`` takes the memory's (0.05 by default; 0.05 for a raw tensor).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (as ``torch.nn.functional.cross_entropy``).

    Returns:
        scalar loss (or ``[B]`` with ``reduction="none"``), differentiable in ``x``.

    Raises:
        ValueError: unknown ``reduction``, an empty batch, ``x`` not ``[B, D]``
            with the memory's D and device, NaN/Inf, ``targets`` of the wrong
            length or outside ``[0, C)`` (noise, -1, must be filtered out).
        TypeError: ``memory`` of another type, non-integer ``targets``.

    Example:
        >>> import torch, hilcore
        >>> from hilcore.synthetic import reid_features
        >>> feats, labels, _ = reid_features(5, 40, dim=32, seed=0, outliers=0.0)
        >>> mem = hilcore.ClusterMemory.from_centers(hilcore.cluster_centers(feats, labels))
        >>> x = torch.tensor(feats[:16], requires_grad=True)
        >>> y = torch.as_tensor(labels[:16])
        >>> loss = hilcore.cluster_contrast_loss(x, mem, y)
        >>> loss.shape, bool(loss < hilcore.cluster_contrast_loss(x, mem, (y + 1) % 5))  # right labels: lower loss
        (torch.Size([]), True)
        >>> loss.backward(); mem.update(x.detach(), y)   # backward first, then the momentum update
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    if isinstance(memory, _Memory):
        bank = memory.features
        t = memory.temp if temp is None else _check_temp(temp)
    elif isinstance(memory, torch.Tensor):
        if memory.dim() not in (2, 3) or 0 in memory.shape:
            raise ValueError(f"memory: expected a non-empty [C, D] or [C, S, D] tensor, got shape {tuple(memory.shape)}")
        if memory.dtype not in _MEM_DTYPES:
            raise TypeError(f"memory: expected float32 or float64, got {memory.dtype}")
        bank = memory.detach()
        t = 0.05 if temp is None else _check_temp(temp)
    else:
        raise TypeError(f"memory: expected a ClusterMemory, MultiCenterMemory, InstanceMemory or a tensor, "
                        f"got {type(memory).__name__}")
    xt = batch_features(x, bank.shape[-1], bank.device)
    if xt.shape[0] == 0:
        raise ValueError("x: expected at least one sample")
    y = batch_targets(targets, xt.shape[0], bank.shape[0], bank.device)
    _check_bank_values(bank.detach(), "memory")  # a NaN memory would give a NaN loss (mccl_loss refuses it too)
    xn = _normalize_rows(xt, "x", bank.dtype)
    if bank.dim() == 2:
        logits = xn @ bank.T / t
    else:
        logits = torch.einsum("bd,csd->bcs", xn, bank).amax(dim=2) / t
    return F.cross_entropy(logits, y, reduction=reduction)
