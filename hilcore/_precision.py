"""IEEE float32 products whatever TF32 / reduced-precision setting the caller chose.

hilcore's exact kNN and centre products must not run in TF32 (or bf16 on CPU)
because a caller set ``torch.backends.cuda.matmul.allow_tf32 = True`` or
``torch.set_float32_matmul_precision("high")``. :func:`ieee_fp32` switches
those off for the block and restores the caller's state after it, through the
same API family the caller used: torch refuses to read a state set through a
mix of the legacy (``allow_tf32`` / ``set_float32_matmul_precision``) and the
per-backend (``fp32_precision``) APIs.
"""
from __future__ import annotations

import contextlib

import torch


def _backends():
    out = [torch.backends.cuda.matmul]
    mk = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    if mk is not None:
        out.append(mk)
    return [b for b in out if hasattr(b, "fp32_precision")]


@contextlib.contextmanager
def ieee_fp32():
    """Within the block, float32 matmuls on CUDA and CPU are IEEE float32 (no TF32, no bf16)."""
    try:  # legacy state readable: the caller did not use the per-backend API
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    except RuntimeError:
        saved = None
    if saved is not None:
        if saved == (False, "highest"):
            yield
            return
        torch.set_float32_matmul_precision("highest")  # also clears allow_tf32
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved[1])
            if torch.backends.cuda.matmul.allow_tf32 != saved[0]:
                torch.backends.cuda.matmul.allow_tf32 = saved[0]
        return
    backends = _backends()
    prev = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "ieee"
    try:
        yield
    finally:
        for b, p in zip(backends, prev):
            b.fp32_precision = p
