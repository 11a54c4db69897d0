"""The HIL training loop (docs/design.md, "The HIL epoch"), driven by a :class:`TrainConfig`.

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

Example:
    >>> from hilcore.train.config import load_config
    >>> history = train(load_config("configs/demo_tiny.yaml"))
"""
from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import hilcore

from . import checkpoint as ckpt
from . import distributed as D
from .augment import build_transforms
from .backbones import build_model
from .config import TrainConfig, dump_config, from_dict
from .datasets import RGB, load_image, load_regdb, load_sysu_mm01
from .losses import mccl_two_heads, neighbour_consistency_loss
from .report import cluster_quality, format_epoch, plot_history, write_csv
from .sampler import IdentitySampler

HEADS = ("d", "s")
MODS = ("rgb", "ir")


# ================================================================================================ data
class ImageSource:
    """The images of a list of samples, read on demand (``load(indices)`` -> float ``[B, 3, H, W]`` in [0, 1]).

    ``cache=True`` decodes every image once into a uint8 tensor (small datasets);
    otherwise images are read per batch, with ``workers`` DataLoader processes
    when iterating over many batches (:meth:`batches`).
    """

    def __init__(self, samples, size, cache: bool = False, workers: int = 0):
        self.samples = list(samples)
        self.size = tuple(size)
        self.workers = int(workers)
        self.pids = np.array([s.pid for s in self.samples], dtype=np.int64)
        self.cams = np.array([s.camid for s in self.samples], dtype=np.int64)
        self.paths = [s.path for s in self.samples]
        self._cache = None
        if cache:
            self._cache = torch.stack([self._read(i) for i in range(len(self.samples))]) if self.samples else None

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, i: int) -> torch.Tensor:
        return load_image(self.samples[i].path, self.size).mul_(255).round_().to(torch.uint8)

    def load(self, idx) -> torch.Tensor:
        idx = [int(i) for i in idx]
        if self._cache is not None:
            return self._cache[torch.as_tensor(idx, dtype=torch.int64)].float().div_(255)
        return torch.stack([self._read(i) for i in idx]).float().div_(255)

    def batches(self, index_batches):
        """Yield ``load(b)`` for each index list ``b``, read ahead by DataLoader workers when configured."""
        if self._cache is not None or self.workers == 0:
            for b in index_batches:
                yield self.load(b)
            return
        loader = torch.utils.data.DataLoader(_Reader(self), batch_sampler=[list(map(int, b)) for b in index_batches],
                                             num_workers=self.workers, collate_fn=_stack)
        for x in loader:
            yield x.float().div_(255)


class _Reader(torch.utils.data.Dataset):
    def __init__(self, src: ImageSource):
        self.src = src

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        return self.src._read(i)


def _stack(items):
    return torch.stack(items)


@dataclass
class Data:
    """Training images per modality (labels kept for reports only) and the evaluation split."""

    train: dict            # "rgb" / "ir" -> ImageSource
    kind: str              # "sysu" | "regdb"
    query: ImageSource     # SYSU: IR test images; RegDB: visible test images
    gallery: ImageSource   # SYSU: RGB test pool; RegDB: thermal test images


def build_data(cfg: TrainConfig) -> Data:
    d = cfg.data
    size = tuple(d.size)
    if d.dataset in ("sysu", "synthetic"):
        ds = load_sysu_mm01(d.root)
        rgb = [s for s in ds.train if s.modality == RGB]
        ir = [s for s in ds.train if s.modality != RGB]
        q, g, kind = ds.query, ds.gallery, "sysu"
    else:
        ds = load_regdb(d.root, d.regdb_trial)
        rgb, ir = ds.train_visible, ds.train_thermal
        q, g, kind = ds.test_visible, ds.test_thermal, "regdb"
    mk = lambda s: ImageSource(s, size, d.cache, d.workers)  # noqa: E731
    return Data({"rgb": mk(rgb), "ir": mk(ir)}, kind, mk(q), mk(g))


# ================================================================================================ features
def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_features(model, source: ImageSource, modality: str, device: torch.device, *, batch_size: int = 128,
                     amp: bool = False, progress: bool = False, desc: str = "extract") -> torch.Tensor:
    """``[N, D]`` float32 L2-normalised features of every image of ``source`` (on ``device``), in order.

    Test transform of ``modality`` ("rgb"/"ir"), eval mode, batched; under
    torch.distributed each rank extracts its contiguous shard and the shards are
    gathered (padded all_gather), so every rank returns the same full matrix.
    """
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    tf = build_transforms(modality, train=False, size=tuple(source.size))
    start, stop = D.shard_range(len(source))
    idx = np.arange(start, stop)
    chunks = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    out = []
    bar = _bar(len(chunks), desc, progress)
    for x in source.batches(chunks):
        x = tf(x.to(device, non_blocking=True))
        with _autocast(device, amp):
            f = net.extract(x)
        out.append(F.normalize(f.float(), dim=1))
        bar.update(1)
    bar.close()
    dim = net.feat_dim
    local = torch.cat(out) if out else torch.zeros((0, dim), device=device)
    net.train(was_training)
    return D.all_gather_rows(local)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


# ================================================================================================ evaluation
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
             progress=False) -> dict:
    """Extract the test split's features with ``model`` and return :func:`evaluate_features`'s metrics."""
    if data.kind == "sysu":
        qf = extract_features(model, data.query, "ir", device, batch_size=batch_size, amp=amp, progress=progress,
                              desc="eval query (IR)")
        gf = extract_features(model, data.gallery, "rgb", device, batch_size=batch_size, amp=amp,
                              progress=progress, desc="eval gallery (RGB)")
    else:
        qf = extract_features(model, data.query, "rgb", device, batch_size=batch_size, amp=amp, progress=progress,
                              desc="eval visible")
        gf = extract_features(model, data.gallery, "ir", device, batch_size=batch_size, amp=amp,
                              progress=progress, desc="eval thermal")
    return evaluate_features(data.kind, qf.float(), gf.float(), data.query, data.gallery, trials=trials,
                             modes=modes)


# ================================================================================================ memories
class HeadMemories(torch.nn.Module):
    """The memories of one head, built from its columns of the concatenated features / centres."""

    def __init__(self, cl, feats: dict, cols: slice, lo):
        super().__init__()
        m, t = lo.memory_momentum, lo.temp
        self.cc = torch.nn.ModuleDict({
            "rgb": hilcore.ClusterMemory.from_centers(cl.centers_rgb[:, cols], t, m),
            "ir": hilcore.ClusterMemory.from_centers(cl.centers_ir[:, cols], t, m)})
        self.multi = torch.nn.ModuleDict({
            "rgb": hilcore.MultiCenterMemory.from_tensor(cl.multi_rgb[:, :, cols], t, m),
            "ir": hilcore.MultiCenterMemory.from_tensor(cl.multi_ir[:, :, cols], t, m)})
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


def _recentre(cl, feats: dict, ec):
    """Centres and multi-centre memories of ``cl`` recomputed from the un-centred ``feats`` (same labels).

    The model's outputs live in the un-centred space, so the memories it is
    trained against (and updates) must too; only the pseudo labels come from
    the centred features.
    """
    sub = dict(n_sub=ec.n_sub, weight=ec.weight, method=ec.sub_method, seed=ec.seed)
    for m, lab in (("rgb", cl.labels_rgb), ("ir", cl.labels_ir)):
        if int(lab.max()) >= 0:
            setattr(cl, f"centers_{m}", hilcore.cluster_centers(feats[m], lab))
            setattr(cl, f"multi_{m}", hilcore.subcluster(feats[m], lab, **sub))
    both = torch.cat([feats["rgb"], feats["ir"]])
    shared = torch.cat([cl.shared_labels_rgb, cl.shared_labels_ir])
    if cl.shared_centers.shape[0] > 0:
        cl.shared_centers = hilcore.cluster_centers(both, shared)
        cl.shared_multi = hilcore.subcluster(both, shared, **sub)
    return cl


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
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)


def build_reid_model(cfg: TrainConfig):
    m = cfg.model
    kw = dict(m.kwargs)
    if m.backbone == "vit_b16":
        kw.setdefault("img_size", tuple(cfg.data.size))
    return build_model(m.backbone, s_dim=m.s_dim, pretrained=m.pretrained, **kw)


class Logger:
    """Prints on rank 0 and appends to ``output/train.log``."""

    def __init__(self, folder: Path | None):
        self.path = folder / "train.log" if folder is not None and D.is_main() else None

    def __call__(self, msg: str = "") -> None:
        if not D.is_main():
            return
        print(msg, flush=True)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(msg + "\n")


class Trainer:
    """One HIL run. ``Trainer(cfg).fit()`` trains (resuming when configured) and returns the metrics history."""

    def __init__(self, cfg: TrainConfig, device: torch.device | None = None):
        self.cfg = cfg
        self.device = D.setup(cfg.run.device) if device is None else device
        if cfg.run.threads:
            torch.set_num_threads(int(cfg.run.threads))
        self.out = Path(cfg.run.output)
        if D.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        D.barrier()
        self.log = Logger(self.out)
        self.amp = bool(cfg.run.amp) and self.device.type == "cuda"
        self.progress = bool(cfg.run.progress) and D.is_main()
        self._seed(cfg.run.seed)
        self.data = build_data(cfg)
        self.model = build_reid_model(cfg).to(self.device)
        self.net = self.model
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
        self.tf_train = {m: build_transforms(m, train=True, size=tuple(cfg.data.size)) for m in MODS}

    # -------------------------------------------------------------------------------------- setup
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
        b = self.cfg.data.extract_batch
        return {m: extract_features(self.net, self.data.train[m], m, self.device, batch_size=b, amp=self.amp,
                                    progress=self.progress, desc=f"extract {m.upper()}") for m in MODS}

    def cluster(self, feats: dict):
        """:func:`hilcore.cluster_epoch` on rank 0, broadcast to the others (CPU copies), moved to the device.

        With ``cluster.cam_center`` the pseudo labels (per modality and shared)
        come from the camera-centred features (:func:`camera_centre`); the
        centres and multi-centre memories are then recomputed from the
        features themselves with those labels.
        """
        cl, err = None, None
        if D.is_main():
            try:
                ec = self.cfg.epoch_config()
                if self.cfg.cluster.cam_center:
                    x = {m: camera_centre(feats[m], self.data.train[m].cams) for m in MODS}
                    cl = _recentre(hilcore.cluster_epoch(x["rgb"], x["ir"], ec), feats, ec)
                else:
                    cl = hilcore.cluster_epoch(feats["rgb"], feats["ir"], ec)
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
        seed = [cfg.run.seed, epoch, D.rank()]
        samplers = {m: IdentitySampler(labels[m].cpu().numpy(), cfg.sampler.P, cfg.sampler.K, seed=seed + [i])
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
        bar = _bar(cfg.optim.iters, f"train epoch {epoch + 1}", self.progress)
        for it in range(cfg.optim.iters):
            idx = {m: torch.as_tensor(batches[m][it], device=dev) for m in MODS}
            imgs = [self.tf_train[m](next(readers[m]).to(dev, non_blocking=True), generator=gen) for m in MODS]
            n_rgb = imgs[0].shape[0]
            with _autocast(dev, self.amp):
                out = self.net(torch.cat(imgs))
            x = {h: {"rgb": out[h][:n_rgb].float(), "ir": out[h][n_rgb:].float()} for h in HEADS}
            terms = self._losses(x, idx, labels, shared, mems, lo)
            loss = (lo.cc_weight * terms["loss_cc"] + lo.shared_weight * terms["loss_shared"]
                    + w_mccl * terms["loss_mccl"] + lo.nc_weight * terms["loss_nc"])
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._update_memories(x, idx, labels, shared, mems)
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

    def _losses(self, x, idx, labels, shared, mems, lo) -> dict:
        cc, sh, mc, nc, agree = [], [], [], [], []
        for m, o in (("rgb", "ir"), ("ir", "rgb")):
            y = labels[m][idx[m]]
            ys = shared[m][idx[m]]
            valid = ys >= 0
            for h in HEADS:
                mem = mems[h]
                cc.append(hilcore.cluster_contrast_loss(x[h][m], mem.cc[m], y))
                if mem.shared is not None and bool(valid.any()):
                    sh.append(hilcore.cluster_contrast_loss(x[h][m][valid], mem.shared, ys[valid]))
                bank = mem.inst[m].features
                nc.append(neighbour_consistency_loss(x[h][m], bank, bank[idx[m]], lo.nc_k, lo.temp))
                if lo.nc_cross:
                    nc.append(neighbour_consistency_loss(x[h][m], mem.inst[o].features, x[h][m], lo.nc_k, lo.temp))
            for target in ((m, o) if lo.mccl_cross else (m,)):
                val, share = mccl_two_heads(x["d"][m], x["s"][m], mems["d"].multi[target], mems["s"].multi[target])
                mc.append(val)
                agree.append(share)
        zero = x["d"]["rgb"].sum() * 0.0
        mean = lambda v: torch.stack(v).mean() if v else zero  # noqa: E731
        return {"loss_cc": mean(cc), "loss_shared": mean(sh), "loss_mccl": mean(mc), "loss_nc": mean(nc),
                "mccl_agree": float(np.mean(agree))}

    @torch.no_grad()
    def _update_memories(self, x, idx, labels, shared, mems) -> None:
        for m in MODS:
            ids = D.all_gather_rows(idx[m])
            y = labels[m][ids]
            ys = shared[m][ids]
            valid = ys >= 0
            for h in HEADS:
                f = F.normalize(D.all_gather_rows(x[h][m].detach()), dim=1)
                mem = mems[h]
                mem.cc[m].update(f, y)
                mem.multi[m].update(f, y)
                if mem.shared is not None and bool(valid.any()):
                    mem.shared.update(f[valid], ys[valid])
                mem.inst[m].update(f, ids)

    # -------------------------------------------------------------------------------------- epochs
    def _evaluate_now(self, epoch: int) -> bool:
        e, every = epoch + 1, self.cfg.eval.every
        return e == self.cfg.optim.epochs or (every > 0 and e % every == 0)

    def fit(self) -> list:
        cfg = self.cfg
        if D.is_main():
            (self.out / "config.yaml").write_text(dump_config(cfg))
        self.resume()
        n = {m: len(self.data.train[m]) for m in MODS}
        self.log(f"run        {cfg.model.backbone} on {cfg.data.dataset} ({cfg.data.root}): RGB {n['rgb']} / IR "
                 f"{n['ir']} training images, device {self.device}, world {D.world_size()}, amp {self.amp}, "
                 f"epochs {cfg.optim.epochs} x {cfg.optim.iters} iters, batch {cfg.sampler.P}x{cfg.sampler.K} "
                 f"per modality")
        t_run = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.optim.epochs):
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
                                    trials=cfg.eval.trials, modes=tuple(cfg.eval.modes), progress=self.progress))
            t4 = time.perf_counter()
            row.update(t_extract=t1 - t0, t_cluster=t2 - t1, t_cluster_kernels=cl.timings.get("total", 0.0),
                       t_train=t3 - t2, t_eval=t4 - t3, t_epoch=t4 - t0)
            self.history.append(row)
            is_best = "mAP" in row and row["mAP"] > self.best["mAP"]
            if is_best:
                self.best = {"mAP": row["mAP"], "epoch": epoch + 1}
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
    """Run (or resume) the configured training; returns the metrics history (one dict per epoch)."""
    return Trainer(cfg).fit()


def load_trained_model(path, device="cpu"):
    """``(model, config)`` from a training checkpoint (``last.pt``/``best.pt`` or a run folder)."""
    state = ckpt.load_checkpoint(path)
    cfg = from_dict(state["config"])
    model = build_reid_model(cfg.__class__(**{**vars(cfg), "model": _no_pretrained(cfg.model)}))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def _no_pretrained(m):
    import dataclasses

    return dataclasses.replace(m, pretrained=None)
