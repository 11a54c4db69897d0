"""Dataset readers on generated trees in the SYSU-MM01 and RegDB layouts, and the synthetic generators."""
from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hilcore.eval import regdb_trial
from hilcore.train import datasets as ds
from hilcore.train.synthetic_people import make_synthetic_regdb, make_synthetic_sysu

SIZE = (32, 16)


@pytest.fixture(scope="module")
def sysu(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu") / "SYSU-MM01"
    return make_synthetic_sysu(root, n_ids=12, imgs_per_cam=2, size=SIZE, seed=1, cam_presence=0.7)


@pytest.fixture(scope="module")
def regdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("regdb") / "RegDB"
    return make_synthetic_regdb(root, n_ids=10, imgs_per_id=2, n_trials=3, size=SIZE, seed=2)


def _ids(path: Path) -> list[int]:
    return [int(t) for t in path.read_text().strip().split(",")]


# ---------------------------------------------------------------------------- SYSU-MM01


def test_sysu_layout_written(sysu):
    assert sorted(p.name for p in sysu.iterdir()) == ["cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "exp"]
    train, val, test = (_ids(sysu / "exp" / f"{n}_id.txt") for n in ("train", "val", "test"))
    # SYSU-MM01 proportions 296 : 99 : 96 of 12 identities
    assert (len(train), len(val), len(test)) == (8, 2, 2)
    assert sorted(train + val + test) == list(range(1, 13))
    assert len((sysu / "exp" / "train_id.txt").read_text().splitlines()) == 1
    for pid in range(1, 13):
        rgb = [c for c in (1, 2, 4, 5) if (sysu / f"cam{c}" / f"{pid:04d}").is_dir()]
        ir = [c for c in (3, 6) if (sysu / f"cam{c}" / f"{pid:04d}").is_dir()]
        assert rgb and ir  # every identity is seen in both modalities
        for c in rgb + ir:
            files = sorted(os.listdir(sysu / f"cam{c}" / f"{pid:04d}"))
            assert files == ["0001.jpg", "0002.jpg"]


def test_sysu_reader(sysu):
    data = ds.load_sysu_mm01(sysu)
    train_ids = sorted(_ids(sysu / "exp" / "train_id.txt") + _ids(sysu / "exp" / "val_id.txt"))
    test_ids = sorted(_ids(sysu / "exp" / "test_id.txt"))
    assert data.train_ids == train_ids and data.test_ids == test_ids
    on_disk = sorted(str(p) for p in sysu.glob("cam*/*/*.jpg"))
    everything = data.train + data.query + data.gallery
    assert sorted(s.path for s in everything) == on_disk  # every image exactly once
    for s in everything:
        p = Path(s.path)
        assert s.pid == int(p.parent.name) and s.camid == int(p.parent.parent.name[3:])
        assert s.modality == (ds.RGB if s.camid in (1, 2, 4, 5) else ds.IR)
    assert {s.pid for s in data.train} == set(train_ids)
    assert {s.pid for s in data.query} | {s.pid for s in data.gallery} == set(test_ids)
    assert {s.camid for s in data.query} <= {3, 6} and {s.camid for s in data.gallery} <= {1, 2, 4, 5}
    assert all(s.modality == ds.RGB for s in data.train_rgb) and all(s.modality == ds.IR for s in data.train_ir)
    assert len(data.train_rgb) + len(data.train_ir) == len(data.train)
    assert all(isinstance(s, tuple) and len(s) == 4 for s in everything)


@pytest.mark.parametrize("mode, cams", [("all", {1, 2, 4, 5}), ("indoor", {1, 2})])
def test_sysu_gallery_trial(sysu, mode, cams):
    data = ds.load_sysu_mm01(sysu)
    g = data.gallery_trial(mode, trial=3)
    pairs = [(s.pid, s.camid) for s in g]
    assert set(pairs) == {(s.pid, s.camid) for s in data.gallery if s.camid in cams}
    assert len(pairs) == len(set(pairs))
    assert g == data.gallery_trial(mode, trial=3)


def test_sysu_ids_with_spaces_and_newline(sysu, tmp_path):
    (tmp_path / "ids.txt").write_text(" 3, 1 ,2\n")
    assert ds.read_sysu_ids(tmp_path / "ids.txt") == [3, 1, 2]


def _copy(sysu, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(sysu, dst)
    return dst


def test_sysu_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="SYSU-MM01 root.*nowhere"):
        ds.load_sysu_mm01(tmp_path / "nowhere")


def test_sysu_missing_camera(sysu, tmp_path):
    root = _copy(sysu, tmp_path)
    shutil.rmtree(root / "cam4")
    with pytest.raises(FileNotFoundError, match="cam4"):
        ds.load_sysu_mm01(root)


@pytest.mark.parametrize("name", ["train_id.txt", "val_id.txt", "test_id.txt"])
def test_sysu_missing_id_file(sysu, tmp_path, name):
    root = _copy(sysu, tmp_path)
    (root / "exp" / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        ds.load_sysu_mm01(root)


@pytest.mark.parametrize("content, match", [
    ("1,2,x\n", "found 'x'"),
    ("", "empty"),
    ("1,2,2\n", "listed twice"),
])
def test_sysu_malformed_id_file(sysu, tmp_path, content, match):
    root = _copy(sysu, tmp_path)
    (root / "exp" / "val_id.txt").write_text(content)
    with pytest.raises(ValueError, match=f"val_id.txt.*{match}"):
        ds.load_sysu_mm01(root)


def test_sysu_train_test_overlap(sysu, tmp_path):
    root = _copy(sysu, tmp_path)
    test = _ids(root / "exp" / "test_id.txt")
    val = _ids(root / "exp" / "val_id.txt")
    (root / "exp" / "val_id.txt").write_text(",".join(map(str, val + test[:1])))
    with pytest.raises(ValueError, match="test_id.txt"):
        ds.load_sysu_mm01(root)


def test_sysu_identity_without_images(sysu, tmp_path):
    root = _copy(sysu, tmp_path)
    test = _ids(root / "exp" / "test_id.txt")
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, test + [77])))
    with pytest.raises(ValueError, match="0077"):
        ds.load_sysu_mm01(root)


# ---------------------------------------------------------------------------- RegDB


@pytest.mark.parametrize("trial", [1, 2, 3])
def test_regdb_reader(regdb, trial):
    data = ds.load_regdb(regdb, trial)
    assert data.trial == trial
    parts = dict(train_visible=data.train_visible, train_thermal=data.train_thermal,
                 test_visible=data.test_visible, test_thermal=data.test_thermal)
    folders = {}
    for name, samples in parts.items():
        assert len(samples) == 5 * 2  # 10 identities split 5/5, 2 images each
        visible = name.endswith("visible")
        for s in samples:
            assert Path(s.path).is_file()
            assert Path(s.path).parent.parent.name == ("Visible" if visible else "Thermal")
            assert s.camid == (1 if visible else 2) and s.modality == (ds.RGB if visible else ds.IR)
        assert sorted({s.pid for s in samples}) == list(range(5))
        folders[name] = {int(Path(s.path).parent.name) for s in samples}
        # one label per identity folder
        assert len({(s.pid, Path(s.path).parent.name) for s in samples}) == 5
    assert folders["train_visible"] == folders["train_thermal"]
    assert folders["test_visible"] == folders["test_thermal"]
    assert folders["train_visible"].isdisjoint(folders["test_visible"])
    assert folders["train_visible"] | folders["test_visible"] == set(range(1, 11))
    assert data.train == data.train_visible + data.train_thermal
    vis, th = regdb_trial(regdb, trial)
    assert vis == data.test_visible and th == data.test_thermal


def test_regdb_trials_differ(regdb):
    splits = {tuple(sorted({Path(s.path).parent.name for s in ds.load_regdb(regdb, t).test_visible}))
              for t in (1, 2, 3)}
    assert len(splits) > 1


def test_regdb_errors(regdb, tmp_path):
    with pytest.raises(FileNotFoundError, match="RegDB root"):
        ds.load_regdb(tmp_path / "nowhere", 1)
    with pytest.raises(FileNotFoundError, match="train_visible_4.txt"):
        ds.load_regdb(regdb, 4)
    with pytest.raises(ValueError, match="trial"):
        ds.load_regdb(regdb, 0)
    with pytest.raises(TypeError, match="trial"):
        ds.load_regdb(regdb, "1")
    root = tmp_path / "copy"
    shutil.copytree(regdb, root)
    shutil.rmtree(root / "Thermal")
    with pytest.raises(FileNotFoundError, match="Thermal"):
        ds.load_regdb(root, 1)


@pytest.mark.parametrize("line, exc, match", [
    ("Visible/1/a.bmp", ValueError, r"train_thermal_1.txt:3: expected 'relative/path label'"),
    ("Visible/1/a.bmp zero", ValueError, r"train_thermal_1.txt:3: label 'zero'"),
    ("Thermal/1/missing.bmp 0", FileNotFoundError, r"train_thermal_1.txt:3: image .*missing.bmp"),
])
def test_regdb_malformed_line(regdb, tmp_path, line, exc, match):
    root = tmp_path / "copy"
    shutil.copytree(regdb, root)
    f = root / "idx" / "train_thermal_1.txt"
    lines = f.read_text().splitlines()
    lines[2] = line
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(exc, match=match):
        ds.load_regdb(root, 1)


# ---------------------------------------------------------------------------- generators and images


def test_generator_is_deterministic(tmp_path):
    """Same seed: byte-identical files, whatever the number of worker processes."""
    a = make_synthetic_sysu(tmp_path / "a", n_ids=4, imgs_per_cam=1, size=SIZE, seed=5)
    b = make_synthetic_sysu(tmp_path / "b", n_ids=4, imgs_per_cam=1, size=SIZE, seed=5, workers=2)
    c = make_synthetic_sysu(tmp_path / "c", n_ids=4, imgs_per_cam=1, size=SIZE, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    assert not all(filecmp.cmp(a / f, c / f, shallow=False) for f in files if (c / f).exists())


def test_generator_refuses_non_empty_root(tmp_path):
    root = make_synthetic_sysu(tmp_path / "s", n_ids=3, imgs_per_cam=1, size=SIZE)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_synthetic_sysu(root, n_ids=3, imgs_per_cam=1, size=SIZE)
    make_synthetic_sysu(root, n_ids=4, imgs_per_cam=1, size=SIZE, overwrite=True)
    assert len(ds.load_sysu_mm01(root).train_ids) + len(ds.load_sysu_mm01(root).test_ids) == 4
    with pytest.raises(ValueError, match="n_ids"):
        make_synthetic_sysu(tmp_path / "t", n_ids=2)
    with pytest.raises(ValueError, match="size"):
        make_synthetic_sysu(tmp_path / "t", size=(8, 4))


def test_ir_images_are_grey_and_rgb_are_not(sysu):
    ir = np.asarray(Image.open(next(sysu.glob("cam3/*/*.jpg"))).convert("RGB")).astype(int)
    rgb = np.asarray(Image.open(next(sysu.glob("cam1/*/*.jpg"))).convert("RGB")).astype(int)
    assert ir.shape == rgb.shape == (*SIZE, 3)
    # JPEG may encode the three equal channels with tiny chroma rounding
    assert np.abs(ir[..., 0] - ir[..., 1]).max() <= 2 and np.abs(ir[..., 1] - ir[..., 2]).max() <= 2
    assert np.abs(rgb[..., 0] - rgb[..., 1]).mean() > 5
    # thermal rendering: the person (centre column) is warmer than the borders
    g = ir[..., 0].astype(float)
    assert g[:, SIZE[1] // 2 - 2:SIZE[1] // 2 + 2].mean() > g[:, :2].mean() + 20


def test_load_image_and_image_list(sysu):
    data = ds.load_sysu_mm01(sysu)
    x = ds.load_image(data.query[0].path)
    assert x.shape == (3, 288, 144) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    y = ds.load_image(data.query[0].path, size=None)
    assert y.shape == (3, *SIZE)
    want = np.asarray(Image.open(data.query[0].path).convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(y.permute(1, 2, 0).numpy(), want)
    items = ds.ImageList(data.gallery, size=(40, 20), transform=lambda t: t * 2)
    img, i = items[3]
    assert len(items) == len(data.gallery) and i == 3 and img.shape == (3, 40, 20)
    np.testing.assert_allclose(img, ds.load_image(data.gallery[3].path, (40, 20)) * 2)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        ds.load_image(sysu / "missing.jpg")
