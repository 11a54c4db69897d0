"""The released HIL network (hilcore/train/hil_vit.py): layout, forward against a slow reference, loading."""
import math

import pytest
import torch
import torch.nn.functional as F

from hilcore.train.hil_vit import HILNet, load_hil_weights

TINY = dict(img_size=(32, 16), embed_dim=24, depth=3, num_heads=4, drop_path_rate=0.0)


def _randomise(net, seed=0):
    """Random values everywhere (BN statistics and affine too) so no layer is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                v = torch.rand(t.shape, generator=g) * 0.5 + 0.75 if "running_var" in name or name.endswith(
                    ("norm.weight", "norm1.weight", "norm2.weight", "IN.weight", "BN.weight", "neck.weight")) \
                    else torch.randn(t.shape, generator=g) * 0.2
                t.copy_(v)
    return net


# ---------------------------------------------------------------- a slow reference written from the release
def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)


def _bn(x, sd, p, eps=1e-5):
    sh = (1, -1) + (1,) * (x.dim() - 2)
    return ((x - sd[p + ".running_mean"].view(sh)) / torch.sqrt(sd[p + ".running_var"].view(sh) + eps)
            * sd[p + ".weight"].view(sh) + sd[p + ".bias"].view(sh))


def _block(x, sd, p, heads):
    B, N, C = x.shape
    h = _ln(x, sd, p + ".norm1")
    qkv = h @ sd[p + ".attn.qkv.weight"].T + sd[p + ".attn.qkv.bias"]
    q, k, v = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) * (C // heads) ** -0.5, dim=-1)
    o = (a @ v).transpose(1, 2).reshape(B, N, C) @ sd[p + ".attn.proj.weight"].T + sd[p + ".attn.proj.bias"]
    x = x + o
    h = _ln(x, sd, p + ".norm2")
    h = F.gelu(h @ sd[p + ".mlp.fc1.weight"].T + sd[p + ".mlp.fc1.bias"])
    return x + h @ sd[p + ".mlp.fc2.weight"].T + sd[p + ".mlp.fc2.bias"]


def _ibn(x, sd, p):
    half = x.shape[1] // 2
    a = F.instance_norm(x[:, :half], weight=sd[p + ".IN.weight"], bias=sd[p + ".IN.bias"], eps=1e-5)
    return torch.cat([a, _bn(x[:, half:], sd, p + ".BN")], dim=1)


def _stem(x, sd, p):
    x = F.relu(_ibn(F.conv2d(x, sd[p + ".conv.0.weight"], stride=2, padding=3), sd, p + ".conv.1"))
    x = F.relu(_ibn(F.conv2d(x, sd[p + ".conv.3.weight"], padding=1), sd, p + ".conv.4"))
    x = F.relu(_bn(F.conv2d(x, sd[p + ".conv.6.weight"], padding=1), sd, p + ".conv.7"))
    w = sd[p + ".proj.weight"]
    x = F.conv2d(x, w, sd[p + ".proj.bias"], stride=w.shape[-1])
    return x.flatten(2).transpose(1, 2)


def reference_eval(sd, x, modal, depth, heads):
    """feat, feat_s of the release's build_transformer in eval mode (sd without 'module.')."""
    t = _stem(x, sd, "base.patch_embed" if modal == "rgb" else "base.patch_embed2")
    t = torch.cat([sd["base.cls_token"].expand(x.shape[0], -1, -1), t], 1) + sd["base.pos_embed"]
    x_s = t[:, 1:]
    for i in range(depth - 1):
        t = _block(t, sd, f"base.blocks.{i}", heads)
    g = _ln(_block(t, sd, "b1.0", heads), sd, "b1.1")[:, 0]
    s = _ln(_block(torch.cat([t[:, :1], x_s], 1), sd, "b2.0", heads), sd, "b2.1")[:, 0]
    return _bn(g, sd, "bottleneck"), _bn(s, sd, "bottlenecks")


@pytest.mark.parametrize("modal", ["rgb", "ir"])
def test_eval_outputs_match_reference(modal):
    net = _randomise(HILNet(**TINY)).eval()
    x = torch.rand(5, 3, 32, 16, generator=torch.Generator().manual_seed(1))
    out = net(x, modal)
    d, s = reference_eval({k: v for k, v in net.state_dict().items()}, x, modal, TINY["depth"], 4)
    assert torch.allclose(out["d"], d, atol=1e-5) and torch.allclose(out["s"], s, atol=1e-5)
    # the two patch embeddings are distinct parameters
    assert not torch.allclose(net(x, "rgb")["d"], net(x, "ir")["d"])


def test_mixed_batch_equals_per_modality_in_eval():
    net = _randomise(HILNet(**TINY)).eval()
    x = torch.rand(6, 3, 32, 16)
    both = net(x, 2)
    assert torch.allclose(both["d"][:2], net(x[:2], "rgb")["d"], atol=1e-6)
    assert torch.allclose(both["s"][2:], net(x[2:], "ir")["s"], atol=1e-6)


def test_extract_is_normalised_concatenation_without_per_head_norm():
    net = _randomise(HILNet(**TINY)).eval()
    x = torch.rand(4, 3, 32, 16)
    o = net(x, "ir")
    want = torch.cat([o["d"], o["s"]], 1)
    want = want / want.norm(dim=1, keepdim=True)
    assert torch.allclose(net.extract(x, "ir"), want, atol=1e-6)


def test_bn_neck_shift_frozen():
    net = HILNet(**TINY)
    assert not net.bottleneck.bias.requires_grad and not net.bottlenecks.bias.requires_grad
    assert net.bottleneck.weight.requires_grad


def _release_checkpoint(net, tmp_path, module=True):
    sd = {("module." if module else "") + k: v.clone() for k, v in net.state_dict().items()}
    p = "module." if module else ""
    sd[p + "base.fc.weight"] = torch.zeros(1000, TINY["embed_dim"])
    sd[p + "base.fc.bias"] = torch.zeros(1000)
    sd[p + "base.decoder_norm.weight"] = torch.ones(1)
    path = tmp_path / "model_best.pth.tar"
    import numpy as np

    # the release saves best_mAP = cmc[0] + mAP, a NumPy float64
    torch.save({"state_dict": sd, "epoch": 7, "best_mAP": np.float64(0.5) + np.float32(0.25)}, path)
    return path


@pytest.mark.parametrize("module", [True, False])
def test_release_checkpoint_roundtrip(tmp_path, module):
    src = _randomise(HILNet(**TINY), seed=3).eval()
    path = _release_checkpoint(src, tmp_path, module)
    dst = HILNet(**TINY).eval()
    rep = load_hil_weights(dst, path)
    assert rep.missing == [] and rep.unexpected == []
    assert sorted(k.replace("module.", "") for k in rep.ignored) == [
        "base.decoder_norm.weight", "base.fc.bias", "base.fc.weight"]
    x = torch.rand(3, 3, 32, 16)
    for m in ("rgb", "ir"):
        a, b = src(x, m), dst(x, m)
        assert torch.equal(a["d"], b["d"]) and torch.equal(a["s"], b["s"])


def test_partial_checkpoint_reports_missing_and_unexpected(tmp_path):
    src = _randomise(HILNet(**TINY))
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("b2.")}
    sd["base.extra_thing"] = torch.zeros(2)
    rep = load_hil_weights(HILNet(**TINY), {"state_dict": sd})
    assert rep.unexpected == ["base.extra_thing"]
    assert rep.missing and all(k.startswith("b2.") for k in rep.missing)
    with pytest.raises(ValueError, match="strict"):
        load_hil_weights(HILNet(**TINY), {"state_dict": sd}, strict=True)


def test_shape_mismatch_names_the_key(tmp_path):
    src = HILNet(**{**TINY, "embed_dim": 28})
    path = _release_checkpoint(src, tmp_path)
    with pytest.raises(ValueError, match=r"module\.base\.cls_token|module\.base\.pos_embed"):
        load_hil_weights(HILNet(**TINY), path)
    sd = HILNet(**TINY).state_dict()
    sd["bottlenecks.weight"] = torch.ones(5)
    with pytest.raises(ValueError, match=r"'bottlenecks\.weight'.*\(5,\)"):
        load_hil_weights(HILNet(**TINY), {"state_dict": sd})


def test_pretrained_vit_file_layout(tmp_path):
    """A TransReID-SSL-style file (base keys, a 4x2 pos-embed grid, a head) loads into the base, copies follow."""
    src = _randomise(HILNet(**{**TINY, "img_size": (64, 32)}), seed=5)   # grid 4x2
    sd = {k[len("base."):]: v for k, v in src.state_dict().items()
          if k.startswith("base.") and not k.startswith("base.patch_embed2")}
    sd["head.weight"] = torch.zeros(10, TINY["embed_dim"])
    path = tmp_path / "vit_base_ics_cfs_lup.pth"
    torch.save({"teacher": {"backbone." + k: v for k, v in sd.items()}}, path)
    net = HILNet(**TINY)                                                 # grid 2x1
    rep = load_hil_weights(net, path)
    assert rep.resized == ["backbone.pos_embed"] and rep.ignored == ["backbone.head.weight"]
    assert all(k.startswith("patch_embed2.") for k in rep.missing)       # filled by the copy instead
    nsd = net.state_dict()
    assert torch.equal(nsd["base.patch_embed.proj.weight"], sd["patch_embed.proj.weight"])
    assert torch.equal(nsd["base.patch_embed2.conv.0.weight"], sd["patch_embed.conv.0.weight"])
    last = TINY["depth"] - 1
    for h in ("b1", "b2"):
        assert torch.equal(nsd[f"{h}.0.attn.qkv.weight"], sd[f"blocks.{last}.attn.qkv.weight"])
        assert torch.equal(nsd[f"{h}.1.weight"], sd["norm.weight"])
    # pos_embed: cls kept, grid resized bilinearly (align_corners False) from 4x2 to 2x1
    g = sd["pos_embed"][0, 1:].reshape(1, 4, 2, -1).permute(0, 3, 1, 2)
    want = F.interpolate(g, size=(2, 1), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.allclose(nsd["base.pos_embed"][0, 1:], want, atol=1e-6)
    assert torch.equal(nsd["base.pos_embed"][0, 0], sd["pos_embed"][0, 0])


def test_vit_b_key_layout_shapes():
    with torch.device("meta"):
        net = HILNet()
    sd = net.state_dict()
    assert net.grid == (18, 9)
    want = {"base.patch_embed.proj.weight": (768, 64, 8, 8), "base.patch_embed.conv.0.weight": (64, 3, 7, 7),
            "base.patch_embed.conv.1.IN.weight": (32,), "base.patch_embed.conv.1.BN.running_mean": (32,),
            "base.patch_embed.conv.7.running_var": (64,), "base.patch_embed2.proj.weight": (768, 64, 8, 8),
            "base.pos_embed": (1, 163, 768), "base.cls_token": (1, 1, 768), "base.blocks.11.attn.qkv.weight":
            (2304, 768), "base.blocks.11.mlp.fc1.weight": (3072, 768), "b1.0.attn.qkv.bias": (2304,),
            "b2.1.weight": (768,), "bottleneck.weight": (768,), "bottlenecks.running_var": (768,)}
    for k, shape in want.items():
        assert tuple(sd[k].shape) == shape, k
    assert "base.blocks.12.norm1.weight" not in sd
    n_params = sum(math.prod(p.shape) for p in net.parameters())
    assert 100_000_000 < n_params < 110_000_000   # ViT-B (86M) + two patch embeddings + two block copies


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"base.cls_token": torch.zeros(1)}, "x": _Evil(marker)}, path)
    with pytest.raises(ValueError, match="does not unpickle"):
        load_hil_weights(HILNet(**TINY), path)
    assert not marker.exists()
