"""The HIL training loop (docs/design.md, "The data path of one epoch"), driven by a :class:`TrainConfig`.

Per epoch:

1. **extract**: L2-normalised features (``model.extract``, test transform, no
   augmentation) of every training image of each modality, batched and
   sharded over the ranks, gathered in order;
2. **cluster**: :func:`hilcore.cluster_epoch` (on rank 0, broadcast) ->
   per-modality and shared pseudo labels, centres and multi-centre memories;
3. **memories**: for each head (``"d"``, ``"s"``) the columns of the
   concatenated feature that belong to it, renormalised: a
   :class:`hilcore.ClusterMemory` and a :class:`hilcore.MultiCenterMemory`
   per modality, a shared :class:`hilcore.ClusterMemory` over both, and an
   :class:`hilcore.InstanceMemory` per modality;
4. **train** ``optim.iters`` steps on batches of P pseudo identities x K
   instances per modality (noise never sampled), loss =
   ``cc_weight * CE(own-modality memory)`` + ``shared_weight * CE(shared memory)``
   + ``mccl_weight(epoch) * MCCL`` (within the modality and against the other
   modality's multi-centre memory, averaged over samples whose two heads pick
   the same nearest cluster) + ``nc_weight * neighbour consistency`` (instance
   memories), each averaged over modalities and heads; optimiser step, then
   the explicit momentum updates of every memory (with the whole global batch
   on every rank, so memories stay identical across ranks);
5. **evaluate** (SYSU-MM01 all-/indoor-search over ``eval.trials`` gallery draws,
   RegDB both directions) and **checkpoint** (atomic ``last.pt`` / ``best.pt``),
   then the metrics CSV and the PNG plot.

The released HIL code does several of these steps differently; each
difference is an option (``docs/hil_release.md``; ``configs/sysu_hil.yaml``
sets them all): the released network (``model.backbone: hil_vit``, RGB / IR
patch embeddings, ``model.init_from``, ``model.reload_best_at``),
flip-averaged bicubic extraction, the release's augmentation with two RGB
views (colour jitter at the file size, ``data.jitter_full_size``),
BatchNorm as its 2-GPU DataParallel (``run.bn_replicas``), the camera-aware
sampler, BRST RGB -> IR over all samples with memories from each head's raw
features (:mod:`hilcore.train.hil_release`), shared MCCL with head weights,
the release's neighbour terms with their epoch-parity schedule, raw
instance-memory updates, summed terms.

The images and transforms are :mod:`hilcore.train.data`'s; the extraction
(step 1) and the evaluation (step 5) :mod:`hilcore.train.evaluation`'s; this
module holds the memories, the optimiser and the :class:`Trainer`.

Example:
    >>> from hilcore.train.config import load_config
    >>> history = train(load_config("configs/demo_tiny.yaml"))
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import hilcore
from hilcore._files import FolderLock, FolderLockedError, WriteError, write_text

from . import checkpoint as ckpt
from . import distributed as D
from .backbones import build_model
from .config import TrainConfig, best_score, dump_config, from_dict, random_init_refusal
from .data import build_data, to_device, train_transforms
from .evaluation import autocast_for, evaluate, extract_features, progress_bar
from .hil_release import (CameraSampler, cluster_release, neighbour_terms_release, raw_momentum_update,
                          split_replicas_forward)
from .hil_vit import ModelSetupError, build_hil_net
from .losses import mccl_two_heads, neighbour_consistency_loss
from .report import cluster_quality, format_epoch, plot_history, write_csv
from .sampler import IdentitySampler

HEADS = ("d", "s")
MODS = ("rgb", "ir")


# ================================================================================================ memories
class HeadMemories(torch.nn.Module):
    """The memories of one head, built from its columns of the concatenated features / centres.

    ``cc[m]`` / ``multi[m]``: per-modality cluster and multi-centre memories
    (absent when the clustering step did not build them); ``multi["shared"]``
    (``loss.mccl_memory: shared``): the multi-centre memory over both
    modalities with the shared labels; ``shared``; ``inst[m]``.
    """

    def __init__(self, cl, feats: dict, cols: slice, lo):
        super().__init__()
        m, t = lo.memory_momentum, lo.temp
        self.cc = torch.nn.ModuleDict({
            mod: hilcore.ClusterMemory.from_centers(c[:, cols], t, m)
            for mod, c in (("rgb", cl.centers_rgb), ("ir", cl.centers_ir)) if c is not None})
        multi = {mod: hilcore.MultiCenterMemory.from_tensor(c[:, :, cols], t, m)
                 for mod, c in (("rgb", cl.multi_rgb), ("ir", cl.multi_ir)) if c is not None}
        if lo.mccl_memory == "shared" and cl.shared_multi is not None and cl.shared_multi.shape[0] > 0:
            multi["shared"] = hilcore.MultiCenterMemory.from_tensor(cl.shared_multi[:, :, cols], t, m)
        self.multi = torch.nn.ModuleDict(multi)
        self.shared = (hilcore.ClusterMemory.from_centers(cl.shared_centers[:, cols], t, m)
                       if cl.shared_centers.shape[0] > 0 else None)
        self.inst = torch.nn.ModuleDict({
            mod: hilcore.InstanceMemory.from_features(feats[mod][:, cols], labels, t, lo.instance_momentum)
            for mod, labels in (("rgb", cl.labels_rgb), ("ir", cl.labels_ir))})


def camera_centre(x: torch.Tensor, cams) -> torch.Tensor:
    """Rows of ``x`` minus the mean row of their camera, re-normalised (camera-aware feature centring).

    Camera ids are legitimate metadata in unsupervised ReID (every image
    comes with the camera that took it; identities stay unknown). Removing
    each camera's mean feature removes what all images of a camera share
    (background, colour cast, and -- as cameras are per modality -- the
    modality offset), so that the k-reciprocal neighbourhoods, DBSCAN and the
    cross-modal matching see the identity part of the feature. A camera with
    a single image keeps its row (its mean is the row itself).

    Args:
        x: ``[N, D]`` float features (rows L2-normalised or not).
        cams: ``[N]`` integer camera ids (NumPy or torch).

    Returns:
        ``[N, D]`` float32 L2-normalised rows, on ``x``'s device.
    """
    if x.dim() != 2:
        raise ValueError(f"x: expected [N, D] features, got shape {tuple(x.shape)}")
    c = torch.as_tensor(np.asarray(cams), dtype=torch.int64, device=x.device)
    if c.shape != (x.shape[0],):
        raise ValueError(f"cams: expected {x.shape[0]} camera ids, got shape {tuple(c.shape)}")
    x = x.float()
    if x.shape[0] == 0:
        return x.clone()
    _, inv, cnt = torch.unique(c, return_inverse=True, return_counts=True)
    means = torch.zeros((cnt.shape[0], x.shape[1]), dtype=x.dtype, device=x.device).index_add_(0, inv, x)
    means /= cnt[:, None].to(x.dtype)
    out = x - means[inv]
    single = cnt[inv] == 1
    out[single] = x[single]
    return F.normalize(out, dim=1)


def _clusters_to(cl, device):
    for k, v in vars(cl).items():
        if isinstance(v, torch.Tensor):
            setattr(cl, k, v.to(device))
    return cl


# ================================================================================================ the trainer
def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of (0-based) ``epoch``: linear warm-up, then x gamma at each milestone passed."""
    o = cfg.optim
    if epoch < o.warmup_epochs:
        f = o.warmup_factor + (1.0 - o.warmup_factor) * epoch / o.warmup_epochs
    else:
        f = o.gamma ** sum(epoch >= m for m in o.milestones)
    return o.lr * f


def build_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                           nesterov=bool(o.nesterov))


def build_reid_model(cfg: TrainConfig, log=None):
    m = cfg.model
    if m.backbone == "hil_vit":
        return build_hil_net(cfg.data.size, m.kwargs, m.pretrained, m.init_from, log=log)
    kw = dict(m.kwargs)
    if m.backbone == "vit_b16":
        kw.setdefault("img_size", tuple(cfg.data.size))
    return build_model(m.backbone, s_dim=m.s_dim, pretrained=m.pretrained, **kw)


def resumes_from_checkpoint(cfg: TrainConfig) -> bool:
    """Whether :meth:`Trainer.resume` will load a checkpoint: ``run.resume`` a path, or ``auto`` with
    ``run.output/last.pt`` present."""
    r = cfg.run.resume
    if r in ("never", "no", "false", False, None):
        return False
    if r in ("auto", True):
        return (Path(cfg.run.output) / ckpt.LAST).is_file()
    return True


class Logger:
    """Prints on rank 0 and appends to ``output/train.log``."""

    def __init__(self, folder: Path | None):
        self.path = folder / "train.log" if folder is not None and D.is_main() else None

    def __call__(self, msg: str = "") -> None:
        if not D.is_main():
            return
        print(msg, flush=True)
        if self.path is not None:     # appended line by line (the one output that is not replaced whole)
            try:
                with open(self.path, "a") as fh:
                    fh.write(msg + "\n")
            except OSError as e:
                raise WriteError(self.path, e) from e


class Trainer:
    """One HIL run. ``Trainer(cfg).fit()`` trains (resuming when configured) and returns the metrics history."""

    def __init__(self, cfg: TrainConfig, device: torch.device | None = None):
        refusal = random_init_refusal(cfg)
        if refusal is not None and not resumes_from_checkpoint(cfg):    # (a resumed run has its weights)
            raise ModelSetupError(refusal)
        self.cfg = cfg
        self.device = D.setup(cfg.run.device) if device is None else device
        if cfg.run.threads:
            torch.set_num_threads(int(cfg.run.threads))
        self.out = Path(cfg.run.output)
        self.lock = self._lock_output()
        try:
            self._build(cfg)
        except BaseException:
            self.close()          # a run that fails to start leaves the folder free
            raise

    def _build(self, cfg: TrainConfig) -> None:
        self.log = Logger(self.out)
        self.amp = bool(cfg.run.amp) and self.device.type == "cuda"
        # bars on a terminal only: a redirected log gets the per-epoch lines, not thousands of \r updates
        self.progress = bool(cfg.run.progress) and D.is_main() and sys.stderr.isatty()
        self._seed(cfg.run.seed)
        self.data = build_data(cfg, for_training=True)
        self.model = build_reid_model(cfg, log=self.log).to(self.device)
        self.net = self.model
        if D.is_dist() and cfg.run.bn_replicas > 1:
            raise ModelSetupError(f"config.run.bn_replicas: {cfg.run.bn_replicas} emulates DataParallel's BatchNorm "
                                  f"in one process; under torchrun (world {D.world_size()}) set it to 1")
        if D.is_dist() and cfg.run.sync_bn:
            D.convert_global_bn(self.model)      # BatchNorm statistics of the global batch (run.sync_bn)
        if D.is_dist():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.history: list[dict] = []
        self.best = {"mAP": -1.0, "epoch": 0}
        self.start_epoch = 0
        self.head_cols = {"d": slice(0, self.model.dims["d"]),
                          "s": slice(self.model.dims["d"], self.model.dims["d"] + self.model.dims["s"])}
        self.tf_train = train_transforms(cfg)

    # -------------------------------------------------------------------------------------- setup
    def _lock_output(self):
        """Create ``run.output`` and hold its lock (:class:`hilcore._files.FolderLock`) on rank 0 for the whole
        run: a second run into the same folder is refused (on every rank) before it reads any data."""
        lock, err = None, None
        if D.is_main():
            try:
                lock = FolderLock(self.out, "hil train", "give this run another --output (run.output)").acquire()
            except FolderLockedError as e:
                err = str(e)
        err = D.broadcast_object(err)
        if err is not None:
            raise FolderLockedError(err)
        D.barrier()
        return lock

    def close(self) -> None:
        """Release the output folder's lock (also released when the process ends)."""
        if self.lock is not None:
            self.lock.release()

    @staticmethod
    def _seed(seed: int) -> None:
        s = seed + 1000 * D.rank()
        random.seed(s)
        np.random.seed(s % (2 ** 32))
        torch.manual_seed(s)

    def resume(self) -> bool:
        """Restore the last checkpoint when ``run.resume`` asks for it; True when something was restored."""
        r = self.cfg.run.resume
        if r in ("never", "no", "false", False, None):
            return False
        if r in ("auto", True):     # last.pt, or the newest intact checkpoint when it is corrupt
            found = ckpt.load_resume(self.out, repair=D.is_main())
            if found is None:
                return False
            path, state, notes = found
            for note in notes:
                self.log(f"resume     {note}")
        else:
            path = Path(r)
            state = ckpt.load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if state.get("rng") is not None:
            ckpt.set_rng_state(state["rng"])
        self.history = list(state.get("history", []))
        self.best = dict(state.get("best", self.best))
        self.start_epoch = int(state["epoch"])
        old = state.get("config") or {}
        changed = [f"{s}.{k}" for s, sec in self.cfg.to_dict().items() if s != "run"
                   for k, v in sec.items() if (old.get(s) or {}).get(k, v) != v]
        self.log(f"resume     {path}: {self.start_epoch} epoch(s) done, continuing at epoch {self.start_epoch + 1}"
                 + (f" (config changed since: {', '.join(changed)})" if changed else ""))
        return True

    # -------------------------------------------------------------------------------------- stages
    def extract_train(self) -> dict:
        d = self.cfg.data
        raw = self.cfg.cluster.memory_features == "raw_heads"
        return {m: extract_features(self.net, self.data.for_extraction(m), m, self.device, batch_size=d.extract_batch,
                                    amp=self.amp, progress=self.progress, desc=f"extract {m.upper()}",
                                    flip=d.flip_extract, raw=raw, augment=d.augment) for m in MODS}

    def cluster(self, feats: dict):
        """:func:`hilcore.cluster_epoch` on rank 0, broadcast to the others (CPU copies), moved to the device.

        With ``cluster.cam_center`` the pseudo labels (per modality and shared)
        come from the camera-centred features (:func:`camera_centre`); the
        centres and multi-centre memories are built from the features
        themselves with those labels (``cluster_epoch``'s ``memory_feats_*``).
        ``cluster.transfer: rgb_to_ir_all`` or ``cluster.memory_features:
        raw_heads`` run the release's step instead
        (:func:`hilcore.train.hil_release.cluster_release`).
        """
        if D.sharded_clustering(self.cfg):  # every rank clusters its shard (hilcore.distributed)
            cams = {m: self.data.train[m].cams for m in MODS}
            return _clusters_to(D.cluster_all_ranks(feats, cams, self.cfg, camera_centre),
                                self.device)
        cl, err = None, None
        if D.is_main():
            try:
                c, lo = self.cfg.cluster, self.cfg.loss
                ec = self.cfg.epoch_config()
                x = feats
                if c.cam_center:
                    x = {m: camera_centre(feats[m], self.data.train[m].cams) for m in MODS}
                if c.transfer == "match" and c.memory_features == "clustering":
                    mem = dict(memory_feats_rgb=feats["rgb"], memory_feats_ir=feats["ir"]) if c.cam_center else {}
                    cl = hilcore.cluster_epoch(x["rgb"], x["ir"], ec, **mem)
                else:
                    cl = cluster_release(feats, ec, [self.head_cols[h] for h in HEADS], transfer=c.transfer,
                                         raw=c.memory_features == "raw_heads", cluster_feats=x,
                                         per_modality=lo.cc_weight > 0 or lo.mccl_memory == "per_modality")
                    if c.transfer == "rgb_to_ir_all" and not bool((cl.shared_labels_rgb >= 0).any()):
                        raise ValueError(f"no RGB image survived the transfer to the {cl.counts['clusters_ir']} IR "
                                         f"clusters (cluster.ratio={c.ratio}); there is no RGB image to train on")
                cl = _clusters_to(cl, torch.device("cpu"))
            except ValueError as e:
                err = str(e)
        cl, err = D.broadcast_object((cl, err))
        if err is not None:
            raise RuntimeError(f"clustering failed: {err}")
        return _clusters_to(cl, self.device)

    def quality(self, cl) -> dict:
        pr, pi = self.data.train["rgb"].pids, self.data.train["ir"].pids
        lr_, li_ = cl.labels_rgb.cpu().numpy(), cl.labels_ir.cpu().numpy()
        sr, si = cl.shared_labels_rgb.cpu().numpy(), cl.shared_labels_ir.cpu().numpy()
        q = cluster_quality(np.concatenate([sr, si]), np.concatenate([pr, pi]))
        for name, lab, pid in (("rgb", lr_, pr), ("ir", li_, pi)):
            q.update({f"{k}_{name}": v for k, v in cluster_quality(lab, pid).items()})
        return q

    def train_epoch(self, epoch: int, cl, feats: dict) -> dict:
        cfg, lo, dev = self.cfg, self.cfg.loss, self.device
        mems = torch.nn.ModuleDict({h: HeadMemories(cl, feats, self.head_cols[h], lo) for h in HEADS}).to(dev)
        labels = {"rgb": cl.labels_rgb, "ir": cl.labels_ir}
        shared = {"rgb": cl.shared_labels_rgb, "ir": cl.shared_labels_ir}
        # the release trains an RGB image only when it survived the transfer, under its shared (IR) label
        train_labels = {"rgb": shared["rgb"] if cfg.cluster.transfer == "rgb_to_ir_all" else labels["rgb"],
                        "ir": labels["ir"]}
        # one global P x K batch per step, drawn alike on every rank (the single process's, whose rank is 0):
        # each rank trains its contiguous slice and the loss is that of the gathered global batch
        seed = [cfg.run.seed, epoch, 0]
        sp = cfg.sampler
        samplers = {m: (CameraSampler(train_labels[m].cpu().numpy(), self.data.train[m].cams, sp.P, sp.K,
                                      seed=seed + [i]) if sp.name == "camera" else
                        IdentitySampler(train_labels[m].cpu().numpy(), sp.P, sp.K, seed=seed + [i]))
                    for i, m in enumerate(MODS)}
        gen = torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2 ** 62)))
        w_mccl = cfg.mccl_weight_at(epoch)
        lr = lr_at(cfg, epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        batches = {m: [samplers[m].batch() for _ in range(cfg.optim.iters)] for m in MODS}
        readers = {m: self.data.train[m].batches(batches[m]) for m in MODS}
        self.net.train()
        sums: dict = {}
        bar = progress_bar(cfg.optim.iters, f"train epoch {epoch + 1}", self.progress)
        for it in range(cfg.optim.iters):
            idx = {m: torch.as_tensor(batches[m][it], device=dev) for m in MODS}
            raw = {m: to_device(next(readers[m]), dev) for m in MODS}
            # every rank augments the whole global batch with the same generator (draws follow the sample's
            # position in it, not the rank) and keeps its slice
            imgs = [tf(raw["rgb"], generator=gen) for tf in self.tf_train["rgb"]]
            n_views = len(imgs)
            idx["rgb"] = idx["rgb"].repeat(n_views)          # the views of an image share its index and label
            imgs.append(self.tf_train["ir"](raw["ir"], generator=gen))
            part = {m: slice(*D.shard_range(len(batches[m][it]))) for m in MODS}
            imgs = [v[part["rgb"]] for v in imgs[:-1]] + [imgs[-1][part["ir"]]]
            n_rgb = sum(v.shape[0] for v in imgs[:-1])
            aware = getattr(self.model, "modal_aware", False)
            with autocast_for(dev, self.amp):
                if cfg.run.bn_replicas > 1:     # BatchNorm as the release's DataParallel (run.bn_replicas)
                    out = split_replicas_forward(self.net, torch.cat(imgs[:-1]), imgs[-1], cfg.run.bn_replicas, aware)
                else:
                    batch = torch.cat(imgs)
                    out = self.net(batch, n_rgb) if aware else self.net(batch)
            x = {h: {"rgb": torch.cat([D.gather_rows_grad(v) for v in out[h][:n_rgb].float().tensor_split(n_views)]),
                     "ir": D.gather_rows_grad(out[h][n_rgb:].float())} for h in HEADS}
            terms = self._losses(x, idx, labels, shared, mems, lo, epoch)
            loss = (lo.cc_weight * terms["loss_cc"] + lo.shared_weight * terms["loss_shared"]
                    + w_mccl * terms["loss_mccl"] + lo.nc_weight * terms["loss_nc"])
            self.optimizer.zero_grad(set_to_none=True)
            # every rank holds the global loss; DDP averages the ranks' gradients, each of its own slice
            self.scaler.scale(loss * D.world_size() if D.is_dist() else loss).backward()
            if cfg.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._update_memories(x, idx, labels, shared, mems, lo)
            terms["loss"] = loss
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)
            bar.update(1)
            if self.progress:
                bar.set_postfix_str(f"loss {float(loss.detach()):.3f}")
        bar.close()
        with torch.no_grad():
            D.sync_buffers(self.model)
        row = D.all_reduce_mean({k: v / cfg.optim.iters for k, v in sums.items()})
        row.update(lr=lr, mccl_weight=w_mccl)
        return row

    def _losses(self, x, idx, labels, shared, mems, lo, epoch: int = 0) -> dict:
        """The loss terms of one step (each a list over modalities x heads x targets, combined by
        ``loss.term_reduction``); the weights of ``loss`` are applied by the caller, the head and direction
        weights of MCCL and of the release's neighbour terms here."""
        cc, sh, mc, nc, agree = [], [], [], [], []
        wd, ws = lo.mccl_head_weights
        nd, ns = lo.nc_head_weights
        for m, o in (("rgb", "ir"), ("ir", "rgb")):
            y = labels[m][idx[m]]
            ys = shared[m][idx[m]]
            valid = ys >= 0
            for h in HEADS:
                mem = mems[h]
                if lo.cc_weight > 0 and m in mem.cc:
                    cc.append(hilcore.cluster_contrast_loss(x[h][m], mem.cc[m], y))
                if mem.shared is not None and bool(valid.any()):
                    sh.append(hilcore.cluster_contrast_loss(x[h][m][valid], mem.shared, ys[valid]))
                if lo.nc_mode == "knn":
                    bank = mem.inst[m].features
                    nc.append(neighbour_consistency_loss(x[h][m], bank, bank[idx[m]], lo.nc_k, lo.temp))
                    if lo.nc_cross:
                        nc.append(neighbour_consistency_loss(x[h][m], mem.inst[o].features, x[h][m], lo.nc_k,
                                                             lo.temp))
            if lo.nc_mode == "release":
                nc.append(self._nc_release(x, idx, mems, m, m, lo, nd, ns))
            if lo.mccl_memory == "shared":
                keys = ["shared", "shared"] if lo.mccl_cross else ["shared"]   # the release reads it twice
            else:
                keys = [m, o] if lo.mccl_cross else [m]
            done = {}
            for key in keys:
                if key not in mems["d"].multi:
                    continue
                if key not in done:
                    done[key] = mccl_two_heads(x["d"][m], x["s"][m], mems["d"].multi[key], mems["s"].multi[key],
                                               weights=(wd, ws))
                mc.append(done[key][0])
                agree.append(done[key][1])
        if lo.nc_mode == "release" and lo.nc_cross:
            dirs = [("rgb", "ir", lo.nc_cross_weights[0]), ("ir", "rgb", lo.nc_cross_weights[1])]
            if lo.nc_cross_parity:
                dirs = [dirs[epoch % 2]]        # even epochs RGB -> IR, odd epochs IR -> RGB
            for m, o, f in dirs:
                nc.append(f * self._nc_release(x, idx, mems, m, o, lo, nd, ns))
        zero = x["d"]["rgb"].sum() * 0.0
        if lo.term_reduction == "sum":
            red = lambda v: torch.stack(v).sum() if v else zero  # noqa: E731
        else:
            red = lambda v: torch.stack(v).mean() if v else zero  # noqa: E731
        return {"loss_cc": red(cc), "loss_shared": red(sh), "loss_mccl": red(mc), "loss_nc": red(nc),
                "mccl_agree": float(np.mean(agree)) if agree else 0.0}

    @staticmethod
    def _nc_release(x, idx, mems, m, o, lo, nd, ns):
        """The release's neighbour term of modality ``m``'s batch against ``o``'s instance memories."""
        qd, qs = mems["d"].inst[m].features[idx[m]], mems["s"].inst[m].features[idx[m]]
        ld, ls = neighbour_terms_release(x["d"][m], x["s"][m], qd, qs, mems["d"].inst[o].features,
                                         mems["s"].inst[o].features, lo.nc_thresh, lo.temp)
        return nd * ld + ns * ls

    @torch.no_grad()
    def _update_memories(self, x, idx, labels, shared, mems, lo) -> None:
        for m in MODS:
            ids = idx[m]                                # x and idx: the global batch
            y = labels[m][ids]
            ys = shared[m][ids]
            valid = ys >= 0
            for h in HEADS:
                raw = x[h][m].detach()
                f = F.normalize(raw, dim=1)
                mem = mems[h]
                if m in mem.cc:
                    mem.cc[m].update(f, y)
                if lo.multi_update and m in mem.multi:
                    mem.multi[m].update(f, y)
                if bool(valid.any()):
                    if mem.shared is not None:
                        mem.shared.update(f[valid], ys[valid])
                    if lo.multi_update and "shared" in mem.multi:
                        mem.multi["shared"].update(f[valid], ys[valid])
                if lo.instance_update == "raw":
                    raw_momentum_update(mem.inst[m].features, raw, ids, mem.inst[m].momentum)
                else:
                    mem.inst[m].update(f, ids)

    def reload_best(self) -> bool:
        """Load ``output/best.pt``'s model weights (optimizer kept), as the release does at epoch 20."""
        path = self.out / "best.pt"
        if not path.is_file():
            self.log(f"reload     no {path} yet; continuing with the current model")
            return False
        self.model.load_state_dict(ckpt.load_checkpoint(path)["model"])
        self.log(f"reload     the best model so far ({path}, epoch {self.best.get('epoch')})")
        return True

    # -------------------------------------------------------------------------------------- epochs
    def _evaluate_now(self, epoch: int) -> bool:
        e, every = epoch + 1, self.cfg.eval.every
        return e == self.cfg.optim.epochs or (every > 0 and e % every == 0)

    def fit(self) -> list:
        cfg = self.cfg
        if D.is_main():
            write_text(self.out / "config.yaml", dump_config(cfg))
        self.resume()
        n = {m: len(self.data.train[m]) for m in MODS}
        self.log(f"run        {cfg.model.backbone} on {cfg.data.dataset} ({cfg.data.root}): RGB {n['rgb']} / IR "
                 f"{n['ir']} training images, device {self.device}, world {D.world_size()}, amp {self.amp}, "
                 f"epochs {cfg.optim.epochs} x {cfg.optim.iters} iters, batch {cfg.sampler.P}x{cfg.sampler.K} "
                 f"per modality")
        t_run = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.optim.epochs):
            if cfg.model.reload_best_at is not None and epoch == cfg.model.reload_best_at:
                self.reload_best()
            t0 = time.perf_counter()
            feats = self.extract_train()
            t1 = time.perf_counter()
            cl = self.cluster(feats)
            t2 = time.perf_counter()
            row = {"epoch": epoch + 1, "epochs": cfg.optim.epochs}
            row.update(cl.counts)
            row.update(self.quality(cl))
            row.update(self.train_epoch(epoch, cl, feats))
            t3 = time.perf_counter()
            if self._evaluate_now(epoch):
                row.update(evaluate(self.net, self.data, self.device, batch_size=cfg.data.extract_batch, amp=self.amp,
                                    trials=cfg.eval.trials, modes=tuple(cfg.eval.modes), progress=self.progress,
                                    flip=cfg.data.flip_extract, augment=cfg.data.augment))
            t4 = time.perf_counter()
            row.update(t_extract=t1 - t0, t_cluster=t2 - t1, t_cluster_kernels=cl.timings.get("total", 0.0),
                       t_train=t3 - t2, t_eval=t4 - t3, t_epoch=t4 - t0)
            self.history.append(row)
            score = best_score(cfg, row)     # eval.best_by's sum (RegDB's release: both directions)
            is_best = score is not None and score > self.best.get("score", self.best["mAP"])
            if is_best:
                self.best = {"mAP": row["mAP"], "epoch": epoch + 1, "score": score}
            if D.is_main():
                state = ckpt.training_state(self.model, self.optimizer, self.scaler, epoch + 1, cfg.to_dict(),
                                            self.history, self.best)
                ckpt.save_checkpoint(self.out, state, is_best)
                write_csv(self.history, self.out / "metrics.csv")
                plot_history(self.history, self.out / "metrics.png")
            D.barrier()
            self.log(format_epoch(row))
        if self.history:
            self.log(f"done       {len(self.history)} epochs; best mAP {100 * self.best['mAP']:.2f} at epoch "
                     f"{self.best['epoch']}; this session {time.perf_counter() - t_run:.1f}s; "
                     f"outputs in {self.out} (last.pt, best.pt, metrics.csv, metrics.png, train.log)")
        return self.history


def train(cfg: TrainConfig) -> list:
    """Run (or resume) the configured training; returns the metrics history (one dict per epoch).

    Holds the lock of ``run.output`` while it runs: a second run into the same folder raises
    :class:`hilcore._files.FolderLockedError` before reading any data."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def load_trained_model(path, device="cpu"):
    """``(model, config)`` from a training checkpoint (``last.pt``/``best.pt`` or a run folder), or from the
    dict :func:`hilcore.train.checkpoint.load_checkpoint` already returned for one (the file is then not read
    again)."""
    state = path if isinstance(path, dict) else ckpt.load_checkpoint(path)
    cfg = from_dict(state["config"])
    model = build_reid_model(cfg.__class__(**{**vars(cfg), "model": _no_pretrained(cfg.model)}))   # weights: below
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def _no_pretrained(m):
    import dataclasses

    return dataclasses.replace(m, pretrained=None, init_from=None)
