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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hilcore import _dispatch
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
    progress: bool = True           # progress bars (stderr; shown on a terminal only, never into a redirected log)
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


# ---------------------------------------------------------------------------------------------- the schema
#: The type and range of every key, section by section: the schema :func:`from_dict` checks with pydantic
#: (strict: no string is read as a number or a boolean, no float as an integer; every key unknown to the
#: dataclasses above is refused). Rules: ("int", lo, hi) / ("num", lo, hi, open_lo) with None = unbounded,
#: ("bool",), ("choice", values), ("str",), ("pattern", regex, text), ("pair",) two numbers >= 0,
#: ("size",) [H, W], ("ints", lo) a list of integers >= lo, ("choices", values) a non-empty list of them,
#: ("mapping",); any rule + ("null",) also takes null. A key of a dataclass without a rule is an error of
#: hilcore (tests/test_config_schema.py checks that every key has one); a rule for a key the dataclasses do
#: not (yet) have is not used.
NULL = ("null",)
RULES: dict = {
    "data": {
        "dataset": ("choice", DATASETS), "root": ("str",), "regdb_trial": ("int", 1, 10),
        "size": ("size",), "workers": ("int", 0, None), "cache": ("bool",), "extract_batch": ("int", 1, None),
        "flip_extract": ("bool",), "extract_interp": ("choice", ("bilinear", "bicubic")),
        "eval_interp": ("choice", ("bilinear", "bicubic", "lanczos")), "augment": ("choice", ("hilcore", "release")),
        "rgb_views": ("choice", (1, 2)), "jitter_full_size": ("bool",),
    },
    "model": {
        "backbone": ("choice", ("vit_b16", "resnet50", "tiny", "hil_vit")), "pretrained": ("str",) + NULL,
        "init_from": ("str",) + NULL, "reload_best_at": ("int", 0, None) + NULL, "s_dim": ("int", 1, None) + NULL,
        "kwargs": ("mapping",), "allow_random_init": ("bool",),
    },
    "sampler": {"P": ("int", 1, None), "K": ("int", 1, None), "name": ("choice", ("identity", "camera"))},
    "optim": {
        "name": ("choice", ("adam", "adamw", "sgd")), "lr": ("num", 0, None, True), "weight_decay": ("num", 0, None),
        "momentum": ("num", 0, 1), "epochs": ("int", 1, None), "iters": ("int", 1, None),
        "warmup_epochs": ("int", 0, None), "warmup_factor": ("num", 0, 1, True), "milestones": ("ints", 0),
        "gamma": ("num", 0, None, True), "grad_clip": ("num", 0, None, True) + NULL, "nesterov": ("bool",),
    },
    "loss": {
        "temp": ("num", 1e-6, None), "memory_momentum": ("num", 0, 1), "instance_momentum": ("num", 0, 1),
        "cc_weight": ("num", 0, None), "shared_weight": ("num", 0, None), "mccl_weight": ("num", 0, None),
        "mccl_weight_late": ("num", 0, None), "mccl_switch_epoch": ("int", 0, None), "mccl_cross": ("bool",),
        "nc_weight": ("num", 0, None), "nc_k": ("int", 1, None), "nc_cross": ("bool",),
        "term_reduction": ("choice", ("mean", "sum")), "mccl_memory": ("choice", ("per_modality", "shared")),
        "mccl_head_weights": ("pair",), "multi_update": ("bool",), "nc_mode": ("choice", ("knn", "release")),
        "nc_thresh": ("num", 0, None), "nc_head_weights": ("pair",), "nc_cross_weights": ("pair",),
        "nc_cross_parity": ("bool",), "instance_update": ("choice", ("normalized", "raw")),
    },
    "cluster": {
        "k1": ("int", 1, None), "k2": ("int", 1, None), "eps": ("num", 0, None), "min_samples": ("int", 1, None),
        "n_sub": ("int", 1, None), "weight": ("num", 0, 1), "sub_method": ("choice", ("kmeans", "dbscan")),
        "ratio": ("num", 0, None), "match_mode": ("choice", ("rgb_to_ir", "ir_to_rgb", "both")),
        "backend": ("str",), "seed": ("int", 0, 2 ** 63 - 1) + NULL, "cam_center": ("bool",),
        "transfer": ("choice", ("match", "rgb_to_ir_all")),
        "memory_features": ("choice", ("clustering", "raw_heads")), "distributed": ("choice", ("auto", "on", "off")),
    },
    "eval": {"every": ("int", 0, None), "trials": ("int", 1, None), "modes": ("choices", ("all", "indoor")),
             "best_by": ("str",)},
    "run": {
        "output": ("str",), "device": ("pattern", r"^(auto|cpu|cuda|cuda:[0-9]+)$", "auto, cpu, cuda or cuda:N"),
        "amp": ("bool",), "seed": ("int", 0, 2 ** 63 - 1), "resume": ("resume",), "progress": ("bool",),
        "threads": ("int", 1, None) + NULL, "sync_bn": ("bool",), "bn_replicas": ("int", 1, None),
    },
}


def _range_text(lo, hi, open_lo=False) -> str:
    if lo is not None and hi is not None:
        return f"in ({lo}, {hi}]" if open_lo else f"in [{lo}, {hi}]"
    if lo is not None:
        return f"> {lo}" if open_lo else f">= {lo}"
    return f"<= {hi}" if hi is not None else ""


def _annotation(rule: tuple, pd):
    """``(type for pydantic, what is expected in words)`` of one rule of :data:`RULES`."""
    from typing import Annotated, Any, Literal, Optional, Union

    Field = pd.Field
    null = rule[-1] == "null"
    kind, args = rule[0], rule[1:len(rule) - null]
    if kind == "int":
        lo, hi = args
        t, text = Annotated[int, Field(ge=lo, le=hi)], " ".join(filter(None, ("an integer", _range_text(lo, hi))))
    elif kind == "num":
        lo, hi, open_lo = (tuple(args) + (False,))[:3]
        bounds = dict(gt=lo) if open_lo else dict(ge=lo)
        t = Annotated[float, Field(le=hi, allow_inf_nan=False, **bounds)]
        text = " ".join(filter(None, ("a number", _range_text(lo, hi, open_lo))))
    elif kind == "bool":
        t, text = bool, "true or false"
    elif kind == "choice":
        t, text = Literal[tuple(args[0])], "one of " + ", ".join(map(str, args[0]))
    elif kind == "choices":
        t = Annotated[list[Literal[tuple(args[0])]], Field(min_length=1)]
        text = "a non-empty list of " + ", ".join(map(str, args[0]))
    elif kind == "str":
        t, text = str, "a string"
    elif kind == "pattern":
        t, text = Annotated[str, Field(pattern=args[0])], args[1]
    elif kind == "pair":
        t = Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=2, max_length=2)]
        text = "two numbers >= 0"
    elif kind == "size":
        t = Annotated[list[Annotated[int, Field(ge=8)]], Field(min_length=2, max_length=2)]
        text = "[H, W], two integers >= 8"
    elif kind == "ints":
        t, text = list[Annotated[int, Field(ge=args[0])]], f"a list of integers >= {args[0]}"
    elif kind == "mapping":
        t, text = dict[str, Any], "a mapping"
    elif kind == "resume":
        t, text = Union[str, bool], "auto, never or a checkpoint path"
    else:
        raise AssertionError(f"unknown rule {rule!r}")
    if null:
        t, text = Optional[t], f"{text}, or null"
    return t, text


_SCHEMA: dict = {}


def schema() -> dict:
    """``{section: (pydantic model, {key: what is expected})}`` built from the dataclasses' keys and defaults
    and :data:`RULES` (once; pydantic is imported here, not when this module is)."""
    if _SCHEMA:
        return _SCHEMA
    pd = require("pydantic", "hilcore.train.config (the config schema)")
    out = {}
    for name, factory in _section_types().items():
        default, rules = factory(), RULES[name]
        fields, texts = {}, {}
        for f in dataclasses.fields(default):
            if f.name not in rules:
                raise AssertionError(f"config.{name}.{f.name} has no rule in hilcore.train.config.RULES")
            t, texts[f.name] = _annotation(rules[f.name], pd)
            fields[f.name] = (t, getattr(default, f.name))
        model = pd.create_model(f"config_{name}", __config__=pd.ConfigDict(extra="forbid", strict=True), **fields)
        out[name] = (model, texts)
    _SCHEMA.update(out)
    return _SCHEMA


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _unknown(what: str, name, known) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{what}: unknown key {name!r}{hint}; expected one of {sorted(known)}"


def check_dict(d) -> dict:
    """Check the nested mapping ``d`` against the schema; returns ``{section: {key: value}}`` with every key,
    defaults filled in and integers given for numbers turned into floats.

    Raises ValueError (or TypeError for a section that is not a mapping) with one line naming the first bad
    key, its value and what was expected, e.g.
    ``config.optim.grad_clip: expected a number > 0, or null, got -1``.
    """
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise TypeError(f"config: expected a mapping of sections, got {type(d).__name__}")
    sch = schema()
    for name in d:
        if name not in sch:
            raise ValueError(_unknown("config", name, list(sch)).replace("unknown key", "unknown section"))
    out = {}
    for name, (model, texts) in sch.items():
        vals = d.get(name)
        vals = {} if vals is None else vals
        if not isinstance(vals, dict):
            raise TypeError(f"config.{name}: expected a mapping of keys, got {type(vals).__name__} {_short(vals)}")
        for key in vals:
            if not isinstance(key, str) or key not in texts:
                raise ValueError(_unknown(f"config.{name}", key, list(texts)))
        if name == "cluster" and "backend" in vals:     # before EpochConfig's own check, named by its key
            try:
                _dispatch.check_backend(vals["backend"], "config.cluster.backend")
            except TypeError as e:
                raise ValueError(str(e)) from None
        try:
            out[name] = model(**vals).model_dump()
        except Exception as e:  # noqa: BLE001 - pydantic.ValidationError, imported lazily
            errors = e.errors() if hasattr(e, "errors") else []
            if not errors:
                raise
            key = str(errors[0]["loc"][0])
            more = f" ({len({str(x['loc'][0]) for x in errors}) - 1} more bad key(s) in config.{name})" \
                if len({str(x["loc"][0]) for x in errors}) > 1 else ""
            raise ValueError(f"config.{name}.{key}: expected {texts[key]}, got {_short(vals[key])}{more}") from None
    return out


def from_dict(d: dict | None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested mapping (:func:`check_dict`, then :func:`check_together`);
    unknown sections/keys, wrong types and out-of-range values raise ValueError naming the key."""
    vals = check_dict(d)
    cfg = TrainConfig(**{name: factory(**vals[name]) for name, factory in _section_types().items()})
    check_together(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the key of the first bad value (the schema, then :func:`check_together`)."""
    check_dict(cfg.to_dict())
    check_together(cfg)


def check_together(cfg: TrainConfig) -> None:
    """The rules that join several keys (each key's own type and range is the schema's)."""
    if cfg.model.init_from is not None and cfg.model.backbone != "hil_vit":
        raise ValueError(f"config.model.init_from: only the hil_vit backbone loads full checkpoints, "
                         f"got backbone {cfg.model.backbone!r}")
    o = cfg.optim
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise ValueError("config.optim.nesterov: Nesterov momentum needs optim.momentum > 0, got momentum 0 "
                         "(set optim.nesterov=false or a momentum)")
    d = cfg.data
    if d.jitter_full_size and d.augment != "release":
        raise ValueError(f"config.data.jitter_full_size: the full-size colour jitter is the release's augmentation; "
                         f"it needs data.augment: release, got {d.augment!r}")
    best_by_terms(cfg)
    check_memory(cfg)
    cfg.epoch_config()  # EpochConfig accepts the fields


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def step_input_bytes(cfg: TrainConfig) -> int:
    """Bytes of one training step's input images alone (float32, both modalities, every RGB view): a lower
    bound of what a step needs (the network's activations come on top)."""
    h, w = cfg.data.size
    return cfg.sampler.P * cfg.sampler.K * (cfg.data.rgb_views + 1) * 3 * h * w * 4


def check_memory(cfg: TrainConfig, available: int | None = None) -> None:
    """Refuse a batch whose input images alone exceed this machine's memory (``available`` bytes; default the
    physical memory): ``sampler.P x sampler.K`` at ``data.size`` cannot fit, whatever the network."""
    available = _physical_memory() if available is None else available
    need = step_input_bytes(cfg)
    if available and need > available:
        s = cfg.sampler
        raise ValueError(f"config.sampler.P: a step of P x K = {s.P} x {s.K} images per modality at "
                         f"{cfg.data.size[0]}x{cfg.data.size[1]} needs {need / 2 ** 30:.1f} GiB for its input "
                         f"images alone, more than this machine's {available / 2 ** 30:.1f} GiB; expected a smaller "
                         f"sampler.P (or sampler.K, data.size), got P={s.P}")


def check_data_sizes(cfg: TrainConfig, n_rgb: int, n_ir: int) -> None:
    """Refuse, once the dataset is listed and before any image is read, sizes the data cannot fill:
    ``sampler.P`` above the training images of a modality (a batch draws P distinct pseudo identities,
    each with at least one image), and ``cluster.k1`` above them beyond what the clustering clamps."""
    from hilcore._arrays import MAX_CLAMPED_K

    n, which = min((n_rgb, "RGB"), (n_ir, "IR"))
    if cfg.sampler.P > n:
        raise ValueError(f"config.sampler.P: expected at most {n} (the {which} modality has {n} training images "
                         f"in {cfg.data.root}; a batch draws P distinct pseudo identities out of them), got "
                         f"{cfg.sampler.P}")
    if cfg.cluster.k1 > n and cfg.cluster.k1 > MAX_CLAMPED_K:
        raise ValueError(f"config.cluster.k1: expected at most {max(n, MAX_CLAMPED_K)} (the {which} modality has "
                         f"{n} training images; values up to {MAX_CLAMPED_K} are clamped to it), got "
                         f"{cfg.cluster.k1}")


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
