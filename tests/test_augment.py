"""Augmentation invariants: shapes, ranges, determinism, and what each op may change."""
import pickle

import pytest
import torch

from hilcore.train.augment import (IMAGENET_MEAN, IMAGENET_STD, build_transforms, channel_exchange,
                                   color_jitter, denormalize, hflip, ir_adapt, normalize, pad_crop,
                                   random_erasing, resize, to_grey)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(b=8, h=20, w=12, seed=0, lo=0.0, hi=1.0):
    x = torch.rand(b, 3, h, w, generator=gen(seed))
    return lo + (hi - lo) * x


OPS = {
    "color_jitter": lambda x, g: color_jitter(x, 0.4, 0.4, 0.4, 1.0, g),
    "pad_crop": lambda x, g: pad_crop(x, 3, generator=g),
    "hflip": lambda x, g: hflip(x, 0.5, g),
    "random_erasing": lambda x, g: random_erasing(x, 1.0, generator=g),
    "channel_replicate": lambda x, g: channel_exchange(x, 1.0, "replicate", g),
    "channel_permute": lambda x, g: channel_exchange(x, 1.0, "permute", g),
    "ir_adapt": lambda x, g: ir_adapt(x, 1.0, 0.5, 0.5, g),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_shape_range_determinism(name):
    op = OPS[name]
    x = images()
    a = op(x, gen(7))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, op(x, gen(7)))
    assert not torch.equal(a, op(x, gen(8)))
    assert torch.equal(x, images())  # input untouched


def test_hflip():
    x = images()
    assert torch.equal(hflip(x, 1.0, gen()), x.flip(-1))
    assert torch.equal(hflip(x, 0.0, gen()), x)
    y = hflip(x, 0.5, gen(3))
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(8)]
    kept = [torch.equal(y[i], x[i]) for i in range(8)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_random_erasing_changes_only_a_rectangle():
    x = images(b=16, h=24, w=12, lo=0.5, hi=1.0)
    value = (0.1, 0.2, 0.3)
    y = random_erasing(x, 1.0, value=value, generator=gen(1))
    n_erased = 0
    for i in range(16):
        changed = (y[i] != x[i]).any(dim=0)
        if not changed.any():
            continue
        n_erased += 1
        rows = changed.any(dim=1).nonzero().flatten()
        cols = changed.any(dim=0).nonzero().flatten()
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert changed[r0:r1, c0:c1].all()  # the changed pixels fill their bounding box
        assert changed.sum() == (r1 - r0) * (c1 - c0)
        assert r1 - r0 < 24 and c1 - c0 < 12
        area = (r1 - r0) * (c1 - c0) / (24 * 12)
        assert 0.01 <= area <= 0.45
        for c, v in enumerate(value):
            assert torch.allclose(y[i, c, r0:r1, c0:c1], torch.tensor(v))
    assert n_erased >= 12
    assert torch.equal(random_erasing(x, 0.0, generator=gen(1)), x)


def test_pad_crop_is_a_window_of_the_padded_image():
    x = images(b=6, h=10, w=6)
    assert torch.equal(pad_crop(x, 0, generator=gen()), x)
    p = 2
    y = pad_crop(x, p, fill=0.0, generator=gen(4))
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(6):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(y[i], xp[i, :, dy:dy + 10, dx:dx + 6])]
        assert hits, i
        offsets.add(hits[0])
    assert len(offsets) > 1


def test_channel_exchange():
    x = images()
    y = channel_exchange(x, 1.0, "replicate", gen(2))
    sources = set()
    for i in range(8):
        assert torch.equal(y[i, 0], y[i, 1]) and torch.equal(y[i, 1], y[i, 2])
        src = [c for c in range(3) if torch.equal(y[i, 0], x[i, c])]
        assert src
        sources.add(src[0])
    assert len(sources) > 1
    y = channel_exchange(x, 1.0, "permute", gen(2))
    for i in range(8):
        perm = [next(c for c in range(3) if torch.equal(y[i, k], x[i, c])) for k in range(3)]
        assert sorted(perm) == [0, 1, 2]
    assert torch.equal(channel_exchange(x, 0.0, "permute", gen(2)), x)


def test_color_jitter():
    x = images()
    assert torch.equal(color_jitter(x, 0.5, 0.5, 0.5, p=0.0, generator=gen()), x)
    torch.testing.assert_close(color_jitter(x, 0.0, 0.0, 0.0, p=1.0, generator=gen()), x)
    y = color_jitter(x, 0.5, 0.5, 0.5, p=0.5, generator=gen(2))
    kept = [torch.equal(y[i], x[i]) for i in range(8)]
    assert any(kept) and not all(kept)
    # brightness only: a per-sample scale, clamped
    y = color_jitter(x * 0.5, 0.3, 0.0, 0.0, p=1.0, generator=gen(5))
    ratio = y / (x * 0.5).clamp(min=1e-6)
    for i in range(8):
        r = ratio[i][x[i] > 0.05]
        assert r.max() - r.min() < 1e-4 and 0.69 < r.mean() < 1.31
    # grey stays grey
    g = to_grey(x)
    z = color_jitter(g, 0.4, 0.4, 0.4, p=1.0, generator=gen(5))
    torch.testing.assert_close(z[:, 0], z[:, 1])
    torch.testing.assert_close(z[:, 1], z[:, 2])


def test_ir_adapt_and_grey():
    x = images()
    y = ir_adapt(x, 1.0, 0.3, 0.2, gen(1))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    g = to_grey(x)
    torch.testing.assert_close(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    # no change of contrast/brightness and luminance source: exactly to_grey
    torch.testing.assert_close(ir_adapt(x, 0.0, 0.0, 0.0, gen(1)), g)


def test_normalize_roundtrip():
    x = images()
    n = normalize(x)
    torch.testing.assert_close(n[:, 1], (x[:, 1] - IMAGENET_MEAN[1]) / IMAGENET_STD[1])
    torch.testing.assert_close(denormalize(n), x)


@pytest.mark.parametrize("modality", ["rgb", "ir"])
@pytest.mark.parametrize("train", [True, False])
def test_build_transforms(modality, train):
    x = images(b=4, h=40, w=20)
    tf = build_transforms(modality, train, size=(24, 12))
    a = tf(x, generator=gen(0))
    assert a.shape == (4, 3, 24, 12)
    assert torch.equal(a, tf(x, generator=gen(0)))
    if train:
        assert not torch.equal(a, tf(x, generator=gen(1)))
    raw = denormalize(a)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    if modality == "ir":
        torch.testing.assert_close(raw[:, 0], raw[:, 1], rtol=0, atol=1e-5)
        torch.testing.assert_close(raw[:, 1], raw[:, 2], rtol=0, atol=1e-5)
        plain = build_transforms("ir", train, size=(24, 12), normalized=False)(x, generator=gen(0))
        assert torch.equal(plain[:, 0], plain[:, 1]) and torch.equal(plain[:, 1], plain[:, 2])
    if not train:
        torch.testing.assert_close(a, normalize(resize(x, (24, 12)) if modality == "rgb"
                                                else to_grey(resize(x, (24, 12)))))
    # a single [3, H, W] image works too
    assert tf(x[0], generator=gen(0)).shape == (3, 24, 12)


def test_transform_own_generator_and_steps():
    x = images(b=4)
    t1 = build_transforms("rgb", True, size=(20, 12), generator=gen(3))
    t2 = build_transforms("rgb", True, size=(20, 12), generator=gen(3))
    assert torch.equal(t1(x), t2(x))
    assert t1.steps == ["resize", "color_jitter", "channel_exchange", "pad_crop", "hflip", "random_erasing",
                        "normalize"]
    assert build_transforms("ir", False).steps == ["resize", "to_grey", "normalize"]
    # transforms pickle (DataLoader workers under the spawn start method)
    t3 = pickle.loads(pickle.dumps(build_transforms("rgb", True, size=(20, 12))))
    assert torch.equal(t3(x, generator=gen(4)), t1(x, generator=gen(4)))


def test_augment_errors():
    with pytest.raises(ValueError, match="modality"):
        build_transforms("thermal", True)
    with pytest.raises(ValueError, match="x"):
        hflip(torch.rand(2, 1, 4, 4))
    with pytest.raises(TypeError, match="x"):
        hflip(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="generator"):
        hflip(torch.rand(2, 3, 4, 4), generator=0)
    with pytest.raises(ValueError, match="p"):
        hflip(torch.rand(2, 3, 4, 4), p=1.5)
    with pytest.raises(ValueError, match="mode"):
        channel_exchange(torch.rand(2, 3, 4, 4), mode="swap")
    with pytest.raises(ValueError, match="value"):
        random_erasing(torch.rand(2, 3, 8, 8), 1.0, value=(0.1, 0.2))
