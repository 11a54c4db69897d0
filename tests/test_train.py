"""The HIL training driver: config, sampler, loss terms, reports, one tiny end-to-end run, `hil train/eval`."""
from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hilcore
from hilcore import cli
from hilcore.train import config as C
from hilcore.train.losses import mccl_two_heads, neighbour_consistency_loss
from hilcore.train.report import cluster_quality
from hilcore.train.sampler import IdentitySampler


# ------------------------------------------------------------------------------------------- helpers
def make_tiny_dataset(root):
    from hilcore.train.synthetic_people import make_synthetic_sysu

    return make_synthetic_sysu(root, n_ids=12, imgs_per_cam=2, size=(32, 16), seed=1)


def tiny_config(root, output, **sections) -> dict:
    """A config dict small enough for a test: 32x16 images, width-8 CNN, 2 epochs x 3 iterations."""
    d = {
        "data": {"dataset": "synthetic", "root": str(root), "size": [32, 16], "workers": 0, "cache": True,
                 "extract_batch": 32},
        "model": {"backbone": "tiny", "kwargs": {"width": 8}, "allow_random_init": True},
        "sampler": {"P": 3, "K": 2},
        "optim": {"epochs": 2, "iters": 3, "warmup_epochs": 0, "milestones": [], "lr": 1e-3},
        "cluster": {"k1": 6, "k2": 2, "eps": 0.8, "min_samples": 2, "n_sub": 2},
        "eval": {"every": 1, "trials": 2},
        "run": {"output": str(output), "device": "cpu", "amp": False, "progress": False, "threads": 1},
    }
    for k, v in sections.items():
        d[k].update(v)
    return d


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("syn") / "sysu")


# ------------------------------------------------------------------------------------------- config
def test_config_yaml_overrides_and_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 0.01, epochs: 3}\ncluster: {k1: 12}\n")
    cfg = C.load_config(p, ["optim.iters=7", "data.size=[64,32]", "loss.mccl_switch_epoch=2"])
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.iters) == (0.01, 3, 7)
    assert cfg.data.size == [64, 32]
    assert cfg.loss.temp == 0.05 and cfg.loss.memory_momentum == 0.1 and cfg.loss.instance_momentum == 0.9
    ec = cfg.epoch_config()
    assert isinstance(ec, hilcore.EpochConfig) and ec.k1 == 12 and ec.eps == 0.6
    assert [cfg.mccl_weight_at(e) for e in (0, 1, 2, 5)] == [0.1, 0.1, 1.0, 1.0]
    again = C.from_dict(__import__("yaml").safe_load(C.dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize("override, match", [
    ("optim.lrr=1", r"config\.optim: unknown key"),
    ("foo.bar=1", r"unknown section"),
    ("optim.epochs=0", r"config\.optim\.epochs"),
    ("data.dataset=market", r"config\.data\.dataset"),
    ("loss.memory_momentum=1.5", r"config\.loss\.memory_momentum"),
    ("optim", r"section\.key=value"),
])
def test_config_errors_name_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        C.load_config(None, [override])


def test_shipped_configs_load():
    for name in ("demo_tiny", "sysu_vit", "regdb_vit"):
        cfg = C.load_config(f"configs/{name}.yaml")
        assert cfg.loss.temp == 0.05


# ------------------------------------------------------------------------------------------- sampler
def test_identity_sampler_balanced_no_noise():
    labels = np.array([0, 0, 0, 1, 1, -1, 2, 2, 2, 2, -1, 3])
    s = IdentitySampler(labels, P=3, K=2, seed=5)
    for _ in range(20):
        b = s.batch()
        assert b.shape == (6,)
        lab = labels[b]
        assert (lab >= 0).all()
        groups = lab.reshape(3, 2)
        assert (groups == groups[:, :1]).all()          # K instances of one cluster each
        assert len(set(groups[:, 0].tolist())) == 3     # P distinct clusters (4 exist)
    a = [IdentitySampler(labels, 3, 2, seed=[1, 2]).batch() for _ in range(2)]
    assert np.array_equal(a[0], a[1])                   # same seed, same batch
    with pytest.raises(ValueError, match="noise"):
        IdentitySampler(np.full(5, -1), 2, 2)


# ------------------------------------------------------------------------------------------- losses
def test_neighbour_consistency_matches_formula():
    torch.manual_seed(1)
    bank = F.normalize(torch.randn(20, 8), dim=1)
    x = torch.randn(4, 8, requires_grad=True)
    q = bank[[3, 7, 7, 0]]
    loss = neighbour_consistency_loss(x, bank, q, k=3, temp=0.1)
    ref = 0.0
    for i in range(4):
        sims = (q[i] @ bank.T).tolist()
        nbr = sorted(range(20), key=lambda j: -sims[j])[:3]
        logits = [float(F.normalize(x[i].detach(), dim=0) @ bank[j]) / 0.1 for j in range(20)]
        lse = math.log(sum(math.exp(v) for v in logits))
        ref += sum(lse - logits[j] for j in nbr) / 3
    assert loss.item() == pytest.approx(ref / 4, rel=1e-5)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_mccl_two_heads_averages_over_agreeing_samples():
    torch.manual_seed(2)
    mem_a = F.normalize(torch.randn(5, 3, 6), dim=2)
    mem_b = F.normalize(torch.randn(5, 3, 4), dim=2)
    xa = torch.randn(16, 6, requires_grad=True)
    xb = torch.randn(16, 4, requires_grad=True)
    loss, share = mccl_two_heads(xa, xb, mem_a, mem_b)
    la, ca = hilcore.mccl_loss(xa, mem_a, reduction="none", return_nearest=True)
    lb, cb = hilcore.mccl_loss(xb, mem_b, reduction="none", return_nearest=True)
    agree = (ca == cb).numpy()
    assert 0 < agree.sum() < 16, "the seed should give a mix of agreeing and disagreeing samples"
    ref = ((la + lb).detach().numpy()[agree] / 2).mean()
    assert loss.item() == pytest.approx(float(ref), rel=1e-6)
    assert share == pytest.approx(agree.mean())
    loss.backward()
    assert (xa.grad[torch.as_tensor(~agree)] == 0).all()   # disagreeing samples get no gradient


def test_cluster_quality_perfect_and_noise():
    true = np.array([0, 0, 1, 1, 2, 2])
    q = cluster_quality(np.array([5, 5, 3, 3, 9, 9]), true)
    assert all(v == pytest.approx(1.0) for v in q.values())
    q2 = cluster_quality(np.array([-1, -1, -1, -1, -1, -1]), true)   # noise = singletons, not one cluster
    assert q2["ari"] == pytest.approx(0.0) and q2["fmi"] == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------- end to end
def test_train_tiny_end_to_end(tiny_root, tmp_path):
    from hilcore.train.loop import train

    out = tmp_path / "run"
    cfg = C.from_dict(tiny_config(tiny_root, out))
    hist = train(cfg)
    assert [r["epoch"] for r in hist] == [1, 2]
    for r in hist:
        for k in ("clusters_rgb", "clusters_ir", "outliers_rgb", "outliers_ir", "matched_pairs", "ari", "ami",
                  "fmi", "vmeasure", "loss", "loss_cc", "loss_mccl", "loss_nc", "rank1", "rank20", "mAP", "mINP",
                  "indoor_mAP", "t_extract", "t_cluster", "t_train", "t_eval"):
            assert k in r, k
        assert math.isfinite(r["loss"]) and 0.0 <= r["mAP"] <= 1.0 and r["clusters_rgb"] >= 1
    for f in ("last.pt", "best.pt", "metrics.csv", "metrics.png", "train.log", "config.yaml"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["mAP"]) == pytest.approx(hist[1]["mAP"], rel=1e-5)
    log = (out / "train.log").read_text()
    assert "quality    shared ARI" in log and "Rank-1" in log and "cross-modal matches" in log

    # `hil eval` on the checkpoint reproduces the logged all-search numbers (same 2 gallery trials)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["eval", str(out / "last.pt"), "--dataset", "synthetic", "--data-root", str(tiny_root),
                       "--trials", "2"])
    assert rc == 0
    text = buf.getvalue()
    m = re.search(r"^all-search\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)$", text, re.M)
    assert m, text
    assert float(m.group(2)) == pytest.approx(100 * hist[-1]["mAP"], abs=0.006)
    assert float(m.group(1)) == pytest.approx(100 * hist[-1]["rank1"], abs=0.006)
    assert re.search(r"^indoor-search\s", text, re.M)


def test_cli_make_synthetic_and_errors(tmp_path, capsys):
    assert cli.main(["make-synthetic", str(tmp_path / "s"), "--ids", "5", "--imgs-per-cam", "1",
                     "--size", "32x16"]) == 0
    assert (tmp_path / "s" / "exp" / "train_id.txt").is_file()
    assert len(list((tmp_path / "s").glob("cam*/*/*.jpg"))) == 5 * 6
    assert cli.main(["make-synthetic", str(tmp_path / "s"), "--ids", "5"]) == 2      # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("optim: {epochs: 1}\n")
    assert cli.main(["train", "--config", str(tmp_path / "c.yaml"), "optim.nope=3"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "none.pt"), "--dataset", "sysu", "--data-root", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- camera-aware centring
def test_camera_centre_matches_numpy_reference():
    from hilcore.train.loop import camera_centre

    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 5)).astype(np.float32)
    cams = np.array([1, 1, 3, 3, 3, 6, 1, 6, 2])          # camera 2 has a single image
    ref = x.copy()
    for c in (1, 3, 6):
        ref[cams == c] -= x[cams == c].mean(0)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)   # the lone camera-2 row keeps its direction
    out = camera_centre(torch.from_numpy(x), cams)
    assert out.dtype == torch.float32 and out.shape == (9, 5)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    # a per-camera offset (what a camera adds to every image) disappears
    shifted = torch.from_numpy(x) + torch.from_numpy(rng.normal(size=(7, 5)).astype(np.float32))[cams]
    np.testing.assert_allclose(camera_centre(shifted, cams)[cams != 2].numpy(), ref[cams != 2], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="cams"):
        camera_centre(torch.from_numpy(x), cams[:4])
    with pytest.raises(ValueError, match="x"):
        camera_centre(torch.zeros(3), cams[:3])


def test_cam_center_config():
    cfg = C.load_config("configs/demo_tiny.yaml")
    assert cfg.cluster.cam_center is True
    assert not hasattr(cfg.epoch_config(), "cam_center")     # the loop's option, not hilcore.EpochConfig's
    assert C.load_config(None).cluster.cam_center is False
    with pytest.raises(ValueError, match=r"config\.cluster\.cam_center"):
        C.load_config(None, ["cluster.cam_center=3"])


def test_cam_center_labels_from_centred_memories_from_raw(tiny_root, tmp_path):
    from hilcore.train.loop import MODS, Trainer, camera_centre

    cfg = C.from_dict(tiny_config(tiny_root, tmp_path / "run", cluster={"cam_center": True, "eps": 0.9}))
    tr = Trainer(cfg)
    feats = tr.extract_train()
    cl = tr.cluster(feats)
    x = {m: camera_centre(feats[m], tr.data.train[m].cams) for m in MODS}
    ref = hilcore.cluster_epoch(x["rgb"], x["ir"], cfg.epoch_config())
    assert torch.equal(cl.labels_rgb, ref.labels_rgb) and torch.equal(cl.labels_ir, ref.labels_ir)
    assert torch.equal(cl.shared_labels_ir, ref.shared_labels_ir)
    for m in MODS:   # centres: means of the un-centred features over the centred clustering's labels
        lab = getattr(cl, f"labels_{m}")
        assert int(lab.max()) >= 0
        want = torch.stack([F.normalize(feats[m], dim=1)[lab == c].mean(0) for c in range(int(lab.max()) + 1)])
        torch.testing.assert_close(getattr(cl, f"centers_{m}"), want, rtol=1e-5, atol=1e-6)
        assert torch.equal(getattr(cl, f"multi_{m}")[:, 0], getattr(cl, f"centers_{m}"))
    assert not torch.allclose(cl.centers_rgb, ref.centers_rgb)
    row = tr.train_epoch(0, cl, feats)
    assert math.isfinite(row["loss"])
