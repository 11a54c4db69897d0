"""Sharded epoch (``hilcore.distributed.cluster_epoch``): :func:`hilcore.epoch.run_epoch` with the sharded
Jaccard distance and DBSCAN as its labelling stage."""
from __future__ import annotations

import torch

from .. import _arrays
from ..epoch import Clock, EpochConfig, check_config, run_epoch
from .comm import Comm, gather_rows, local_features
from .dbscan_sharded import dbscan
from .jaccard_sharded import jaccard_distance

__all__ = ["cluster_epoch"]


def cluster_epoch(feats_rgb_local, feats_ir_local, config=None, *, memory_feats_rgb_local=None,
                  memory_feats_ir_local=None, group=None):
    """:func:`hilcore.cluster_epoch` with the Jaccard distance and DBSCAN sharded over ``group``.

    Per modality: :func:`hilcore.distributed.jaccard_distance` (``max_distance=eps``) on this
    rank's rows and :func:`hilcore.distributed.dbscan` -> the global labels on every rank. The
    per-cluster stages (centres, sub-clusters, BRST matching, shared memories)
    need every row of a cluster; they run on the gathered features
    (``O(N D)`` per rank, what a driver holds after its sharded extraction
    anyway), identically on every rank, with the stages and backends that
    :func:`hilcore.cluster_epoch` uses. On CPU the ranking is bitwise the
    default (native) kNN's and the Jaccard sums run in the order the torch and
    native stages share, so the result equals
    ``hilcore.cluster_epoch(all_rgb, all_ir, config)`` with the default
    backend, and with ``config.backend="torch"`` when the torch kNN ranks the
    rows the same (no float32 near-ties). On CUDA the single-process default
    (Triton kNN, CUDA stages) differs by float32 rounding, so labels can
    differ only where a distance lies within that rounding of ``eps``.

    Args:
        feats_rgb_local, feats_ir_local: this rank's ``[n_r, D]`` rows of each modality (rank order).
        config: :class:`hilcore.EpochConfig` (``None``: the defaults).
        memory_feats_rgb_local, memory_feats_ir_local: both or neither; this rank's rows of the
            features the centres and multi-centre memories are built from (as
            ``hilcore.cluster_epoch``'s ``memory_feats_*``; default: the clustered features).
        group: torch.distributed process group (``None``: default / a world of one).

    Returns:
        :class:`hilcore.EpochClusters` over all rows (every rank the same), torch
        tensors on the input's device (NumPy for NumPy input); ``timings`` adds
        ``bytes_sent`` of this rank; ``backends`` says ``"distributed"`` for the
        Jaccard distance and DBSCAN and names the later stages' backends.

    Raises:
        ValueError: when a modality ends all-noise (on every rank).

    Example:
        >>> import hilcore, hilcore.distributed as HD
        >>> from hilcore.synthetic import reid_features
        >>> xr, _, _ = reid_features(20, 6, dim=64, seed=1)
        >>> xi, _, _ = reid_features(20, 6, dim=64, seed=2)
        >>> out = HD.cluster_epoch(xr, xi, hilcore.EpochConfig(k1=10, k2=4, backend="torch"))
        >>> ref = hilcore.cluster_epoch(xr, xi, hilcore.EpochConfig(k1=10, k2=4, backend="torch"))
        >>> out.counts == ref.counts, bool((out.labels_rgb == ref.labels_rgb).all())
        (True, True)
    """

    cfg = EpochConfig() if config is None else config
    check_config(cfg)
    comm = Comm(group)
    xr_l, fam = local_features(feats_rgb_local, "feats_rgb_local", comm)
    xi_l, _ = local_features(feats_ir_local, "feats_ir_local", comm)
    if xr_l.shape[1] != xi_l.shape[1]:
        raise ValueError(f"feats_ir_local: expected D = {xr_l.shape[1]} columns like feats_rgb_local, "
                         f"got {xi_l.shape[1]}")
    if (memory_feats_rgb_local is None) != (memory_feats_ir_local is None):
        raise ValueError("memory_feats_rgb_local, memory_feats_ir_local: pass both or neither")
    local = {"rgb": xr_l, "ir": xi_l}
    mem_l = {}
    if memory_feats_rgb_local is not None:
        for name, a in (("rgb", memory_feats_rgb_local), ("ir", memory_feats_ir_local)):
            ref = local[name]
            t_, _ = _arrays.as_tensor(a, f"memory_feats_{name}_local")
            if t_.dim() != 2 or t_.shape[0] != ref.shape[0] or not torch.is_floating_point(t_):
                raise ValueError(f"memory_feats_{name}_local: expected float [{ref.shape[0]}, D'] rows (one per "
                                 f"clustered row), got {t_.dtype} shape {tuple(t_.shape)}")
            mem_l[name] = t_.detach().to(torch.float32).contiguous().to(ref.device)
    # the per-cluster stages need every row of a cluster: every rank gathers all the features
    full = {name: gather_rows(comm, x) for name, x in local.items()}
    mem = {name: gather_rows(comm, m) for name, m in mem_l.items()} if mem_l else full
    clock = Clock(xr_l.device)
    sent = [0]

    def label(name: str, x: torch.Tensor) -> torch.Tensor:
        st: dict = {}
        d = clock(f"jaccard_{name}", jaccard_distance, local[name], cfg.k1, cfg.k2, max_distance=cfg.eps,
                  group=group, info=st)
        sent[0] += st["bytes_sent"]
        lab = clock(f"dbscan_{name}", dbscan, d, cfg.eps, cfg.min_samples, group=group, info=st)
        sent[0] += st["bytes_sent"]
        return torch.as_tensor(lab).to(x.device)

    out = run_epoch(cfg, full, mem, fam, label, clock, {"jaccard": "distributed", "dbscan": "distributed"})
    out.timings["bytes_sent"] = float(sent[0] + comm.sent)
    return out
