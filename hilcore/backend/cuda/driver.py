"""Can the compiled CUDA kernels run here? The driver must be at least the toolkit's version.

A build made with CUDA toolkit X.Y links the CUDA runtime of X.Y; on a driver
older than X.Y its first launch fails (cudaErrorInsufficientDriver). hilcore
asks the driver once (``cudaDriverGetVersion`` against the ``CUDART_VERSION``
compiled in) and reports the CUDA backend unavailable, so ``backend="auto"``
falls back to the other GPU or CPU backends and an explicit ``backend="cuda"``
gets the reason.
"""
from __future__ import annotations

from ..._dispatch import cuda_driver_problem as driver_problem
from ..._dispatch import cuda_version_problem as version_problem

__all__ = ["driver_problem", "version_problem"]
