"""Cluster centres and multi-centre (sub-cluster) memories, docs/design.md step 4."""
from __future__ import annotations

import numpy as np
import torch

from . import _arrays, _dispatch

def cluster_labels(labels, n: int, device: torch.device, name: str = "labels") -> torch.Tensor:
    """Validate ``[n]`` integer cluster labels (-1 = noise) and return them as int64 on ``device``."""
    t = _arrays.int_vector(labels, name, n, device, what="cluster ids, -1 for noise", noun="labels",
                           per="one per row of the features")
    if n and int(t.min()) < -1:
        raise ValueError(f"{name}: cluster ids must be >= 0, or -1 for noise; got {int(t.min())}")
    return t


def count_clusters(lab: torch.Tensor, name: str = "labels") -> tuple[int, torch.Tensor]:
    """``(C, sizes)`` for validated labels; raises when every sample is noise or ids are not contiguous."""
    valid = lab[lab >= 0]
    if valid.numel() == 0:
        raise ValueError(f"{name}: every sample is noise (-1); no cluster to average")
    c = int(valid.max()) + 1
    if c > valid.numel():  # ids cannot be contiguous; say so before allocating C counters
        raise ValueError(f"{name}: cluster ids must be contiguous 0..C-1; got the id {c - 1} with only "
                         f"{valid.numel()} labelled sample(s), so at most {valid.numel()} clusters")
    sizes = torch.bincount(valid, minlength=c)
    empty = torch.nonzero(sizes == 0).flatten()
    if empty.numel():
        ids = empty[:10].tolist()
        more = "" if empty.numel() <= 10 else f" (and {empty.numel() - 10} more)"
        raise ValueError(f"{name}: cluster ids must be contiguous 0..C-1; ids {ids}{more} have no member")
    return c, sizes


def checked_clusters(labels, n: int, device: torch.device, name: str = "labels") -> tuple[torch.Tensor, int]:
    """:func:`cluster_labels` and :func:`count_clusters` in one host sync: ``(labels int64 on device, C)``.

    Same checks, same errors, same order; the statistics (min, max, labelled count and the number of
    distinct ids below ``n``) are read back together. Ids are contiguous exactly when the ``C = max + 1``
    ids ``0..max`` are all present, i.e. when ``C`` ids below ``n`` are distinct (``C <= n`` checked first)."""
    t = _arrays.int_vector(labels, name, n, device, what="cluster ids, -1 for noise", noun="labels",
                           per="one per row of the features")
    if n == 0:
        raise ValueError(f"{name}: every sample is noise (-1); no cluster to average")
    bins = torch.zeros(n + 2, dtype=torch.int64, device=t.device)
    bins.scatter_(0, t.clamp(min=-1, max=n) + 1, 1)  # bin 0: noise (and below), 1..n: ids 0..n-1, n+1: ids >= n
    lo, hi, labelled, distinct = torch.stack([t.min(), t.max(), (t >= 0).sum(), bins[1:n + 1].sum()]).tolist()
    if lo < -1:
        raise ValueError(f"{name}: cluster ids must be >= 0, or -1 for noise; got {lo}")
    if labelled == 0:
        raise ValueError(f"{name}: every sample is noise (-1); no cluster to average")
    c = hi + 1
    if c > labelled or distinct < c:
        count_clusters(t, name)  # raises the message that names the missing ids
    return t, c


def cluster_centers(x, labels, *, backend: str = "auto"):
    """Mean feature of every cluster (noise ignored).

    Rows of ``x`` are L2-normalised first (docs/design.md step 1 hands over
    normalised features; normalising again makes every op agree on unnormalised
    input too). The centres themselves are plain means, not re-normalised.
    Sums are accumulated in float64.

    Args:
        x: ``[N, D]`` features (NumPy, torch CPU/CUDA or CuPy; any float dtype).
        labels: ``[N]`` integer cluster ids ``0..C-1``, ``-1`` for noise; every
            id in ``0..C-1`` must have a member (C = max label + 1).
        backend: ``"auto"``, ``"torch"``, ``"native"`` or ``"triton"`` (CUDA, or CPU
            under ``TRITON_INTERPRET=1``).

    Returns:
        ``[C, D]`` float32 centres in the family (and device) of ``x``.

    Raises:
        ValueError: ``x`` not 2-D or with NaN/Inf rows; ``labels`` of the wrong
            length, below -1, all noise, or not contiguous (an id in ``0..C-1``
            without a member).
        TypeError: non-integer ``labels``.
        hilcore.BackendUnavailable: ``backend`` named explicitly cannot run here (the message says why).

    Example:
        >>> import numpy as np, hilcore
        >>> x = np.array([[1, 0], [1, 0], [0, 2], [3, 3]], dtype=np.float32)
        >>> hilcore.cluster_centers(x, np.array([0, 0, 1, -1])).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    xt, fam = _arrays.features(x, "x", normalize=True)
    lab, c = checked_clusters(labels, xt.shape[0], xt.device)
    impl = _dispatch.resolve("cluster_centers", backend, xt.device)
    return _arrays.to_family(impl(xt, lab, c), fam)


def _check_fraction(v, name: str) -> float:
    f = _arrays.nonneg_float(v, name)
    if f > 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {v}")
    return f


def seeding_uniforms(seed, c: int, n_init: int, n_sub: int) -> torch.Tensor:
    """The k-means++ draws shared by every backend: float64 ``[C, n_init, n_sub]`` uniforms in
    [0, 1) from ``numpy.random.default_rng(seed)``, one per (cluster, init, seeding step)."""
    return torch.from_numpy(np.random.default_rng(seed).random((c, n_init, n_sub)))


def _slot_order(cnt: torch.Tensor, first: torch.Tensor):
    """Every cluster's sub-centres by (size desc, smallest member index asc): the ``[C, S]`` order of the
    slots and the ``[C, S, 1]`` mask of the sorted slots that hold one."""
    o1 = torch.sort(first, dim=1, stable=True).indices
    cnt1 = torch.gather(cnt, 1, o1)
    o2 = torch.sort(cnt1, dim=1, descending=True, stable=True).indices
    order = torch.gather(o1, 1, o2)
    return order, (torch.gather(cnt, 1, order) > 0).unsqueeze(2)


#: :func:`subcluster`'s defaults (``iters``, ``n_init``, ``eps``, ``min_samples``), used by the epoch's shared stage.
SUB_DEFAULTS = dict(iters=30, n_init=10, eps=0.3, min_samples=4)


def subcluster(x, labels, n_sub: int = 9, weight: float = 0.9, method: str = "kmeans", *,
               iters: int = SUB_DEFAULTS["iters"], n_init: int = SUB_DEFAULTS["n_init"],
               eps: float = SUB_DEFAULTS["eps"], min_samples: int = SUB_DEFAULTS["min_samples"], seed: int = 0,
               backend: str = "auto"):
    """Multi-centre memory ``[C, 1 + n_sub, D]`` of docs/design.md step 4.

    Slot 0 of cluster ``c`` is its centre ``m_c`` (:func:`cluster_centers`);
    slot ``s >= 1`` is ``weight * m_c + (1 - weight) * u_{c,s}`` where
    ``u_{c,1..n_sub}`` are the means of the secondary clusters of ``c``'s
    members (L2-normalised rows), sorted by size (largest first), ties by the
    smallest sample index they contain. A slot without a secondary cluster holds
    ``m_c`` itself.

    ``method="kmeans"``: k-means with ``n_sub`` clusters on the normalised rows
    of every cluster, batched over all clusters at once (ragged segments).
    Each of ``n_init`` runs seeds with k-means++ (plain, one candidate per
    step) driven by the uniforms ``numpy.random.default_rng(seed).random((C,
    n_init, n_sub))`` (step 0 picks member ``floor(u * n)``; step t the first
    member whose cumulative squared distance to the chosen seeds exceeds
    ``u * total``), then runs at most ``iters`` Lloyd steps (assignment to the
    nearest sub-centre, ties to the lower one; an empty sub-cluster keeps its
    previous centre), stopping early once the assignment no longer changes. The
    run with the lowest inertia (sum of squared distances; ties: the earlier
    run) among those that end with no empty sub-cluster wins. Clusters with
    ``<= n_sub`` members, or whose every run ends with an empty sub-cluster
    (e.g. fewer than ``n_sub`` distinct rows), repeat the centre in every slot.
    Same input and seed give the same output; backends agree up to float32
    rounding.

    ``method="dbscan"``: DBSCAN (docs/design.md semantics) inside each cluster on
    the cosine distance ``1 - cos`` with ``eps`` and ``min_samples`` (self
    included); the largest ``n_sub`` density clusters are kept (ties: smallest
    member index), the remaining slots hold the centre. Runs on torch for every
    backend (within-cluster pairs, batched over clusters).

    Args:
        x: ``[N, D]`` features (any family, any float dtype).
        labels: ``[N]`` cluster ids ``0..C-1`` (contiguous), -1 for noise.
        n_sub: secondary clusters per cluster (S >= 1).
        weight: w in [0, 1].
        method: ``"kmeans"`` or ``"dbscan"``.
        iters: max Lloyd iterations (>= 1); n_init: k-means++ runs (>= 1).
        eps, min_samples: DBSCAN parameters for ``method="dbscan"``.
        seed: integer seed of the k-means++ draws.
        backend: ``"auto"``, ``"torch"``, ``"native"`` (C++ k-means on CPU) or
            ``"triton"`` (Triton centres and assignment step, torch for the rest).

    Returns:
        ``[C, 1 + n_sub, D]`` float32 in the family of ``x``.

    Raises:
        ValueError: as :func:`cluster_centers` for ``x`` and ``labels``;
            ``n_sub``, ``iters``, ``n_init``, ``min_samples`` < 1, ``weight``
            outside [0, 1], ``eps`` < 0, an unknown ``method``.
        TypeError: a ``seed`` that is not a non-negative integer.
        hilcore.BackendUnavailable: ``backend`` named explicitly cannot run here (the message says why).

    Example:
        >>> import numpy as np, hilcore
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((200, 32)).astype(np.float32)
        >>> labels = np.repeat(np.arange(4), 50)
        >>> hilcore.subcluster(x, labels, n_sub=9).shape
        (4, 10, 32)
    """
    xt, fam = _arrays.features(x, "x", normalize=True)
    lab, c = checked_clusters(labels, xt.shape[0], xt.device)
    n_sub = _arrays.positive_int(n_sub, "n_sub")
    if c * (1 + n_sub) * xt.shape[1] > _arrays.MAX_INT >> 22:  # ~4 TiB of float32: not a memory anyone can hold
        raise ValueError(f"n_sub: the multi-centre memory [C, 1 + n_sub, D] = [{c}, 1 + {n_sub}, {xt.shape[1]}] "
                         f"would not fit in memory; expected a small number of sub-clusters (HIL uses 9)")
    weight = _check_fraction(weight, "weight")
    if method not in ("kmeans", "dbscan"):
        raise ValueError(f"method: expected 'kmeans' or 'dbscan', got {method!r}")
    iters = min(_arrays.positive_int(iters, "iters"), _arrays.MAX_INT)  # Lloyd stops at convergence anyway
    n_init = _arrays.positive_int(n_init, "n_init")
    eps = _arrays.nonneg_float(eps, "eps")
    min_samples = min(_arrays.positive_int(min_samples, "min_samples"), _arrays.MAX_INT)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected a non-negative integer, got {seed!r}")
    impl = _dispatch.resolve("subcluster", backend, xt.device)
    u = seeding_uniforms(int(seed), c, n_init, n_sub) if method == "kmeans" else None
    out = multi_centres(xt, lab, c, n_sub, weight, method, impl, u=u, iters=iters, eps=eps, min_samples=min_samples)
    return _arrays.to_family(out, fam)


def multi_centres(xt: torch.Tensor, lab: torch.Tensor, c: int, n_sub: int, weight: float, method: str,
                  impl: _dispatch.Impl, *, u: torch.Tensor | None, iters: int, eps: float, min_samples: int,
                  centres: torch.Tensor | None = None):
    """Internal entry of :func:`subcluster` on validated input: ``xt`` normalised float32 rows, ``lab``
    contiguous int64 ids ``0..c-1`` on its device, ``impl`` the resolved ``subcluster``, ``u`` the
    ``[c, n_init, n_sub]`` k-means++ draws of these clusters (``method="kmeans"``; e.g. rows of
    :func:`seeding_uniforms` of a larger label space). ``centres``: the ``[c, D]`` result of ``impl``'s
    ``centers`` part on the same input when the caller has it already. Returns the ``[c, 1 + n_sub, D]`` tensor."""
    if centres is None:
        centres = impl.part("centers")(xt, lab, c)
    if method == "kmeans":
        sub, cnt, first = impl.part("kmeans")(xt, lab, c, n_sub, iters, u)
    else:
        sub, cnt, first = impl.part("dbscan")(xt, lab, c, n_sub, eps, min_samples)
    order, has = _slot_order(cnt, first)
    # written into the result in place (one [C, 1 + S, D] buffer, no temporaries of that size): slot 0 the centre,
    # the sorted slots (1 - w) u + w m, the empty ones exact copies of the centre
    out = torch.empty(c, 1 + sub.shape[1], centres.shape[1], dtype=centres.dtype, device=centres.device)
    out[:, 0] = centres
    m = centres.unsqueeze(1)
    slots = out[:, 1:]
    torch.gather(sub, 1, order.unsqueeze(2).expand_as(sub), out=slots)
    slots.mul_(1 - weight).add_(weight * m)
    torch.where(has, slots, m, out=slots)
    return out
