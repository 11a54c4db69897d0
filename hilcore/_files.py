"""Files written atomically, and a lock on an output folder.

**Atomic writes.** Every file the ``hil`` command and the training driver
write (labels, features, checkpoints, metrics, plots, configs, JSON) goes
through :func:`atomic_open`: the content is written to a temporary file in the
destination's folder (``.tmp-NAME.XXXX``), flushed and ``fsync``'ed, then
moved over the destination with ``os.replace`` and the folder is ``fsync``'ed.
A reader sees the old file or the new one, never a mix; a write that fails
(a full disk, a quota, an I/O error, an exception of the writer) removes the
temporary file and leaves the earlier file at the destination untouched, and
raises :class:`WriteError` naming the destination, e.g.
``no space left on device writing runs/x/last.pt``. A new file gets the
permissions ``open()`` would give it (``0o666`` less the umask); a replaced
file keeps its permissions.

Writers that swallow the error of the file they write into (``torch.save``
turns a failed ``write`` into an unrelated ``RuntimeError``) are handled: the
handle :func:`atomic_open` yields records the first ``OSError`` of its
``write``/``flush``, and that error is the one reported.

**Folder lock.** :class:`FolderLock` holds an exclusive ``flock`` on
``FOLDER/.hil.lock`` for as long as a run writes into ``FOLDER``; a second
process asking for the same folder gets :class:`FolderLockedError` at once,
naming the process that holds it. The lock is released when the holder
closes it or exits, however it exits (the kernel drops ``flock`` locks with
the file descriptor), so a killed run leaves no stale lock behind; the lock
file itself stays (removing it would let two processes lock two different
files of the same name).
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"
LOCK_NAME = ".hil.lock"
# errors that mean "the device is full": ENOSPC, and the quota's EDQUOT where the platform has one
_FULL = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


class WriteError(OSError):
    """Writing ``path`` failed; an earlier file at ``path`` is intact. ``str()`` is the one-line reason."""

    def __init__(self, path, cause: BaseException | None = None, message: str | None = None,
                 code: int | None = None):
        code = getattr(cause, "errno", None) if code is None else code
        if message is None:
            if code in _FULL:
                message = f"no space left on device writing {path}"
            else:
                why = getattr(cause, "strerror", None) or (str(cause) if cause is not None else "unknown error")
                message = f"cannot write {path} ({why})"
        super().__init__(message)
        self.errno = code
        self.filename = str(path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):   # crosses process boundaries (worker pools) whole
        return (WriteError, (self.filename, None, self.message, self.errno))

    @property
    def disk_full(self) -> bool:
        return self.errno in _FULL


def describe_os_error(e: OSError) -> str:
    """One line for an ``OSError`` raised while writing: ``no space left on device writing PATH`` for a full
    device, else ``strerror: PATH`` (``str(e)`` when it names no file)."""
    if isinstance(e, WriteError):
        return e.message
    name = e.filename if e.filename is not None else None
    if e.errno in _FULL:
        return f"no space left on device writing {name}" if name else "no space left on device"
    if name and e.strerror:
        return f"{e.strerror}: {name}"
    return str(e) or type(e).__name__


class _Recording:
    """A file handle that remembers the first ``OSError`` of ``write``/``flush`` (see the module doc)."""

    def __init__(self, fh):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._fh.write(data)
        except OSError as e:
            if self.error is None:
                self.error = e
            raise

    def flush(self):
        try:
            return self._fh.flush()
        except OSError as e:
            if self.error is None:
                self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._fh, name)


def _umask() -> int:
    try:   # Linux: read it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported (e.g. Windows); the replace itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    except OSError:
        pass


@contextmanager
def atomic_open(path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None,
                prefix: str = TMP_PREFIX, before_replace=None, sync: bool = True):
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without an error.

    ``mode``: ``"wb"`` or ``"w"`` (text, ``encoding`` defaults to UTF-8).
    ``before_replace()``, when given, runs once the temporary file is complete
    and synced, just before it replaces ``path``. The parent folders are created.
    On any error the temporary file is removed, ``path`` is left as it was, and
    an ``OSError`` of the write is raised as :class:`WriteError` (other
    exceptions of the block propagate unchanged). ``sync=False`` skips the two
    ``fsync`` calls (still atomic for readers; for thousands of small files
    that can be made again, e.g. the images of ``hil make-synthetic``).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
        >>> with atomic_open(p, "w") as fh:
        ...     _ = fh.write("hi")
        >>> p.read_text()
        'hi'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{path.name}.", dir=path.parent)
    except OSError as e:
        if e.errno in _FULL:
            raise WriteError(path, e) from e
        raise
    rec = None
    try:
        try:
            old = os.stat(path)
            perms = stat.S_IMODE(old.st_mode) if stat.S_ISREG(old.st_mode) else None
        except OSError:
            perms = None
        os.fchmod(fd, perms if perms is not None else 0o666 & ~_umask())
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline=newline if text else None) as fh:
            rec = _Recording(fh)
            yield rec
            rec.flush()
            if sync:
                os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as e:      # (cleans up, then re-raises)
        _unlink(tmp)
        if isinstance(e, WriteError):
            raise
        cause = rec.error if rec is not None and rec.error is not None else e if isinstance(e, OSError) else None
        if cause is not None:
            raise WriteError(path, cause) from e
        raise
    if sync:
        _fsync_dir(path.parent)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_open`)."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def save_npy(path, array) -> Path:
    """``numpy.save`` to exactly ``path`` (no ``.npy`` appended), atomically."""
    import numpy as np

    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return Path(path)


def remove_stale_temps(folder, prefix: str = TMP_PREFIX) -> list[Path]:
    """Delete the temporary files of writers killed mid-write in ``folder``; returns what was removed."""
    folder = Path(folder)
    out = []
    if folder.is_dir():
        for p in folder.glob(prefix + "*"):
            try:
                p.unlink()
                out.append(p)
            except OSError:
                pass
    return out


# ---------------------------------------------------------------------------------------------- folder lock
class FolderLockedError(RuntimeError):
    """Another process holds the lock of the folder (the message names it and what to do)."""


class FolderLock:
    """An exclusive, non-blocking lock on ``folder`` (``flock`` on ``folder/.hil.lock``), see the module doc.

    Use as a context manager or with :meth:`acquire` / :meth:`release`.
    ``what`` names the holder in messages (``"hil train"``); ``hint`` is
    appended to the refusal (what the user can do instead).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with FolderLock(d):
        ...     try:
        ...         FolderLock(d).acquire()
        ...     except FolderLockedError as e:
        ...         print("refused")
        refused
    """

    def __init__(self, folder, what: str = "hil train", hint: str = ""):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.hint = hint
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        import fcntl

        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            try:
                holder = os.read(fd, 512).decode("utf-8", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            by = f" ({holder})" if holder else ""
            raise FolderLockedError(
                f"{self.folder} is in use by another {self.what}{by}: two runs writing into one folder would "
                f"overwrite each other's checkpoints and logs; wait for it to finish"
                + (f", or {self.hint}" if self.hint else "")) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        except OSError:
            pass   # the note about the holder is a courtesy; the flock is the lock
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
