"""Backbones, the two-head ReID model, and TransReID checkpoint loading (checkpoints saved to disk)."""
import argparse
import fractions
import math

import pytest
import torch
import torch.nn.functional as F

from hilcore.train.backbones import (GeM, ReIDModel, ResNet50, TinyCNN, VisionTransformer, _infer_grid,
                                     build_model, load_transreid_checkpoint, resize_pos_embed)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def vit_b16_param_count(tokens):
    """ViT-B/16 without classifier, counted from the architecture: 768 wide, 12 blocks, MLP 3072."""
    d, h = 768, 3072
    patch = d * 3 * 16 * 16 + d
    block = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    return patch + d + tokens * d + 12 * block + 2 * d


# ------------------------------------------------------------------------------------ backbones
def test_vit_b16_full_size():
    model = build_model("vit_b16")
    vit = model.backbone
    assert vit.grid == (18, 9)
    assert n_params(vit) == vit_b16_param_count(1 + 18 * 9)  # 85,772,544
    x = torch.rand(2, 3, 288, 144)
    model.train()
    out = model(x)
    assert set(out) == {"d", "s"}
    assert out["d"].shape == (2, 768) and out["s"].shape == (2, 768)
    model.eval()
    f = model.extract(x)
    assert f.shape == (2, 1536)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="x"):
        vit(torch.rand(1, 3, 256, 128))


def test_resnet50_shapes_and_last_stride():
    torch.manual_seed(0)
    r = ResNet50(pooling="avg")
    assert n_params(r) == 23_508_032  # torchvision's resnet50 minus its fc layer
    x = torch.rand(2, 3, 64, 32)
    r.eval()
    with torch.no_grad():
        fmap = r.forward_features(x)
        assert fmap.shape == (2, 2048, 4, 2)  # overall stride 16: the last stride is 1
        torch.testing.assert_close(r(x), fmap.mean(dim=(2, 3)))
    assert ResNet50(last_stride=2).eval().forward_features(x).shape == (2, 2048, 2, 1)
    model = build_model("resnet50", s_dim=128)
    out = model(x)
    assert out["d"].shape == (2, 2048) and out["s"].shape == (2, 128)
    assert model.feat_dim == 2048 + 128


def test_gem_pooling():
    x = torch.rand(3, 5, 4, 2) + 0.1
    g = GeM(p=3.0)
    torch.testing.assert_close(g(x), (x ** 3).mean(dim=(2, 3)) ** (1 / 3))
    g1 = GeM(p=1.0)
    torch.testing.assert_close(g1(x), x.mean(dim=(2, 3)))
    assert g.p.requires_grad


def test_tiny_cnn():
    t = TinyCNN()
    assert 100_000 <= n_params(t) <= 500_000
    model = build_model("tiny")
    x = torch.rand(4, 3, 64, 32)
    out = model(x)
    assert out["d"].shape == (4, 256) and out["s"].shape == (4, 256)
    loss = out["d"].pow(2).sum() + out["s"].pow(2).sum()
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    # BNNeck shifts are frozen
    assert not model.heads["d"].bn.bias.requires_grad and not model.heads["s"].bn.bias.requires_grad


def test_extract_is_normalised_concatenation():
    model = build_model("tiny", s_dim=64)
    x = torch.rand(6, 3, 32, 16)
    model.train()
    model(x)  # move the BN running statistics off their initial values
    model.eval()
    with torch.no_grad():
        out = model(x)
    f = model.extract(x)
    d = out["d"] / out["d"].norm(dim=1, keepdim=True)
    s = out["s"] / out["s"].norm(dim=1, keepdim=True)
    torch.testing.assert_close(f, torch.cat([d, s], dim=1) / math.sqrt(2))
    assert f.shape == (6, 256 + 64)
    assert not f.requires_grad


def test_build_model_errors():
    with pytest.raises(ValueError, match="name"):
        build_model("vit_l16")
    with pytest.raises(ValueError, match="pretrained"):
        build_model("tiny", pretrained={})
    with pytest.raises(ValueError, match="pooling"):
        build_model("resnet50", pooling="max")
    with pytest.raises(ValueError, match="x"):
        TinyCNN()(torch.rand(2, 1, 8, 8))


# ------------------------------------------------------------------------ checkpoint loading
SMALL = dict(embed_dim=64, depth=2, num_heads=4)


def small_vit(seed, img_size=(288, 144)):
    torch.manual_seed(seed)
    return VisionTransformer(img_size=img_size, **SMALL).eval()


def source_state(seed, img_size=(288, 144)):
    src = small_vit(seed, img_size)
    return src, {k: v.clone() for k, v in src.state_dict().items()}


def heads_like(prefix):
    torch.manual_seed(99)
    return {prefix + "classifier.weight": torch.randn(10, 64), prefix + "bottleneck.weight": torch.randn(64),
            prefix + "bottleneck.bias": torch.randn(64), prefix + "head.weight": torch.randn(10, 64)}


def wrap(kind, sd):
    if kind == "model/module.":
        return {"model": {"module." + k: v for k, v in sd.items()} | heads_like("module."), "epoch": 3}
    if kind == "state_dict/base.":
        return {"state_dict": {"base." + k: v for k, v in sd.items()} | heads_like("")}
    if kind == "dino":
        other = {"module.backbone." + k: torch.randn_like(v) for k, v in sd.items()}
        return {"teacher": {"backbone." + k: v for k, v in sd.items()}, "student": other, "epoch": 100,
                "args": argparse.Namespace(arch="vit_base", patch_size=16)}
    if kind == "plain":
        return dict(sd)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["model/module.", "state_dict/base.", "dino", "plain"])
def test_load_checkpoint_from_disk(tmp_path, kind):
    src, sd = source_state(1)
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(kind, sd), path)
    dst = small_vit(2)
    assert not torch.equal(dst.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    rep = load_transreid_checkpoint(dst, str(path))
    assert rep.missing == [] and rep.unexpected == [] and rep.resized == []
    if kind in ("model/module.", "state_dict/base."):
        assert len(rep.ignored) == 4
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x = torch.rand(2, 3, 288, 144)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_load_into_reid_model_keeps_heads(tmp_path):
    _, sd = source_state(1)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module.base." + k: v for k, v in sd.items()}}, path)
    torch.manual_seed(5)
    model = ReIDModel(VisionTransformer(**SMALL), s_dim=32)
    heads_before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    rep = load_transreid_checkpoint(model, path)
    assert rep.missing == []
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k
    for k, v in model.heads.state_dict().items():
        assert torch.equal(v, heads_before[k]), k


def test_load_jax_style_patch_weight_and_dist_token():
    src, sd = source_state(1)
    sd = dict(sd)
    sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].reshape(64, -1)
    dst = small_vit(2)
    rep = load_transreid_checkpoint(dst, sd)
    assert torch.equal(dst.patch_embed.proj.weight, src.patch_embed.proj.weight)
    assert rep.missing == []


def bilinear_ref(grid, out_h, out_w):
    """Half-pixel bilinear resize (align_corners=False, edge clamped) of [h, w, D], written out by hand."""
    h, w, _ = grid.shape

    def coords(n_in, n_out):
        res = []
        for i in range(n_out):
            s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(math.floor(s)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            res.append((i0, i1, s - i0))
        return res

    out = torch.empty(out_h, out_w, grid.shape[2], dtype=torch.float64)
    for i, (r0, r1, a) in enumerate(coords(h, out_h)):
        for j, (c0, c1, b) in enumerate(coords(w, out_w)):
            g = grid.double()
            out[i, j] = ((1 - a) * (1 - b) * g[r0, c0] + (1 - a) * b * g[r0, c1]
                         + a * (1 - b) * g[r1, c0] + a * b * g[r1, c1])
    return out


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_load_resizes_pos_embed_16x8_to_18x9(tmp_path, interpolation):
    src, sd = source_state(1, img_size=(256, 128))
    assert src.grid == (16, 8)
    path = tmp_path / "ssl.pth"
    torch.save({"teacher": {"backbone." + k: v for k, v in sd.items()}}, path)
    dst = small_vit(2)
    rep = load_transreid_checkpoint(dst, path, interpolation=interpolation)
    assert rep.resized == ["backbone.pos_embed"] and rep.missing == [] and rep.unexpected == []
    for k, v in dst.state_dict().items():
        if k != "pos_embed":
            assert torch.equal(v, sd[k]), k
    pe = dst.pos_embed.detach()
    assert pe.shape == (1, 1 + 18 * 9, 64)
    assert torch.equal(pe[:, 0], sd["pos_embed"][:, 0])  # cls token kept
    old = sd["pos_embed"][0, 1:].reshape(16, 8, 64)
    new = pe[0, 1:].reshape(18, 9, 64)
    if interpolation == "bilinear":
        torch.testing.assert_close(new.double(), bilinear_ref(old, 18, 9), rtol=1e-5, atol=1e-6)
    # properties of any interpolation: a constant field stays constant; a field constant along the
    # columns stays so (the grid is read row-major as 16 rows x 8 columns, not transposed)
    const = torch.full((1, 1 + 128, 64), 0.25)
    torch.testing.assert_close(resize_pos_embed(const, (18, 9), mode=interpolation),
                               torch.full((1, 1 + 162, 64), 0.25))
    rows = torch.arange(16.0).view(16, 1, 1).expand(16, 8, 64).reshape(1, 128, 64)
    r = resize_pos_embed(torch.cat([torch.zeros(1, 1, 64), rows], 1), (18, 9), mode=interpolation)
    r = r[0, 1:].reshape(18, 9, 64)
    torch.testing.assert_close(r, r[:, :1].expand_as(r))
    assert (r[1:, 0, 0] - r[:-1, 0, 0] >= -1e-5).all() and r[-1, 0, 0] > r[0, 0, 0] + 10


def test_load_resizes_square_224_grid():
    torch.manual_seed(3)
    sd = small_vit(1, img_size=(224, 224)).state_dict()
    sd = {k: v.clone() for k, v in sd.items()}
    sd["pos_embed"][0, 1:] = 0.5  # constant grid: any interpolation keeps it
    dst = small_vit(2)
    rep = load_transreid_checkpoint(dst, {"model": sd})
    assert rep.resized == ["pos_embed"]
    torch.testing.assert_close(dst.pos_embed[0, 1:].detach(), torch.full((162, 64), 0.5))


def test_infer_grid():
    assert _infer_grid(128, (18, 9)) == (16, 8)
    assert _infer_grid(196, (18, 9)) == (14, 14)
    assert _infer_grid(210, (18, 9)) == (21, 10)  # TransReID 256x128 with stride 12
    assert _infer_grid(162, (18, 9)) == (18, 9)


def test_load_errors(tmp_path):
    _, sd = source_state(1)
    dst = small_vit(2)
    bad = dict(sd)
    bad["blocks.1.mlp.fc1.weight"] = torch.randn(100, 64)
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        load_transreid_checkpoint(dst, {"state_dict": {"module." + k: v for k, v in bad.items()}})
    bad = dict(sd)
    bad["pos_embed"] = torch.randn(1, 129, 32)  # other embedding width: not resizable
    with pytest.raises(ValueError, match="pos_embed"):
        load_transreid_checkpoint(dst, bad)
    with pytest.raises(ValueError, match="no key"):
        load_transreid_checkpoint(dst, {"layer1.0.conv1.weight": torch.randn(3, 3)})
    with pytest.raises(FileNotFoundError):
        load_transreid_checkpoint(dst, tmp_path / "missing.pth")
    torch.save({"state_dict": sd, "extra": fractions.Fraction(1, 3)}, tmp_path / "opaque.pth")
    with pytest.raises(ValueError, match="outside the safe checkpoint format.*fractions.Fraction"):
        load_transreid_checkpoint(dst, tmp_path / "opaque.pth")
    with pytest.raises(ValueError, match="weights_only=False"):   # no full unpickling inside hilcore
        load_transreid_checkpoint(dst, tmp_path / "opaque.pth", weights_only=False)
    trusted = torch.load(tmp_path / "opaque.pth", weights_only=False)   # the caller's own decision
    assert load_transreid_checkpoint(dst, trusted).missing == []
    with pytest.raises(TypeError, match="model"):
        load_transreid_checkpoint(TinyCNN(), sd)
    extra = dict(sd) | {"mask_token": torch.zeros(1, 1, 64)}
    del extra["norm.bias"]
    rep = load_transreid_checkpoint(dst, extra)
    assert rep.unexpected == ["mask_token"] and rep.missing == ["norm.bias"]
    with pytest.raises(ValueError, match="strict"):
        load_transreid_checkpoint(dst, extra, strict=True)


def test_build_model_pretrained(tmp_path):
    _, sd = source_state(1)
    path = tmp_path / "c.pth"
    torch.save({"model": sd}, path)
    model = build_model("vit_b16", pretrained=path, s_dim=16, **SMALL)
    assert model.load_report.missing == []
    assert torch.equal(model.backbone.norm.weight, sd["norm.weight"])
    x = torch.rand(2, 3, 288, 144)
    out = model(x)
    assert out["d"].shape == (2, 64) and out["s"].shape == (2, 16)
    assert F.normalize(model.eval().extract(x), dim=1).shape == (2, 80)
