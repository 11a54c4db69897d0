"""The one dispatch point: which backend runs an op on which device.

``backend="auto"`` picks the fastest backend that can run on the input's
device and may fall back; a backend named explicitly that cannot run raises
:class:`BackendUnavailable` with the reason.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

ALL_BACKENDS = ("torch", "native", "cuda", "triton", "cuml", "faiss")

# Preference order for "auto", per device type. Each op lists what it implements.
_AUTO_ORDER = {
    "cpu": ("native", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here."""


@functools.lru_cache(maxsize=None)
def native_module():
    """The compiled extension, or None when the package was not built."""
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _native


def has_native() -> bool:
    return native_module() is not None


def has_cuda() -> bool:
    """True when this build of hilcore contains the CUDA kernels."""
    mod = native_module()
    return bool(mod is not None and mod.has_cuda())


@functools.lru_cache(maxsize=None)
def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _why_not(backend: str, device: torch.device) -> str | None:
    """None when ``backend`` can run on ``device``, else the reason it cannot."""
    dev = device.type
    if backend == "torch":
        return None
    if backend == "native":
        if not has_native():
            return "the hilcore._native extension is not built (pip install -e . compiles it)"
        if dev != "cpu":
            return f"the native backend runs on CPU tensors, got device {device}"
        return None
    if backend == "cuda":
        if not has_cuda():
            return "hilcore was not compiled with CUDA support (no CUDA compiler at build time)"
        if dev != "cuda":
            return f"the cuda backend needs CUDA tensors, got device {device}"
        from .cuda_backend.driver import driver_problem
        return driver_problem()
    if backend == "triton":
        if not has_triton():
            return "triton is not installed (pip install triton)"
        if dev == "cuda" or (dev == "cpu" and triton_interpret()):
            return None
        return f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 on CPU), got device {device}"
    if backend == "cuml":
        if importlib.util.find_spec("cuml") is None:
            return "cuml is not installed"
        if dev != "cuda":
            return f"the cuml backend needs CUDA input, got device {device}"
        return None
    if backend == "faiss":
        if importlib.util.find_spec("faiss") is None:
            return "faiss is not installed"
        return None
    return f"unknown backend {backend!r}; expected one of {('auto',) + ALL_BACKENDS}"


# Where each backend keeps its implementation of an op module ``hilcore.<package>.<op>``.
_PACKAGES = {"torch": "torch_backend", "native": "native_backend", "triton": "triton", "cuda": "cuda_backend"}


def impl(op_module: str, backend: str, attr: str | None = None):
    """The module (or its ``attr``) implementing ``op_module`` (e.g. ``"centers"``) for ``backend``."""
    import importlib

    mod = importlib.import_module(f"hilcore.{_PACKAGES[backend]}.{op_module}")
    return mod if attr is None else getattr(mod, attr)


def resolve(op: str, backend: str, device: torch.device, implemented: tuple[str, ...]) -> str:
    """Pick the backend for ``op`` on ``device``.

    ``implemented`` lists the backends that have an implementation of ``op``.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string, got {type(backend).__name__}")
    if backend == "auto":
        for cand in _AUTO_ORDER.get(device.type, ("torch",)):
            if cand in implemented and _why_not(cand, device) is None:
                return cand
        return "torch"
    if backend not in ALL_BACKENDS:
        raise ValueError(f"backend: expected one of {('auto',) + ALL_BACKENDS}, got {backend!r}")
    if backend not in implemented:
        raise BackendUnavailable(f"{op}: backend {backend!r} is not implemented for this op "
                                 f"(available: {implemented})")
    why = _why_not(backend, device)
    if why is not None:
        raise BackendUnavailable(f"{op}: backend {backend!r} cannot run: {why}")
    return backend


def backends(device: str | torch.device = "cpu") -> list[str]:
    """The backends that can run on ``device`` in this installation."""
    device = torch.device(device)
    return [b for b in ALL_BACKENDS if _why_not(b, device) is None]
