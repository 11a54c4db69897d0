"""Training checkpoints that are safe to open: ``last.pt`` (every epoch), ``last.prev.pt`` (the one before), ``best.pt``.

**Safe format.** A checkpoint holds only what ``torch.load(weights_only=True)``
reads: tensors, numbers, strings, ``None``, lists, tuples and dicts. Every load
in hilcore uses ``weights_only=True`` (:func:`load_state_file`), so opening a
file never runs code from it; a file that pickles other Python objects is
refused with :class:`UnsafeCheckpointError`. The one way to read such a file
is the explicit ``hil convert-checkpoint --trust IN [OUT]``
(:func:`convert_checkpoint` with ``trust=True``), for files one trusts.

**Checksum and version.** :func:`save_checkpoint` stores ``hilcore_version``,
the format ``version`` and ``checksum = {"sha256": hex}``: SHA-256 over a
canonical serialisation of every other entry (:func:`payload_digest`: type
tags, dict keys in order, numbers bit-exact, tensors by dtype, shape and raw
bytes). A load recomputes it; a mismatch, a truncated file or an unreadable
one raises :class:`CorruptCheckpointError`. A checkpoint of an older hilcore
or format is accepted (format 1 had no checksum: it loads unverified, with a
warning); one from a newer hilcore with the same format loads with a warning;
a newer format is refused.

**Atomic writes.** A checkpoint is written to a temporary file in the
destination folder, flushed and fsync'ed, then moved over the destination
with ``os.replace``, and the folder is fsync'ed. Before ``last.pt`` is
replaced, the current one becomes ``last.prev.pt`` (a hard link moved into
place with ``os.replace``, a copy where links are unsupported), so a
``last.pt`` always exists and the epoch before it is kept. A stale temporary
file of a killed writer is removed by the next save.

**Auto-resume** (:func:`load_resume`) takes ``last.pt``; when that is corrupt
it falls back to the newest intact one of ``last.prev.pt`` and ``best.pt``
and says which it used.

Contents (:func:`training_state`): ``model``, ``optimizer``, ``scaler``
(GradScaler state or None), ``epoch`` (the last completed epoch, 1-based),
``rng`` (Python, NumPy, torch CPU and CUDA generator states, as lists and
tensors), ``config`` (the run's config as a plain dict), ``history`` (one
metrics dict per completed epoch), ``best`` (the best score so far and its
epoch), plus ``version``, ``hilcore_version`` and ``checksum``.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import struct
import warnings
from collections import OrderedDict
from pathlib import Path, PurePath

import numpy as np
import torch

from hilcore import _files
from hilcore._files import atomic_open

LAST = "last.pt"
PREV = "last.prev.pt"
BEST = "best.pt"
BROKEN = "last.broken.pt"
FORMAT_VERSION = 2
_TMP_PREFIX = ".tmp-ckpt-"
_META = ("checksum",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (the message says why and what to do)."""


class CorruptCheckpointError(CheckpointError):
    """Truncated, unreadable, or its content does not match its checksum."""


class UnsafeCheckpointError(CheckpointError):
    """The file pickles Python objects beyond tensors/numbers/strings/containers; it is not unpickled."""


def _hilcore_version() -> str:
    from hilcore import __version__

    return __version__


def _version_tuple(v) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", str(v))[:3])


# ---------------------------------------------------------------------------------------------- checksum
def _feed(h, obj, where: str) -> None:
    """Feed ``obj`` into hash ``h`` canonically; TypeError for anything outside the safe format."""
    kind = type(obj)      # exact types: subclasses (NumPy scalars, enums, namedtuples) pickle as classes
    if obj is None:
        h.update(b"N")
    elif kind is bool:
        h.update(b"B1" if obj else b"B0")
    elif kind is int:
        s = str(obj).encode()
        h.update(b"I%d:" % len(s) + s)
    elif kind is float:
        h.update(b"F" + struct.pack("<d", obj))
    elif kind is str:
        s = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(s) + s)
    elif kind is bytes:
        h.update(b"Y%d:" % len(obj) + obj)
    elif isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.is_quantized or obj.device.type == "meta":
            raise TypeError(f"checkpoint: {where} is a {obj.layout} / quantized / meta tensor; "
                            f"expected a dense tensor")
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous().reshape(-1)
        head = f"{t.dtype}|{tuple(obj.shape)}".encode()
        h.update(b"T%d:" % len(head) + head)
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    elif isinstance(obj, (torch.dtype, torch.device)):
        s = str(obj).encode()
        h.update(b"D%d:" % len(s) + s)
    elif kind in (dict, OrderedDict):
        h.update(b"M%d:" % len(obj))
        for k, v in obj.items():
            _feed(h, k, f"{where} key {k!r}")
            _feed(h, v, f"{where}[{k!r}]")
    elif kind in (list, tuple, torch.Size):
        h.update((b"L" if kind is list else b"U") + b"%d:" % len(obj))
        for i, v in enumerate(obj):
            _feed(h, v, f"{where}[{i}]")
    else:
        raise TypeError(f"checkpoint: {where} is a {type(obj).__module__}.{type(obj).__qualname__}; the safe "
                        f"format holds only tensors, numbers, strings, None, lists, tuples and dicts")


def payload_digest(state: dict) -> str:
    """SHA-256 (hex) of the canonical serialisation of ``state`` without its ``checksum`` entry.

    Raises TypeError (naming the entry) when ``state`` holds anything outside the safe format.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k not in _META}, "state")
    return h.hexdigest()


def seal(state: dict) -> dict:
    """A copy of ``state`` with ``version``, ``hilcore_version`` and ``checksum`` set (what is saved)."""
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict, got {type(state).__name__}")
    out = {k: v for k, v in state.items() if k not in _META}
    out["version"] = FORMAT_VERSION
    out["hilcore_version"] = _hilcore_version()
    out["checksum"] = {"sha256": payload_digest(out)}
    return out


def verify(state: dict, path) -> dict:
    """Check format version and checksum of a loaded checkpoint dict; returns it (see the module doc)."""
    version = state.get("version", 1)
    written_by = state.get("hilcore_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptCheckpointError(f"checkpoint: {path} has a format version {version!r}, expected an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint: {path} is in format {version} (written by hilcore {written_by}); "
                              f"this hilcore {_hilcore_version()} reads formats up to {FORMAT_VERSION}: "
                              f"upgrade hilcore")
    check = state.get("checksum")
    if version >= 2 or check is not None or written_by is not None:
        if not isinstance(check, dict) or not isinstance(check.get("sha256"), str):
            raise CorruptCheckpointError(f"checkpoint: {path} has no valid checksum entry (format {version}); "
                                         f"the file is damaged")
        try:
            got = payload_digest(state)
        except TypeError as e:
            raise CorruptCheckpointError(f"checkpoint: {path}: {e}") from None
        if got != check["sha256"]:
            raise CorruptCheckpointError(f"checkpoint: {path} is corrupt: its content does not match its SHA-256 "
                                         f"checksum (stored {check['sha256'][:16]}..., computed {got[:16]}...)")
        if written_by is not None and _version_tuple(written_by) > _version_tuple(_hilcore_version()):
            warnings.warn(f"checkpoint: {path} was written by hilcore {written_by}, newer than this "
                          f"{_hilcore_version()}; loading it (same format {version})", stacklevel=3)
    else:
        warnings.warn(f"checkpoint: {path} is in format 1 (no checksum), loaded unverified; "
                      f"`hil convert-checkpoint {path}` adds one", stacklevel=3)
    return state


# ---------------------------------------------------------------------------------------------- safe load
def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else ""


_SAFE_HINT = ("hilcore does not unpickle them, as that can run arbitrary code. If you trust where the file "
              "comes from, convert it once: hil convert-checkpoint --trust {path} OUT.pt")


def _pickle_globals(data: bytes, limit: int = 64) -> list[str]:
    """The ``module.name`` globals a pickle stream imports, in order (``GLOBAL`` and ``STACK_GLOBAL``; the
    strings a ``STACK_GLOBAL`` takes are followed through the memo). Stops quietly at a damaged stream."""
    import pickletools

    out, strings, memo, last = [], [], {}, None
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                        "BINSTRING", "STRING"):
                last = arg
                strings.append(arg)
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = last
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = last
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                last = memo.get(arg)
                strings.append(last)
                continue
            elif name == "GLOBAL":
                out.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                out.append(f"{strings[-2]}.{strings[-1]}")
            elif name == "STOP":
                break
            last = None
            if len(out) >= limit:
                break
    except Exception:  # noqa: BLE001 - a damaged stream: what was read so far
        pass
    return out


def _first_unsafe_global(path: Path) -> str | None:
    """The first global of ``path``'s pickle outside what a torch checkpoint needs (None when not found)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(name) if name else b""
        else:
            data = path.read_bytes()
    except Exception:  # noqa: BLE001
        return None
    for g in _pickle_globals(data):
        if not (g.startswith("torch.") or g in ("collections.OrderedDict", "builtins.set")):
            return g
    return None


def explain_load_error(path, e: BaseException, what: str = "checkpoint") -> CheckpointError:
    """The :class:`CheckpointError` that says what is wrong with ``path`` after ``torch.load(weights_only=True)``
    failed with ``e``: Python objects outside the safe format (:class:`UnsafeCheckpointError`, naming the first),
    an empty, truncated or damaged file, or not a torch file at all (:class:`CorruptCheckpointError`). It never
    passes on torch's advice to load with ``weights_only=False``."""
    import pickle
    import zipfile

    path = Path(path)
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in text:
        m = re.search(r"GLOBAL ([\w.]+)", text)
        name = m.group(1) if m else _first_unsafe_global(path)
        if name is not None or "Unsupported operand" in text or "unsupported" in text.lower():
            first = f" (the first is {name})" if name else ""
            return UnsafeCheckpointError(f"{what}: {path} holds Python objects outside the safe checkpoint "
                                         f"format{first}; " + _SAFE_HINT.format(path=path))
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as e2:
        return CorruptCheckpointError(f"{what}: cannot read {path} ({e2.strerror or e2})")
    if size == 0:
        return CorruptCheckpointError(f"{what}: {path} is empty (0 bytes): the write that made it did not "
                                      f"finish; use another checkpoint")
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return CorruptCheckpointError(f"{what}: {path} is truncated: a torch archive without its end "
                                          f"({size} bytes; the copy or the write that made it did not finish)")
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except Exception as e2:  # noqa: BLE001
            bad = f"{type(e2).__name__}: {_first_line(e2)}"
        if bad is not None:
            return CorruptCheckpointError(f"{what}: {path} is damaged: the archive entry {bad} fails its CRC "
                                          f"check (the bytes changed after it was written)")
        return CorruptCheckpointError(f"{what}: {path} is a damaged torch archive ({size} bytes; torch reports: "
                                      f"{_torch_reason(e)})")
    if head[:1] == b"\x80":
        return CorruptCheckpointError(f"{what}: {path} is truncated or damaged: its pickle stream ends early or "
                                      f"holds garbage ({size} bytes; torch reports: {_torch_reason(e)})")
    return CorruptCheckpointError(f"{what}: {path} is not a torch file (it starts with {head!r}; expected a "
                                  f"torch.save archive)")


def _torch_reason(e: BaseException) -> str:
    """torch's reason, without its advice about ``weights_only``."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "weights_only" not in ln]
    return (lines[0][:160] if lines else type(e).__name__)


def load_state_file(path, *, what: str = "checkpoint", map_location="cpu", safe_globals=()):
    """Read a torch file with ``torch.load(weights_only=True)``, never running code from it.

    The reusable safe loader of hilcore (training checkpoints, ``hil extract``,
    pretrained weights). ``safe_globals``: extra classes to allow (e.g.
    ``argparse.Namespace`` in DINO checkpoints). A dict written by
    :func:`save_checkpoint` (it has ``hilcore_version`` / ``checksum``) is
    verified (:func:`verify`). ``what`` names the argument in messages.

    Raises FileNotFoundError when absent, :class:`UnsafeCheckpointError` when
    the file pickles other Python objects (the message names the first one and
    the ``hil convert-checkpoint --trust`` way out), and
    :class:`CorruptCheckpointError` when it is truncated, not a torch file, or
    fails its checksum.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if not path.is_file():
        raise CorruptCheckpointError(f"{what}: {path} is not a file")
    try:
        if safe_globals:
            with torch.serialization.safe_globals(list(safe_globals)):
                obj = torch.load(path, map_location=map_location, weights_only=True)
        else:
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every reader failure becomes one clear message
        raise explain_load_error(path, e, what) from None
    if isinstance(obj, dict) and ("hilcore_version" in obj or isinstance(obj.get("checksum"), dict)):
        verify(obj, path)
    return obj


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (a folder means its ``last.pt``).

    Raises FileNotFoundError when absent and :class:`CheckpointError` (a
    ValueError) when the file is unsafe, corrupt or not a hilcore training
    checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    state = load_state_file(path, what="checkpoint", map_location=map_location)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"checkpoint: {path} is not a hilcore training checkpoint (no 'model'/'epoch' "
                              f"entries)")
    if "hilcore_version" not in state and not isinstance(state.get("checksum"), dict):
        verify(state, path)             # not sealed: format 1 (warns), or a format number to check
    return state


# ---------------------------------------------------------------------------------------------- writing
def atomic_save(obj, path, *, before_replace=None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`hilcore._files.atomic_open`: temp file in the same
    folder, fsync, ``os.replace``); a failed write leaves ``path`` as it was and raises
    :class:`hilcore._files.WriteError` (``no space left on device writing PATH`` on a full disk).

    ``before_replace()``, when given, runs once the temp file is complete, just before it replaces ``path``.
    """
    path = Path(path)
    with atomic_open(path, "wb", prefix=_TMP_PREFIX, before_replace=before_replace) as fh:
        torch.save(obj, fh)
    return path


def _atomic_duplicate(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (a hard link when possible); ``src`` stays in place."""
    tmp = dst.parent / f"{_TMP_PREFIX}{dst.name}.{os.getpid()}"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, _files.WriteError):
            raise _files.WriteError(dst, e) from e
        raise


def remove_stale_temps(folder) -> list[Path]:
    """Delete temporary files left by a process killed while saving; returns what was removed."""
    return _files.remove_stale_temps(folder, _TMP_PREFIX) + _files.remove_stale_temps(folder)


def save_checkpoint(folder, state: dict, is_best: bool = False) -> Path:
    """Write ``folder/last.pt`` (and ``folder/best.pt`` when ``is_best``) atomically, sealed with a checksum.

    The ``last.pt`` being replaced is kept as ``last.prev.pt``. Raises
    TypeError (before touching any file) when ``state`` holds objects outside
    the safe format.
    """
    folder = Path(folder)
    sealed = seal(state)
    remove_stale_temps(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def keep_previous():
        if (folder / LAST).is_file():
            _atomic_duplicate(folder / LAST, folder / PREV)

    last = atomic_save(sealed, folder / LAST, before_replace=keep_previous)
    if is_best:
        atomic_save(sealed, folder / BEST)
    return last


# ---------------------------------------------------------------------------------------------- contents
def to_safe(obj, where: str = "state"):
    """``obj`` with NumPy arrays as tensors, NumPy scalars as Python numbers and paths as strings.

    Containers are rebuilt only where something changed (a ``state_dict``'s
    ``OrderedDict`` and its ``_metadata`` are kept). Raises TypeError naming
    the entry for anything else outside the safe format.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or type(obj) in (bool, int, float, str, bytes, torch.Size) or isinstance(
            obj, (torch.Tensor, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"checkpoint: {where} is a NumPy object array; expected numbers")
        return torch.from_numpy(np.ascontiguousarray(obj).astype(obj.dtype.newbyteorder("="), copy=True))
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):
        items = [(to_safe(k, f"{where} key {k!r}"), to_safe(v, f"{where}[{k!r}]")) for k, v in obj.items()]
        if type(obj) in (dict, OrderedDict) and all(a is k and b is v for (a, b), (k, v) in zip(items, obj.items())):
            return obj
        out = OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if type(obj) in (list, tuple) and all(a is b for a, b in zip(items, obj)):
            return obj
        return list(items) if isinstance(obj, list) else tuple(items)
    raise TypeError(f"checkpoint: {where} is a {type(obj).__module__}.{type(obj).__qualname__}; the safe format "
                    f"holds only tensors, numbers, strings, None, lists, tuples and dicts")


def rng_state() -> dict:
    """The Python, NumPy, torch CPU and CUDA generator states in the safe format (lists and tensors)."""
    return safe_rng_state({
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    })


def safe_rng_state(state: dict) -> dict:
    """An RNG state dict (this format or the tuples/arrays of format 1) in the safe format."""
    py = state.get("python")
    if py is not None:
        py = [int(py[0]), [int(v) for v in py[1]], None if py[2] is None else float(py[2])]
    npst = state.get("numpy")
    if isinstance(npst, tuple) or (isinstance(npst, list) and len(npst) == 5):
        name, key, pos, has_gauss, gauss = npst
        npst = {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
                "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    cuda = state.get("cuda")
    return {"python": py, "numpy": npst, "torch": state.get("torch"),
            "cuda": None if cuda is None else list(cuda)}


def set_rng_state(state: dict) -> None:
    state = safe_rng_state(state)
    if state["python"] is not None:
        v, internal, gauss = state["python"]
        random.setstate((int(v), tuple(int(x) for x in internal), gauss))
    n = state["numpy"]
    if n is not None:
        key = n["key"].numpy() if isinstance(n["key"], torch.Tensor) else np.asarray(n["key"])
        np.random.set_state((n["bit_generator"], key.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if state["torch"] is not None:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def training_state(model, optimizer, scaler, epoch: int, config: dict, history: list, best: dict) -> dict:
    """The dict saved as a checkpoint (``model`` unwrapped from DistributedDataParallel)."""
    net = model.module if hasattr(model, "module") else model
    return {
        "version": FORMAT_VERSION,
        "hilcore_version": _hilcore_version(),
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "rng": rng_state(),
        "config": to_safe(config, "config"),
        "history": to_safe(list(history), "history"),
        "best": to_safe(dict(best), "best"),
    }


# ---------------------------------------------------------------------------------------------- resume
def load_resume(folder, map_location="cpu", *, repair: bool = True):
    """The checkpoint auto-resume continues from: ``(path, state, notes)``, or None without ``last.pt``.

    ``last.pt`` when it is intact; when it is corrupt (truncated, unreadable,
    checksum mismatch), the newest intact one (highest epoch) of
    ``last.prev.pt`` and ``best.pt``. ``notes`` are the lines to log about a
    fallback. With ``repair``, the broken ``last.pt`` is kept as
    ``last.broken.pt`` and the chosen file is put in its place (atomically),
    so the next save does not rotate a broken file into ``last.prev.pt``.

    Raises :class:`UnsafeCheckpointError` for a ``last.pt`` outside the safe
    format (not a crash: someone should look), and
    :class:`CorruptCheckpointError` when no intact checkpoint is left.
    """
    folder = Path(folder)
    last = folder / LAST
    if not last.is_file():
        return None
    try:
        return last, load_checkpoint(last, map_location), []
    except CorruptCheckpointError as e:
        broken = str(e)
    good, bad = [], [f"{LAST}: {broken}"]
    for name in (PREV, BEST):
        p = folder / name
        if not p.is_file():
            continue
        try:
            st = load_checkpoint(p, map_location)
        except CorruptCheckpointError as e:
            bad.append(f"{name}: {e}")
            continue
        good.append((int(st["epoch"]), name == PREV, p, st))
    if not good:
        raise CorruptCheckpointError(f"auto-resume: no intact checkpoint in {folder} ({'; '.join(bad)}); move the "
                                     f"broken files away, or start over with --resume never")
    epoch, _, path, state = max(good, key=lambda g: (g[0], g[1]))
    notes = [f"{last} is unusable ({broken}); falling back to {path.name} (epoch {epoch}), the newest intact "
             f"checkpoint"]
    if repair:
        _atomic_duplicate(last, folder / BROKEN)
        _atomic_duplicate(path, last)
        notes.append(f"the broken file is kept as {folder / BROKEN}; {LAST} is now a copy of {path.name}")
    return path, state, notes


# ---------------------------------------------------------------------------------------------- convert
def convert_checkpoint(src, dst=None, *, trust: bool = False) -> tuple[Path, dict, dict]:
    """Rewrite checkpoint ``src`` in the current safe format with a checksum; returns ``(dst, state, old)``.

    ``dst`` defaults to ``src`` (replaced atomically). A file already in the
    safe format is read safely and re-sealed (a format-1 file gains its
    checksum). A file that pickles other Python objects (e.g. NumPy RNG
    states of format 1) is refused unless ``trust=True``: only then is it read
    with ``torch.load(weights_only=False)`` -- the one place in hilcore that
    does, because full unpickling runs whatever code the file names. ``old``
    describes the source (``format``, ``hilcore_version``, ``trusted``).
    """
    src = Path(src)
    dst = src if dst is None else Path(dst)
    trusted = False
    try:
        state = load_state_file(src, what="IN")
    except UnsafeCheckpointError as e:
        if not trust:
            raise UnsafeCheckpointError(str(e).replace(f"convert it once: hil convert-checkpoint --trust {src} "
                                                       f"OUT.pt", "pass --trust") + "; without --trust it is "
                                        "not converted") from None
        try:
            state = torch.load(src, map_location="cpu", weights_only=False)   # trust path: explicit only
        except Exception as e2:  # noqa: BLE001
            raise CorruptCheckpointError(f"IN: cannot read {src} ({type(e2).__name__}: {_first_line(e2)})") from None
        trusted = True
        if isinstance(state, dict) and isinstance(state.get("checksum"), dict):
            verify(state, src)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"IN: {src} is not a hilcore training checkpoint (no 'model'/'epoch' entries)")
    old = {"format": state.get("version", 1), "hilcore_version": state.get("hilcore_version"), "trusted": trusted}
    new = {k: v for k, v in state.items() if k not in _META}
    if new.get("rng") is not None:
        try:
            new["rng"] = safe_rng_state(new["rng"])
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise CheckpointError(f"IN: {src}: the 'rng' entry is not an RNG state ({e})") from None
    try:
        new = to_safe(new, "IN")
        sealed = seal(new)
    except TypeError as e:
        raise CheckpointError(f"{e}; it cannot be converted to the safe format") from None
    if dst.exists() and dst.is_dir():
        raise CheckpointError(f"OUT: {dst} is a directory; expected a file path")
    atomic_save(sealed, dst)
    return dst, sealed, old

