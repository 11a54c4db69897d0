"""Training configuration: every hyper-parameter of a HIL run, read from YAML.

A config file has one mapping per section; anything left out keeps its
default (the defaults are HIL's on SYSU-MM01 with the ViT)::

    data:    {dataset: sysu, root: data/SYSU-MM01, size: [288, 144], workers: 8}
    model:   {backbone: vit_b16, pretrained: ckpt/vit_base_ics_cfs_lup.pth}
    sampler: {P: 16, K: 8}
    optim:   {epochs: 50, iters: 200, lr: 3.5e-4}
    loss:    {temp: 0.05, memory_momentum: 0.1}
    cluster: {k1: 30, k2: 6, eps: 0.6}      # hilcore.EpochConfig fields
    run:     {output: runs/sysu_vit, device: auto, amp: true}

Overrides on the command line use dotted keys with YAML values:
``optim.lr=1e-4 sampler.P=8 data.size=[64,32]``.

Example:
    >>> cfg = load_config("configs/demo_tiny.yaml", ["optim.epochs=2"])
    >>> cfg.optim.epochs
    2
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hilcore._extras import require
from hilcore.epoch import EpochConfig

DATASETS = ("sysu", "regdb", "synthetic")


@dataclass
class DataConfig:
    dataset: str = "sysu"           # sysu | regdb | synthetic (the SYSU layout written by `hil make-synthetic`)
    root: str = "data/SYSU-MM01"
    regdb_trial: int = 1            # RegDB: which released split (1..10) trains and tests
    size: list = field(default_factory=lambda: [288, 144])   # (H, W) fed to the model
    workers: int = 4                # DataLoader workers for reading images
    cache: bool = False             # keep every image decoded in RAM (small datasets: the demo)
    extract_batch: int = 128        # batch size of feature extraction and evaluation
    flip_extract: bool = False      # features = mean of the image's and its mirror's (clustering and evaluation)
    extract_interp: str = "bilinear"   # resize of the training images features are extracted from: bilinear | bicubic
    eval_interp: str = "bilinear"   # resize of the test images: bilinear | bicubic | lanczos (the release's ANTIALIAS)
    augment: str = "hilcore"        # training augmentation: hilcore (augment.py) | release (hil_release.py)
    rgb_views: int = 1              # RGB views per sampled image (2: a second view with channel exchange)
    jitter_full_size: bool = False  # augment release: colour jitter on the image at its file size, then the resize
    #                                 (the release's order; training images are read unresized)


@dataclass
class ModelConfig:
    backbone: str = "vit_b16"       # vit_b16 | resnet50 | tiny | hil_vit (the released network, hil_vit.py)
    pretrained: str | None = None   # TransReID(-SSL) .pth for vit_b16 / hil_vit (vit_base_ics_cfs_lup.pth)
    init_from: str | None = None    # hil_vit: a full release/SDCL checkpoint loaded over the model before epoch 0
    reload_best_at: int | None = None   # reload output/best.pt's model at the start of this 0-based epoch (release: 20)
    s_dim: int | None = None        # width of head "s" (None: the backbone's)
    kwargs: dict = field(default_factory=dict)   # passed to the backbone (drop_path_rate, width, pooling, ...)
    allow_random_init: bool = False   # train without pretrained / init_from weights (random start); else a new
    #                                   run (not a resumed one) is refused


@dataclass
class SamplerConfig:
    P: int = 16                     # pseudo identities per modality per batch
    K: int = 8                      # instances per pseudo identity
    name: str = "identity"          # identity: K random members | camera: one anchor + K-1 from other cameras


@dataclass
class OptimConfig:
    name: str = "adam"              # adam | adamw | sgd
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9           # sgd only
    epochs: int = 50
    iters: int = 200                # iterations per epoch
    warmup_epochs: int = 10         # linear warm-up from warmup_factor * lr
    warmup_factor: float = 0.01
    milestones: list = field(default_factory=lambda: [20, 40])   # step decay (x gamma) at these epochs
    gamma: float = 0.1
    grad_clip: float | None = None
    nesterov: bool = True           # sgd only


@dataclass
class LossConfig:
    temp: float = 0.05              # cluster-contrast temperature
    memory_momentum: float = 0.1    # cluster / multi-centre memories (weight the old vector keeps)
    instance_momentum: float = 0.9  # instance memories
    cc_weight: float = 1.0          # cluster contrast on each modality's own memory
    shared_weight: float = 1.0      # cluster contrast on the shared (cross-modal) memory
    mccl_weight: float = 0.1        # MCCL weight before mccl_switch_epoch ...
    mccl_weight_late: float = 1.0   # ... and from it on
    mccl_switch_epoch: int = 20
    mccl_cross: bool = True         # also MCCL against the other modality's multi-centre memory
    nc_weight: float = 0.5          # neighbour consistency on the instance memories
    nc_k: int = 5                   # neighbours (self included) per sample
    nc_cross: bool = True           # also against the other modality's instance memory
    term_reduction: str = "mean"    # how the terms of each loss (modalities x heads x targets) combine: mean | sum
    mccl_memory: str = "per_modality"   # MCCL against per_modality multi-centre memories | the shared one
    mccl_head_weights: list = field(default_factory=lambda: [0.5, 0.5])   # MCCL weights of heads d, s
    multi_update: bool = True       # momentum-update the multi-centre memories (nearest slot) after each step
    nc_mode: str = "knn"            # knn: k nearest instances | release: thresholded neighbours in both heads
    nc_thresh: float = 0.9          # nc_mode release: neighbours have similarity > nc_thresh x the row max
    nc_head_weights: list = field(default_factory=lambda: [1.0, 1.0])     # nc_mode release: heads d, s
    nc_cross_weights: list = field(default_factory=lambda: [1.0, 1.0])    # nc_mode release: RGB->IR, IR->RGB
    nc_cross_parity: bool = False   # nc_mode release: RGB->IR on even epochs only, IR->RGB on odd ones
    instance_update: str = "normalized"   # instance memories updated with the normalised | raw batch feature


@dataclass
class ClusterConfig(EpochConfig):
    """:class:`hilcore.EpochConfig` (its fields and defaults; ``seed``: null takes ``run.seed``), plus
    ``cam_center``, ``transfer``, ``memory_features`` and ``distributed`` (the loop's, not passed on)."""

    cam_center: bool = False        # cluster camera-centred features (each camera's mean feature subtracted,
    #                                 rows re-normalised); memories still from the features themselves
    transfer: str = "match"         # match: hilcore.bidirectional_match | rgb_to_ir_all: the release's BRST
    memory_features: str = "clustering"   # memories from the clustering features | raw_heads: each head's own
    #                                       un-normalised features, sklearn k-means sub-centres (the release)
    distributed: str = "auto"       # auto: under torchrun (world > 1) every rank clusters its shard with
    #                                 hilcore.distributed | on: that path always | off: rank 0 clusters, broadcasts
    seed: int | None = None         # seed of the sub-centre k-means (EpochConfig.seed); null: run.seed (the
    #                                 release presets: 0, the release's KMeans(random_state=0))


@dataclass
class EvalConfig:
    every: int = 1                  # evaluate every N epochs (and always after the last); 0 = only the last
    trials: int = 10                # SYSU gallery draws / RegDB: the configured trial only
    modes: list = field(default_factory=lambda: ["all", "indoor"])   # SYSU search modes
    best_by: str = "mAP"            # best.pt: the epoch with the highest sum of these metrics ('+'-separated
    #                                 names of the evaluation row: rank1, mAP, ... with prefix t2v_ (RegDB's
    #                                 thermal-to-visible) or <mode>_ (SYSU); the release: rank1+mAP (SYSU),
    #                                 rank1+t2v_rank1+mAP+t2v_mAP (RegDB)


@dataclass
class RunConfig:
    output: str = "runs/hil"
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    amp: bool = True                # mixed precision (CUDA only; CPU runs fp32)
    seed: int = 0
    resume: str = "auto"            # auto: continue when output/last.pt exists | never | a checkpoint path
    progress: bool = True           # progress bars (stderr)
    threads: int | None = None      # torch CPU threads (None: torch's default)
    sync_bn: bool = True            # world > 1: BatchNorm statistics of the global batch (all ranks), so W ranks
    #                                 train as one process; false: each rank normalises its own slice
    bn_replicas: int = 1            # one process: BatchNorm as under DataParallel over N GPUs (the release: 2):
    #                                 RGB and IR rows each cut in N chunks, replica r normalises [RGB chunk r,
    #                                 IR chunk r] on its own, running statistics from replica 0 only


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def epoch_config(self):
        """The :class:`hilcore.EpochConfig` of this run (seeded by ``cluster.seed``, else ``run.seed``)."""
        fields = dataclasses.asdict(self.cluster)
        for k in ("cam_center", "transfer", "memory_features", "distributed"):
            fields.pop(k)
        fields["seed"] = self.run.seed if self.cluster.seed is None else self.cluster.seed
        return EpochConfig(**fields)

    def mccl_weight_at(self, epoch: int) -> float:
        """MCCL weight of (0-based) ``epoch``."""
        lo = self.loss
        return lo.mccl_weight if epoch < lo.mccl_switch_epoch else lo.mccl_weight_late


def _section_types() -> dict:
    return {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)}


def from_dict(d: dict | None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested mapping; unknown sections/keys raise ValueError."""
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise TypeError(f"config: expected a mapping of sections, got {type(d).__name__}")
    sections = _section_types()
    unknown = sorted(set(d) - set(sections))
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected some of {sorted(sections)}")
    built = {}
    for name, factory in sections.items():
        default = factory()
        vals = d.get(name) or {}
        if not isinstance(vals, dict):
            raise TypeError(f"config.{name}: expected a mapping, got {type(vals).__name__}")
        names = {f.name for f in dataclasses.fields(default)}
        bad = sorted(set(vals) - names)
        if bad:
            raise ValueError(f"config.{name}: unknown key(s) {bad}; expected some of {sorted(names)}")
        built[name] = dataclasses.replace(default, **vals)
    cfg = TrainConfig(**built)
    validate(cfg)
    return cfg


def _positive(v: Any, name: str, minimum: float = 1, integer: bool = True) -> None:
    ok = isinstance(v, int) and not isinstance(v, bool) if integer else isinstance(v, (int, float)) \
        and not isinstance(v, bool)
    if not ok or v < minimum:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"config.{name}: expected {kind} >= {minimum}, got {v!r}")


def _choice(v: Any, name: str, allowed: tuple) -> None:
    if isinstance(v, bool) or v not in allowed:
        raise ValueError(f"config.{name}: expected one of {list(allowed)}, got {v!r}")


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the key of the first bad value."""
    d = cfg.data
    if d.dataset not in DATASETS:
        raise ValueError(f"config.data.dataset: expected one of {DATASETS}, got {d.dataset!r}")
    if not isinstance(d.size, (list, tuple)) or len(d.size) != 2 or not all(
            isinstance(s, int) and s >= 8 for s in d.size):
        raise ValueError(f"config.data.size: expected [H, W] integers >= 8, got {d.size!r}")
    _positive(d.workers, "data.workers", 0)
    _positive(d.extract_batch, "data.extract_batch")
    _positive(d.regdb_trial, "data.regdb_trial")
    if cfg.model.backbone not in ("vit_b16", "resnet50", "tiny", "hil_vit"):
        raise ValueError(f"config.model.backbone: expected vit_b16, resnet50, tiny or hil_vit, "
                         f"got {cfg.model.backbone!r}")
    if cfg.model.init_from is not None and cfg.model.backbone != "hil_vit":
        raise ValueError(f"config.model.init_from: only the hil_vit backbone loads full checkpoints, "
                         f"got backbone {cfg.model.backbone!r}")
    if cfg.model.reload_best_at is not None:
        _positive(cfg.model.reload_best_at, "model.reload_best_at", 0)
    if not isinstance(cfg.model.kwargs, dict):
        raise ValueError(f"config.model.kwargs: expected a mapping, got {cfg.model.kwargs!r}")
    _positive(cfg.sampler.P, "sampler.P")
    _positive(cfg.sampler.K, "sampler.K")
    o = cfg.optim
    if o.name not in ("adam", "adamw", "sgd"):
        raise ValueError(f"config.optim.name: expected adam, adamw or sgd, got {o.name!r}")
    _positive(o.lr, "optim.lr", 0, integer=False)
    _positive(o.weight_decay, "optim.weight_decay", 0, integer=False)
    _positive(o.epochs, "optim.epochs")
    _positive(o.iters, "optim.iters")
    _positive(o.warmup_epochs, "optim.warmup_epochs", 0)
    lo = cfg.loss
    _positive(lo.temp, "loss.temp", 1e-6, integer=False)
    for k in ("memory_momentum", "instance_momentum"):
        v = getattr(lo, k)
        if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ValueError(f"config.loss.{k}: expected a number in [0, 1], got {v!r}")
    for k in ("cc_weight", "shared_weight", "mccl_weight", "mccl_weight_late", "nc_weight"):
        _positive(getattr(lo, k), f"loss.{k}", 0, integer=False)
    _positive(lo.mccl_switch_epoch, "loss.mccl_switch_epoch", 0)
    _positive(lo.nc_k, "loss.nc_k")
    _choice(d.extract_interp, "data.extract_interp", ("bilinear", "bicubic"))
    _choice(d.eval_interp, "data.eval_interp", ("bilinear", "bicubic", "lanczos"))
    _choice(d.augment, "data.augment", ("hilcore", "release"))
    _choice(d.rgb_views, "data.rgb_views", (1, 2))
    _choice(cfg.sampler.name, "sampler.name", ("identity", "camera"))
    _choice(lo.term_reduction, "loss.term_reduction", ("mean", "sum"))
    _choice(lo.mccl_memory, "loss.mccl_memory", ("per_modality", "shared"))
    _choice(lo.nc_mode, "loss.nc_mode", ("knn", "release"))
    _choice(lo.instance_update, "loss.instance_update", ("normalized", "raw"))
    for k in ("mccl_head_weights", "nc_head_weights", "nc_cross_weights"):
        v = getattr(lo, k)
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0 for t in v):
            raise ValueError(f"config.loss.{k}: expected two non-negative numbers, got {v!r}")
    _positive(lo.nc_thresh, "loss.nc_thresh", 0, integer=False)
    _choice(cfg.cluster.transfer, "cluster.transfer", ("match", "rgb_to_ir_all"))
    _choice(cfg.cluster.memory_features, "cluster.memory_features", ("clustering", "raw_heads"))
    best_by_terms(cfg)
    for k in ("flip_extract", "jitter_full_size"):
        if not isinstance(getattr(d, k), bool):
            raise ValueError(f"config.data.{k}: expected true or false, got {getattr(d, k)!r}")
    for k in ("multi_update", "nc_cross_parity"):
        if not isinstance(getattr(lo, k), bool):
            raise ValueError(f"config.loss.{k}: expected true or false, got {getattr(lo, k)!r}")
    if d.jitter_full_size and d.augment != "release":
        raise ValueError(f"config.data.jitter_full_size: the full-size colour jitter is the release's augmentation; "
                         f"it needs data.augment: release, got {d.augment!r}")
    if not isinstance(cfg.model.allow_random_init, bool):
        raise ValueError(f"config.model.allow_random_init: expected true or false, got {cfg.model.allow_random_init!r}")
    _positive(cfg.run.bn_replicas, "run.bn_replicas")
    if cfg.cluster.seed is not None and (not isinstance(cfg.cluster.seed, int) or isinstance(cfg.cluster.seed, bool)):
        raise ValueError(f"config.cluster.seed: expected an integer or null (run.seed), got {cfg.cluster.seed!r}")
    if not isinstance(cfg.run.sync_bn, bool):
        raise ValueError(f"config.run.sync_bn: expected true or false, got {cfg.run.sync_bn!r}")
    if not isinstance(cfg.cluster.cam_center, bool):
        raise ValueError(f"config.cluster.cam_center: expected true or false, got {cfg.cluster.cam_center!r}")
    if cfg.cluster.distributed not in ("auto", "on", "off"):
        raise ValueError(f"config.cluster.distributed: expected auto, on or off, got {cfg.cluster.distributed!r}")
    _positive(cfg.eval.every, "eval.every", 0)
    _positive(cfg.eval.trials, "eval.trials")
    if not cfg.eval.modes or any(m not in ("all", "indoor") for m in cfg.eval.modes):
        raise ValueError(f"config.eval.modes: expected a list of 'all'/'indoor', got {cfg.eval.modes!r}")
    dev = cfg.run.device
    if not isinstance(dev, str) or not (dev in ("auto", "cpu", "cuda") or (
            dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"config.run.device: expected auto, cpu, cuda or cuda:N, got {dev!r}")
    if not isinstance(cfg.run.seed, int):
        raise ValueError(f"config.run.seed: expected an integer, got {cfg.run.seed!r}")
    cfg.epoch_config()  # EpochConfig accepts the fields


METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def best_by_terms(cfg: TrainConfig) -> list:
    """The metric names ``eval.best_by`` adds up (checked against what the evaluation of ``data.dataset`` reports:
    RegDB ``<m>`` visible-to-thermal and ``t2v_<m>``; SYSU ``<m>`` for the first of ``eval.modes`` and
    ``<mode>_<m>`` for the others; ``m`` one of :data:`METRICS`)."""
    v = cfg.eval.best_by
    if cfg.data.dataset == "regdb":
        prefixes = ["", "t2v_"]
    else:
        modes = cfg.eval.modes if isinstance(cfg.eval.modes, (list, tuple)) else []
        prefixes = [""] + [f"{m}_" for m in modes[1:] if isinstance(m, str)]
    known = [p + m for p in prefixes for m in METRICS]
    terms = v.split("+") if isinstance(v, str) else []
    if not terms or any(t not in known for t in terms) or len(set(terms)) != len(terms):
        raise ValueError(f"config.eval.best_by: expected distinct metric names joined by '+' out of {known} "
                         f"(what the {cfg.data.dataset} evaluation reports), got {v!r}")
    return terms


def best_score(cfg: TrainConfig, row: dict) -> float | None:
    """The number ``best.pt`` maximises: the sum of ``eval.best_by``'s metrics in an evaluation ``row`` (None when
    the row holds no evaluation). E.g. RegDB's release: ``rank1 + t2v_rank1 + mAP + t2v_mAP``."""
    if "mAP" not in row:
        return None
    return float(sum(row[k] for k in best_by_terms(cfg)))


def random_init_refusal(cfg: TrainConfig) -> str | None:
    """Why this config must not train (a message naming the keys), or None: a run with neither
    ``model.pretrained`` nor ``model.init_from`` starts from random weights, which needs
    ``model.allow_random_init: true`` (the tests and the synthetic demo set it)."""
    m = cfg.model
    if m.pretrained is not None or m.init_from is not None or m.allow_random_init:
        return None
    head = (f"config.model: neither model.pretrained nor model.init_from is set, so the {m.backbone!r} network "
            f"would train from random weights. ")
    if m.backbone in ("tiny", "resnet50"):     # these load no weights file
        return head + f"The {m.backbone!r} backbone has no weights loader: set model.allow_random_init=true"
    return head + ("Name the weights (model.pretrained=/path/to/vit.pth and/or model.init_from=/path/to/"
                   "model_best.pth.tar; configs/*_hil.yaml show both), or set model.allow_random_init=true to "
                   "train from a random start on purpose")


def _yaml12_loader():
    """A SafeLoader that reads numbers as YAML 1.2's core schema does (``1e-4`` is a float, ``017`` is 17,
    ``0o17`` is 15, ``1_000`` is a string); everything else as PyYAML's YAML 1.1 SafeLoader."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    num = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag not in num] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(num[0], re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                 list("-+0123456789"))
    Loader.add_implicit_resolver(num[1], re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+.0123456789"))

    def to_int(loader, node):
        v = loader.construct_scalar(node)
        return int(v[2:], 8) if v.startswith("0o") else int(v[2:], 16) if v.startswith("0x") else int(v, 10)

    def to_float(loader, node):
        v = loader.construct_scalar(node).lower()
        if v.lstrip("+-") == ".inf":
            return float("-inf") if v.startswith("-") else float("inf")
        return float("nan") if v == ".nan" else float(v)

    Loader.add_constructor(num[0], to_int)
    Loader.add_constructor(num[1], to_float)
    return Loader


def load_yaml(text: str):
    """``yaml.safe_load`` with YAML 1.2 numbers (see :func:`_yaml12_loader`)."""
    import yaml

    return yaml.load(text, Loader=_yaml12_loader())  # noqa: S506 - a SafeLoader subclass


def apply_overrides(d: dict, overrides) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to the nested mapping ``d`` in place."""
    yaml = require("yaml", "hilcore.train.config (YAML configs)")

    for item in overrides or ():
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"override {item!r}: expected section.key=value (e.g. optim.lr=1e-4)")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({e})") from None
        sec = d.setdefault(parts[0], {})
        if sec is None:
            sec = d[parts[0]] = {}
        sec[parts[1]] = value
    return d


def load_config(path=None, overrides=None) -> TrainConfig:
    """Read a YAML config (``None``: the defaults) and apply ``overrides`` (``["optim.lr=1e-4", ...]``)."""
    yaml = require("yaml", "hilcore.train.config (YAML configs)")

    d: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config: file {p} does not exist")
        try:
            d = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config: {p} is not valid YAML ({e})") from None
    apply_overrides(d, overrides)
    return from_dict(d)


def dump_config(cfg: TrainConfig) -> str:
    """The config as YAML text (sections in their canonical order)."""
    yaml = require("yaml", "hilcore.train.config (YAML configs)")

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
