"""Readers for SYSU-MM01 and RegDB in their released layouts, and an image loader.

Every reader returns lists of :class:`Sample` ``(path, pid, camid, modality)``
with ``modality`` 0 for visible (RGB) and 1 for infrared/thermal.

Labels: the ``pid`` of a *training* sample is read from the layout only so
that cluster quality (ARI, AMI, FMI, V-measure) can be reported; the
unsupervised HIL loop never trains on it. Test-set pids drive evaluation.

SYSU-MM01 (``root/``)::

    cam1/ ... cam6/<4-digit id>/*.jpg     RGB cameras 1, 2, 4, 5; IR cameras 3, 6
    exp/train_id.txt, val_id.txt, test_id.txt   comma-separated ids on one line

Training identities are train + val; the query set is every IR test image
(cameras 3 and 6), the gallery pool every RGB test image (sample the
per-trial gallery with :func:`hilcore.eval.sysu_gallery`). ``pid`` is the
identity number of the folder name, ``camid`` the camera number.

RegDB (``root/``)::

    Visible/..., Thermal/...                      images
    idx/{train,test}_{visible,thermal}_{trial}.txt  lines "relative/path label"

412 identities split 206/206 per trial (trials 1..10). ``pid`` is the label of
the index file, ``camid`` 1 for visible and 2 for thermal.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..splits import (DEFAULT_SIZE, IMAGE_EXTENSIONS, IR, REGDB_THERMAL_CAM, REGDB_VISIBLE_CAM, RGB,  # noqa: F401
                      SYSU_IR_CAMS, SYSU_RGB_CAMS, RegDB, Sample, _check_dir, _check_file, _is_image, load_regdb,
                      read_regdb_index)

from .._extras import require


# --------------------------------------------------------------------------- SYSU-MM01


def read_sysu_ids(path) -> list[int]:
    """Identity numbers of a SYSU-MM01 ``exp/*_id.txt`` file (comma-separated, one line)."""
    path = Path(path)
    _check_file(path, "SYSU-MM01 id list")
    text = path.read_text()
    tokens = [t for t in text.replace(",", " ").split() if t]
    if not tokens:
        raise ValueError(f"{path}: expected comma-separated identity numbers, the file is empty")
    ids = []
    for t in tokens:
        try:
            v = int(t)
        except ValueError:
            raise ValueError(f"{path}: expected comma-separated identity numbers, found {t!r}") from None
        if v < 0:
            raise ValueError(f"{path}: identity numbers must be >= 0, found {v}")
        ids.append(v)
    if len(set(ids)) != len(ids):
        dup = sorted({v for v in ids if ids.count(v) > 1})[:5]
        raise ValueError(f"{path}: identities listed twice: {dup}")
    return ids


@dataclass
class SYSUMM01:
    """SYSU-MM01 read from disk. ``train``: every image of the train + val identities, both modalities."""

    root: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    train_ids: list[int]
    test_ids: list[int]

    @property
    def train_rgb(self) -> list[Sample]:
        return [s for s in self.train if s.modality == RGB]

    @property
    def train_ir(self) -> list[Sample]:
        return [s for s in self.train if s.modality == IR]

    def gallery_trial(self, mode: str = "all", trial: int = 0) -> list[Sample]:
        """The gallery of one evaluation trial (one random RGB image per identity and camera)."""
        from ..eval import sysu_gallery

        g = self.gallery
        idx = sysu_gallery([s.path for s in g], np.array([s.pid for s in g], dtype=np.int64),
                           np.array([s.camid for s in g], dtype=np.int64), mode=mode, trial=trial)
        return [g[i] for i in idx]


def load_sysu_mm01(root) -> SYSUMM01:
    """Read SYSU-MM01 from its released layout (see the module docstring).

    Raises FileNotFoundError naming the missing root, camera folder or id file,
    and ValueError for malformed id files, identities in both the training and
    test lists, or a listed identity without any image.
    """
    root = Path(root)
    _check_dir(root, "SYSU-MM01 root")
    exp = root / "exp"
    _check_dir(exp, "SYSU-MM01 split folder")
    train_ids = read_sysu_ids(exp / "train_id.txt")
    val_ids = read_sysu_ids(exp / "val_id.txt")
    test_ids = read_sysu_ids(exp / "test_id.txt")
    both = sorted(set(train_ids) & set(val_ids))
    if both:
        raise ValueError(f"{exp}: identities in both train_id.txt and val_id.txt: {both[:5]}")
    fit_ids = sorted(set(train_ids) | set(val_ids))
    both = sorted(set(fit_ids) & set(test_ids))
    if both:
        raise ValueError(f"{exp}: identities in both the training lists and test_id.txt: {both[:5]}")
    test_ids = sorted(test_ids)

    per_id: dict[int, list[Sample]] = {i: [] for i in fit_ids + test_ids}
    for cam in range(1, 7):
        cdir = root / f"cam{cam}"
        _check_dir(cdir, f"SYSU-MM01 camera {cam}")
        modality = RGB if cam in SYSU_RGB_CAMS else IR
        with os.scandir(cdir) as it:
            folders = {e.name: e.path for e in it if e.is_dir()}
        for pid in per_id:
            folder = folders.get(f"{pid:04d}")
            if folder is None:
                continue  # not every identity appears in every camera
            names = sorted(n for n in os.listdir(folder) if _is_image(n))
            per_id[pid].extend(Sample(os.path.join(folder, n), pid, cam, modality) for n in names)
    empty = [pid for pid, s in per_id.items() if not s]
    if empty:
        raise ValueError(f"SYSU-MM01 layout: identities listed in {exp} have no image in any "
                         f"{root}/cam*/<id> folder: {[f'{p:04d}' for p in empty[:5]]}")
    train = [s for pid in fit_ids for s in per_id[pid]]
    query = [s for pid in test_ids for s in per_id[pid] if s.modality == IR]
    gallery = [s for pid in test_ids for s in per_id[pid] if s.modality == RGB]
    if not query:
        raise ValueError(f"SYSU-MM01 layout: no IR image (cam3, cam6) of the test identities under {root}")
    if not gallery:
        raise ValueError(f"SYSU-MM01 layout: no RGB image (cam1, cam2, cam4, cam5) of the test identities "
                         f"under {root}")
    return SYSUMM01(root, train, query, gallery, fit_ids, test_ids)


# --------------------------------------------------------------------------- images


def load_image(path, size: tuple[int, int] | None = DEFAULT_SIZE, interpolation: str = "bilinear") -> torch.Tensor:
    """Read an image as a float32 ``[3, H, W]`` tensor in ``[0, 1]``, resized to ``size = (H, W)``
    (``interpolation``: PIL's "bilinear", "bicubic" or "lanczos").

    Grey images (and SYSU's IR jpgs) come back with three equal channels.
    ``size=None`` keeps the file's size.
    """
    Image = require("PIL.Image", "hilcore.train.load_image")

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None:
            h, w = (int(v) for v in size)
            if h < 1 or w < 1:
                raise ValueError(f"size: expected (H, W) with positive entries, got {size}")
            filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
            if interpolation not in filters:
                raise ValueError(f"interpolation: expected one of {sorted(filters)}, got {interpolation!r}")
            if im.size != (w, h):
                im = im.resize((w, h), filters[interpolation])
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageList(torch.utils.data.Dataset):
    """Map-style dataset over samples: item ``i`` is ``(image [3, H, W], i)``.

    ``transform`` (optional) maps the float image tensor to another tensor.
    """

    def __init__(self, samples, size: tuple[int, int] | None = DEFAULT_SIZE, transform=None):
        self.samples = list(samples)
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img = load_image(self.samples[i].path, self.size)
        if self.transform is not None:
            img = self.transform(img)
        return img, i
