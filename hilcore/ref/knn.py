"""Reference exact kNN: the full similarity matrix, sorted with the exact key.

:func:`knn` uses float64 similarities; :func:`knn_native_values` uses the
native kNN's float32 values, :func:`dot_f32` (its fixed summation order written
out from the definition, one correctly rounded :func:`fma_f32` at a time).
"""
from __future__ import annotations

import numpy as np


def normalize(x) -> np.ndarray:
    """Rows as float32 (the library's working precision), then L2-normalised in float64."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def knn(x, k: int, y=None) -> tuple[np.ndarray, np.ndarray]:
    """``(idx int64 [N, k], sim float32 [N, k])``: cosine similarity descending, index ascending on ties.

    Self-search (``y is None``) puts row i first in its own list, reported
    with its similarity to itself.
    """
    xn = normalize(x)
    yn = xn if y is None else normalize(y)
    sim = xn @ yn.T  # float64: exact for the tie data used in tests
    key = sim.copy()
    if y is None:
        np.fill_diagonal(key, np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]  # stable: equal keys keep index order
    return order.astype(np.int64), np.take_along_axis(sim, order, axis=1).astype(np.float32)


def fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (round to nearest, ties to even), elementwise.

    ``a * b`` is exact in float64 (two 24-bit significands); ``s = fl64(a b + c)``
    and its exact error ``e`` (TwoSum) give the exact sum ``s + e``. Rounding
    ``s`` to float32 is right unless ``s`` is exactly halfway between two
    float32 values, where the sign of ``e`` decides (e = 0: ties to even).
    """
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    bb = s - p
    e = (p - (s - bb)) + (c64 - bb)
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    toward = np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32)
    other = np.nextafter(r, toward)
    mid = (r64 != s) & ((s - r64) == (other.astype(np.float64) - s))
    up = np.maximum(r, other)
    down = np.minimum(r, other)
    return np.where(mid & (e > 0), up, np.where(mid & (e < 0), down, r)).astype(np.float32)


def dot_f32(a, b) -> np.ndarray:
    """The native kNN's float32 dot products of every row of ``a [n, D]`` with every row of ``b [m, D]``.

    The summation order of ``knn_simd::Ops::dot_f32`` (kernels/cpu/knn_simd.h),
    from its definition: 32 partial sums ``s_l = fma(a_t, b_t, s_l)`` over
    ``t = l (mod 32)`` for the first ``32 floor(D / 32)`` terms, then lanes
    0..7 go on over the next multiple of 8; ``v_l = (s_l + s_{8+l}) + (s_{16+l}
    + s_{24+l})``, ``h_l = v_l + v_{l+4}``, ``acc = (h_0 + h_2) + (h_1 + h_3)``,
    then the remaining terms by ``acc = fma(a_t, b_t, acc)``. Slow (a Python
    loop over D on ``[n, m]`` arrays): for tests.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    n, d = a.shape
    m = b.shape[0]
    s = np.zeros((32, n, m), dtype=np.float32)
    t = 0
    while t + 32 <= d:
        for lane in range(32):
            s[lane] = fma_f32(a[:, t + lane, None], b[None, :, t + lane], s[lane])
        t += 32
    while t + 8 <= d:
        for lane in range(8):
            s[lane] = fma_f32(a[:, t + lane, None], b[None, :, t + lane], s[lane])
        t += 8
    v = [(s[lane] + s[8 + lane]) + (s[16 + lane] + s[24 + lane]) for lane in range(8)]
    h = [v[lane] + v[lane + 4] for lane in range(4)]
    acc = (h[0] + h[2]) + (h[1] + h[3])
    for u in range(t, d):
        acc = fma_f32(a[:, u, None], b[None, :, u], acc)
    return acc.astype(np.float32)


def knn_native_values(x, k: int, y=None, self_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of float32 rows ``x`` (already normalised, used as given) under (dot_f32 desc, index asc).

    Self-search (``y is None``) puts row i first; ``self_ids`` (with ``y``) names
    each row's own column (outside ``[0, M)``: none). Returns ``(idx int64, sim float32)``.
    """
    x = np.asarray(x, dtype=np.float32)
    yy = x if y is None else np.asarray(y, dtype=np.float32)
    sim = dot_f32(x, yy)
    key = sim.copy()
    if y is None:
        np.fill_diagonal(key, np.inf)
    elif self_ids is not None:
        for i, j in enumerate(np.asarray(self_ids)):
            if 0 <= j < yy.shape[0]:
                key[i, j] = np.inf
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(sim, order, axis=1)
