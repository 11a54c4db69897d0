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
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path, PurePath

import numpy as np
import torch

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
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if m:
            raise UnsafeCheckpointError(
                f"{what}: {path} holds Python objects outside the safe checkpoint format (the first is "
                f"{m.group(1)}); hilcore does not unpickle them, as that can run arbitrary code. If you trust "
                f"where the file comes from, convert it once: hil convert-checkpoint --trust {path} OUT.pt"
            ) from None
        raise CorruptCheckpointError(f"{what}: cannot read {path}: not a complete torch file (truncated or "
                                     f"corrupted?) ({type(e).__name__}: {_first_line(e)})") from None
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
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported (e.g. Windows); the replace itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj, path, *, before_replace=None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``).

    ``before_replace()``, when given, runs once the temp file is complete, just before it replaces ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
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
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def remove_stale_temps(folder) -> list[Path]:
    """Delete temporary files left by a process killed while saving; returns what was removed."""
    folder = Path(folder)
    out = []
    if folder.is_dir():
        for p in folder.glob(_TMP_PREFIX + "*"):
            try:
                p.unlink()
                out.append(p)
            except OSError:
                pass
    return out


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

