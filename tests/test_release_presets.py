"""Issue 24: the release presets' last differences from the released scripts, each shown here.

The table of docs/hil_release.md against the presets read through the config loader; RegDB's BRST ratio and
best-model score; the sub-centre k-means seed; BatchNorm as the release's 2-GPU DataParallel on one device
(running statistics and outputs against per-half reference runs); the colour jitter at the file size before the
resize; the refusal of a silent random start.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import hilcore
from hilcore.train import hil_release as R
from hilcore.train.config import best_by_terms, best_score, from_dict, load_config, load_yaml, random_init_refusal

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"sysu": "configs/sysu_hil.yaml", "regdb": "configs/regdb_hil.yaml"}


# ================================================================================================ the table
def _table_values():
    """``[(key, sysu_text, regdb_text)]`` from the option column of docs/hil_release.md's table."""
    text = (ROOT / "docs/hil_release.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and ln.count("|") >= 5]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    col = header.index("option (preset value)")
    out = []
    for ln in rows[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        for span in re.findall(r"`([^`]+)`", cells[col]):
            m = re.fullmatch(r"([a-z]+)\.([A-Za-z_0-9]+): (.+)", span)
            if m is None:
                continue
            parts = m.group(3).split(" / ")
            assert len(parts) in (1, 2), span
            out.append((f"{m.group(1)}.{m.group(2)}", parts[0], parts[-1]))
    return out


def _get(cfg, key):
    sec, name = key.split(".")
    return getattr(getattr(cfg, sec), name)


def test_docs_table_follows_the_presets():
    values = _table_values()
    keys = {k for k, _, _ in values}
    # the points of issue 24 are in the table (and so checked below)
    assert {"cluster.ratio", "cluster.seed", "eval.best_by", "run.bn_replicas", "data.jitter_full_size",
            "model.allow_random_init"} <= keys, keys
    assert len(values) >= 50
    cfgs = {name: load_config(ROOT / path) for name, path in PRESETS.items()}
    for key, sysu, regdb in values:
        if key == "model.allow_random_init":     # the refusal's default, which the presets keep
            assert _get(cfgs["sysu"], key) is False and _get(cfgs["regdb"], key) is False
            continue
        for name, want in (("sysu", sysu), ("regdb", regdb)):
            got = _get(cfgs[name], key)
            assert got == load_yaml(want), f"{PRESETS[name]}: {key} is {got!r}, docs/hil_release.md says {want}"
    # every option the column names exists in the config
    text = (ROOT / "docs/hil_release.md").read_text()
    sections = set(cfgs["sysu"].to_dict())
    for sec, name in re.findall(r"`([a-z]+)\.([A-Za-z_0-9]+)[`:= ]", text):
        if sec in sections:
            assert name in cfgs["sysu"].to_dict()[sec], f"docs/hil_release.md names {sec}.{name}, not a config key"


def test_table_parser_sees_a_wrong_value(tmp_path, monkeypatch):
    # the check above can fail: a preset with another RegDB ratio disagrees with the table
    values = dict((k, (a, b)) for k, a, b in _table_values())
    assert values["cluster.ratio"] == ("0.5", "0.8")
    bad = load_config(ROOT / PRESETS["regdb"], ["cluster.ratio=0.5"])
    assert _get(bad, "cluster.ratio") != load_yaml(values["cluster.ratio"][1])


# ================================================================================================ 1. BRST ratio
def test_regdb_brst_ratio_reaches_the_transfer():
    from hilcore.synthetic import reid_features

    assert load_config(ROOT / PRESETS["sysu"]).epoch_config().ratio == 0.5
    cfg = load_config(ROOT / PRESETS["regdb"], ["cluster.k1=8", "cluster.k2=3", "cluster.eps=0.5"])
    ec = cfg.epoch_config()
    assert ec.ratio == 0.8
    xr, _, _ = reid_features(6, 10, dim=32, seed=2, outliers=0.0)
    xi, _, _ = reid_features(6, 8, dim=32, seed=2, outliers=0.0)
    xr, xi = torch.as_tensor(xr), torch.as_tensor(xi)
    cl = R.cluster_release({"rgb": xr, "ir": xi}, ec, [slice(0, 16), slice(16, 32)], transfer="rgb_to_ir_all")
    protos = R.segment_means(xi, cl.labels_ir)
    assert torch.equal(cl.shared_labels_rgb, R.brst_over_all(xr, cl.labels_rgb, protos, 0.8))


# ================================================================================================ 2. k-means seed
def test_subcentre_seed_is_zero_in_the_presets_whatever_run_seed(monkeypatch):
    from hilcore.synthetic import reid_features

    for path in PRESETS.values():
        for seed in (1, 7):
            assert load_config(ROOT / path, [f"run.seed={seed}"]).epoch_config().seed == 0
    # the default follows run.seed (cluster.seed: null)
    assert from_dict({"run": {"seed": 7}}).epoch_config().seed == 7
    assert from_dict({"run": {"seed": 7}, "cluster": {"seed": 3}}).epoch_config().seed == 3
    with pytest.raises(ValueError, match=r"config\.cluster\.seed"):
        from_dict({"cluster": {"seed": "zero"}})
    # what the clustering step hands to sklearn
    seen = []
    real = R.kmeans_subcentres
    monkeypatch.setattr(R, "kmeans_subcentres", lambda *a, **k: seen.append(a[4] if len(a) > 4 else k["seed"])
                        or real(*a, **k))
    cfg = load_config(ROOT / PRESETS["sysu"], ["run.seed=5", "cluster.k1=8", "cluster.k2=3", "cluster.eps=0.5",
                                                "cluster.n_sub=3"])
    xr, _, _ = reid_features(6, 10, dim=32, seed=1, outliers=0.0)
    xi, _, _ = reid_features(6, 8, dim=32, seed=1, outliers=0.0)
    R.cluster_release({"rgb": torch.as_tensor(xr), "ir": torch.as_tensor(xi)}, cfg.epoch_config(),
                      [slice(0, 16), slice(16, 32)])
    assert seen and set(seen) == {0}


# ================================================================================================ 3. best model
def test_best_score_regdb_both_directions():
    row = {"rank1": 0.5, "mAP": 0.25, "t2v_rank1": 0.375, "t2v_mAP": 0.125, "indoor_rank1": 0.9}
    regdb = load_config(ROOT / PRESETS["regdb"])
    assert best_by_terms(regdb) == ["rank1", "t2v_rank1", "mAP", "t2v_mAP"]
    assert best_score(regdb, row) == 0.5 + 0.375 + 0.25 + 0.125
    assert best_score(load_config(ROOT / PRESETS["sysu"]), row) == 0.75
    assert best_score(from_dict({}), row) == 0.25
    assert best_score(regdb, {"loss": 1.0}) is None          # an epoch without evaluation
    # an epoch better in v2t only loses to one better in both directions
    a = dict(row, rank1=0.6, t2v_rank1=0.1)
    assert best_score(load_config(ROOT / PRESETS["regdb"], ["eval.best_by=rank1+mAP"]), a) > \
        best_score(load_config(ROOT / PRESETS["regdb"], ["eval.best_by=rank1+mAP"]), row)
    assert best_score(regdb, a) < best_score(regdb, row)


@pytest.mark.parametrize("dataset,best_by", [("sysu", "rank1+t2v_mAP"), ("regdb", "indoor_mAP"),
                                             ("sysu", "mAP+mAP"), ("sysu", "rank3"), ("regdb", "")])
def test_best_by_names_reported_metrics(dataset, best_by):
    with pytest.raises(ValueError, match=r"config\.eval\.best_by"):
        from_dict({"data": {"dataset": dataset}, "eval": {"best_by": best_by}})


# ================================================================================================ 4. BN replicas
KW = {"embed_dim": 24, "depth": 2, "num_heads": 4, "drop_path_rate": 0.0}


def _bn_state(net):
    return {k: v.clone() for k, v in net.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _batch(seed, n_rgb=8, n_ir=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_rgb, 3, 32, 16, generator=g), torch.randn(n_ir, 3, 32, 16, generator=g) * 0.5 + 0.3


def test_bn_replicas_equal_two_dataparallel_halves():
    from hilcore.train.hil_vit import HILNet

    torch.manual_seed(0)
    net = HILNet(img_size=(32, 16), **KW).train()
    ref0, ref1, whole = copy.deepcopy(net), copy.deepcopy(net), copy.deepcopy(net)
    assert len(_bn_state(net)) == 3 * 8           # 3 BN layers in each ICS stem (2 in IBNs) + the two necks
    x_rgb, x_ir = _batch(1)                       # RGB: view 1 = rows 0..3, view 2 = rows 4..7; IR 6 rows
    out = R.split_replicas_forward(net, x_rgb, x_ir, 2)
    # GPU 0: RGB view 1 + IR[:3]; GPU 1: RGB view 2 + IR[3:], each a network of its own
    o0 = ref0(torch.cat([x_rgb[:4], x_ir[:3]]), 4)
    o1 = ref1(torch.cat([x_rgb[4:], x_ir[3:]]), 4)
    for h in ("d", "s"):
        want = torch.cat([o0[h][:4], o1[h][:4], o0[h][4:], o1[h][4:]])     # gathered in the rows' order
        assert torch.allclose(out[h], want, atol=1e-6, rtol=0), h
    # running statistics: those of GPU 0's half alone (the module itself), num_batches_tracked once
    got, want0, want1 = _bn_state(net), _bn_state(ref0), _bn_state(ref1)
    for k in got:
        assert torch.allclose(got[k].float(), want0[k].float(), atol=1e-7, rtol=0), k
    assert any(not torch.allclose(want0[k].float(), want1[k].float()) for k in got if "running_mean" in k)
    assert all(int(v) == 1 for k, v in got.items() if k.endswith("num_batches_tracked"))
    # gradients: the two replicas' add up, as DataParallel's backward does
    (out["d"].square().sum() + out["s"].sum()).backward()
    (o0["d"].square().sum() + o0["s"].sum() + o1["d"].square().sum() + o1["s"].sum()).backward()
    g = dict(net.named_parameters())
    for n, p in ref0.named_parameters():
        if p.grad is not None:
            q = dict(ref1.named_parameters())[n].grad
            assert torch.allclose(g[n].grad, p.grad + q, atol=1e-5, rtol=1e-4), n
    # and it differs from one BatchNorm batch of all rows (what bn_replicas: 1 does)
    ow = whole(torch.cat([x_rgb, x_ir]), 8)
    assert not torch.allclose(ow["d"], out["d"], atol=1e-4)


def test_bn_replicas_generic_model_and_odd_rows():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 4)
            self.bn = torch.nn.BatchNorm1d(4)

        def forward(self, x):
            y = self.bn(self.lin(x))
            return {"d": y, "s": 2 * y}

    torch.manual_seed(3)
    net = Net().train()
    ref = copy.deepcopy(net)
    xr, xi = torch.randn(7, 5), torch.randn(5, 5) + 1.0
    out = R.split_replicas_forward(net, xr, xi, 2, modal_aware=False)
    # Tensor.chunk: RGB 4 + 3, IR 3 + 2
    r0 = ref(torch.cat([xr[:4], xi[:3]]))["d"]
    bn = torch.nn.functional.batch_norm
    h1 = ref.lin(torch.cat([xr[4:], xi[3:]]))
    r1 = bn(h1, None, None, ref.bn.weight, ref.bn.bias, training=True, eps=ref.bn.eps)
    assert torch.allclose(out["d"], torch.cat([r0[:4], r1[:3], r0[4:], r1[3:]]), atol=1e-6)
    assert torch.allclose(net.bn.running_mean, ref.bn.running_mean) and int(net.bn.num_batches_tracked) == 1
    with R.frozen_bn_stats(net):
        net(torch.randn(6, 5))
    assert torch.allclose(net.bn.running_mean, ref.bn.running_mean) and net.bn.track_running_stats
    with pytest.raises(ValueError, match="replicas"):
        R.split_replicas_forward(net, xr, xi[:1], 2, modal_aware=False)


def test_loop_uses_bn_replicas(tmp_path, monkeypatch):
    from hilcore.train import loop
    from test_train import make_tiny_dataset, tiny_config

    calls = []
    real = loop.split_replicas_forward
    monkeypatch.setattr(loop, "split_replicas_forward", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    root = make_tiny_dataset(tmp_path / "syn")
    d = tiny_config(root, tmp_path / "run", optim={"epochs": 1, "iters": 2}, run={"bn_replicas": 2},
                    eval={"every": 0, "trials": 1})
    loop.train(from_dict(d))
    assert calls == [2, 2]
    with pytest.raises(ValueError, match=r"config\.run\.bn_replicas"):
        from_dict(dict(d, run=dict(d["run"], bn_replicas=0)))


# ================================================================================================ 5. jitter order
def _images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


def test_jitter_on_padded_batch_equals_unpadded():
    from hilcore.train.data import pad_stack

    imgs = _images([(40, 20), (33, 17), (51, 26)])
    x, sizes = pad_stack(imgs)
    assert sizes.tolist() == [[40, 20], [33, 17], [51, 26]] and x.shape == (3, 3, 51, 26)
    assert torch.equal(x[1, :, :33, :17], imgs[1]) and not x[1, :, 33:].any()
    a = R.jitter_then_resize(x, sizes, (32, 16), torch.Generator().manual_seed(4))
    # more padding changes nothing: the padding takes no part in the contrast mean
    big = torch.zeros(3, 3, 60, 31)
    big[:, :, :51, :26] = x
    b = R.jitter_then_resize(big, sizes, (32, 16), torch.Generator().manual_seed(4))
    assert a.shape == (3, 3, 32, 16) and torch.allclose(a, b, atol=1e-6)
    # one image: jitter at the file size, then the resize
    for im in imgs:
        want = hilcore.train.augment.resize(R.color_jitter_release(im[None], generator=torch.Generator().manual_seed(9)),
                                            (32, 16))
        got = R.jitter_then_resize(im[None], torch.tensor([list(im.shape[1:])]), (32, 16),
                                   torch.Generator().manual_seed(9))
        assert torch.allclose(got, want, atol=1e-6)
    # the contrast mean over the image only: padded and cropped back equals the image jittered alone
    one = torch.zeros(1, 3, 60, 31)
    one[0, :, :40, :20] = imgs[0]
    got = R.color_jitter_release(one, generator=torch.Generator().manual_seed(2), contrast=0.9,
                                 extent=torch.tensor([[40, 20]]))[:, :, :40, :20]
    want = R.color_jitter_release(imgs[0][None], generator=torch.Generator().manual_seed(2), contrast=0.9)
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="extent"):
        R.color_jitter_release(one, extent=torch.tensor([[70, 20]]))


def test_presets_jitter_before_the_resize(tmp_path):
    from PIL import Image

    from hilcore.train.datasets import Sample
    from hilcore.train.data import ImageSource, train_transforms

    cfg = load_config(ROOT / PRESETS["sysu"], ["data.size=[32,16]"])
    tfs = train_transforms(cfg)
    for tf in tfs["rgb"] + [tfs["ir"]]:
        assert isinstance(tf, R.FullSizePipeline) and tf.steps[:3] == ["color_jitter (file size)", "resize", "pad_crop"]
        assert "color_jitter" not in tf.post.steps
    assert tfs["rgb"][1].steps[-1] == "channel_exchange" and tfs["ir"].steps[-1] == "channel_adap_gray"
    # the default keeps jitter after the load-time resize
    old = train_transforms(load_config(ROOT / PRESETS["sysu"], ["data.jitter_full_size=false"]))
    assert old["rgb"][0].steps[0] == "color_jitter"
    with pytest.raises(ValueError, match=r"config\.data\.jitter_full_size"):
        load_config(ROOT / PRESETS["sysu"], ["data.augment=hilcore"])
    # the training source reads files at their size; a whole pipeline call gives [B, 3, 32, 16]
    rng = np.random.default_rng(0)
    samples = []
    for i, (h, w) in enumerate([(50, 22), (41, 30)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        samples.append(Sample(str(p), i, 1, 0))
    for cache in (False, True):
        src = ImageSource(samples, (32, 16), cache=cache, full_size=True)
        x, sizes = src.load([1, 0])
        assert sizes.tolist() == [[41, 30], [50, 22]] and x.shape == (2, 3, 50, 30)
        out = tfs["rgb"][0]((x, sizes), generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 3, 32, 16)


# ================================================================================================ 6. random start
def test_no_silent_random_start(tmp_path, capsys):
    from hilcore.cli import main
    from hilcore.train.hil_vit import ModelSetupError
    from hilcore.train.loop import Trainer

    for path in PRESETS.values():
        cfg = load_config(ROOT / path)
        msg = random_init_refusal(cfg)
        assert msg is not None and "model.pretrained" in msg and "model.init_from" in msg \
            and "model.allow_random_init" in msg
        with pytest.raises(ModelSetupError, match="model.init_from"):
            Trainer(cfg)
        assert random_init_refusal(load_config(ROOT / path, ["model.pretrained=/x.pth"])) is None
        assert random_init_refusal(load_config(ROOT / path, ["model.init_from=/x.pth.tar"])) is None
        assert random_init_refusal(load_config(ROOT / path, ["model.allow_random_init=true"])) is None
    assert random_init_refusal(load_config(ROOT / "configs/demo_tiny.yaml")) is None
    tiny = random_init_refusal(from_dict({"model": {"backbone": "tiny"}}))
    assert "model.allow_random_init=true" in tiny and "no weights loader" in tiny
    rc = main(["train", "--config", str(ROOT / PRESETS["regdb"]), "run.output=" + str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "model.pretrained" in err and "model.init_from" in err
    assert not (tmp_path / "run").exists()


def test_resumed_run_is_not_a_random_start(tmp_path):
    from hilcore.train.loop import resumes_from_checkpoint, train
    from test_train import make_tiny_dataset, tiny_config

    root = make_tiny_dataset(tmp_path / "syn")
    d = tiny_config(root, tmp_path / "run", optim={"epochs": 1, "iters": 1}, eval={"every": 0, "trials": 1})
    cfg = from_dict(d)
    assert not resumes_from_checkpoint(cfg)
    train(cfg)                                            # allow_random_init: true (tiny_config)
    d["model"]["allow_random_init"] = False
    d["optim"]["epochs"] = 2
    again = from_dict(d)
    assert random_init_refusal(again) is not None and resumes_from_checkpoint(again)
    assert [r["epoch"] for r in train(again)] == [1, 2]  # resumed from last.pt, not refused
    d["run"]["resume"] = "never"
    assert not resumes_from_checkpoint(from_dict(d))

