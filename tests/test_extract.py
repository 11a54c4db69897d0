"""``hil extract``: the release's clustering features of a folder, against the same computed by hand."""
import numpy as np
import pytest
import torch
from PIL import Image

from hilcore.cli import main
from hilcore.train.hil_vit import HILNet

KW = dict(embed_dim=24, depth=3, num_heads=4, drop_path_rate=0.0)
SIZE = (32, 16)


def _net(seed=0):
    torch.manual_seed(seed)
    net = HILNet(img_size=SIZE, **KW)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75 if "running_var" in name
                        else torch.randn(t.shape, generator=g) * 0.2)
    return net.eval()


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    names = ["b_0002.jpg", "a_0001.png", "sub/c_0003.jpg", "a_0000.jpg"]
    for i, n in enumerate(names):
        h, w = 40 + 7 * i, 19 + 3 * i      # odd sizes: the resize matters
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(imgs / n, quality=95)
    net = _net(1)
    sd = {"module." + k: v for k, v in net.state_dict().items()}
    sd["module.base.fc.weight"] = torch.zeros(7, KW["embed_dim"])
    ckpt = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": sd, "epoch": 3}, ckpt)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{size: [{SIZE[0]}, {SIZE[1]}]}}\n"
                   f"model: {{backbone: hil_vit, kwargs: {{embed_dim: 24, depth: 3, num_heads: 4}}}}\n")
    return tmp_path, imgs, ckpt, cfg, net


def _by_hand(net, path, modal, heads="both"):
    with Image.open(path) as im:
        im = im.convert("RGB").resize((SIZE[1], SIZE[0]), Image.BICUBIC)
        a = np.asarray(im, dtype=np.float64) / 255.0
    a = (a - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = torch.tensor(a, dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad():
        o1, o2 = net(x, modal), net(x.flip(3), modal)
    d, s = (o1["d"] + o2["d"]) / 2, (o1["s"] + o2["s"]) / 2
    v = {"both": torch.cat([d, s], 1), "d": d, "s": s}[heads][0]
    return (v / v.norm()).numpy()


@pytest.mark.parametrize("modal,heads", [("ir", "both"), ("rgb", "both"), ("rgb", "d"), ("ir", "s")])
def test_extract_matches_hand_computation(setup, modal, heads):
    tmp, imgs, ckpt, cfg, net = setup
    out = tmp / f"f_{modal}_{heads}.npy"
    rc = main(["extract", "--checkpoint", str(ckpt), "--images", str(imgs), "--modality", modal, "--out", str(out),
               "--config", str(cfg), "--batch-size", "3", "--heads", heads, "--progress", "off"])
    assert rc == 0
    f = np.load(out)
    order = ["a_0000.jpg", "a_0001.png", "b_0002.jpg", "sub/c_0003.jpg"]
    assert (tmp / f"f_{modal}_{heads}_files.txt").read_text().split() == order
    want = np.stack([_by_hand(net, imgs / n, modal, heads) for n in order])
    assert f.shape == want.shape and f.dtype == np.float32
    assert np.abs(f - want).max() <= 1e-4


def test_branches_differ(setup):
    tmp, imgs, ckpt, cfg, _ = setup
    outs = []
    for m in ("rgb", "ir"):
        out = tmp / f"{m}.npy"
        assert main(["extract", "--checkpoint", str(ckpt), "--images", str(imgs), "--modality", m, "--out",
                     str(out), "--config", str(cfg), "--progress", "off"]) == 0
        outs.append(np.load(out))
    assert np.abs(outs[0] - outs[1]).max() > 1e-3


def _err(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_errors(setup, capsys, tmp_path):
    tmp, imgs, ckpt, cfg, _ = setup
    base = ["extract", "--modality", "rgb", "--out", str(tmp / "o.npy"), "--config", str(cfg), "--progress", "off"]
    rc, err = _err(capsys, base + ["--checkpoint", str(ckpt), "--images", str(tmp / "nope")])
    assert rc == 2 and "no such folder" in err
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"not an image at all")
    rc, err = _err(capsys, base + ["--checkpoint", str(ckpt), "--images", str(bad)])
    assert rc == 2 and "x.jpg" in err and "cannot be read" in err
    wrong = tmp / "wrong.pth"
    torch.save({"state_dict": {"foo.weight": torch.zeros(3)}}, wrong)
    rc, err = _err(capsys, base + ["--checkpoint", str(wrong), "--images", str(imgs)])
    assert rc == 2 and "no key matches" in err
    other = tmp / "other.pth"
    torch.save({"state_dict": HILNet(img_size=SIZE, **{**KW, "embed_dim": 32}).state_dict()}, other)
    rc, err = _err(capsys, base + ["--checkpoint", str(other), "--images", str(imgs)])
    assert rc == 2 and "does not fit" in err and "base." in err
    rc, err = _err(capsys, base + ["--checkpoint", str(tmp / "missing.pth"), "--images", str(imgs)])
    assert rc == 2 and "does not exist" in err
    assert not (tmp / "o.npy").exists()


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused(setup, capsys):
    tmp, imgs, ckpt, cfg, net = setup
    marker = tmp / "MARKER"
    evil = tmp / "evil.pth.tar"
    torch.save({"state_dict": {k: v for k, v in net.state_dict().items()}, "payload": _Evil(marker)}, evil)
    assert not marker.exists()
    rc, err = _err(capsys, ["extract", "--checkpoint", str(evil), "--images", str(imgs), "--modality", "ir",
                            "--out", str(tmp / "e.npy"), "--config", str(cfg), "--progress", "off"])
    assert rc == 2 and "does not unpickle" in err
    assert not marker.exists() and not (tmp / "e.npy").exists()
