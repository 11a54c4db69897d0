"""The clustering step of one HIL epoch in one call (docs/design.md, the epoch's data path, steps 2-5)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from . import _arrays, _dispatch
from ._info import Stopwatch
from .jaccard import jaccard_rows


@dataclass
class EpochConfig:
    """Parameters of :func:`cluster_epoch` (defaults: HIL on SYSU-MM01).

    ``backend`` (``"auto"`` or a name of ``hilcore.capabilities()``; any other
    name raises) is handed to every stage that implements it, as
    ``hilcore.capabilities()`` lists them; a stage that does not implement the
    named backend runs with ``"auto"``. :attr:`EpochClusters.backends` says what
    ran in each stage.

    Example:
        >>> import hilcore
        >>> cfg = hilcore.EpochConfig(k1=20, eps=0.5)
        >>> cfg.k1, cfg.k2, cfg.eps, cfg.min_samples, cfg.n_sub, cfg.match_mode
        (20, 6, 0.5, 4, 9, 'both')
    """

    k1: int = 30
    k2: int = 6
    eps: float = 0.6
    min_samples: int = 4
    n_sub: int = 9
    weight: float = 0.9
    sub_method: str = "kmeans"
    ratio: float = 0.5
    match_mode: str = "both"
    backend: str = "auto"
    seed: int = 0

    def __post_init__(self):
        _dispatch.check_backend(self.backend, "backend")


@dataclass
class EpochClusters:
    """Result of :func:`cluster_epoch`; arrays in the family (and device) of ``feats_rgb``.

    Attributes:
        labels_rgb, labels_ir: ``[N_rgb]``, ``[N_ir]`` int64 DBSCAN labels per modality (-1 noise).
        centers_rgb, centers_ir: ``[C_rgb, D]``, ``[C_ir, D]`` float32 cluster means.
        multi_rgb, multi_ir: ``[C, 1 + n_sub, D]`` float32 multi-centre memories (:func:`hilcore.subcluster`).
        shared_labels_rgb, shared_labels_ir: labels in the shared space after BRST matching.
        shared_centers: ``[n_shared, D]`` means over both modalities with the shared labels.
        shared_multi: ``[n_shared, 1 + n_sub, D]`` sub-clustering over both modalities with the shared labels.
        pairs: ``[P, 2]`` int64 matched ``(rgb cluster, ir cluster)``; unmatched_rgb / unmatched_ir:
            cluster ids in no pair (see :func:`hilcore.bidirectional_match`).
        counts: ``clusters_rgb``, ``clusters_ir``, ``outliers_rgb``, ``outliers_ir``, ``matched_pairs``,
            ``unmatched_rgb``, ``unmatched_ir``, ``shared_clusters``, ``shared_outliers_rgb``,
            ``shared_outliers_ir``.
        timings: measured seconds per stage (``jaccard_rgb`` and its parts ``knn_rgb`` and
            ``jaccard_stages_rgb``, ``dbscan_rgb``, ``centers_rgb``, ``subcluster_rgb``, the same for
            ``_ir``, ``match``, ``shared``, ``total``).
        backends: what ran in each stage, e.g. ``{"jaccard": "knn=native, stages=native",
            "dbscan": "native", ...}`` (the labels of :func:`hilcore._dispatch.resolve`).
        info: the diagnostics under one name, ``{"backends": backends, "timings": timings}`` (read-only).
    """

    labels_rgb: Any
    labels_ir: Any
    centers_rgb: Any
    centers_ir: Any
    multi_rgb: Any
    multi_ir: Any
    shared_labels_rgb: Any
    shared_labels_ir: Any
    shared_centers: Any
    shared_multi: Any
    pairs: Any
    unmatched_rgb: Any
    unmatched_ir: Any
    counts: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    backends: dict = field(default_factory=dict)

    @property
    def info(self) -> dict:
        """The diagnostics under hilcore's one name for them: ``{"backends": ..., "timings": ...}``, the
        same dicts as the fields :attr:`backends` and :attr:`timings` (documented before ``info``; kept)."""
        return {"backends": self.backends, "timings": self.timings}


def backend_for(backend: str, op: str) -> str:
    """``backend`` when ``op`` implements it, else ``"auto"``."""
    return backend if _dispatch.implements(op, backend) else "auto"


class Clock(Stopwatch):
    """The epoch's stopwatch (:class:`hilcore._info.Stopwatch`, the one timing helper): seconds per
    named stage in ``times``, the device synchronised around each.

    ``clock(name, fn, *args, **kw)`` runs ``fn`` and records its wall time under ``name``;
    ``clock.total("total")`` the time since the clock was made.
    """

    def __init__(self, device: torch.device):
        super().__init__({}, device)

    def __call__(self, name: str, fn, *args, **kw):
        return self.run(name, fn, *args, **kw)


def check_config(cfg) -> None:
    """TypeError unless ``cfg`` is an :class:`EpochConfig`; ValueError naming a bad field."""
    if not isinstance(cfg, EpochConfig):
        raise TypeError(f"config: expected an EpochConfig or None, got {type(cfg).__name__}")
    if cfg.sub_method not in ("kmeans", "dbscan"):
        raise ValueError(f"config.sub_method: expected 'kmeans' or 'dbscan', got {cfg.sub_method!r}")
    if cfg.match_mode not in ("rgb_to_ir", "ir_to_rgb", "both"):
        raise ValueError(f"config.match_mode: expected 'rgb_to_ir', 'ir_to_rgb' or 'both', got {cfg.match_mode!r}")
    _dispatch.check_backend(cfg.backend, "config.backend")  # also catches a field assigned after construction


def cluster_epoch(feats_rgb, feats_ir, config: EpochConfig | None = None, *, memory_feats_rgb=None,
                  memory_feats_ir=None) -> EpochClusters:
    """Pseudo labels and memories of one HIL epoch from the features of both modalities.

    Per modality: ``jaccard_distance(x, k1, k2, max_distance=eps)`` (sparse,
    exact for DBSCAN), ``dbscan(d, eps, min_samples)``, ``cluster_centers`` and
    ``subcluster(n_sub, weight, sub_method, seed)``. Then
    ``bidirectional_match(ratio, match_mode)`` gives the shared label space,
    and the shared centres / multi-centres are computed over the rows of both
    modalities (RGB first) with the shared labels.

    ``memory_feats_rgb`` / ``memory_feats_ir`` (both or neither): the features
    the centres and multi-centre memories are built from, with the labels
    found on ``feats_*`` (same rows, any width; same family and device), e.g.
    un-centred features when the clustering saw camera-centred ones. Default:
    ``feats_*`` themselves.

    Args:
        feats_rgb: ``[N_rgb, D]`` visible features (NumPy, torch CPU/CUDA, CuPy; rows normalised inside).
        feats_ir: ``[N_ir, D]`` infrared features, same D, family and device.
        config: :class:`EpochConfig` (``None``: the defaults).

    Returns:
        :class:`EpochClusters`.

    Raises:
        ValueError: when a modality ends all-noise (DBSCAN finds no cluster);
            the message names the modality and the parameters.

    Example:
        >>> import hilcore
        >>> from hilcore.synthetic import reid_features
        >>> x, ids, cams = reid_features(40, 30, dim=128, n_cams=2, seed=0)   # 40 identities
        >>> x_rgb, x_ir = x[cams == 0], x[cams == 1]                           # camera 0 "RGB", 1 "IR"
        >>> out = hilcore.cluster_epoch(x_rgb, x_ir, hilcore.EpochConfig(k1=20))
        >>> out.counts["clusters_rgb"], out.counts["clusters_ir"], out.counts["matched_pairs"]
        (40, 40, 40)
        >>> out.labels_rgb.shape, out.multi_rgb.shape, out.shared_multi.shape
        ((586,), (40, 10, 128), (40, 10, 128))
    """
    cfg = EpochConfig() if config is None else config
    check_config(cfg)
    xr, fam = _arrays.features(feats_rgb, "feats_rgb")
    xi = _arrays.features_like(feats_ir, xr, "feats_ir", "feats_rgb")
    if (memory_feats_rgb is None) != (memory_feats_ir is None):
        raise ValueError("memory_feats_rgb, memory_feats_ir: pass both or neither")
    if memory_feats_rgb is None:
        mr, mi = xr, xi
    else:
        # validated, not normalised here: cluster_centers / subcluster normalise their rows themselves
        mr, _ = _arrays.features(memory_feats_rgb, "memory_feats_rgb", normalize=False)
        mi, _ = _arrays.features(memory_feats_ir, "memory_feats_ir", normalize=False)
        if mi.shape[1] != mr.shape[1]:
            raise ValueError(f"memory_feats_ir: expected {mr.shape[1]} columns like memory_feats_rgb, "
                             f"got shape {tuple(mi.shape)}")
        for name, a, b in (("memory_feats_rgb", mr, xr), ("memory_feats_ir", mi, xi)):
            if a.shape[0] != b.shape[0] or a.device != b.device:
                raise ValueError(f"{name}: expected {b.shape[0]} rows on {b.device} (one per clustered feature), "
                                 f"got shape {tuple(a.shape)} on {a.device}")
    be = cfg.backend
    dev = xr.device
    clock = Clock(dev)
    j_impl = _dispatch.resolve("jaccard_distance", backend_for(be, "jaccard_distance"), dev)
    d_impl = _dispatch.resolve("dbscan", backend_for(be, "dbscan"), dev)
    eps = _arrays.nonneg_float(cfg.eps, "eps")
    min_samples = _arrays.positive_int(cfg.min_samples, "min_samples")

    def label(name: str, x: torch.Tensor) -> torch.Tensor:
        tm: dict = {}
        d = clock(f"jaccard_{name}", _jaccard, x, cfg, j_impl, tm)
        clock.times[f"knn_{name}"] = tm["knn"]
        clock.times[f"jaccard_stages_{name}"] = tm["stages"]
        # the Jaccard rows go straight to the DBSCAN kernel: symmetric with every entry <= eps by construction,
        # so the checks and conversions of dbscan()'s input (O(nnz) work, a dozen host syncs) are skipped
        lab = clock(f"dbscan_{name}", d_impl, d.indptr, d.indices, d.data, d.n, eps, min_samples)
        return torch.as_tensor(lab).to(x.device)

    return run_epoch(cfg, {"rgb": xr, "ir": xi}, {"rgb": mr, "ir": mi}, fam, label, clock,
                     {"jaccard": j_impl.label, "dbscan": d_impl.label})


def run_epoch(cfg: EpochConfig, feats: dict, mem: dict, fam, label, clock: Clock, ran: dict) -> EpochClusters:
    """The epoch after validation, written once for :func:`cluster_epoch` and ``hilcore.distributed.cluster_epoch``.

    Args:
        cfg: a checked :class:`EpochConfig`.
        feats: ``{"rgb": x, "ir": x}``, every row of each modality (validated, normalised, one device).
        mem: the same for the features the centres and memories are built from.
        fam: the caller's array family (``_arrays.Family``) the results are returned in.
        label: ``label(name, feats[name]) -> [N]`` int64 DBSCAN labels of that modality on its device
            (the driver's Jaccard distance and DBSCAN; it records its own timings in ``clock``).
        clock: the :class:`Clock` the stages are timed with.
        ran: what ran in the driver's stages (``jaccard``, ``dbscan``); the later stages' labels are added.

    Per modality: ``label``, the all-noise check, ``cluster_centers``, ``subcluster``; then
    ``bidirectional_match`` and the shared centres / multi-centres over both modalities (RGB first).
    """
    be = cfg.backend
    dev = feats["rgb"].device
    b_sub, b_match = backend_for(be, "subcluster"), backend_for(be, "bidirectional_match")
    cb = backend_for(be, "cluster_centers")
    sub = _dispatch.resolve("subcluster", b_sub, dev)
    ran = dict(ran)
    ran.update({
        "centers": _dispatch.resolve("cluster_centers", cb, dev).label,
        "subcluster": f"centers={sub.part('centers').label}, "
                      f"{cfg.sub_method}={sub.part(cfg.sub_method).label}",
        "match": _dispatch.resolve("bidirectional_match", b_match, dev).label,
    })
    per = {}
    for name in ("rgb", "ir"):
        x = feats[name]
        lab = label(name, x)
        check_not_all_noise(lab, name, x.shape[0], cfg)
        xn, c, cen = clock(f"centers_{name}", modality_centres, mem[name], lab, cb, mem[name] is x)
        multi = clock(f"subcluster_{name}", modality_memories, xn, lab, c, cen, cfg, cb, b_sub)
        per[name] = (lab, cen, multi)
    xr, xi = feats["rgb"], feats["ir"]
    lr, li = per["rgb"][0], per["ir"][0]
    m = clock("match", match, xr, lr, xi, li, per, cfg, cb, b_match, mem["rgb"] is xr)
    sr, si = torch.as_tensor(m.labels_rgb).to(dev), torch.as_tensor(m.labels_ir).to(dev)

    s_cen, s_multi = clock("shared", shared_memories, mem["rgb"], mem["ir"], sr, si, m, per, cfg, cb, b_sub,
                           mem["rgb"] is xr)
    clock.total("total")
    return _epoch_result(per, m, sr, si, s_cen, s_multi, dev, fam, dict(clock.times), ran)


def modality_centres(x: torch.Tensor, lab: torch.Tensor, cb: str, normalized: bool):
    """What ``cluster_centers(x, lab, backend=cb)`` computes, keeping its validated rows for the next stage:
    ``(normalised rows, C, centres [C, D])`` (one validation and normalisation of ``x`` and one label check
    per modality instead of one per op). ``normalized``: ``x`` is the epoch's own validated, normalised
    features, used as they are (normalised once, as the ops normalise the caller's features once)."""
    from .centers import checked_clusters

    xn = x if normalized else _arrays.features(x, "x", normalize=True)[0]
    lab, c = checked_clusters(lab, xn.shape[0], xn.device)
    return xn, c, _dispatch.resolve("cluster_centers", cb, xn.device)(xn, lab, c)


def modality_memories(xn: torch.Tensor, lab: torch.Tensor, c: int, cen: torch.Tensor, cfg: EpochConfig, cb: str,
                      b_sub: str):
    """What ``subcluster(x, lab, cfg.n_sub, cfg.weight, cfg.sub_method, seed=cfg.seed, backend=b_sub)``
    computes, on the rows :func:`modality_centres` validated; its slot 0 is ``cen`` when both stages use the
    same centre function (the same bits) instead of a second pass over the rows."""
    from .centers import SUB_DEFAULTS, multi_centres, seeding_uniforms

    impl = _dispatch.resolve("subcluster", b_sub, xn.device)
    same = impl.part("centers").fn is _dispatch.resolve("cluster_centers", cb, xn.device).fn
    u = seeding_uniforms(cfg.seed, c, SUB_DEFAULTS["n_init"], cfg.n_sub) if cfg.sub_method == "kmeans" else None
    return multi_centres(xn, lab, c, cfg.n_sub, cfg.weight, cfg.sub_method, impl, u=u, iters=SUB_DEFAULTS["iters"],
                         eps=SUB_DEFAULTS["eps"], min_samples=SUB_DEFAULTS["min_samples"],
                         centres=cen if same else None)


def match(xr: torch.Tensor, lr: torch.Tensor, xi: torch.Tensor, li: torch.Tensor, per: dict, cfg: EpochConfig,
          cb: str, b_match: str, same_rows: bool):
    """``bidirectional_match(xr, lr, xi, li, cfg.ratio, cfg.match_mode)`` on the epoch's validated, normalised
    features and its DBSCAN labels (contiguous; the cluster counts are the centres' rows): no second
    validation, normalisation or label check. ``same_rows``: the per-modality centres in ``per`` were computed
    from these very rows; when the match's centre function is the same, they are its prototypes (the same
    bits) instead of a second pass."""
    from .brst import MatchResult, match_tensors

    ratio = _arrays.nonneg_float(cfg.ratio, "ratio")
    impl = _dispatch.resolve("bidirectional_match", b_match, xr.device)
    same = same_rows and impl.part("centers").fn is _dispatch.resolve("cluster_centers", cb, xr.device).fn
    out = match_tensors(xr, lr, int(per["rgb"][1].shape[0]), xi, li, int(per["ir"][1].shape[0]), ratio,
                        cfg.match_mode, impl, {"rgb": per["rgb"][1], "ir": per["ir"][1]} if same else None)
    return MatchResult(*out[:5], n_shared=int(out[5]))


def _single_modality_clusters(m, mode: str, dev: torch.device):
    """``(rgb, ir)``: per modality ``(cluster ids, their shared ids)`` of the shared clusters whose members are
    exactly that one modality cluster's members (docs/design.md, the epoch's data path)."""
    none = (torch.zeros(0, dtype=torch.int64, device=dev),) * 2
    un_r, un_i = (torch.as_tensor(t).to(dev) for t in (m.unmatched_rgb, m.unmatched_ir))
    if mode == "both":  # shared ids: the P pairs, then every unmatched RGB cluster, then every unmatched IR one
        p = int(len(m.pairs))
        ar_r = torch.arange(un_r.numel(), device=dev)
        ar_i = torch.arange(un_i.numel(), device=dev)
        return (un_r, p + ar_r), (un_i, p + un_r.numel() + ar_i)
    if mode == "rgb_to_ir":  # shared ids = IR ids; an IR cluster that took no RGB sample is its own members
        return none, (un_i, un_i)
    return (un_r, un_r), none  # ir_to_rgb: the mirror image


def shared_memories(mr: torch.Tensor, mi: torch.Tensor, sr: torch.Tensor, si: torch.Tensor, m, per: dict,
                    cfg: EpochConfig, cb: str, b_sub: str, normalized: bool = False):
    """Shared centres ``[S, D]`` and multi-centre memories ``[S, 1 + n_sub, D]`` over the rows of both
    modalities (RGB first) with the shared labels ``sr`` / ``si`` of the match ``m``.

    A shared cluster whose members are exactly one modality cluster's (an unmatched cluster) takes that
    cluster's centre and multi-centre memory from ``per`` (the same members give the same memory, as the
    release's per-cluster ``KMeans(random_state=seed)`` does); only the other shared clusters (the matched
    pairs, or the clusters that received samples) are computed, over their own rows, with the k-means++
    draws of their shared ids (rows of :func:`hilcore.centers.seeding_uniforms` of the shared space), so each
    of them equals ``subcluster(both rows, shared labels)``'s row. ``normalized``: ``mr`` / ``mi`` are the
    epoch's normalised features (not normalised again)."""
    from .centers import SUB_DEFAULTS, multi_centres, seeding_uniforms

    dev = mr.device
    n_shared = int(m.n_shared)
    ls = torch.cat([sr, si])
    d = mr.shape[1]
    s_cen = torch.empty(n_shared, d, dtype=torch.float32, device=dev)
    s_multi = torch.empty(n_shared, 1 + cfg.n_sub, d, dtype=torch.float32, device=dev)
    fresh = torch.ones(n_shared, dtype=torch.bool, device=dev)
    for (ids, sid), name in zip(_single_modality_clusters(m, cfg.match_mode, dev), ("rgb", "ir")):
        cen, multi = (torch.as_tensor(t).to(dev) for t in per[name][1:3])
        if cfg.match_mode == "both":  # shared ids of a consecutive range: gathered straight into place
            lo = int(len(m.pairs)) + (0 if name == "rgb" else len(m.unmatched_rgb))
            torch.index_select(cen, 0, ids, out=s_cen[lo:lo + ids.numel()])
            torch.index_select(multi, 0, ids, out=s_multi[lo:lo + ids.numel()])
        else:
            s_cen[sid] = cen[ids]
            s_multi[sid] = multi[ids]
        fresh[sid] = False
    fresh_ids = torch.nonzero(fresh).flatten()
    q = fresh_ids.numel()
    if q:
        fmap = torch.full((n_shared,), -1, dtype=torch.int64, device=dev)
        fmap[fresh_ids] = torch.arange(q, device=dev)
        lf = torch.where(ls >= 0, fmap[ls.clamp(min=0)], ls)
        rows = torch.nonzero(lf >= 0).flatten()  # the members of the fresh clusters, ascending: RGB rows first
        xs = _gather_rows(mr, mi, rows)
        if not normalized:
            xs, _ = _arrays.features(xs, "x", normalize=True)  # row by row what cluster_centers would see
        lf = lf[rows]
        c_impl = _dispatch.resolve("cluster_centers", cb, dev)
        s_impl = _dispatch.resolve("subcluster", b_sub, dev)
        u = None
        if cfg.sub_method == "kmeans":
            u = seeding_uniforms(cfg.seed, n_shared, SUB_DEFAULTS["n_init"], cfg.n_sub).to(dev)[fresh_ids]
        cen_f = c_impl(xs, lf, q)
        s_cen[fresh_ids] = cen_f
        same = s_impl.part("centers").fn is c_impl.fn
        s_multi[fresh_ids] = multi_centres(xs, lf, q, cfg.n_sub, cfg.weight, cfg.sub_method, s_impl, u=u,
                                           iters=SUB_DEFAULTS["iters"], eps=SUB_DEFAULTS["eps"],
                                           min_samples=SUB_DEFAULTS["min_samples"], centres=cen_f if same else None)
    return s_cen, s_multi


def _gather_rows(mr: torch.Tensor, mi: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``torch.cat([mr, mi])[rows]`` for ascending ``rows``, gathered straight into one buffer (one host read:
    where the RGB rows end)."""
    n_r = mr.shape[0]
    k = int(torch.searchsorted(rows, n_r))
    xs = torch.empty(rows.numel(), mr.shape[1], dtype=mr.dtype, device=mr.device)
    torch.index_select(mr, 0, rows[:k], out=xs[:k])
    torch.index_select(mi, 0, rows[k:] - n_r, out=xs[k:])
    return xs


def _jaccard(x: torch.Tensor, cfg: EpochConfig, impl: _dispatch.Impl, timings: dict):
    """What ``jaccard_distance(x, k1, k2, max_distance=eps)`` computes, as device CSR rows (no output
    conversion); ``timings`` gets the measured ``knn`` and ``stages`` seconds."""
    xt, _ = _arrays.features(x, "x")  # the op's own validation and normalisation: the same bits it ranks
    k1 = _arrays.ranking_length(cfg.k1, "k1", xt.shape[0])
    k2 = _arrays.ranking_length(cfg.k2, "k2", k1, limit_name="k1")
    md = _arrays.nonneg_float(cfg.eps, "max_distance")
    return jaccard_rows(xt, k1, k2, md, impl, timings)


def check_not_all_noise(lab: torch.Tensor, name: str, n: int, cfg: EpochConfig) -> None:
    """The ValueError of a modality ``name`` whose ``n`` DBSCAN labels ``lab`` hold no cluster (all -1)."""
    if not bool((lab >= 0).any()):
        raise ValueError(f"cluster_epoch: the {name.upper()} modality ended all-noise: DBSCAN found no cluster "
                         f"among its {n} features (eps={cfg.eps}, min_samples={cfg.min_samples}, "
                         f"k1={cfg.k1}, k2={cfg.k2}); a larger eps or a smaller min_samples may help")


def _epoch_result(per: dict, m, sr, si, s_cen, s_multi, device, fam, timings: dict, backends: dict) -> EpochClusters:
    """The :class:`EpochClusters` of one epoch (:func:`run_epoch`): ``per[name] = (labels, centers, multi)`` per modality, the
    match ``m`` with its shared labels ``sr`` / ``si``, the shared centres / multi-centres; the counts are
    computed here, every array goes to ``device`` in the caller's family ``fam``."""
    lr, li = per["rgb"][0], per["ir"][0]
    lr, li, sr, si = (torch.as_tensor(t) for t in (lr, li, sr, si))

    vals = []  # per labelling: clusters (max label + 1, 0 when all noise) and noise count; read in one sync
    for lab in (lr, li, sr, si):
        top = (lab.max() + 1).clamp(min=0) if lab.numel() else lab.new_zeros((), dtype=torch.int64)
        vals += [top.to(device=lr.device, dtype=torch.int64), (lab < 0).sum().to(lr.device)]
    c_rgb, o_rgb, c_ir, o_ir, _, so_rgb, _, so_ir = torch.stack(vals).tolist()
    counts = {
        "clusters_rgb": c_rgb, "clusters_ir": c_ir,
        "outliers_rgb": o_rgb, "outliers_ir": o_ir,
        "matched_pairs": int(len(m.pairs)), "unmatched_rgb": int(len(m.unmatched_rgb)),
        "unmatched_ir": int(len(m.unmatched_ir)), "shared_clusters": int(m.n_shared),
        "shared_outliers_rgb": so_rgb, "shared_outliers_ir": so_ir,
    }
    f = lambda t: _arrays.to_family(torch.as_tensor(t).to(device), fam)  # noqa: E731
    return EpochClusters(
        labels_rgb=f(lr), labels_ir=f(li), centers_rgb=f(per["rgb"][1]), centers_ir=f(per["ir"][1]),
        multi_rgb=f(per["rgb"][2]), multi_ir=f(per["ir"][2]), shared_labels_rgb=f(sr), shared_labels_ir=f(si),
        shared_centers=f(s_cen), shared_multi=f(s_multi), pairs=f(m.pairs), unmatched_rgb=f(m.unmatched_rgb),
        unmatched_ir=f(m.unmatched_ir), counts=counts, timings=timings, backends=backends)
