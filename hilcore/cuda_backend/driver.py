"""Can the compiled CUDA kernels run here? The driver must be at least the toolkit's version.

A build made with CUDA toolkit X.Y links the CUDA runtime of X.Y; on a driver
older than X.Y its first launch fails (cudaErrorInsufficientDriver). hilcore
asks the driver once (``cudaDriverGetVersion`` against the ``CUDART_VERSION``
compiled in) and reports the CUDA backend unavailable, so ``backend="auto"``
falls back to the other GPU or CPU backends and an explicit ``backend="cuda"``
gets the reason.
"""
from __future__ import annotations

import functools


def _fmt(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def version_problem(driver: int, built: int) -> str | None:
    """The reason the kernels cannot run for these versions (1000 * major + 10 * minor), or None."""
    if driver < 0:
        return "the CUDA driver version could not be queried (cudaDriverGetVersion failed)"
    if driver == 0:
        return "no CUDA driver is installed"
    if driver < built:
        return (f"the CUDA driver supports CUDA {_fmt(driver)}, older than the CUDA {_fmt(built)} toolkit hilcore "
                f"was built with: update the driver or rebuild hilcore with an older toolkit")
    return None


@functools.lru_cache(maxsize=None)
def driver_problem() -> str | None:
    """None when the CUDA kernels of this build can run on this machine's driver, else why not."""
    from .._dispatch import native_module

    mod = native_module()
    if mod is None or not hasattr(mod, "cuda_versions"):
        return None  # no CUDA kernels in this build: has_cuda() already says so
    return version_problem(*mod.cuda_versions())
