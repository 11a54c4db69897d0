"""The backend registry: the one place that says which implementation runs an op.

Every backend is one folder ``hilcore/backend/<name>/`` whose ``__init__.py``
describes it: ``BACKEND = Backend(__name__, order=..., devices=..., why_not=...)``
says where it runs and its own availability check, and ``BACKEND.op(op,
impl=".module:function")`` (or ``parts={...}`` for a pipeline made of other
ops: the Jaccard distance is a kNN and the k-reciprocal stages) says which ops
it implements, on which devices and in which dtypes. :func:`discover` finds the
folders (``pkgutil`` over ``hilcore.backend``), imports each ``__init__`` and
reads its :class:`Backend`: there is no list of backends here, so a new backend
is one new folder and no edit to this module. :func:`resolve` turns
``(op, backend, device)`` into an :class:`Impl`, or raises
:class:`BackendUnavailable` naming why; ``backend="auto"`` takes the first
backend of :data:`AUTO_ORDER` (built from each backend's ``auto`` ranks) that
can run on the device. An :class:`Impl` knows what it is made of, so results
can say truthfully what ran (``Impl.label``, e.g. ``"knn=triton, stages=cuda"``).

The backend packages are imported the first time the registry is asked (not
when this module is imported), so this module imports none of them, and an
implementation's module (and e.g. triton) is imported only when it is resolved.
:data:`BACKENDS` (name -> :class:`Backend`), :data:`ALL_BACKENDS` (the names,
in listing order) and :data:`AUTO_ORDER` are computed then.
See docs/design.md, "The registry".
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

#: the package whose sub-packages are the backends (one folder each)
BACKENDS_PACKAGE = "hilcore.backend"


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


def importable(name: str) -> bool:
    """True when ``name`` can be imported (already imported counts; a module put in sys.modules too)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def gpu_library_problem(backend: str, device: torch.device, pkg: str, pip: str,
                        probe: Callable[[], str | None]) -> str | None:
    """The availability check shared by the GPU comparison libraries (faiss_gpu, cuvs): ``pkg``
    importable, a CUDA device asked for and present, triton for the rescoring, then ``probe()`` (which
    imports the library: only once the rest holds) returns None or what is missing."""
    if not importable(pkg):
        return f"{pkg} is not installed (the {backend} backend needs {pip})"
    if device.type != "cuda":
        return f"the {backend} backend needs CUDA tensors, got device {device}"
    if not torch.cuda.is_available():
        return "no CUDA device is present"
    if not has_triton():
        return f"triton is not installed (the {backend} backend rescores its candidates with the Triton kNN kernels)"
    try:
        return probe()
    except Exception as e:  # an installed but broken library (missing CUDA libraries, ...)
        return f"{pkg} cannot be imported: {type(e).__name__}: {e}"


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


def _capability(op: str, backend: str, devices, dtypes, impl: str | None,
                parts: dict[str, tuple[str, tuple[str, ...]]] | None, note: str) -> Capability:
    if (impl is None) == (parts is None):
        raise ValueError(f"register({op!r}, {backend!r}): give exactly one of impl and parts")
    if impl is not None and ":" not in impl:
        raise ValueError(f"register({op!r}, {backend!r}): impl: expected 'package.module:function', got {impl!r}")
    p = tuple((name, sub_op, tuple(cands)) for name, (sub_op, cands) in (parts or {}).items())
    return Capability(op, backend, tuple(devices), tuple(dtypes), impl, p, note)


@dataclass(eq=False)
class Backend:
    """What one backend folder (``hilcore/backend/<name>/``) says about itself, in its ``__init__.py``.

    Args:
        package: the backend package's ``__name__``; its last component is the
            backend's name (the folder's name).
        why_not: the backend's own availability check: ``why_not(device)`` is
            None when it is installed and can run on that :class:`torch.device`,
            else the reason, in words (it must not import optional libraries
            unless the rest holds: it runs whenever ``backend="auto"`` resolves).
        devices: the device types its ops run on unless an op says otherwise.
        dtypes: the float dtypes its ops compute in unless an op says otherwise.
        order: its place in listings (:data:`ALL_BACKENDS`, :func:`backends`).
        auto: ``{device type: rank}``: where ``backend="auto"`` may pick it, lower
            ranks tried first; absent (the comparison backends): never picked.
        doc: one line for readers of the registry.

    :meth:`op` declares each op it implements.

    Example:
        A backend folder's whole ``__init__.py`` can be::

            from ..._dispatch import Backend
            BACKEND = Backend(__name__, why_not=lambda device: None, devices=("cpu",))
            BACKEND.op("knn", impl=".knn:knn")      # the function knn in ./knn.py
    """

    package: str
    why_not: Callable[[torch.device], str | None]
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    order: int = 100
    auto: dict[str, int] = field(default_factory=dict)
    doc: str = ""
    ops: list[Capability] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.package.rpartition(".")[2]

    def op(self, op: str, *, impl: str | None = None, parts: dict[str, tuple[str, tuple[str, ...]]] | None = None,
           devices: tuple[str, ...] | None = None, dtypes: tuple[torch.dtype, ...] | None = None,
           note: str = "") -> None:
        """Declare that this backend implements ``op`` (the arguments are :func:`register`'s).

        ``impl`` may be relative to the backend's package (``".knn:knn"``);
        ``devices`` and ``dtypes`` default to the backend's.
        """
        if impl is not None and impl.startswith("."):
            mod, _, attr = impl.partition(":")
            impl = f"{importlib.util.resolve_name(mod, self.package)}:{attr}"
        self.ops.append(_capability(op, self.name, self.devices if devices is None else devices,
                                    self.dtypes if dtypes is None else dtypes, impl, parts, note))


_TABLE: dict[tuple[str, str], Capability] = {}
_BACKENDS: dict[str, Backend] = {}
_AUTO_ORDER: dict[str, tuple[str, ...]] = {}
_LOADED = False
_LOAD_LOCK = threading.RLock()


def register(op: str, backend: str, *, devices: tuple[str, ...], dtypes: tuple[torch.dtype, ...] = (torch.float32,),
             impl: str | None = None, parts: dict[str, tuple[str, tuple[str, ...]]] | None = None,
             note: str = "") -> None:
    """Declare that ``backend`` implements ``op`` (backends do it with :meth:`Backend.op`; this adds an
    entry to the table directly, e.g. in a test; :func:`discover` starts the table afresh).

    Args:
        op: the op's registry name (``"knn"``, ``"jaccard.stages"``, ...).
        backend: one of :data:`ALL_BACKENDS`.
        devices: device types (``"cpu"``, ``"cuda"``) it runs on.
        dtypes: float dtypes it computes in.
        impl: ``"package.module:function"``, imported when first resolved.
        parts: for a pipeline instead of ``impl``: ``{part: (op, (backend, ...))}``;
            each part runs the first of its backends that can run on the device. A
            pipeline of one part is callable: it is that part under this backend's
            name, and its label says what runs.
        note: one line for :func:`capabilities` readers.
    """
    _load()
    if backend not in _BACKENDS:
        raise ValueError(f"backend: expected one of {tuple(_BACKENDS)}, got {backend!r}")
    _TABLE[(op, backend)] = _capability(op, backend, devices, dtypes, impl, parts, note)


def discover() -> tuple[str, ...]:
    """(Re)read the backend folders and rebuild the table; returns the backend names in listing order.

    Every sub-package of ``hilcore.backend`` (every folder on its ``__path__``
    with an ``__init__.py``, names starting with ``_`` skipped) is imported and
    must define ``BACKEND``, a :class:`Backend` named like its folder. Called
    once, lazily, by everything that reads the table; call it again after
    adding a folder at run time (tests do).
    """
    global _LOADED
    with _LOAD_LOCK:
        pkg = importlib.import_module(BACKENDS_PACKAGE)
        found = []
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.ispkg or info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"{BACKENDS_PACKAGE}.{info.name}")
            desc = getattr(mod, "BACKEND", None)
            if not isinstance(desc, Backend):
                raise TypeError(f"{mod.__name__}: a backend folder's __init__.py must define "
                                f"BACKEND = hilcore._dispatch.Backend(__name__, ...), got {type(desc).__name__}")
            if desc.name != info.name:
                raise ValueError(f"{mod.__name__}: BACKEND is named {desc.name!r}, expected the folder's name "
                                 f"{info.name!r} (pass __name__ as its package)")
            found.append(desc)
        found.sort(key=lambda b: (b.order, b.name))
        _BACKENDS.clear()
        _BACKENDS.update((b.name, b) for b in found)
        _TABLE.clear()
        for b in found:
            for cap in b.ops:
                _TABLE[(cap.op, b.name)] = cap
        _AUTO_ORDER.clear()
        for dev in sorted({d for b in found for d in b.auto}):
            ranked = sorted((b for b in found if dev in b.auto), key=lambda b: (b.auto[dev], b.order, b.name))
            _AUTO_ORDER[dev] = tuple(b.name for b in ranked)
        _LOADED = True
        return tuple(_BACKENDS)


def _load() -> None:
    """Discover the backends once (lazily: this module imports none of them)."""
    if _LOADED:
        return
    with _LOAD_LOCK:  # another thread sees the table only once it is complete
        if not _LOADED:
            discover()


def __getattr__(name: str):
    # BACKENDS (name -> Backend), ALL_BACKENDS (the names, in listing order) and AUTO_ORDER
    # ({device type: names in the order auto tries them}) exist once the folders are discovered
    if name in ("BACKENDS", "ALL_BACKENDS", "AUTO_ORDER"):
        _load()
        return {"BACKENDS": _BACKENDS, "ALL_BACKENDS": tuple(_BACKENDS), "AUTO_ORDER": _AUTO_ORDER}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _why_not(backend: str, device: torch.device) -> str | None:
    """None when ``backend`` is installed and can run on ``device``, else the reason (its own check)."""
    _load()
    desc = _BACKENDS.get(backend)
    if desc is None:
        return f"unknown backend {backend!r}; expected one of {('auto',) + tuple(_BACKENDS)}"
    return desc.why_not(torch.device(device))


def _entry(op: str, backend: str) -> Capability | None:
    _load()
    return _TABLE.get((op, backend))


def implemented(op: str) -> tuple[str, ...]:
    """The backends that registered ``op`` (whether or not they can run here), in :data:`ALL_BACKENDS` order."""
    _load()
    if not any(o == op for o, _ in _TABLE):
        raise KeyError(f"op: no backend registered {op!r}; known ops: {sorted({o for o, _ in _TABLE})}")
    return tuple(b for b in _BACKENDS if (op, b) in _TABLE)


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
    _load()
    if backend != "auto" and backend not in _BACKENDS:
        raise ValueError(f"{name}: expected one of {('auto',) + tuple(_BACKENDS)}, got {backend!r}")
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
        order = _AUTO_ORDER.get(device.type, ())
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
        for b in _BACKENDS:
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
    _load()
    return [b for b in _BACKENDS if _why_not(b, device) is None]
