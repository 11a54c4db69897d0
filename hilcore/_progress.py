"""Progress of long calls, per chunk: a hook the caller sets, the loops of the kernels report to.

``hil cluster`` sets a hook around ``jaccard_distance`` (:func:`reporting`);
the parts of the Jaccard pipeline call :func:`report` as they go: ``("knn", 0, 0)``
and ``("stages", 0, 0)`` when they start, the kNN backends (torch, native) the
rows whose lists are done (``("knn", rows, N)``), the k-reciprocal stages
(torch, native) the rows of their passes over the N rows (:func:`rows_pass`:
``("stages", k * N + rows, P * N)`` in pass k of P, so the count only grows and
ends at ``P * N``). Without a hook a report is one context-variable read, and
the native stages count no rows. This module imports nothing from hilcore.

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


def active() -> bool:
    """Whether a hook is set here (a loop may then prepare its reports; without one it need not)."""
    return _HOOK.get() is not None


def rows_pass(stage: str, n: int, k: int, passes: int):
    """The reporter of pass ``k`` (0-based) of ``passes`` passes over ``n`` rows, or None without a hook.

    ``tick(rows)`` reports ``(stage, k * n + rows, passes * n)``: over the passes
    the count only grows, and the last pass's ``tick(n)`` reaches the total.

    Example:
        >>> seen = []
        >>> with reporting(lambda *r: seen.append(r)):
        ...     rows_pass("stages", 10, 1, 3)(4)
        >>> seen, rows_pass("stages", 10, 1, 3)
        ([('stages', 14, 30)], None)
    """
    if _HOOK.get() is None:
        return None
    base, total = k * n, passes * n
    return lambda rows: report(stage, base + int(rows), total)
