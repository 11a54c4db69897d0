"""Loop references for cluster centres and sub-clustering (the widely used way).

One Python loop over clusters; scikit-learn ``KMeans(n_init=10)`` or
``DBSCAN(metric="cosine")`` per cluster. Slow and obvious on purpose: tests and
benchmarks compare hilcore against these.
"""
from __future__ import annotations

import numpy as np


def normalize_rows(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cluster_centers_ref(x, labels) -> np.ndarray:
    """[C, D] mean of the L2-normalised rows of each cluster 0..max(labels), noise ignored."""
    x = normalize_rows(x)
    labels = np.asarray(labels)
    c = int(labels.max()) + 1
    out = np.zeros((c, x.shape[1]))
    for k in range(c):
        out[k] = x[labels == k].mean(axis=0)
    return out


def _ordered(groups: list[np.ndarray], xc: np.ndarray, idx: np.ndarray, n_sub: int) -> list[np.ndarray]:
    """Means of the member groups sorted by size desc, then smallest sample index; at most n_sub."""
    groups = sorted(groups, key=lambda g: (-len(g), int(idx[g].min())))[:n_sub]
    return [xc[g].mean(axis=0) for g in groups]


def subcluster_ref(x, labels, n_sub: int = 9, weight: float = 0.9, method: str = "kmeans", *, eps: float = 0.3,
                   min_samples: int = 4, seed: int = 0) -> np.ndarray:
    """[C, 1 + n_sub, D]: slot 0 the centre, slot s = w * centre + (1 - w) * sub-centre s.

    kmeans: per-cluster ``sklearn.cluster.KMeans(n_sub, n_init=10, random_state=seed)``
    on clusters with more than n_sub members; dbscan: per-cluster
    ``sklearn.cluster.DBSCAN(eps, min_samples=min_samples, metric="cosine")``,
    the n_sub largest density clusters. Missing sub-clusters repeat the centre.
    """
    from sklearn.cluster import DBSCAN, KMeans

    xn = normalize_rows(x)
    labels = np.asarray(labels)
    centres = cluster_centers_ref(x, labels)
    c, d = centres.shape
    out = np.repeat(centres[:, None, :], 1 + n_sub, axis=1)
    for k in range(c):
        idx = np.flatnonzero(labels == k)
        xc = xn[idx]
        if method == "kmeans":
            if len(idx) <= n_sub:
                continue
            lab = KMeans(n_clusters=n_sub, n_init=10, random_state=seed).fit(xc).labels_
        else:
            lab = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(xc)
        groups = [np.flatnonzero(lab == g) for g in range(int(lab.max()) + 1)]
        groups = [g for g in groups if len(g)]
        if method == "kmeans" and len(groups) < n_sub:
            continue
        for s, mean in enumerate(_ordered(groups, xc, idx, n_sub)):
            out[k, 1 + s] = weight * centres[k] + (1 - weight) * mean
    return out


def kmeans_inertia_ref(x, labels, n_sub: int, seed: int = 0) -> float:
    """Summed ``KMeans(n_sub, n_init=10).inertia_`` over the clusters with more than n_sub members."""
    from sklearn.cluster import KMeans

    xn = normalize_rows(x)
    labels = np.asarray(labels)
    total = 0.0
    for k in range(int(labels.max()) + 1):
        xc = xn[labels == k]
        if len(xc) > n_sub:
            total += KMeans(n_clusters=n_sub, n_init=10, random_state=seed).fit(xc).inertia_
    return total


def subcluster_inertia(x, labels, multi, weight: float) -> float:
    """Within-sub-cluster inertia implied by a multi-centre memory: recover the sub-centres
    ``(slot - w * centre) / (1 - w)`` and sum, over clusters whose slots are not all the centre,
    every member's squared distance to its nearest sub-centre."""
    xn = normalize_rows(x)
    labels = np.asarray(labels)
    multi = np.asarray(multi, dtype=np.float64)
    total = 0.0
    for k in range(multi.shape[0]):
        subs = (multi[k, 1:] - weight * multi[k, 0]) / (1 - weight)
        if np.allclose(multi[k, 1:], multi[k, 0]):
            continue
        xc = xn[labels == k]
        d2 = ((xc[:, None, :] - subs[None]) ** 2).sum(-1)
        total += d2.min(axis=1).sum()
    return total
