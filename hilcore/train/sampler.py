"""Identity-balanced sampling over pseudo labels: P pseudo identities x K instances per batch.

Noise (label -1) is never sampled. Each batch draws P distinct clusters
(with replacement only when fewer than P exist) and K instances of each
(without replacement when the cluster has at least K members, else with).
All draws come from a NumPy ``Generator``, so a (seed, epoch, rank) triple
fixes the whole epoch's batches, which is what makes a resumed run draw the
same batches as an uninterrupted one.

Example:
    >>> s = IdentitySampler(labels, P=8, K=4, seed=[0, epoch])
    >>> idx = s.batch()     # [32] int64 image indices, cluster by cluster
"""
from __future__ import annotations

import numpy as np


class IdentitySampler:
    """Batches of ``P x K`` indices into ``labels`` (``[N]`` ints, -1 = noise)."""

    def __init__(self, labels, P: int, K: int, seed=0):
        lab = np.asarray(labels)
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels: expected a 1-D integer array, got shape {lab.shape} dtype {lab.dtype}")
        if int(P) < 1 or int(K) < 1:
            raise ValueError(f"P, K: expected positive integers, got P={P}, K={K}")
        self.P, self.K = int(P), int(K)
        keep = np.flatnonzero(lab >= 0)
        if keep.size == 0:
            raise ValueError("labels: every sample is noise (-1); there is no cluster to sample")
        order = keep[np.argsort(lab[keep], kind="stable")]
        ids, starts = np.unique(lab[order], return_index=True)
        self.clusters = ids
        self.members = np.split(order, starts[1:])
        self.rng = np.random.default_rng(seed)

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    def batch(self) -> np.ndarray:
        n = len(self.members)
        picks = self.rng.choice(n, size=self.P, replace=n < self.P)
        out = []
        for c in picks:
            m = self.members[c]
            out.append(self.rng.choice(m, size=self.K, replace=m.size < self.K))
        return np.concatenate(out).astype(np.int64)

    def __iter__(self):
        while True:
            yield self.batch()
