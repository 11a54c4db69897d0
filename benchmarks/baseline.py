"""The widely used clustering step, re-implemented as the benchmark baseline.

This is the algorithm that cluster-contrast ReID pipelines run once per
modality per epoch (``compute_jaccard_distance`` followed by scikit-learn
DBSCAN), written here from the description in docs/design.md with the same data
layout and the same costs:

1. flat exact kNN: blocked ``x @ x.T`` and a full argsort per row, keeping
   ``k1`` columns with the row itself first (what a flat L2 index returns);
2. per-row NumPy loops building a dense ``N x N`` weight matrix ``V``
   (k-reciprocal sets, expansion, softmax weights);
3. local query expansion over dense rows (a second dense ``N x N`` matrix);
4. an inverted index built with ``np.where`` on every dense column;
5. per-row min-accumulation into a dense ``N x N`` Jaccard matrix;
6. ``sklearn.cluster.DBSCAN(metric="precomputed")`` on that dense matrix.

Memory is three dense float32 ``N x N`` matrices at the peak, which is what
stops this approach near N = 40,000 on a 24 GB machine. hilcore is compared
against this code for speed, memory and labels (benchmarks/bench_cluster.py).

>>> from benchmarks.baseline import baseline_cluster
>>> labels = baseline_cluster(features, k1=30, k2=6, eps=0.6, min_samples=4)
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["baseline_knn", "baseline_jaccard", "baseline_cluster", "original_jaccard", "dense_bytes_needed"]


def _normalize(x) -> np.ndarray:
    """float32 NumPy copy of ``x`` with L2-normalised rows (accepts torch tensors)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array [N, D], got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("x: rows must be finite and non-zero")
    return x / norms


def baseline_knn(x: np.ndarray, k: int, block: int = 1024, device: str = "cpu") -> np.ndarray:
    """Flat exact kNN on normalised rows: ``[N, k]`` int64 ranking, self first, ties to the lower index.

    A tile of ``block`` rows is multiplied against all rows, the ``k`` best
    columns of each row are selected (``np.argpartition``) and sorted by
    similarity, then index (an exact tie exactly at the k-th place may keep
    either index, as a flat index's heap may). ``device="cuda"`` runs the product on the GPU as a GPU flat index
    would; the sort and everything after stay on the CPU as in the original.
    """
    n = x.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    if device != "cpu":
        import torch

        xt = torch.from_numpy(x).to(device)
    for start in range(0, n, block):
        stop = min(n, start + block)
        if device != "cpu":
            sim = (xt[start:stop] @ xt.T).cpu().numpy()
        else:
            sim = x[start:stop] @ x.T
        # the row itself ranks first whatever its duplicates score
        sim[np.arange(stop - start), np.arange(start, stop)] = np.inf
        if k < n:
            # top-k selection then a sort of the k survivors, as a flat index's heap does
            cand = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        else:
            cand = np.broadcast_to(np.arange(n), sim.shape)
        vals = np.take_along_axis(sim, cand, axis=1)
        order = np.lexsort((cand, -vals), axis=1)  # by similarity, then by the lower index
        out[start:stop] = np.take_along_axis(cand, order, axis=1)
    return out


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): the j among the first k+1 entries of i's ranking whose own first k+1 entries hold i."""
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    hits = np.any(backward == i, axis=1)
    return forward[hits]


def baseline_jaccard(x, k1: int = 30, k2: int = 6, *, device: str = "cpu", progress: bool = False,
                     timings: dict | None = None) -> np.ndarray:
    """Dense ``[N, N]`` float32 k-reciprocal Jaccard distance, the widely used way.

    Pairs whose supports do not meet are 1; the diagonal is 0 (up to
    rounding, clipped at 0). ``k1`` is clamped to N and ``k2`` to ``k1``.
    ``timings``, when given, receives the seconds spent in ``"knn"`` and in
    the rest (``"jaccard"``).
    """
    t0 = time.perf_counter()
    x = _normalize(x)
    n = x.shape[0]
    k1 = min(int(k1), n)
    k2 = min(int(k2), k1)
    k_half = int(np.around(k1 / 2))
    rank = baseline_knn(x, k1, device=device)
    t1 = time.perf_counter()

    rows = range(n)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc="baseline V", mininterval=1.0)

    # Dense weight matrix V: row i holds the softmax weights over i's expanded k-reciprocal set.
    v = np.zeros((n, n), dtype=np.float32)
    for i in rows:
        r_i = _reciprocal(rank, i, k1)
        expanded = r_i
        for c in r_i:
            r_c = _reciprocal(rank, int(c), k_half)
            if len(np.intersect1d(r_c, r_i)) > 2.0 / 3.0 * len(r_c):
                expanded = np.append(expanded, r_c)
        expanded = np.unique(expanded)
        logits = -(2.0 - 2.0 * (x[expanded] @ x[i]))  # -(squared L2 distance) on the unit sphere
        logits = logits - logits.max()
        w = np.exp(logits)
        v[i, expanded] = w / w.sum()

    # Local query expansion: V'[i] = mean of V over i's first k2 neighbours (a second dense matrix).
    if k2 > 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = v[rank[i, :k2]].mean(axis=0)
        v = v_qe
        del v_qe

    # Inverted index: for every column t, the rows whose V' is non-zero there.
    inverted = [np.where(v[:, t] != 0)[0] for t in range(n)]

    # Per-row min-accumulation into the dense Jaccard matrix.
    jac = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        acc = np.zeros(n, dtype=np.float32)
        support = np.where(v[i] != 0)[0]
        for t in support:
            js = inverted[t]
            acc[js] += np.minimum(v[i, t], v[js, t])
        jac[i] = 1.0 - acc / (2.0 - acc)
    np.maximum(jac, 0.0, out=jac)
    if timings is not None:
        timings["knn"] = t1 - t0
        timings["jaccard"] = time.perf_counter() - t1
    return jac


def baseline_cluster(x, k1: int = 30, k2: int = 6, eps: float = 0.6, min_samples: int = 4, *,
                     device: str = "cpu", n_jobs: int = -1, timings: dict | None = None) -> np.ndarray:
    """Labels ``[N]`` (int64, -1 noise) from the dense Jaccard matrix and scikit-learn DBSCAN.

    ``timings``, when given, receives ``"knn"``, ``"jaccard"`` and ``"dbscan"`` seconds.
    """
    from sklearn.cluster import DBSCAN

    dist = baseline_jaccard(x, k1, k2, device=device, timings=timings)
    t = time.perf_counter()
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=n_jobs).fit_predict(dist)
    if timings is not None:
        timings["dbscan"] = time.perf_counter() - t
    return labels.astype(np.int64)


def original_jaccard(x, k1: int = 30, k2: int = 6, use_float16: bool = False, *,
                     timings: dict | None = None) -> np.ndarray:
    """The widely used ``compute_jaccard_distance`` step by step, its arithmetic kept (what
    ``hilcore.compat.compute_jaccard_distance`` reproduces): the flat-index ranking of :func:`baseline_knn` on
    the features as given (unit rows: the L2 order), then ``hilcore.ref.compat_jaccard.jaccard_dense``: per-row
    ``torch.mm`` + ``F.softmax`` weights, dense ``V`` and its ``np.mean`` query expansion, the column-wise
    inverted index and the per-row ``temp_min`` loop, ``1 - m / (2 - m)`` in the matrix dtype.
    ``timings`` receives ``"knn"`` and ``"jaccard"`` seconds."""
    import torch

    from hilcore.ref.compat_jaccard import jaccard_dense

    xt = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t0 = time.perf_counter()
    rank = baseline_knn(xt.float().numpy(), min(int(k1), xt.shape[0]))
    t1 = time.perf_counter()
    out = jaccard_dense(xt, k1, k2, use_float16, rank=rank)
    if timings is not None:
        timings["knn"] = t1 - t0
        timings["jaccard"] = time.perf_counter() - t1
    return out


def dense_bytes_needed(n: int, d: int) -> int:
    """Rough peak memory of :func:`baseline_cluster` for ``n`` features of dimension ``d``.

    Three dense float32 ``n x n`` matrices (V, its query expansion and the
    Jaccard matrix overlap at the peak, counted with headroom), the features
    and one kNN tile, plus 10 % for the inverted index and DBSCAN's neighbourhoods.
    """
    dense = 3 * 4 * n * n
    other = 4 * n * d * 2 + 4 * 1024 * n * 2
    return int((dense + other) * 1.1)
