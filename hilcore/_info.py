"""Diagnostics: the one timing helper (:class:`Stopwatch`) and the one name for what a call reports (``info``).

Every call that reports what it did takes ``info: dict | None`` (or, for a
result object, has an ``info`` dict): what ran (backend labels), counters, and
``timings``, the measured seconds per stage. Every such second is measured by a
:class:`Stopwatch`: wall-clock time with the device synchronised at both ends
(on CUDA the queued kernels are counted in the stage that queued them), so the
timings of ops, of ``cluster_epoch`` and of the sharded ops compare.
"""
from __future__ import annotations

import contextlib
import time
import warnings

import torch


class Stopwatch:
    """Measured seconds of named stages, stored in ``times`` (``{name: seconds}``).

    Args:
        times: the dict that receives the seconds; None measures nothing (no
            synchronisation, no clock read: the untimed call pays nothing).
        device: the device whose queued work a measurement waits for at its
            start and its end (``torch.cuda.synchronize`` on CUDA; nothing on
            CPU or None).

    ``with sw("knn"): ...`` times a block, ``sw.run("knn", fn, *args)`` a call,
    ``sw.split("knn")`` the code since the previous split (or ``sw.restart()``);
    a name measured again is overwritten. ``sw.total("total")`` stores the
    seconds since the stopwatch was made (synchronised as well).

    Example:
        >>> from hilcore._info import Stopwatch
        >>> times = {}
        >>> sw = Stopwatch(times, "cpu")
        >>> with sw("sum"):
        ...     s = sum(range(1000))
        >>> sw.run("max", max, [3, 1, 2])
        3
        >>> sw.total("total")
        >>> list(times), all(v >= 0 for v in times.values()), times["total"] >= times["sum"]
        (['sum', 'max', 'total'], True, True)
    """

    def __init__(self, times: dict | None, device=None):
        self.times = times
        dev = None if device is None else torch.device(device)
        self._cuda = dev if times is not None and dev is not None and dev.type == "cuda" else None
        self.started = time.perf_counter() if times is not None else 0.0
        self._last = self.started

    def sync(self) -> None:
        """Wait for the device's queued work (CUDA only, and only when measuring)."""
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)

    def __call__(self, name: str):
        return self.measure(name)

    @contextlib.contextmanager
    def measure(self, name: str):
        """The block under ``with`` timed into ``times[name]`` (what ``sw(name)`` returns)."""
        if self.times is None:
            yield
            return
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.times[name] = time.perf_counter() - t0

    def run(self, name: str, fn, *args, **kw):
        """``fn(*args, **kw)``, its seconds stored under ``name``."""
        with self.measure(name):
            return fn(*args, **kw)

    def restart(self) -> None:
        """Start the next :meth:`split` here."""
        if self.times is not None:
            self.sync()
            self._last = time.perf_counter()

    def split(self, name: str) -> None:
        """Store the seconds since the last split (or restart, or since the stopwatch was made) under
        ``name``: consecutive stages of straight-line code, without a ``with`` block each."""
        if self.times is not None:
            self.sync()
            now = time.perf_counter()
            self.times[name] = now - self._last
            self._last = now

    def total(self, name: str = "total") -> None:
        """Store the seconds since the stopwatch was made under ``name``."""
        if self.times is not None:
            self.sync()
            self.times[name] = time.perf_counter() - self.started


def info_arg(info: dict | None, stats: dict | None, where: str) -> dict | None:
    """The diagnostics dict of a call: ``info``, or ``stats``, the deprecated name of an API that documented it.

    ``stats`` given warns (DeprecationWarning) and is used as ``info``; both given raises TypeError.
    """
    if stats is None:
        return info
    if info is not None:
        raise TypeError(f"{where}: give info= (stats= is its deprecated name), not both")
    warnings.warn(f"{where}: stats= is deprecated, pass the same dict as info=", DeprecationWarning, stacklevel=3)
    return stats
