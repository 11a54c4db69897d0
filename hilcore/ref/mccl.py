"""Reference multi-centre contrastive loss (MCCL): a loop over samples and clusters, float64 (docs/design.md)."""
from __future__ import annotations

import numpy as np

# Same guard as hilcore.mccl: d = sqrt(||x - m||^2 + DIST_EPS).
DIST_EPS = 1e-8


def mccl(x, memory) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample MCCL ``[B]`` float64 and the nearest cluster ``c*`` ``[B]`` int64.

    For a normalised sample x against ``memory`` ``[C, S, D]``: ``d_cs = ||x - M_cs||``
    (guarded as ``sqrt(||x - M_cs||^2 + DIST_EPS)``); ``c*`` = the cluster of the
    overall nearest slot (lowest (c, s) on ties); ``pos = mean_s 1/d_{c*s}``;
    ``neg = mean_{c != c*} 1/min_s d_cs`` (0 when C == 1);
    ``loss = -log(pos / (pos + neg + 1e-8))``.
    """
    x = np.asarray(x, dtype=np.float64)
    mem = np.asarray(memory, dtype=np.float64)
    c_n, s_n, _ = mem.shape
    losses = np.empty(len(x))
    nearest = np.empty(len(x), dtype=np.int64)
    for b, xb in enumerate(x):
        xb = xb / np.linalg.norm(xb)
        d = np.empty((c_n, s_n))
        for c in range(c_n):
            for s in range(s_n):
                diff = xb - mem[c, s]
                d[c, s] = np.sqrt(diff @ diff + DIST_EPS)
        cs = int(np.argmin(d.reshape(-1))) // s_n
        pos = np.mean(1.0 / d[cs])
        others = [1.0 / d[c].min() for c in range(c_n) if c != cs]
        neg = float(np.mean(others)) if others else 0.0
        losses[b] = -np.log(pos / (pos + neg + 1e-8))
        nearest[b] = cs
    return losses, nearest
