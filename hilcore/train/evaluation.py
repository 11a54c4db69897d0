"""Features and evaluation of the training driver: batched extraction (test transform, optional flip
averaging, sharded over the ranks) and the SYSU-MM01 / RegDB protocols on the extracted features."""
from __future__ import annotations

import contextlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

from hilcore._extras import require

from . import distributed as D
from .data import Data, ImageSource, test_transform

__all__ = ["evaluate", "evaluate_features", "extract_features"]


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def autocast_for(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _head_outputs(net, x, modality: str) -> dict:
    """``{"d", "s"}`` of a model: the released network takes the modality (its RGB / IR patch embedding)."""
    return net(x, modality) if getattr(net, "modal_aware", False) else net(x)


def _features(net, x, modality: str, *, flip: bool, raw: bool) -> torch.Tensor:
    """One batch's features: the heads (averaged with the mirrored image's when ``flip``), then ``cat(d, s)``
    un-normalised (``raw``), else the model's clustering feature: ``normalize(cat(d, s))`` for the released
    network, ``normalize(cat(normalize(d), normalize(s)))`` for :class:`ReIDModel`."""
    if not (flip or raw or getattr(net, "modal_aware", False)):
        return F.normalize(net.extract(x).float(), dim=1)      # ReIDModel.extract, as before the options
    o = _head_outputs(net, x, modality)
    d, s = o["d"].float(), o["s"].float()
    if flip:
        o2 = _head_outputs(net, torch.flip(x, dims=[3]), modality)
        d, s = (d + o2["d"].float()) / 2.0, (s + o2["s"].float()) / 2.0
    if raw:
        return torch.cat([d, s], dim=1)
    if not getattr(net, "modal_aware", False):
        d, s = F.normalize(d, dim=1), F.normalize(s, dim=1)
    return F.normalize(torch.cat([d, s], dim=1), dim=1)


@torch.no_grad()
def extract_features(model, source: ImageSource, modality: str, device: torch.device, *, batch_size: int = 128,
                     amp: bool = False, progress: bool = False, desc: str = "extract", flip: bool = False,
                     raw: bool = False, augment: str = "hilcore") -> torch.Tensor:
    """``[N, D]`` float32 features of every image of ``source`` (on ``device``), in order.

    Test transform of ``modality`` ("rgb"/"ir", ``augment``'s), eval mode,
    batched; L2-normalised rows (see :func:`_features`; ``flip``: averaged with
    the mirrored image, ``raw``: the un-normalised ``cat(d, s)``). Under
    torch.distributed each rank extracts its contiguous shard and the shards are
    gathered (padded all_gather), so every rank returns the same full matrix.
    """
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    tf = test_transform(modality, source.size, augment)
    start, stop = D.shard_range(len(source))
    idx = np.arange(start, stop)
    chunks = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    out = []
    bar = progress_bar(len(chunks), desc, progress)
    for x in source.batches(chunks):
        x = tf(x.to(device, non_blocking=True))
        with autocast_for(device, amp):
            f = _features(net, x, modality, flip=flip, raw=raw)
        out.append(f.float())
        bar.update(1)
    bar.close()
    dim = net.feat_dim
    local = torch.cat(out) if out else torch.zeros((0, dim), device=device)
    net.train(was_training)
    return D.all_gather_rows(local)


def progress_bar(total: int, desc: str, enabled: bool):
    tqdm = require("tqdm", "the training loop's progress bar").tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _cmc_row(prefix: str, cmc, mAP, mINP) -> dict:
    r = {f"{prefix}rank{k}": float(cmc[k - 1]) for k in (1, 5, 10, 20) if k <= len(cmc)}
    r[f"{prefix}mAP"] = float(mAP)
    r[f"{prefix}mINP"] = float(mINP)
    return r


def evaluate_features(kind: str, qf, gf, query: ImageSource, gallery: ImageSource, *, trials: int = 10,
                      modes=("all", "indoor")) -> dict:
    """Metrics from query/gallery features (rows L2-normalised; distance = 1 - cosine).

    SYSU (``kind="sysu"``): for each mode, ``trials`` gallery draws
    (:func:`hilcore.eval.sysu_gallery`, trial t seeds draw t), metrics
    averaged; keys ``rank1..rank20, mAP, mINP`` for the first mode and
    ``<mode>_rank1, ...`` for the others. RegDB: visible-to-thermal
    (``rank1, ..., mAP, mINP``) and thermal-to-visible (``t2v_...``).
    """
    from hilcore import eval as ev

    out: dict = {}
    if kind == "sysu":
        for mi, mode in enumerate(modes):
            acc = []
            for t in range(trials):
                gi = ev.sysu_gallery(gallery.paths, gallery.pids, gallery.cams, mode=mode, trial=t)
                gsel = torch.as_tensor(gi, device=gf.device)
                dist = 1.0 - qf @ gf[gsel].T
                acc.append(ev.sysu_metrics(dist, query.pids, gallery.pids[gi], query.cams, gallery.cams[gi]))
            cmc = np.mean([a[0] for a in acc], axis=0)
            out.update(_cmc_row("" if mi == 0 else f"{mode}_", cmc, np.mean([a[1] for a in acc]),
                                np.mean([a[2] for a in acc])))
    else:
        dist = 1.0 - qf @ gf.T
        out.update(_cmc_row("", *ev.regdb_metrics(dist, query.pids, gallery.pids)))
        out.update(_cmc_row("t2v_", *ev.regdb_metrics(dist.T.contiguous(), gallery.pids, query.pids)))
    return out


def evaluate(model, data: Data, device, *, batch_size=128, amp=False, trials=10, modes=("all", "indoor"),
             progress=False, flip=False, augment="hilcore") -> dict:
    """Extract the test split's features with ``model`` and return :func:`evaluate_features`'s metrics."""
    kw = dict(batch_size=batch_size, amp=amp, progress=progress, flip=flip, augment=augment)
    if data.kind == "sysu":
        qf = extract_features(model, data.query, "ir", device, desc="eval query (IR)", **kw)
        gf = extract_features(model, data.gallery, "rgb", device, desc="eval gallery (RGB)", **kw)
    else:
        qf = extract_features(model, data.query, "rgb", device, desc="eval visible", **kw)
        gf = extract_features(model, data.gallery, "ir", device, desc="eval thermal", **kw)
    return evaluate_features(data.kind, qf.float(), gf.float(), data.query, data.gallery, trials=trials,
                             modes=modes)
