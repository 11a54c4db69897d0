"""The backend registry: the one place that says which implementation runs an op.

Every backend package registers, when it is imported, what it implements:
``register(op, backend, devices=..., dtypes=..., impl="module:function")`` for
a kernel, or ``parts={...}`` for a pipeline made of other ops (the Jaccard
distance is a kNN and the k-reciprocal stages). :func:`resolve` turns
``(op, backend, device)`` into an :class:`Impl`, or raises
:class:`BackendUnavailable` naming why; ``backend="auto"`` takes the first
backend of :data:`AUTO_ORDER` that can run on the device. An :class:`Impl`
knows what it is made of, so results can say truthfully what ran
(``Impl.label``, e.g. ``"knn=triton, stages=cuda"``).

The backends and the package that registers each are listed in
:data:`BACKENDS`; they are imported lazily (``importlib``) the first time the
registry is asked, so this module depends on none of them and an
implementation's module (and e.g. triton) is imported only when it is resolved.
See docs/design.md, "The registry".
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

#: backend name -> the module that registers its implementations.
BACKENDS = {
    "torch": "hilcore.torch_backend",
    "native": "hilcore.native_backend",
    "cuda": "hilcore.cuda_backend",
    "triton": "hilcore.triton",
    "cuml": "hilcore.cuml_backend",
    "faiss": "hilcore.faiss_backend",
    "faiss_gpu": "hilcore.faiss_backend",
    "cuvs": "hilcore.cuvs_backend",
}
ALL_BACKENDS = tuple(BACKENDS)

#: Preference order of ``backend="auto"``, per device type (torch, which runs anywhere, comes last).
#: The comparison backends (faiss, faiss_gpu, cuvs, cuml) are never picked by ``auto``.
AUTO_ORDER = {
    "cpu": ("native", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here (the message says why).

    The message names the op, the backend and the reason. ``backend="auto"``
    never raises it: it falls back to a backend that runs.

    Example:
        The reason depends on the build: without the CUDA kernels it says so,
        with them it says that the input is not on a GPU.

        >>> import numpy as np, hilcore
        >>> x = np.eye(4, dtype=np.float32)
        >>> try:
        ...     hilcore.knn(x, 2, backend="cuda")     # NumPy input lives on the CPU
        ... except hilcore.BackendUnavailable as e:
        ...     print(e)    # doctest: +ELLIPSIS
        knn: backend 'cuda' cannot run: ...
    """


# ------------------------------------------------------------------ what is installed
@functools.lru_cache(maxsize=None)
def native_module():
    """The compiled extension, or None when the package was not built."""
    try:
        return importlib.import_module("hilcore._native")
    except ImportError:
        return None


def has_native() -> bool:
    return native_module() is not None


def has_cuda() -> bool:
    """True when this build of hilcore contains the CUDA kernels.

    Says what was compiled, not whether a GPU is present (see
    ``torch.cuda.is_available()``); ``backends("cuda")`` lists what can run.

    Example:
        >>> import hilcore
        >>> hilcore.has_cuda() in (True, False)
        True
        >>> # the CUDA backend runs only where its kernels were compiled in (and a
        >>> # driver at least as new as the toolkit is present)
        >>> "cuda" not in hilcore.backends("cuda") or hilcore.has_cuda()
        True
    """
    mod = native_module()
    return bool(mod is not None and mod.has_cuda())


@functools.lru_cache(maxsize=None)
def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def cuda_version_problem(driver: int, built: int) -> str | None:
    """Why the CUDA kernels cannot run for these versions (1000 * major + 10 * minor), or None."""
    def fmt(v):
        return f"{v // 1000}.{(v % 1000) // 10}"
    if driver < 0:
        return "the CUDA driver version could not be queried (cudaDriverGetVersion failed)"
    if driver == 0:
        return "no CUDA driver is installed"
    if driver < built:
        return (f"the CUDA driver supports CUDA {fmt(driver)}, older than the CUDA {fmt(built)} toolkit hilcore "
                f"was built with: update the driver or rebuild hilcore with an older toolkit")
    return None


@functools.lru_cache(maxsize=None)
def cuda_driver_problem() -> str | None:
    """None when this build's CUDA kernels can run on this machine's driver (cudaDriverGetVersion
    against the CUDART_VERSION compiled in), else why not: the cuda backend is then unavailable."""
    mod = native_module()
    if mod is None or not hasattr(mod, "cuda_versions"):
        return None  # no CUDA kernels in this build: has_cuda() already says so
    return cuda_version_problem(*mod.cuda_versions())


def _why_not(backend: str, device: torch.device) -> str | None:
    """None when ``backend`` is installed and can run on ``device``, else the reason it cannot."""
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
        return cuda_driver_problem()
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
        if not _importable("faiss"):
            return "faiss is not installed"
        return None
    if backend in ("faiss_gpu", "cuvs"):
        return _gpu_library_why_not(backend, device)
    return f"unknown backend {backend!r}; expected one of {('auto',) + ALL_BACKENDS}"


def _importable(name: str) -> bool:
    """True when ``name`` can be imported (already imported counts; a module put in sys.modules too)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _gpu_library_why_not(backend: str, device: torch.device) -> str | None:
    """faiss_gpu / cuvs: the library importable (with GPU support), a CUDA device present, triton for the
    rescoring. The library is imported only when the rest holds (a CUDA device was asked for)."""
    pkg, pip = {"faiss_gpu": ("faiss", "faiss-gpu"), "cuvs": ("cuvs", "cuvs-cu12")}[backend]
    if not _importable(pkg):
        return f"{pkg} is not installed (the {backend} backend needs {pip})"
    if device.type != "cuda":
        return f"the {backend} backend needs CUDA tensors, got device {device}"
    if not torch.cuda.is_available():
        return "no CUDA device is present"
    if not has_triton():
        return f"triton is not installed (the {backend} backend rescores its candidates with the Triton kNN kernels)"
    try:
        if backend == "faiss_gpu":
            faiss = importlib.import_module("faiss")
            if not (hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "GpuIndexFlatIP")):
                return "this faiss has no GPU support (no faiss.GpuIndexFlatIP: install faiss-gpu)"
            if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() < 1:
                return "faiss sees no GPU"
        else:
            importlib.import_module("cuvs.neighbors.brute_force")
    except Exception as e:  # an installed but broken library (missing CUDA libraries, ...)
        return f"{pkg} cannot be imported: {type(e).__name__}: {e}"
    return None


# ------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Capability:
    """What one backend registered for one op.

    ``devices``: device types it runs on; ``dtypes``: the float dtypes it
    computes in (other inputs are converted by the op); ``parts``: for a
    pipeline, each part's op and the backends tried for it, in order.
    """

    op: str
    backend: str
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    impl: str | None = None
    parts: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    note: str = ""

    def why_not(self, device) -> str | None:
        """None when this implementation can run on ``device`` here, else the reason."""
        return _entry_why_not(self, torch.device(device))

    def available(self, device) -> bool:
        return self.why_not(device) is None


_TABLE: dict[tuple[str, str], Capability] = {}
_LOADED = False
_LOAD_LOCK = threading.RLock()


def register(op: str, backend: str, *, devices: tuple[str, ...], dtypes: tuple[torch.dtype, ...] = (torch.float32,),
             impl: str | None = None, parts: dict[str, tuple[str, tuple[str, ...]]] | None = None,
             note: str = "") -> None:
    """Declare that ``backend`` implements ``op``.

    Args:
        op: the op's registry name (``"knn"``, ``"jaccard.stages"``, ...).
        backend: one of :data:`BACKENDS`.
        devices: device types (``"cpu"``, ``"cuda"``) it runs on.
        dtypes: float dtypes it computes in.
        impl: ``"package.module:function"``, imported when first resolved.
        parts: for a pipeline instead of ``impl``: ``{part: (op, (backend, ...))}``;
            each part runs the first of its backends that can run on the device. A
            pipeline of one part is callable: it is that part under this backend's
            name, and its label says what runs.
        note: one line for :func:`capabilities` readers.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {ALL_BACKENDS}, got {backend!r}")
    if (impl is None) == (parts is None):
        raise ValueError(f"register({op!r}, {backend!r}): give exactly one of impl and parts")
    p = tuple((name, sub_op, tuple(cands)) for name, (sub_op, cands) in (parts or {}).items())
    _TABLE[(op, backend)] = Capability(op, backend, tuple(devices), tuple(dtypes), impl, p, note)


def _load() -> None:
    """Import every backend's registering module once (lazily: this module imports none of them)."""
    global _LOADED
    if _LOADED:
        return
    with _LOAD_LOCK:  # another thread sees the table only once it is complete
        if not _LOADED:
            for mod in BACKENDS.values():
                importlib.import_module(mod)
            _LOADED = True


def _entry(op: str, backend: str) -> Capability | None:
    _load()
    return _TABLE.get((op, backend))


def implemented(op: str) -> tuple[str, ...]:
    """The backends that registered ``op`` (whether or not they can run here), in :data:`BACKENDS` order."""
    _load()
    if not any(o == op for o, _ in _TABLE):
        raise KeyError(f"op: no backend registered {op!r}; known ops: {sorted({o for o, _ in _TABLE})}")
    return tuple(b for b in ALL_BACKENDS if (op, b) in _TABLE)


def implements(op: str, backend: str) -> bool:
    """True when ``backend`` registered ``op`` (``"auto"`` counts as implemented by every op)."""
    return backend == "auto" or _entry(op, backend) is not None


def _entry_why_not(cap: Capability, device: torch.device) -> str | None:
    if device.type not in cap.devices:
        return f"the {cap.backend} implementation of {cap.op} runs on {'/'.join(cap.devices)} tensors, got {device}"
    why = _why_not(cap.backend, device)
    if why is not None:
        return why
    for name, sub_op, cands in cap.parts:
        reasons = []
        for b in cands:
            sub = _entry(sub_op, b)
            r = f"{sub_op} has no {b} implementation" if sub is None else _entry_why_not(sub, device)
            if r is None:
                break
            reasons.append(f"{b}: {r}")
        else:
            return f"its {name} part cannot run ({'; '.join(reasons)})"
    return None


# ------------------------------------------------------------------ resolution
@dataclass(frozen=True)
class Impl:
    """A resolved implementation: call it, or read what it is made of.

    ``backend``: the backend whose registration was chosen; ``parts``: for a
    pipeline, the resolved part of each name; ``label``: what runs, e.g.
    ``"native"`` or ``"knn=triton, stages=cuda"``.
    """

    op: str
    backend: str
    dtypes: tuple[torch.dtype, ...]
    fn: Callable[..., Any] | None = None
    parts: tuple[tuple[str, "Impl"], ...] = field(default=())

    @property
    def label(self) -> str:
        if not self.parts:
            return self.backend
        return ", ".join(f"{name}={p.label}" for name, p in self.parts)

    def part(self, name: str) -> "Impl":
        for n, p in self.parts:
            if n == name:
                return p
        raise KeyError(f"{self.op}: no part {name!r} (parts: {[n for n, _ in self.parts]})")

    def __call__(self, *args, **kwargs):
        if self.fn is None:
            raise TypeError(f"{self.op} ({self.label}) is a pipeline of several parts: call its parts")
        return self.fn(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _function(path: str):
    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _build(cap: Capability, device: torch.device) -> Impl:
    if not cap.parts:
        return Impl(cap.op, cap.backend, cap.dtypes, _function(cap.impl))
    parts = []
    for name, sub_op, cands in cap.parts:
        for b in cands:
            sub = _entry(sub_op, b)
            if sub is not None and _entry_why_not(sub, device) is None:
                parts.append((name, _build(sub, device)))
                break
    # a pipeline of one part is that part under another name (e.g. the cuda kNN is Triton's): callable
    fn = parts[0][1].fn if len(parts) == 1 else None
    return Impl(cap.op, cap.backend, cap.dtypes, fn, tuple(parts))


def check_backend(backend, name: str = "backend") -> str:
    """``backend`` as a known backend name (or ``"auto"``); TypeError / ValueError otherwise."""
    if not isinstance(backend, str):
        raise TypeError(f"{name}: expected a string, got {type(backend).__name__}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{name}: expected one of {('auto',) + ALL_BACKENDS}, got {backend!r}")
    return backend


def resolve(op: str, backend: str, device, *, name: str | None = None) -> Impl:
    """The implementation of ``op`` for ``backend`` on ``device``.

    ``"auto"`` takes the first backend of :data:`AUTO_ORDER` that registered the
    op and can run on the device (torch, which runs anywhere, last). A backend
    named explicitly that did not register the op, or cannot run here, raises
    :class:`BackendUnavailable` with the reason; an unknown name raises ValueError.
    ``name`` is what error messages call the op (default ``op``).
    """
    check_backend(backend)
    device = torch.device(device)
    what = op if name is None else name
    if backend == "auto":
        order = AUTO_ORDER.get(device.type, ()) + ("torch",)
        reasons = []
        for b in order:
            cap = _entry(op, b)
            if cap is None:
                continue
            why = _entry_why_not(cap, device)
            if why is None:
                return _build(cap, device)
            reasons.append(f"{b}: {why}")
        raise BackendUnavailable(f"{what}: no backend can run on {device} ({'; '.join(reasons) or 'none registered'})")
    cap = _entry(op, backend)
    if cap is None:
        raise BackendUnavailable(f"{what}: backend {backend!r} is not implemented for this op "
                                 f"(implemented: {implemented(op)})")
    why = _entry_why_not(cap, device)
    if why is not None:
        raise BackendUnavailable(f"{what}: backend {backend!r} cannot run: {why}")
    return _build(cap, device)


def capabilities(device=None) -> dict[str, dict[str, Capability]]:
    """Every op and what each backend registered for it: ``{op: {backend: Capability}}``.

    With ``device``, only the backends that can run on that device in this
    installation. Ops named ``"a.b"`` are parts of a pipeline (e.g.
    ``"jaccard.stages"``, the k-reciprocal stages after the kNN).

    Example:
        >>> import hilcore
        >>> caps = hilcore.capabilities()        # everything registered, installed or not
        >>> sorted(caps["dbscan"])
        ['cuda', 'cuml', 'native', 'torch']
        >>> caps["knn"]["native"].devices, caps["knn"]["torch"].devices
        (('cpu',), ('cpu', 'cuda'))
        >>> "torch" in hilcore.capabilities("cpu")["knn"]   # what runs on this machine's CPU
        True
    """
    _load()
    dev = None if device is None else torch.device(device)
    out: dict[str, dict[str, Capability]] = {}
    for op in sorted({o for o, _ in _TABLE}):
        row = {}
        for b in ALL_BACKENDS:
            cap = _TABLE.get((op, b))
            if cap is not None and (dev is None or _entry_why_not(cap, dev) is None):
                row[b] = cap
        out[op] = row
    return out


def backends(device: str | torch.device = "cpu") -> list[str]:
    """The backends that are installed and can run on ``device`` (for at least their device type).

    Args:
        device: ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.

    Returns:
        names in ``("torch", "native", "cuda", "triton", "cuml", "faiss", "faiss_gpu", "cuvs")``
        order; ``"torch"`` runs everywhere. Which op implements which backend
        is listed in each op's docstring.

    Example:
        >>> import hilcore
        >>> b = hilcore.backends("cpu")
        >>> b[0], "cuda" in b
        ('torch', False)
    """
    device = torch.device(device)
    return [b for b in ALL_BACKENDS if _why_not(b, device) is None]
