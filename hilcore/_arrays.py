"""Array families and input validation shared by every public op.

Public functions accept NumPy arrays, torch tensors (CPU or CUDA) and CuPy
arrays. Internally every backend works on torch tensors; results go back to
the caller's family with :func:`to_family`. Validation errors are
``ValueError``/``TypeError`` that name the argument and say what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Family:
    """Where an input came from: ``"numpy"``, ``"torch"`` or ``"cupy"``, and its device."""

    kind: str
    device: torch.device

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def as_tensor(a, name: str) -> tuple[torch.Tensor, Family]:
    """Zero-copy view of ``a`` as a torch tensor, and the family to return results in."""
    if isinstance(a, torch.Tensor):
        if a.layout != torch.strided:
            raise TypeError(f"{name}: expected a dense tensor, got layout {a.layout}")
        return a, Family("torch", a.device)
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            raise TypeError(f"{name}: expected a numeric array, got dtype object")
        return torch.from_numpy(np.ascontiguousarray(a) if not a.flags.writeable else a), Family(
            "numpy", torch.device("cpu"))
    if _is_cupy(a):
        t = torch.from_dlpack(a)
        return t, Family("cupy", t.device)
    if isinstance(a, (list, tuple)):
        arr = np.asarray(a)
        return torch.from_numpy(arr), Family("numpy", torch.device("cpu"))
    raise TypeError(f"{name}: expected a NumPy array, torch tensor or CuPy array, got {type(a).__name__}")


def to_family(t: torch.Tensor, fam: Family):
    """Return ``t`` in the caller's family (NumPy for NumPy input, CuPy for CuPy input)."""
    if fam.kind == "numpy":
        return t.detach().cpu().numpy()
    if fam.kind == "cupy":
        import cupy

        return cupy.from_dlpack(t.detach())
    return t


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def features(x, name: str = "x", *, normalize: bool = True) -> tuple[torch.Tensor, Family]:
    """Validate a feature matrix ``[N, D]`` and return it as contiguous float32 torch.

    Rows are L2-normalised when ``normalize`` (every op works on cosine
    similarity; unnormalised input is accepted and normalised here). Raises on
    wrong rank, non-floating dtype, empty input, NaN/Inf and all-zero rows.
    """
    t, fam = as_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, D] (one row per image), got shape {tuple(t.shape)}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype (float16/bfloat16/float32/float64), got {t.dtype}")
    n, d = t.shape
    if n == 0:
        raise ValueError(f"{name}: expected at least one row, got shape {tuple(t.shape)}")
    if d == 0:
        raise ValueError(f"{name}: expected at least one feature column, got shape {tuple(t.shape)}")
    src = t
    t = t.to(torch.float32).contiguous()
    # One pass: a NaN/Inf entry makes its row's norm non-finite; so does a float32 overflow of
    # finite entries, which the float64 norm of those rows then settles.
    norms = torch.linalg.vector_norm(t, dim=1)
    odd = ~torch.isfinite(norms)
    if bool(odd.any()):
        nonfinite = torch.zeros_like(odd)
        nonfinite[odd] = ~torch.isfinite(t[odd]).all(dim=1)
        if bool(nonfinite.any()):
            rows = torch.nonzero(nonfinite).flatten()[:5].tolist()
            raise ValueError(f"{name}: {int(nonfinite.sum())} row(s) contain NaN or Inf (first rows: {rows})")
        norms[odd] = torch.linalg.vector_norm(t[odd].double(), dim=1).float()
        if normalize and not bool(torch.isfinite(norms).all()):
            rows = torch.nonzero(~torch.isfinite(norms)).flatten()[:5].tolist()
            raise ValueError(f"{name}: row(s) {rows} are too large to L2-normalise in float32")
    if normalize:
        zero = norms == 0
        if bool(zero.any()):
            rows = torch.nonzero(zero).flatten()[:5].tolist()
            raise ValueError(f"{name}: {int(zero.sum())} row(s) are all zeros and cannot be L2-normalised "
                             f"(first rows: {rows})")
        norms = norms.unsqueeze(1)
        # normalise in place when the conversion above already made a private copy
        t = t.div_(norms) if t.data_ptr() != src.data_ptr() else t / norms
    return t, fam


_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def int_vector(a, name: str, n: int, device: torch.device, *, what: str, noun: str, per: str) -> torch.Tensor:
    """Validate a 1-D integer array of ``n`` entries and return it as int64 on ``device``.

    Errors read "{name}: expected a 1-D array of {what}", "... an integer dtype
    ({what})" and "{name}: expected {n} {noun} ({per}), got ...".
    """
    t, _ = as_tensor(a, name)
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D array of {what}, got shape {tuple(t.shape)}")
    if t.dtype not in _INT_DTYPES:
        raise TypeError(f"{name}: expected an integer dtype ({what}), got {t.dtype}")
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} {noun} ({per}), got {t.shape[0]}")
    return t.to(device=device, dtype=torch.int64)


def features_like(y, ref: torch.Tensor, name: str, ref_name: str) -> torch.Tensor:
    """:func:`features` for a second matrix that must share ``ref``'s device and column count."""
    t, _ = features(y, name)
    if t.device != ref.device:
        raise ValueError(f"{name}: expected the same device as {ref_name} ({ref.device}), got {t.device}")
    if t.shape[1] != ref.shape[1]:
        raise ValueError(f"{name}: expected {ref.shape[1]} columns like {ref_name}, got shape {tuple(t.shape)}")
    return t


def positive_int(v, name: str, *, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    return int(v)


def nonneg_float(v, name: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}") from None
    if not np.isfinite(f) or f < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {v}")
    return f
