"""Exact k-nearest neighbours on cosine similarity."""
from __future__ import annotations

import torch

from . import _arrays, _dispatch


def knn_tensors(x: torch.Tensor, k: int, y: torch.Tensor | None, backend: str = "auto"):
    """Internal entry on validated, normalised float32 tensors; returns torch (idx, sim)."""
    return _dispatch.resolve("knn", backend, x.device)(x, k, y)


def knn(x, k: int, *, y=None, backend: str = "auto"):
    """Exact k nearest neighbours by cosine similarity.

    Rows are L2-normalised first. In self-search (``y is None``) each row is
    its own first neighbour; elsewhere ties are broken by the lower index.
    Memory is O(block x N): the similarity matrix is never formed whole.

    Args:
        x: ``[N, D]`` queries (NumPy, torch CPU/CUDA or CuPy; any float dtype).
        k: neighbours per row, ``1 <= k <= M`` (M = rows of ``y``, or N).
        y: optional ``[M, D]`` database; ``None`` searches ``x`` against itself.
        backend: ``"auto"``, ``"torch"``, ``"native"``, ``"triton"``, ``"cuda"``,
            ``"faiss"``, or on a GPU ``"faiss_gpu"`` / ``"cuvs"`` (library candidates
            rescored exact; never chosen by ``"auto"``); see
            ``hilcore.capabilities()["knn"]``. There is no CUDA kNN kernel:
            ``"cuda"`` (and ``"auto"`` on CUDA tensors) runs the Triton one, or torch
            without Triton.

    Returns:
        ``(idx, sim)``: ``[N, k]`` int64 indices into the database and
        ``[N, k]`` float32 cosine similarities, best first, in the input's family.

    Raises:
        ValueError: ``x`` / ``y`` not 2-D, empty, with NaN/Inf or all-zero
            rows, or of different widths / devices; ``k < 1`` or ``k > M``.
        TypeError: non-numeric arrays, a non-integer ``k``.
        hilcore.BackendUnavailable: ``backend`` named explicitly cannot run here (the message says why).

    Example:
        >>> import numpy as np, hilcore
        >>> x = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
        >>> idx, sim = hilcore.knn(x, 5)
        >>> bool((idx[:, 0] == np.arange(100)).all())
        True
    """
    xt, fam = _arrays.features(x, "x")
    if y is None:
        yt = None
        m = xt.shape[0]
    else:
        yt = _arrays.features_like(y, xt, "y", "x")
        m = yt.shape[0]
    k = _arrays.positive_int(k, "k")
    if k > m:
        raise ValueError(f"k: expected k <= {m} (the number of database rows), got {k}")
    idx, sim = knn_tensors(xt, k, yt, backend)
    return _arrays.to_family(idx, fam), _arrays.to_family(sim, fam)
