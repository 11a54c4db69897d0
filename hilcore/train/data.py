"""The training driver's images: per-modality sources read on demand, the evaluation split, the transforms.

:class:`ImageSource` reads a list of samples (resized at load time, or at
their file size for the release's colour jitter, ``data.jitter_full_size``),
cached or through DataLoader workers; :func:`build_data` builds the sources a
:class:`~hilcore.train.config.TrainConfig` asks for; :func:`train_transforms`
and :func:`test_transform` the augmentation pipelines (``data.augment``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .augment import Transform, build_transforms, channel_exchange
from .config import TrainConfig, check_data_sizes
from .datasets import RGB, load_image, load_regdb, load_sysu_mm01
from .hil_release import build_release_transforms

__all__ = ["Data", "ImageSource", "build_data", "pad_stack", "test_transform", "train_transforms"]


class ImageSource:
    """The images of a list of samples, read on demand (``load(indices)`` -> float ``[B, 3, H, W]`` in [0, 1]).

    ``cache=True`` decodes every image once into a uint8 tensor (small datasets);
    otherwise images are read per batch, with ``workers`` DataLoader processes
    when iterating over many batches (:meth:`batches`).
    """

    def __init__(self, samples, size, cache: bool = False, workers: int = 0, interp: str = "bilinear",
                 full_size: bool = False):
        self.samples = list(samples)
        self.size = tuple(size)
        self.workers = int(workers)
        self.interp = interp
        self.full_size = bool(full_size)
        self.pids = np.array([s.pid for s in self.samples], dtype=np.int64)
        self.cams = np.array([s.camid for s in self.samples], dtype=np.int64)
        self.paths = [s.path for s in self.samples]
        self._cache = None
        if cache and self.samples:
            imgs = [self._read(i) for i in range(len(self.samples))]
            self._cache = imgs if self.full_size else torch.stack(imgs)

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, i: int) -> torch.Tensor:
        size = None if self.full_size else self.size
        return load_image(self.samples[i].path, size, self.interp).mul_(255).round_().to(torch.uint8)

    def load(self, idx):
        """``[B, 3, H, W]`` float images in [0, 1]; ``full_size``: ``(x, sizes)`` from :func:`pad_stack` of the
        images at their file sizes."""
        idx = [int(i) for i in idx]
        if self.full_size:
            imgs = [self._cache[i] for i in idx] if self._cache is not None else [self._read(i) for i in idx]
            x, sizes = pad_stack(imgs)
            return x.float().div_(255), sizes
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
                                             num_workers=self.workers, collate_fn=pad_stack if self.full_size else _stack)
        for x in loader:
            yield (x[0].float().div_(255), x[1]) if self.full_size else x.float().div_(255)


class _Reader(torch.utils.data.Dataset):
    def __init__(self, src: ImageSource):
        self.src = src

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        return self.src._read(i)


def _stack(items):
    return torch.stack(items)


def pad_stack(items):
    """``(x [B, C, H_max, W_max], sizes [B, 2] int64)``: images of different sizes, each at the top left of a
    zero canvas, with their ``(h, w)``."""
    sizes = torch.tensor([list(t.shape[-2:]) for t in items], dtype=torch.int64).view(-1, 2)
    h, w = (int(v) for v in sizes.max(0).values) if items else (0, 0)
    x = torch.zeros((len(items), items[0].shape[0] if items else 3, h, w), dtype=items[0].dtype if items else
                    torch.uint8)
    for i, t in enumerate(items):
        x[i, :, :t.shape[-2], :t.shape[-1]] = t
    return x, sizes


def to_device(v, device):
    if isinstance(v, tuple):
        return tuple(t.to(device, non_blocking=True) for t in v)
    return v.to(device, non_blocking=True)


@dataclass
class Data:
    """Training images per modality (labels kept for reports only) and the evaluation split."""

    train: dict            # "rgb" / "ir" -> ImageSource
    kind: str              # "sysu" | "regdb"
    query: ImageSource     # SYSU: IR test images; RegDB: visible test images
    gallery: ImageSource   # SYSU: RGB test pool; RegDB: thermal test images
    extract: dict | None = None   # the training images as read for feature extraction (None: ``train``)

    def for_extraction(self, m: str) -> ImageSource:
        return (self.extract or self.train)[m]


def build_data(cfg: TrainConfig, for_training: bool = False) -> Data:
    """The images of ``cfg.data``; ``for_training``: first refuse sizes the listed data cannot fill
    (:func:`hilcore.train.config.check_data_sizes`), before any image is read."""
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
    if for_training:
        check_data_sizes(cfg, len(rgb), len(ir))
    mk = lambda s, interp="bilinear", full=False: ImageSource(s, size, d.cache, d.workers, interp, full)  # noqa: E731
    ext = None
    if d.extract_interp != "bilinear" or d.jitter_full_size:
        ext = {"rgb": mk(rgb, d.extract_interp), "ir": mk(ir, d.extract_interp)}
    # data.jitter_full_size: the training pass reads the images at their file size (jitter, then resize)
    train = {"rgb": mk(rgb, full=d.jitter_full_size), "ir": mk(ir, full=d.jitter_full_size)}
    return Data(train, kind, mk(q, d.eval_interp), mk(g, d.eval_interp), ext)


def train_transforms(cfg: TrainConfig) -> dict:
    """``{"rgb": [view 1, (view 2)], "ir": tf}``: ``data.augment``'s pipelines; a second RGB view
    (``data.rgb_views: 2``) adds channel exchange (the release's ChannelExchange; hilcore's
    :func:`channel_exchange` with p = 1)."""
    d = cfg.data
    if d.augment == "release":
        full = tuple(d.size) if d.jitter_full_size else None     # jitter at the file size, then the resize
        rgb = [build_release_transforms("rgb", True, view=v, full_size=full) for v in range(1, d.rgb_views + 1)]
        return {"rgb": rgb, "ir": build_release_transforms("ir", True, full_size=full)}
    size = tuple(d.size)
    v1 = build_transforms("rgb", train=True, size=size)
    rgb = [v1]
    if d.rgb_views == 2:
        rgb.append(Transform(v1._steps + [("channel_exchange", channel_exchange, True, {"p": 1.0})]))
    return {"rgb": rgb, "ir": build_transforms("ir", train=True, size=size)}


def test_transform(modality: str, size, augment: str = "hilcore"):
    """The transform of feature extraction and evaluation (images already resized when read)."""
    if augment == "release":
        return build_release_transforms(modality, train=False)
    return build_transforms(modality, train=False, size=tuple(size))
