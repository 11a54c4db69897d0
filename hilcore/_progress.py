"""Progress of long calls, per chunk: a hook the caller sets, the loops of the kernels report to.

``hil cluster`` sets a hook around ``jaccard_distance`` (:func:`reporting`);
the Python loops over tiles of the kNN backends (torch, native) and the parts
of the Jaccard pipeline call :func:`report` as they go. Without a hook a
report is one context-variable read. This module imports nothing from
hilcore.

Example:
    >>> seen = []
    >>> with reporting(lambda stage, done, total: seen.append((stage, done, total))):
    ...     report("knn", 1, 4)
    >>> report("knn", 2, 4)        # no hook: nothing happens
    >>> seen
    [('knn', 1, 4)]
"""
from __future__ import annotations

import contextlib
import contextvars

_HOOK: contextvars.ContextVar = contextvars.ContextVar("hilcore_progress_hook", default=None)


@contextlib.contextmanager
def reporting(hook):
    """Call ``hook(stage, done, total)`` for every :func:`report` inside the ``with`` block (this thread /
    task only). ``total == 0`` announces that ``stage`` starts (no count known)."""
    if hook is not None and not callable(hook):
        raise TypeError(f"hook: expected a callable or None, got {type(hook).__name__}")
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def report(stage: str, done: int, total: int) -> None:
    """``done`` of ``total`` chunks of ``stage`` are finished (``total == 0``: ``stage`` starts)."""
    hook = _HOOK.get()
    if hook is not None:
        hook(stage, done, total)
