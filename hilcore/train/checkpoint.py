"""Atomic training checkpoints: ``last.pt`` (every epoch) and ``best.pt`` (best evaluation so far).

A checkpoint is written to a temporary file in the destination folder,
flushed and fsync'ed, then moved over the destination with ``os.replace``
(atomic on POSIX and Windows within one file system), and the folder is
fsync'ed. A process killed at any point leaves either the old complete file
or the new complete one, never a truncated ``last.pt``; a stale temporary
file from such a kill is removed by the next save.

Contents (:func:`training_state`): ``model``, ``optimizer``, ``scaler``
(GradScaler state or None), ``epoch`` (the last completed epoch, 1-based),
``rng`` (Python, NumPy, torch CPU and CUDA generator states), ``config``
(the run's config as a dict), ``history`` (one metrics dict per completed
epoch), ``best`` (the best score so far and its epoch), ``version``.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"
FORMAT_VERSION = 1
_TMP_PREFIX = ".tmp-ckpt-"


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


def atomic_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


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


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "rng": rng_state(),
        "config": config,
        "history": list(history),
        "best": dict(best),
    }


def save_checkpoint(folder, state: dict, is_best: bool = False) -> Path:
    """Write ``folder/last.pt`` (and ``folder/best.pt`` when ``is_best``) atomically."""
    folder = Path(folder)
    remove_stale_temps(folder)
    last = atomic_save(state, folder / LAST)
    if is_best:
        atomic_save(state, folder / BEST)
    return last


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (a folder means its ``last.pt``).

    Raises FileNotFoundError when absent and ValueError when the file is not a
    hilcore training checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"checkpoint: cannot read {path} ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ValueError(f"checkpoint: {path} is not a hilcore training checkpoint (no 'model'/'epoch' entries)")
    return state


def find_resume(folder) -> Path | None:
    """``folder/last.pt`` when it exists, else None."""
    p = Path(folder) / LAST
    return p if p.is_file() else None
