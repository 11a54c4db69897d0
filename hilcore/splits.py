"""The released file layouts that evaluation reads: samples and the RegDB index files.

A library module (no training dependency): :mod:`hilcore.eval` reads the RegDB
test split through it, and the driver's readers (:mod:`hilcore.train.datasets`)
build on it.

RegDB (``root/``)::

    Visible/..., Thermal/...                      images
    idx/{train,test}_{visible,thermal}_{trial}.txt  lines "relative/path label"

412 identities split 206/206 per trial (trials 1..10). ``pid`` is the label of
the index file, ``camid`` 1 for visible and 2 for thermal.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

RGB, IR = 0, 1
SYSU_RGB_CAMS = (1, 2, 4, 5)
SYSU_IR_CAMS = (3, 6)
REGDB_VISIBLE_CAM, REGDB_THERMAL_CAM = 1, 2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_SIZE = (288, 144)


class Sample(NamedTuple):
    """One image: its path, identity, camera and modality (0 = RGB/visible, 1 = IR/thermal)."""

    path: str
    pid: int
    camid: int
    modality: int


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what}: folder {path} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what}: {path} is not a folder")


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file {path} does not exist")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


# --------------------------------------------------------------------------- RegDB


def read_regdb_index(root, name: str, camid: int, modality: int) -> list[Sample]:
    """Samples of one RegDB index file ``root/idx/<name>`` (lines ``relative/path label``)."""
    root = Path(root)
    path = root / "idx" / name
    _check_file(path, "RegDB index")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'relative/path label', got {line.strip()!r}")
        rel, label = parts
        try:
            pid = int(label)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: label {label!r} is not an integer") from None
        img = root / rel
        if not img.is_file():
            raise FileNotFoundError(f"{path}:{lineno}: image {img} does not exist")
        out.append(Sample(str(img), pid, camid, modality))
    if not out:
        raise ValueError(f"{path}: the index file lists no image")
    return out


@dataclass
class RegDB:
    """One RegDB trial read from the released index files."""

    root: Path
    trial: int
    train_visible: list[Sample]
    train_thermal: list[Sample]
    test_visible: list[Sample]
    test_thermal: list[Sample]

    @property
    def train(self) -> list[Sample]:
        return self.train_visible + self.train_thermal


def load_regdb(root, trial: int = 1) -> RegDB:
    """Read RegDB trial ``trial`` (1..10 in the release) from ``root/idx``.

    Raises FileNotFoundError naming the missing root, ``Visible``/``Thermal``
    folder, index file or listed image, ValueError for a malformed line.
    """
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)):
        raise TypeError(f"trial: expected an integer, got {type(trial).__name__}")
    if trial < 1:
        raise ValueError(f"trial: expected an integer >= 1 (RegDB trials are 1..10), got {trial}")
    root = Path(root)
    _check_dir(root, "RegDB root")
    _check_dir(root / "Visible", "RegDB visible images")
    _check_dir(root / "Thermal", "RegDB thermal images")
    _check_dir(root / "idx", "RegDB index files")
    v, t = (REGDB_VISIBLE_CAM, RGB), (REGDB_THERMAL_CAM, IR)
    return RegDB(
        root, int(trial),
        read_regdb_index(root, f"train_visible_{trial}.txt", *v),
        read_regdb_index(root, f"train_thermal_{trial}.txt", *t),
        read_regdb_index(root, f"test_visible_{trial}.txt", *v),
        read_regdb_index(root, f"test_thermal_{trial}.txt", *t),
    )
