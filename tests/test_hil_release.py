"""The release's loop as options (hilcore/train/hil_release.py, loop.py): each piece against a slow loop
written from /work/shared/HIL_RELEASE.md, and one run of configs/sysu_hil.yaml on tiny synthetic data."""
import colorsys
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hilcore
from hilcore.train import hil_release as R
from hilcore.train.config import from_dict, load_config
from hilcore.train.loop import HeadMemories, Trainer


# ================================================================================================ sampler
def _sampler_data():
    # 5 identities: 0 and 1 on three cameras, 2 on one camera (6 images), 3 a single image, 4 two cameras
    labels = np.array([0] * 9 + [1] * 6 + [2] * 6 + [3] + [4] * 5 + [-1] * 4)
    cams = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3] + [1, 2, 2, 4, 4, 4] + [5] * 6 + [1] + [1, 1, 1, 1, 2] + [1] * 4)
    return labels, cams


def test_camera_sampler_groups():
    labels, cams = _sampler_data()
    K = 4
    s = R.CameraSampler(labels, cams, P=1, K=K, seed=3)
    seen_anchor = {c: set() for c in range(5)}
    for _ in range(400):
        b = s.batch()
        assert b.dtype == np.int64 and b.size == K          # P*K per batch (the singleton group is merged)
        assert (labels[b] >= 0).all()                       # noise never sampled
    # groups: decode a whole pass (batch size = the whole pass so groups stay visible)
    s = R.CameraSampler(labels, cams, P=100, K=K, seed=5)
    for _ in range(200):
        stream = s.batch()           # a pass shorter than one batch comes whole
        assert sorted(set(labels[stream])) == [0, 1, 2, 3, 4]
        pos = 0
        while pos < len(stream):
            c = labels[stream[pos]]
            n = 1 if c == 3 else K
            g = stream[pos:pos + n]
            assert (labels[g] == c).all()
            a, rest = g[0], g[1:]
            seen_anchor[c].add(int(a))
            if c in (0, 1, 4):      # other cameras exist: the K-1 come from other cameras than the anchor's
                assert (cams[rest] != cams[a]).all()
                others = np.flatnonzero((labels == c) & (cams != cams[a]))
                if others.size >= K:
                    assert len(set(rest.tolist())) == K - 1     # without replacement
            elif c == 2:            # one camera: other members, never the anchor itself
                assert (rest != a).all()
            pos += n
    # anchors are drawn among all members
    for c in range(5):
        assert seen_anchor[c] == set(np.flatnonzero(labels == c).tolist())


def test_camera_sampler_drop_last_and_passes():
    labels = np.repeat(np.arange(7), 4)
    cams = np.tile([1, 2, 1, 2], 7)
    s = R.CameraSampler(labels, cams, P=2, K=4, seed=0)
    # one pass = 7 groups of 4 -> 3 batches of 8 (the 7th group dropped), then a new pass
    first = [s.batch() for _ in range(3)]
    ids = [set(labels[b].tolist()) for b in first]
    assert all(len(i) == 2 for i in ids)
    assert len(set().union(*ids)) == 6
    with pytest.raises(ValueError, match="noise"):
        R.CameraSampler(np.full(5, -1), np.ones(5), 2, 2)
    with pytest.raises(ValueError, match="cams"):
        R.CameraSampler(labels, cams[:-1], 2, 2)


# ================================================================================================ augmentation
def _channels_image(B, H=6, W=5):
    x = torch.empty(B, 3, H, W)
    x[:, 0], x[:, 1], x[:, 2] = 0.1, 0.5, 0.9
    return x


def test_channel_exchange_statistics():
    g = torch.Generator().manual_seed(0)
    y = R.channel_exchange_release(_channels_image(6000), generator=g)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    v = y[:, 0, 0, 0]
    freq = [float((v == c).float().mean()) for c in (0.1, 0.5, 0.9)]
    assert sum(freq) == pytest.approx(1.0)
    assert all(abs(f - 1 / 3) < 0.03 for f in freq)


def test_channel_adap_gray_statistics():
    g = torch.Generator().manual_seed(1)
    x = _channels_image(16000)
    y = R.channel_adap_gray(x, p=0.5, generator=g)
    grey = 0.2989 * 0.1 + 0.5870 * 0.5 + 0.1140 * 0.9
    same = (y == x).all(dim=(1, 2, 3))
    equal = (y[:, 0] == y[:, 1]).all(dim=(1, 2)) & (y[:, 1] == y[:, 2]).all(dim=(1, 2))
    v = y[:, 0, 0, 0]
    fr = {"unchanged": float(same.float().mean()),
          "grey": float((equal & ((v - grey).abs() < 1e-6)).float().mean())}
    for c in (0.1, 0.5, 0.9):
        fr[c] = float((equal & (v == c)).float().mean())
    assert sum(fr.values()) == pytest.approx(1.0)
    assert abs(fr["unchanged"] - 1 / 8) < 0.015 and abs(fr["grey"] - 1 / 8) < 0.015
    assert all(abs(fr[c] - 1 / 4) < 0.02 for c in (0.1, 0.5, 0.9))


def test_channel_random_erasing_statistics():
    g = torch.Generator().manual_seed(2)
    H, W = 48, 24
    x = torch.full((4000, 3, H, W), 7.0)
    y = R.channel_random_erasing(x, p=0.5, generator=g)
    erased = (y != 7.0)
    hit = erased.any(dim=(1, 2, 3))
    assert abs(float(hit.float().mean()) - 0.5) < 0.03
    fill = torch.tensor(R.ERASE_FILL).view(3, 1, 1)
    areas, ratios = [], []
    for i in torch.nonzero(hit).flatten()[:800].tolist():
        m = erased[i, 0]
        assert torch.equal(erased[i, 0], erased[i, 1]) and torch.equal(erased[i, 1], erased[i, 2])
        assert torch.allclose(y[i][:, m], fill.expand(3, H, W)[:, m])
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        h, w = int(rows.numel()), int(cols.numel())
        assert int(m.sum()) == h * w and h < H and w < W      # one rectangle strictly inside
        areas.append(h * w / (H * W))
        ratios.append(h / w)
    areas = np.array(areas)
    assert areas.min() >= 0.015 and areas.max() <= 0.42
    assert abs(np.mean(areas) - 0.21) < 0.03                  # uniform area in [0.02, 0.4] (a bit under: fits)


def test_hue_shift_matches_colorsys():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(5, 3, 4, 3, generator=g)
    x[0, :, 0, 0] = torch.tensor([0.3, 0.3, 0.3])           # grey: no hue
    shift = torch.tensor([0.25, -0.4, 0.1, 0.5, -0.05])
    y = R._adjust_hue(x, shift)
    for b in range(5):
        for i in range(4):
            for j in range(3):
                h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
                want = colorsys.hsv_to_rgb((h + float(shift[b])) % 1.0, s, v)
                assert np.allclose(y[b, :, i, j].numpy(), want, atol=1e-5)


def test_color_jitter_release_factors():
    g = torch.Generator().manual_seed(5)
    x = torch.full((4000, 3, 2, 2), 0.5)
    y = R.color_jitter_release(x, brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0, generator=g)
    f = (y[:, 0, 0, 0] / 0.5).numpy()
    assert f.min() >= 0.5 - 1e-6 and f.max() <= 1.5 + 1e-6
    assert abs(f.mean() - 1.0) < 0.02 and abs(f.std() - 1 / math.sqrt(12)) < 0.02      # uniform [0.5, 1.5]
    z = R.color_jitter_release(torch.rand(3, 3, 4, 4), 0.0, 0.0, 0.0, 0.0, generator=g)
    assert z.shape == (3, 3, 4, 4)
    x = torch.rand(8, 3, 4, 4, generator=g)
    assert torch.allclose(R.color_jitter_release(x, 0.0, 0.0, 0.0, 0.0, generator=g), x)


def test_release_pipelines():
    steps = {(m, v): R.build_release_transforms(m, True, view=v).steps for m, v in (("rgb", 1), ("rgb", 2),
                                                                                    ("ir", 1))}
    base = ["color_jitter", "pad_crop", "hflip", "normalize", "channel_random_erasing"]
    assert steps[("rgb", 1)] == base
    assert steps[("rgb", 2)] == base + ["channel_exchange"]
    assert steps[("ir", 1)] == base + ["channel_adap_gray"]
    assert R.build_release_transforms("ir", False).steps == ["normalize"]


# ================================================================================================ clustering
def test_brst_over_all_outliers_count_in_the_threshold():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.05], [0.8, 0.6], [0.1, 1.0], [1.0, 0.0], [-1.0, 0.2]])
    lab = torch.tensor([0, 0, 1, -1, 2])
    got = R.brst_over_all(x, lab, protos, ratio=0.5)
    # slow loop: threshold per prototype over ALL rows (the outlier row 3 included)
    xn = F.normalize(x, dim=1)
    sim = xn @ protos.T
    want = []
    for i in range(5):
        if lab[i] < 0:
            want.append(-1)
            continue
        p = int(sim[i].argmax())
        want.append(p if sim[i, p] >= 0.5 * max(float(sim[j, p]) for j in range(5)) else -1)
    assert got.tolist() == want == [0, 0, 1, -1, -1]
    # the difference from hilcore.brst (threshold over the labelled rows only): make the outlier the max
    x2 = torch.tensor([[0.5, 0.86], [0.0, 1.0], [1.0, 0.0]])
    lab2 = torch.tensor([0, -1, 1])
    p2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    r = R.brst_over_all(x2 * 3.0, lab2, p2, ratio=0.9)          # row 0: 0.86 < 0.9 * 1.0 (outlier's) -> -1
    h = hilcore.brst(F.normalize(x2, dim=1), lab2, p2, ratio=0.9)
    assert r.tolist() == [-1, -1, 1] and int(h[0]) == 0


def test_segment_means_and_subcentres():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g) * 3
    lab = torch.tensor([0] * 20 + [1] * 4 + [2] * 12 + [-1] * 4)
    m = R.segment_means(x, lab)
    for c in range(3):
        assert torch.allclose(m[c], x[lab == c].mean(0), atol=1e-6)
    sub = R.kmeans_subcentres(x, lab, n_sub=4, weight=0.9, seed=0)
    assert sub.shape == (3, 5, 5)
    assert torch.allclose(sub[1], m[1].expand(5, 5), atol=1e-6)          # <= n_sub members: centre repeated
    from sklearn.cluster import KMeans

    for c in (0, 2):
        rows = x[lab == c].numpy()
        km = KMeans(n_clusters=4, random_state=0, n_init=10).fit_predict(rows)
        for k in range(4):
            want = 0.9 * m[c].numpy() + 0.1 * rows[km == k].mean(0)
            assert np.allclose(sub[c, 1 + k].numpy(), want, atol=1e-5)
        assert torch.allclose(sub[c, 0], m[c], atol=1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        R.segment_means(x, torch.tensor([0] * 20 + [2] * 20))


def test_raw_momentum_update_sequential():
    g = torch.Generator().manual_seed(1)
    bank = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    x = torch.randn(7, 4, generator=g) * 5             # raw, not normalised
    idx = torch.tensor([2, 0, 2, 5, 2, 0, 1])
    want = bank.clone()
    for i in range(7):
        v = 0.9 * want[idx[i]] + 0.1 * x[i]
        want[idx[i]] = v / v.norm()
    got = bank.clone()
    R.raw_momentum_update(got, x, idx, 0.9)
    assert torch.allclose(got, want, atol=1e-6)


def test_cluster_release_shared_space():
    from hilcore.synthetic import reid_features

    xr, _, _ = reid_features(6, 10, dim=32, seed=1, outliers=0.0)
    xi, _, _ = reid_features(6, 8, dim=32, seed=1, outliers=0.0)
    xr = torch.as_tensor(xr) * 4
    xi = torch.as_tensor(xi) * 2
    ec = hilcore.EpochConfig(k1=8, k2=3, eps=0.5, n_sub=3)
    cols = [slice(0, 16), slice(16, 32)]
    cl = R.cluster_release({"rgb": xr, "ir": xi}, ec, cols, transfer="rgb_to_ir_all", raw=True)
    assert torch.equal(cl.shared_labels_ir, cl.labels_ir)
    protos = R.segment_means(xi, cl.labels_ir)
    assert torch.equal(cl.shared_labels_rgb, R.brst_over_all(xr, cl.labels_rgb, protos, 0.5))
    assert bool((cl.shared_labels_rgb[cl.labels_rgb < 0] == -1).all())
    both, shared = torch.cat([xr, xi]), torch.cat([cl.shared_labels_rgb, cl.shared_labels_ir])
    C = int(cl.labels_ir.max()) + 1
    assert cl.shared_centers.shape == (C, 32) and cl.shared_multi.shape == (C, 4, 32)
    for c in range(C):
        assert torch.allclose(cl.shared_centers[c], both[shared == c].mean(0), atol=1e-5)
    for c, h in enumerate(cols):      # each head's sub-centres from its own columns
        assert torch.allclose(cl.shared_multi[:, :, h],
                              R.kmeans_subcentres(both[:, h], shared, 3, 0.9, 0), atol=1e-5)
    assert cl.counts["clusters_ir"] == C and cl.counts["transferred_rgb"] == int((cl.shared_labels_rgb >= 0).sum())


def test_cluster_epoch_memory_feats():
    from hilcore.synthetic import reid_features

    x, _, _ = reid_features(10, 8, dim=16, seed=2)
    y, _, _ = reid_features(10, 6, dim=16, seed=3)
    mx = np.random.default_rng(0).standard_normal((x.shape[0], 12)).astype(np.float32)
    my = np.random.default_rng(1).standard_normal((y.shape[0], 12)).astype(np.float32)
    ec = hilcore.EpochConfig(k1=8, k2=3, eps=0.5, n_sub=2)
    a = hilcore.cluster_epoch(x, y, ec)
    b = hilcore.cluster_epoch(x, y, ec, memory_feats_rgb=mx, memory_feats_ir=my)
    assert np.array_equal(a.labels_rgb, b.labels_rgb) and np.array_equal(a.shared_labels_ir, b.shared_labels_ir)
    assert np.allclose(b.centers_rgb, hilcore.cluster_centers(mx, b.labels_rgb), atol=1e-6)
    both = np.concatenate([mx, my])
    lab = np.concatenate([b.shared_labels_rgb, b.shared_labels_ir])
    assert np.allclose(b.shared_centers, hilcore.cluster_centers(both, lab), atol=1e-6)
    with pytest.raises(ValueError, match="both or neither"):
        hilcore.cluster_epoch(x, y, ec, memory_feats_rgb=mx)
    with pytest.raises(ValueError, match="memory_feats_ir"):
        hilcore.cluster_epoch(x, y, ec, memory_feats_rgb=mx, memory_feats_ir=my[:-1])


# ================================================================================================ losses
def _slow_nc(xd, xs, qd, qs, bd, bs, thresh=0.9, temp=0.05):
    B, N = xd.shape[0], bd.shape[0]
    out = []
    for x, bank in ((xd, bd), (xs, bs)):
        tot = 0.0
        for i in range(B):
            sd = [float(qd[i] @ bd[j]) for j in range(N)]
            ss = [float(qs[i] @ bs[j]) for j in range(N)]
            mask = [sd[j] > thresh * max(sd) and ss[j] > thresh * max(ss) for j in range(N)]
            logits = [float(F.normalize(x[i], dim=0) @ bank[j]) / temp for j in range(N)]
            mx = max(logits)
            z = sum(math.exp(v - mx) for v in logits)
            lp = [math.log(max(math.exp(v - mx) / z, 1e-8)) for v in logits]
            tot += -sum(lp[j] for j in range(N) if mask[j]) / (sum(mask) + 1)
        out.append(tot / B)
    return out


def _slow_mccl(x, M):
    """HIL_RELEASE.md's MCCL per sample: (loss, nearest cluster)."""
    xn = F.normalize(x, dim=0)
    C, S, _ = M.shape
    d = [[math.sqrt(float(((xn - M[c, s]) ** 2).sum())) for s in range(S)] for c in range(C)]
    cstar = min(range(C), key=lambda c: (min(d[c]), c))
    pos = sum(1 / v for v in d[cstar]) / S
    neg = sum(1 / min(d[c]) for c in range(C) if c != cstar) / max(C - 1, 1) if C > 1 else 0.0
    return -math.log(pos / (pos + neg + 1e-8)), cstar


def test_neighbour_terms_release_against_loop():
    g = torch.Generator().manual_seed(7)
    N, B, D = 9, 5, 6
    bd, bs = F.normalize(torch.randn(N, D, generator=g), dim=1), F.normalize(torch.randn(N, D, generator=g), dim=1)
    idx = torch.tensor([0, 3, 3, 8, 5])
    xd, xs = torch.randn(B, D, generator=g) * 4, torch.randn(B, D, generator=g) * 4
    ld, ls = R.neighbour_terms_release(xd, xs, bd[idx], bs[idx], bd, bs, thresh=0.3, temp=0.05)
    wd, ws = _slow_nc(xd, xs, bd[idx], bs[idx], bd, bs, thresh=0.3)
    assert float(ld) == pytest.approx(wd, rel=1e-5) and float(ls) == pytest.approx(ws, rel=1e-5)


def _release_setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    D, C, S = 8, 4, 3
    cfg = from_dict(load_config("configs/sysu_hil.yaml").to_dict())
    lo = cfg.loss
    n = {"rgb": 14, "ir": 10}
    feats = {m: torch.randn(n[m], 2 * D, generator=g) * 3 for m in ("rgb", "ir")}
    lab = {m: torch.randint(0, C, (n[m],), generator=g) for m in ("rgb", "ir")}
    lab["rgb"][[0, 5]] = -1
    for m in lab:
        lab[m][:C] = torch.arange(C)
    cl = R.ReleaseClusters(lab["rgb"], lab["ir"], lab["rgb"], lab["ir"],
                           torch.randn(C, 2 * D, generator=g), torch.randn(C, S, 2 * D, generator=g))
    cols = {"d": slice(0, D), "s": slice(D, 2 * D)}
    mems = torch.nn.ModuleDict({h: HeadMemories(cl, feats, cols[h], lo) for h in ("d", "s")})
    idx = {"rgb": torch.tensor([1, 2, 3, 4, 6, 7, 1, 2, 3, 4, 6, 7]), "ir": torch.tensor([0, 1, 2, 3, 9, 8])}
    x = {h: {m: torch.randn(idx[m].numel(), D, generator=g) * 5 for m in ("rgb", "ir")} for h in ("d", "s")}
    labels = {"rgb": cl.labels_rgb, "ir": cl.labels_ir}
    shared = {"rgb": cl.shared_labels_rgb, "ir": cl.shared_labels_ir}
    return x, idx, labels, shared, mems, lo, cl, feats, cols


@pytest.mark.parametrize("epoch", [0, 1, 20])
def test_release_step_losses_against_slow_loop(epoch):
    x, idx, labels, shared, mems, lo, cl, feats, cols = _release_setup(epoch)
    t = Trainer._losses(SimpleNamespace(_nc_release=Trainer._nc_release), x, idx, labels, shared, mems, lo, epoch)
    assert float(t["loss_cc"]) == 0.0         # per-modality memories unused in the release
    # cluster contrast on the shared memories: 4 CE terms, summed
    cc = 0.0
    for m in ("rgb", "ir"):
        for h in ("d", "s"):
            cen = F.normalize(cl.shared_centers[:, cols[h]], dim=1)
            y = shared[m][idx[m]]
            cc += float(F.cross_entropy(F.normalize(x[h][m], dim=1) @ cen.T / 0.05, y))
    assert float(t["loss_shared"]) == pytest.approx(cc, rel=1e-5)
    # MCCL: per modality, the mean over agreeing samples of l_d + 0.5 l_s, counted twice (same shared memory)
    mc = 0.0
    for m in ("rgb", "ir"):
        Md = F.normalize(cl.shared_multi[:, :, cols["d"]], dim=2)
        Ms = F.normalize(cl.shared_multi[:, :, cols["s"]], dim=2)
        vals = []
        for i in range(idx[m].numel()):
            ld, cd = _slow_mccl(x["d"][m][i], Md)
            ls, cs = _slow_mccl(x["s"][m][i], Ms)
            if cd == cs:
                vals.append(ld + 0.5 * ls)
        mc += 2 * (sum(vals) / len(vals) if vals else 0.0)
    assert float(t["loss_mccl"]) == pytest.approx(mc, rel=1e-4)
    # neighbour terms: own modality x (1, 0.5), cross-modal by epoch parity: RGB->IR x 0.1 even, IR->RGB x 1 odd
    inst = {m: {h: F.normalize(feats[m][:, cols[h]], dim=1) for h in ("d", "s")} for m in ("rgb", "ir")}
    nc = 0.0
    for m in ("rgb", "ir"):
        q = inst[m]
        a, b = _slow_nc(x["d"][m], x["s"][m], q["d"][idx[m]], q["s"][idx[m]], q["d"], q["s"])
        nc += a + 0.5 * b
    m, o, f = ("rgb", "ir", 0.1) if epoch % 2 == 0 else ("ir", "rgb", 1.0)
    a, b = _slow_nc(x["d"][m], x["s"][m], inst[m]["d"][idx[m]], inst[m]["s"][idx[m]], inst[o]["d"], inst[o]["s"])
    nc += f * (a + 0.5 * b)
    assert float(t["loss_nc"]) == pytest.approx(nc, rel=1e-5)
    # the weights the loop applies on top: MCCL 0.1 before epoch 20, 1 from it; neighbour terms 0.1
    cfg = load_config("configs/sysu_hil.yaml")
    assert cfg.mccl_weight_at(epoch) == (1.0 if epoch >= 20 else 0.1) and cfg.loss.nc_weight == 0.1


def test_release_memory_updates():
    x, idx, labels, shared, mems, lo, cl, feats, cols = _release_setup(3)
    before = {h: {k: v.clone() for k, v in mems[h].state_dict().items()} for h in ("d", "s")}
    Trainer._update_memories(None, x, idx, labels, shared, mems, lo)
    for h in ("d", "s"):
        after = mems[h].state_dict()
        assert torch.equal(after["multi.shared.features"], before[h]["multi.shared.features"])   # never updated
        assert not torch.equal(after["shared.features"], before[h]["shared.features"])
        # instance memories: raw batch features, RGB first then IR, views applied in turn
        for m in ("rgb", "ir"):
            want = before[h][f"inst.{m}.features"].clone()
            for i in range(idx[m].numel()):
                v = 0.9 * want[idx[m][i]] + 0.1 * x[h][m][i]
                want[idx[m][i]] = v / v.norm()
            assert torch.allclose(after[f"inst.{m}.features"], want, atol=1e-5)


# ================================================================================================ one run
def test_sysu_hil_preset_runs(tmp_path, capsys):
    from hilcore.cli import main
    from hilcore.train.hil_vit import HILNet

    root = tmp_path / "synth"
    assert main(["make-synthetic", str(root), "--ids", "10", "--imgs-per-cam", "2", "--size", "32x16"]) == 0
    kw = {"embed_dim": 24, "depth": 2, "num_heads": 4}
    net = HILNet(img_size=(32, 16), **kw)
    # TransReID-SSL layout: base keys without prefix, the pos-embed of another grid (4x2)
    sd = {k[5:]: v for k, v in net.state_dict().items() if k.startswith("base.") and ".patch_embed2." not in k
          and not k.startswith("base.patch_embed2")}
    sd["pos_embed"] = torch.randn(1, 9, 24) * 0.02
    pre = tmp_path / "vit_base_ics_cfs_lup.pth"
    torch.save(sd, pre)
    # the SDCL stage's model_best.pth.tar: the whole model, DataParallel keys, over the pretrained base
    sdcl = HILNet(img_size=(32, 16), **kw)
    init = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in sdcl.state_dict().items()}, "epoch": 40}, init)
    out = tmp_path / "run"
    rc = main(["train", "--config", "configs/sysu_hil.yaml", f"data.root={root}", "data.dataset=synthetic",
               f"model.pretrained={pre}", f"model.init_from={init}", "data.size=[32,16]",
               "model.kwargs={embed_dim: 24, depth: 2, num_heads: 4}",
               "optim.epochs=2", "optim.iters=1", "model.reload_best_at=1", "sampler.P=2", "sampler.K=4",
               "data.workers=0", "eval.trials=1", "run.device=cpu", "run.progress=false", "run.threads=1",
               "cluster.k1=6", "cluster.eps=0.7", "cluster.n_sub=2", "--output", str(out)])
    log = capsys.readouterr().out
    assert rc == 0, log
    assert "weights    pretrained" in log and "resized ['pos_embed']" in log
    assert f"weights    init_from {init}: 0 missing, 0 unexpected" in log
    assert "reload     the best model so far" in log
    from hilcore.train.hil_vit import read_weights

    state = read_weights(out / "last.pt")
    assert "base.patch_embed2.proj.weight" in state["model"] and state["epoch"] == 2
    for row in state["history"]:
        for k in ("loss", "loss_shared", "loss_nc", "loss_mccl"):
            assert math.isfinite(row[k])
        assert row["loss_nc"] > 0
    # the run's checkpoint is a full model: it warm-starts another run (model.init_from) and `hil extract` reads it
    rc = main(["extract", "--checkpoint", str(out / "last.pt"), "--images", str(root / "cam3"), "--modality", "ir",
               "--out", str(tmp_path / "f.npy"), "--progress", "off"])
    assert rc == 0
    f = np.load(tmp_path / "f.npy")
    assert f.shape[1] == 48 and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)


def test_train_refuses_mismatched_weights(tmp_path, capsys):
    from hilcore.cli import main
    from hilcore.train.hil_vit import HILNet

    root = tmp_path / "synth"
    assert main(["make-synthetic", str(root), "--ids", "6", "--imgs-per-cam", "1", "--size", "32x16"]) == 0
    other = HILNet(img_size=(32, 16), embed_dim=32, depth=2, num_heads=4)
    bad = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in other.state_dict().items()}}, bad)
    args = ["train", "--config", "configs/sysu_hil.yaml", f"data.root={root}", "data.dataset=synthetic",
            "data.size=[32,16]", "run.device=cpu", "run.output=" + str(tmp_path / "run")]
    assert main(args + ["model.kwargs={embed_dim: 24, depth: 2, num_heads: 4}", f"model.init_from={bad}"]) == 2
    err = capsys.readouterr().err
    assert "model.init_from" in err and "module.base." in err and "does not fit" in err
    assert main(args + ["model.kwargs={embed_dim: 24, depth: 2, num_heads: 4, colour: red}",
                        "model.allow_random_init=true"]) == 2
    assert "config.model.kwargs" in capsys.readouterr().err


def test_init_from_overwrites_the_pretrained_model(tmp_path):
    from hilcore.train.hil_vit import HILNet
    from hilcore.train.loop import build_reid_model

    kw = {"embed_dim": 24, "depth": 2, "num_heads": 4}
    pre_net = HILNet(img_size=(32, 16), **kw)
    pre = tmp_path / "vit.pth"
    torch.save({k[5:]: v for k, v in pre_net.state_dict().items()
                if k.startswith("base.") and not k.startswith("base.patch_embed2")}, pre)
    sdcl = HILNet(img_size=(32, 16), **kw)
    init = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in sdcl.state_dict().items()}}, init)
    base = load_config("configs/sysu_hil.yaml", ["data.size=[32,16]", "model.kwargs={embed_dim: 24, depth: 2, "
                                                 "num_heads: 4}", f"model.pretrained={pre}"])
    only_pre = build_reid_model(base).state_dict()
    # pretrained only: base from the file, heads and IR embedding copied from it
    assert torch.equal(only_pre["b1.0.attn.qkv.weight"], pre_net.state_dict()["base.blocks.1.attn.qkv.weight"])
    assert torch.equal(only_pre["base.patch_embed2.proj.weight"], pre_net.state_dict()["base.patch_embed.proj.weight"])
    both = load_config("configs/sysu_hil.yaml", ["data.size=[32,16]", "model.kwargs={embed_dim: 24, depth: 2, "
                                                 "num_heads: 4}", f"model.pretrained={pre}", f"model.init_from={init}"])
    got = build_reid_model(both).state_dict()
    for k, v in sdcl.state_dict().items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize("name,iters,eps,n_sub,dataset", [("sysu_hil", 100, 0.6, 9, "sysu"),
                                                           ("regdb_hil", 50, 0.3, 2, "regdb")])
def test_presets_schedule_and_optimiser(name, iters, eps, n_sub, dataset):
    from hilcore.train.loop import build_optimizer, lr_at

    cfg = load_config(f"configs/{name}.yaml")
    assert (cfg.optim.iters, cfg.cluster.eps, cfg.cluster.n_sub, cfg.data.dataset) == (iters, eps, n_sub, dataset)
    assert cfg.optim.epochs == 30 and cfg.sampler.P * cfg.sampler.K == 128 and cfg.data.rgb_views == 2
    assert all(lr_at(cfg, e) == pytest.approx(3.5e-5) for e in range(30))      # StepLR(30) over 30 epochs
    assert [cfg.mccl_weight_at(e) for e in (0, 19, 20, 29)] == [0.1, 0.1, 1.0, 1.0]
    opt = build_optimizer(cfg, torch.nn.Linear(3, 2))
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and g["momentum"] == 0.9 and not g["nesterov"]
    assert g["weight_decay"] == pytest.approx(5e-4)


@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "lanczos"])
def test_load_image_interpolation(tmp_path, interp):
    from PIL import Image

    from hilcore.train.datasets import load_image

    a = np.random.default_rng(0).integers(0, 256, (37, 19, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    filt = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}[interp]
    want = np.asarray(Image.fromarray(a).resize((16, 32), filt), dtype=np.float32) / 255.0
    got = load_image(tmp_path / "x.png", (32, 16), interp).permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="interpolation"):
        load_image(tmp_path / "x.png", (32, 16), "nearest")


def test_train_stops_cleanly_when_no_rgb_survives(tmp_path, capsys):
    from hilcore.cli import main

    root = tmp_path / "synth"
    assert main(["make-synthetic", str(root), "--ids", "6", "--imgs-per-cam", "2", "--size", "32x16"]) == 0
    rc = main(["train", "--config", "configs/sysu_hil.yaml", f"data.root={root}", "data.dataset=synthetic",
               "data.size=[32,16]", "model.kwargs={embed_dim: 24, depth: 2, num_heads: 4}", "run.device=cpu",
               "data.workers=0", "run.progress=false", "cluster.k1=6", "cluster.eps=0.7", "cluster.ratio=5.0",
               "model.allow_random_init=true",
               "run.output=" + str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "clustering failed" in err and "no RGB image survived" in err
