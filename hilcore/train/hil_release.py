"""Pieces of the released HIL training loop that hilcore does differently, as options of the driver.

Written from the public release (haonanshi0125/HIL; /work/shared/HIL_RELEASE.md
lists every point with its place in the released code). Each function is
selected by a config option (``docs/hil_release.md`` is the table):

* augmentation (``data.augment: release``): :func:`build_release_transforms`
  -- ColorJitter(0.5, 0.5, 0.5, hue 0.5) in a random order per image, pad 10
  + random crop, flip, normalise, channel random erasing (fill values
  (0.4914, 0.4822, 0.4465) written after normalisation); RGB view 2 adds
  :func:`channel_exchange_release` (one random channel copied to all three),
  IR adds :func:`channel_adap_gray` (3/4 one channel copied, 1/8 grey, 1/8
  unchanged);
* the camera-aware sampler (``sampler.name: camera``): :class:`CameraSampler`;
* BRST RGB -> IR with the threshold over all RGB samples
  (``cluster.transfer: rgb_to_ir_all``): :func:`brst_over_all`;
* memories from each head's own un-normalised features
  (``cluster.memory_features: raw_heads``): :func:`segment_means`,
  :func:`kmeans_subcentres` (scikit-learn KMeans(n_sub, n_init=10,
  random_state=0) per cluster of more than ``n_sub`` members);
* the release's neighbour terms (``loss.nc_mode: release``):
  :func:`neighbour_terms_release`;
* the instance-memory update with the raw batch feature
  (``loss.instance_update: raw``): :func:`raw_momentum_update`.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .augment import (Transform, _check_generator, _check_prob, _fill_box, _first_fit, _rand, check_images, hflip,
                      normalize, pad_crop, resize)
from .sampler import IdentitySampler

ERASE_FILL = (0.4914, 0.4822, 0.4465)
GREY = (0.2989, 0.5870, 0.1140)


# ================================================================================================ augmentation
def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift`` (fractions of a turn, ``[B]``): RGB -> HSV -> RGB."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    dc = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    v = maxc
    i6 = h * 6.0
    i = torch.floor(i6)
    f = i6 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = []
    for c in range(3):
        ch = torch.zeros_like(v)
        for k in range(6):
            ch = torch.where(i == k, table[k][c], ch)
        out.append(ch)
    return torch.stack(out, 1)


def _grey(x):
    w = torch.tensor(GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _valid_mask(x, extent):
    """``[B, 1, H, W]`` 1 inside each image's top-left ``extent[i] = (h, w)``, 0 in the padding (None: all 1)."""
    if extent is None:
        return None
    e = torch.as_tensor(extent, dtype=torch.int64).to(x.device)
    if e.shape != (x.shape[0], 2) or bool((e < 1).any()) or bool((e[:, 0] > x.shape[2]).any()) \
            or bool((e[:, 1] > x.shape[3]).any()):
        raise ValueError(f"extent: expected [{x.shape[0]}, 2] sizes (h, w) within the images' {tuple(x.shape[2:])}, "
                         f"got {e.tolist() if e.numel() <= 8 else tuple(e.shape)}")
    rows = torch.arange(x.shape[2], device=x.device).view(1, -1, 1) < e[:, 0].view(-1, 1, 1)
    cols = torch.arange(x.shape[3], device=x.device).view(1, 1, -1) < e[:, 1].view(-1, 1, 1)
    return (rows & cols).unsqueeze(1).to(x.dtype)


def color_jitter_release(x, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5, generator=None, extent=None):
    """torchvision's ColorJitter per image: the four ops in a random order, factors uniform in
    ``[max(0, 1 - v), 1 + v]`` (hue: shift uniform in ``[-hue, hue]``), clamped to [0, 1] after each.
    Brightness ``x * f``; contrast ``f x + (1 - f) mean(grey(x))``; saturation ``f x + (1 - f) grey(x)``.
    ``extent`` (``[B, 2]``, optional): image i occupies ``x[i, :, :h_i, :w_i]`` (zero-padded batch of images
    of different sizes); the contrast mean is taken over that region only."""
    check_images(x)
    _check_generator(generator)
    mask = _valid_mask(x, extent)
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue: expected a value in [0, 0.5], got {hue}")
    B = x.shape[0]
    order = torch.argsort(_rand((B, 4), generator), dim=1)
    lo = lambda v: max(0.0, 1.0 - v)  # noqa: E731
    fac = [lo(v) + (1 + v - lo(v)) * _rand(B, generator) for v in (brightness, contrast, saturation)]
    fac.append(-hue + 2 * hue * _rand(B, generator))
    fac = [f.to(x.device, x.dtype) for f in fac]

    def op(k, y, f, mk):
        fv = f.view(-1, 1, 1, 1)
        if k == 0:
            return (y * fv).clamp(0, 1)
        if k == 1:
            if mk is None:
                m = _grey(y).mean(dim=(2, 3), keepdim=True)
            else:
                m = (_grey(y) * mk).sum(dim=(2, 3), keepdim=True) / mk.sum(dim=(2, 3), keepdim=True)
            return (fv * y + (1 - fv) * m).clamp(0, 1)
        if k == 2:
            return (fv * y + (1 - fv) * _grey(y)).clamp(0, 1)
        return _adjust_hue(y, f).clamp(0, 1)

    out = x.clone()
    order = order.to(x.device)
    for pos in range(4):
        for k in range(4):
            sel = torch.nonzero(order[:, pos] == k).flatten()
            if sel.numel():
                out[sel] = op(k, out[sel], fac[k][sel], None if mask is None else mask[sel])
    return out


def channel_random_erasing(x, p=0.5, sl=0.02, sh=0.4, r1=0.3, fill=ERASE_FILL, attempts=100, generator=None):
    """The release's ChannelRandomErasing, per image with probability ``p``: up to ``attempts`` draws of an area
    ``U(sl, sh) * H * W`` and an aspect ratio ``U(r1, 1 / r1)``, ``h = round(sqrt(area * ratio))``,
    ``w = round(sqrt(area / ratio))``; the first with ``h < H`` and ``w < W`` is placed at a uniform
    top-left corner in ``[0, H - h] x [0, W - w]`` and filled with ``fill`` (per channel; written as is,
    i.e. in the normalised space, as the release does)."""
    check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    B, C, H, W = x.shape
    apply = _rand(B, generator) < p
    area = (sl + (sh - sl) * _rand((B, attempts), generator)) * (H * W)
    ratio = r1 + (1 / r1 - r1) * _rand((B, attempts), generator)
    h = torch.round(torch.sqrt(area * ratio)).long()
    w = torch.round(torch.sqrt(area / ratio)).long()
    h, w, fits = _first_fit(h, w, (h < H) & (w < W), apply)
    top = torch.floor(_rand(B, generator) * (H - h + 1).double()).long()
    left = torch.floor(_rand(B, generator) * (W - w + 1).double()).long()
    return _fill_box(x, top, left, h, w, fits, torch.as_tensor(fill, dtype=x.dtype, device=x.device))


def channel_exchange_release(x, generator=None):
    """ChannelExchange(gray=2): per image one channel drawn uniformly from R, G, B copied to all three."""
    check_images(x)
    _check_generator(generator)
    B = x.shape[0]
    src = torch.randint(0, 3, (B,), generator=generator).to(x.device)
    return torch.gather(x, 1, src.view(B, 1, 1, 1).expand(B, 1, *x.shape[2:])).expand(-1, 3, -1, -1).contiguous()


def channel_adap_gray(x, p=0.5, generator=None):
    """ChannelAdapGray(p): per image ``k`` uniform in 0..3; k < 3 copies channel k to all three; k = 3 makes
    the image grey (0.2989 R + 0.5870 G + 0.1140 B) with probability ``p``, else leaves it unchanged."""
    check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    B = x.shape[0]
    k = torch.randint(0, 4, (B,), generator=generator)
    grey = _rand(B, generator) < p   # draws as the release's ``uniform(0, 1) > p`` -> unchanged
    k = torch.where((k == 3) & ~grey, torch.full_like(k, 4), k).to(x.device)
    cand = torch.cat([x, _grey(x), torch.zeros_like(x[:, :1])], dim=1)
    g = torch.gather(cand, 1, k.clamp(max=3).view(B, 1, 1, 1).expand(B, 1, *x.shape[2:])).expand(-1, 3, -1, -1)
    return torch.where((k == 4).view(B, 1, 1, 1), x, g).contiguous()


def jitter_then_resize(x, sizes, size, generator=None) -> torch.Tensor:
    """The release's first two training steps, ``ColorJitter(0.5, 0.5, 0.5, 0.5)`` on the image at its file size,
    then ``Resize(size)``: :func:`color_jitter_release` on the zero-padded batch ``x`` ``[B, 3, H_max, W_max]``
    (image i in ``x[i, :, :h_i, :w_i]``, ``sizes[i] = (h_i, w_i)``; the padding takes no part), then each image's
    region resized to ``size = (H, W)`` (bilinear, antialiased when shrinking, as PIL's resize). ``[B, 3, H, W]``."""
    y = color_jitter_release(x, generator=generator, extent=sizes)
    hw = torch.as_tensor(sizes).tolist()
    return torch.cat([resize(y[i:i + 1, :, :h, :w], size) for i, (h, w) in enumerate(hw)]) if hw else \
        y.new_zeros((0, 3, *size))


class FullSizePipeline:
    """:func:`jitter_then_resize` to ``size``, then ``post`` (a :class:`Transform`); called on ``(x, sizes)``
    as :func:`hilcore.train.data.pad_stack` returns them (``data.jitter_full_size``)."""

    def __init__(self, size, post: Transform):
        self.size = tuple(int(v) for v in size)
        self.post = post

    @property
    def steps(self) -> list[str]:
        return ["color_jitter (file size)", "resize"] + self.post.steps

    def __call__(self, batch, generator=None) -> torch.Tensor:
        if not (isinstance(batch, tuple) and len(batch) == 2):
            raise TypeError(f"batch: expected (images [B, 3, H, W], sizes [B, 2]), got {type(batch).__name__}")
        return self.post(jitter_then_resize(batch[0], batch[1], self.size, generator), generator=generator)

    def __repr__(self) -> str:
        return f"FullSizePipeline({' -> '.join(self.steps)})"


def build_release_transforms(modality: str, train: bool, *, view: int = 1, full_size=None):
    """The release's pipelines on images already resized at load time (``[B, 3, H, W]`` in [0, 1]).

    Train: jitter -> pad 10 + crop -> flip -> normalise -> channel random erasing, then ``view=2`` (RGB):
    channel exchange; IR: ChannelAdapGray. Test: normalise only (the resize happens when reading).
    ``full_size=(H, W)`` (train only): the jitter runs on the images at their file size and is followed by the
    resize to ``(H, W)``, as in the release (a :class:`FullSizePipeline` on ``(x, sizes)`` batches).
    """
    if modality not in ("rgb", "ir"):
        raise ValueError(f"modality: expected 'rgb' or 'ir', got {modality!r}")
    if view not in (1, 2):
        raise ValueError(f"view: expected 1 or 2, got {view!r}")
    if not train:
        return Transform([("normalize", normalize, False, {})])
    steps = [] if full_size is not None else [("color_jitter", color_jitter_release, True, {})]
    steps += [("pad_crop", pad_crop, True, {"padding": 10, "fill": 0.0}),
             ("hflip", hflip, True, {"p": 0.5}),
             ("normalize", normalize, False, {}),
             ("channel_random_erasing", channel_random_erasing, True, {"p": 0.5})]
    if modality == "rgb" and view == 2:
        steps.append(("channel_exchange", channel_exchange_release, True, {}))
    if modality == "ir":
        steps.append(("channel_adap_gray", channel_adap_gray, True, {"p": 0.5}))
    return Transform(steps) if full_size is None else FullSizePipeline(full_size, Transform(steps))


# ================================================================================================ sampler
class CameraSampler(IdentitySampler):
    """The release's RandomMultipleGallerySampler as a stream of fixed-size batches.

    One pass: the pseudo identities (label != -1) in a random order; for each,
    one anchor drawn uniformly from its members, then ``K - 1`` members taken
    among those from *other cameras* than the anchor (without replacement when
    there are at least ``K`` of them, else with), or, when the identity has a
    single camera, among its other members (same rule); an identity of one
    image gives the anchor alone. The pass is cut into batches of ``P * K``
    indices, the last incomplete one dropped (``drop_last``), and a new pass
    starts when a pass is used up (a pass too short for one batch is used
    whole). All draws come from ``numpy.random.default_rng(seed)``.
    """

    def __init__(self, labels, cams, P: int, K: int, seed=0):
        super().__init__(labels, P, K, seed)          # labels, P, K checked; clusters, members, rng
        cam = np.asarray(cams)
        if cam.shape != np.shape(labels):
            raise ValueError(f"cams: expected {len(labels)} camera ids, got shape {cam.shape}")
        self.cams = cam
        self._queue: list = []

    def _group(self, m: np.ndarray) -> list:
        rng, K = self.rng, self.K
        a = int(m[rng.integers(m.size)])
        others = m[self.cams[m] != self.cams[a]]
        if others.size == 0:
            others = m[m != a]
            if others.size == 0:
                return [a]
        pick = rng.choice(others, size=K - 1, replace=others.size < K)
        return [a] + [int(i) for i in pick]

    def _pass(self) -> list:
        stream = []
        for c in self.rng.permutation(len(self.members)):
            stream.extend(self._group(self.members[c]))
        bs = self.batch_size
        n = len(stream) // bs
        if n == 0:
            return [np.asarray(stream, dtype=np.int64)]
        return [np.asarray(stream[i * bs:(i + 1) * bs], dtype=np.int64) for i in range(n)]

    def batch(self) -> np.ndarray:
        if not self._queue:
            self._queue = self._pass()
        return self._queue.pop(0)


# ================================================================================================ clustering
def brst_over_all(x_rgb: torch.Tensor, labels_rgb: torch.Tensor, protos_ir: torch.Tensor, ratio: float = 0.5):
    """The release's RGB -> IR label transfer: for each RGB sample with a label, ``p = argmax_c cos(x, P_c)``;
    it takes label ``p`` iff ``cos(x, P_p) >= ratio * max over ALL RGB samples (noise included) of
    cos(x', P_p)``, else -1; noise stays -1. Returns int64 labels in IR cluster ids."""
    if x_rgb.dim() != 2 or protos_ir.dim() != 2 or x_rgb.shape[1] != protos_ir.shape[1]:
        raise ValueError(f"x_rgb, protos_ir: expected [N, D] and [C, D] with the same D, got "
                         f"{tuple(x_rgb.shape)} and {tuple(protos_ir.shape)}")
    lab = torch.as_tensor(labels_rgb, device=x_rgb.device).long()
    if lab.shape != (x_rgb.shape[0],):
        raise ValueError(f"labels_rgb: expected {x_rgb.shape[0]} labels, got shape {tuple(lab.shape)}")
    out = torch.full_like(lab, -1)
    if protos_ir.shape[0] == 0 or x_rgb.shape[0] == 0:
        return out
    sim = F.normalize(x_rgb.float(), dim=1) @ F.normalize(protos_ir.float(), dim=1).T     # [N, C]
    col_max = sim.max(0).values
    best_sim, best = sim.max(1)
    ok = (lab >= 0) & (best_sim >= ratio * col_max[best])
    out[ok] = best[ok]
    return out


def segment_means(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[C, D]`` plain means of the rows of each label ``0..C-1`` (noise ignored; float64 sums)."""
    lab = torch.as_tensor(labels, device=x.device).long()
    c = int(lab.max()) + 1 if bool((lab >= 0).any()) else 0
    keep = lab >= 0
    s = torch.zeros((c, x.shape[1]), dtype=torch.float64, device=x.device).index_add_(0, lab[keep],
                                                                                      x[keep].double())
    n = torch.bincount(lab[keep], minlength=c).double()
    if bool((n == 0).any()):
        raise ValueError(f"labels: cluster ids must be contiguous 0..{c - 1}; "
                         f"{torch.nonzero(n == 0).flatten()[:5].tolist()} have no member")
    return (s / n[:, None]).float()


def kmeans_subcentres(x: torch.Tensor, labels: torch.Tensor, n_sub: int = 9, weight: float = 0.9,
                      seed: int = 0) -> torch.Tensor:
    """The release's multi-centre memory ``[C, 1 + n_sub, D]`` on the given (un-normalised) features.

    Slot 0: the mean of cluster c. Clusters of more than ``n_sub`` members:
    scikit-learn ``KMeans(n_sub, n_init=10, random_state=seed)`` on their rows;
    slot ``1 + k`` = ``weight * mean + (1 - weight) * mean of sub-cluster k``
    (k-means' label order); when k-means finds fewer than ``n_sub`` non-empty
    sub-clusters (or fails), and for smaller clusters, every slot holds the mean.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    lab = torch.as_tensor(labels).long().cpu().numpy()
    xs = x.detach().float().cpu().numpy()
    centres = segment_means(torch.from_numpy(xs), torch.from_numpy(lab)).numpy()
    C, D = centres.shape
    out = np.repeat(centres[:, None, :], 1 + n_sub, axis=1)
    order = np.argsort(lab, kind="stable")
    order = order[lab[order] >= 0]
    bounds = np.searchsorted(lab[order], np.arange(C + 1))
    from threadpoolctl import threadpool_limits

    # one thread per (small) fit: 5x faster than OpenMP start-up on every cluster
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        for c in range(C):
            rows = xs[order[bounds[c]:bounds[c + 1]]]
            if rows.shape[0] <= n_sub:
                continue
            try:
                km = KMeans(n_clusters=n_sub, random_state=seed, n_init=10).fit_predict(rows)
            except Exception:  # noqa: BLE001 - the release falls back to the centre on any k-means failure
                continue
            if np.unique(km).size < n_sub:
                continue
            for k in range(n_sub):
                out[c, 1 + k] = weight * centres[c] + (1 - weight) * rows[km == k].mean(0)
    return torch.from_numpy(out).to(x.device)


@dataclass
class ReleaseClusters:
    """What the release's clustering step hands to training (arrays on one device).

    ``labels_*``: DBSCAN labels per modality; ``shared_labels_*``: the training
    labels (IR: its DBSCAN labels; RGB: the IR cluster it transferred to, -1
    when it did not survive); ``shared_centers`` ``[C, D]`` and ``shared_multi``
    ``[C, 1 + n_sub, D]`` over both modalities with the shared labels, built
    per head block of columns; per-modality ``centers_*`` / ``multi_*`` the
    same with the DBSCAN labels (None unless asked for).
    """

    labels_rgb: torch.Tensor
    labels_ir: torch.Tensor
    shared_labels_rgb: torch.Tensor
    shared_labels_ir: torch.Tensor
    shared_centers: torch.Tensor
    shared_multi: torch.Tensor
    centers_rgb: torch.Tensor | None = None
    centers_ir: torch.Tensor | None = None
    multi_rgb: torch.Tensor | None = None
    multi_ir: torch.Tensor | None = None
    counts: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def memories_from(x: torch.Tensor, labels: torch.Tensor, head_cols, *, raw: bool, n_sub: int, weight: float,
                  seed: int, sub_method: str = "kmeans"):
    """``(centres [C, D], multi [C, 1 + n_sub, D])`` of ``x`` with ``labels``, each head's block of columns on
    its own: ``raw=True`` -- plain means and :func:`kmeans_subcentres` of the un-normalised columns (the
    release); ``raw=False`` -- :func:`hilcore.cluster_centers` / :func:`hilcore.subcluster` of the block."""
    import hilcore

    cen, mul = [], []
    for cols in head_cols:
        xb = x[:, cols]
        if raw:
            cen.append(segment_means(xb, labels))
            mul.append(kmeans_subcentres(xb, labels, n_sub, weight, seed))
        else:
            cen.append(torch.as_tensor(hilcore.cluster_centers(xb, labels)))
            mul.append(torch.as_tensor(hilcore.subcluster(xb, labels, n_sub, weight, sub_method, seed=seed)))
    return torch.cat(cen, 1), torch.cat(mul, 2)


def cluster_release(feats: dict, ec, head_cols, *, transfer: str = "rgb_to_ir_all", raw: bool = True,
                    per_modality: bool = False, cluster_feats: dict | None = None) -> ReleaseClusters:
    """The release's clustering step on the per-modality features ``feats["rgb"|"ir"]`` ``[N, D]`` (the
    flip-averaged ``cat(feat, feat_s)``, un-normalised when ``raw``).

    DBSCAN labels per modality (:func:`hilcore.jaccard_distance` + :func:`hilcore.dbscan` on the normalised
    rows, ``ec``'s k1, k2, eps, min_samples); then ``transfer="rgb_to_ir_all"``: :func:`brst_over_all` of RGB
    onto the IR centres (plain means of ``feats``), shared labels = IR ids; ``transfer="match"``:
    :func:`hilcore.bidirectional_match` (``ec.ratio``, ``ec.match_mode``). Memories: :func:`memories_from`.
    ``cluster_feats`` (default ``feats``): the features DBSCAN and the transfer see (e.g. camera-centred).
    """
    import time

    import hilcore

    t0 = time.perf_counter()
    lab = {}
    cf = feats if cluster_feats is None else cluster_feats
    for m in ("rgb", "ir"):
        x = F.normalize(cf[m].float(), dim=1)
        d = hilcore.jaccard_distance(x, ec.k1, ec.k2, max_distance=ec.eps)
        lab[m] = torch.as_tensor(hilcore.dbscan(d, ec.eps, ec.min_samples)).to(x.device).long()
        del d
        if not bool((lab[m] >= 0).any()):
            raise ValueError(f"the {m.upper()} modality ended all-noise: DBSCAN found no cluster among its "
                             f"{x.shape[0]} features (eps={ec.eps}, min_samples={ec.min_samples})")
    t1 = time.perf_counter()
    if transfer == "rgb_to_ir_all":
        protos = segment_means(cf["ir"].float(), lab["ir"])
        sr, si = brst_over_all(cf["rgb"], lab["rgb"], protos, ec.ratio), lab["ir"].clone()
    elif transfer == "match":
        mr = hilcore.bidirectional_match(cf["rgb"].float(), lab["rgb"], cf["ir"].float(), lab["ir"],
                                         ec.ratio, ec.match_mode)
        sr = torch.as_tensor(mr.labels_rgb).to(lab["rgb"].device).long()
        si = torch.as_tensor(mr.labels_ir).to(lab["rgb"].device).long()
    else:
        raise ValueError(f"transfer: expected 'rgb_to_ir_all' or 'match', got {transfer!r}")
    t2 = time.perf_counter()
    both = torch.cat([feats["rgb"], feats["ir"]]).float()
    kw = dict(raw=raw, n_sub=ec.n_sub, weight=ec.weight, seed=ec.seed, sub_method=ec.sub_method)
    shared = torch.cat([sr, si])
    if bool((shared >= 0).any()):
        s_cen, s_multi = memories_from(both, shared, head_cols, **kw)
    else:
        D = both.shape[1]
        s_cen, s_multi = both.new_zeros((0, D)), both.new_zeros((0, 1 + ec.n_sub, D))
    out = ReleaseClusters(lab["rgb"], lab["ir"], sr, si, s_cen, s_multi)
    if per_modality:
        out.centers_rgb, out.multi_rgb = memories_from(feats["rgb"].float(), lab["rgb"], head_cols, **kw)
        out.centers_ir, out.multi_ir = memories_from(feats["ir"].float(), lab["ir"], head_cols, **kw)
    t3 = time.perf_counter()
    n = lambda t: int(t.max()) + 1 if bool((t >= 0).any()) else 0  # noqa: E731
    out.counts = {"clusters_rgb": n(lab["rgb"]), "clusters_ir": n(lab["ir"]),
                  "outliers_rgb": int((lab["rgb"] < 0).sum()), "outliers_ir": int((lab["ir"] < 0).sum()),
                  "shared_clusters": int(s_cen.shape[0]), "shared_outliers_rgb": int((sr < 0).sum()),
                  "shared_outliers_ir": int((si < 0).sum()),
                  "transferred_rgb": int(((sr >= 0) & (lab["rgb"] >= 0)).sum()),
                  # IR clusters that received RGB images (the release's cross-modal correspondences)
                  "matched_pairs": int(torch.unique(sr[sr >= 0]).numel())}
    out.timings = {"cluster": t1 - t0, "match": t2 - t1, "memories": t3 - t2, "total": t3 - t0}
    return out


# ================================================================================================ batch norm
@contextlib.contextmanager
def frozen_bn_stats(module: torch.nn.Module):
    """Within the block, the BatchNorm layers of ``module`` (in training mode) normalise with the statistics of
    the batch they see and leave ``running_mean``, ``running_var`` and ``num_batches_tracked`` untouched."""
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def split_replicas_forward(net, x_rgb: torch.Tensor, x_ir: torch.Tensor, replicas: int = 2,
                           modal_aware: bool = True) -> dict:
    """The training forward of ``torch.nn.DataParallel`` over ``replicas`` devices, on one device.

    The release calls its DataParallel model with two inputs, the RGB batch (view 1 rows, then view 2 rows)
    and the IR batch; DataParallel cuts each into ``replicas`` chunks along the rows (``Tensor.chunk``) and
    replica r runs on ``[RGB chunk r, IR chunk r]`` -- with two GPUs and two RGB views: GPU 0 sees RGB view 1
    and ``IR[:n/2]``, GPU 1 RGB view 2 and ``IR[n/2:]``. Each replica's BatchNorm layers normalise its rows
    only, and only replica 0 (the module itself; the others are copies) updates the running statistics.
    Here: ``net`` runs once per replica (replica r > 0 under :func:`frozen_bn_stats`); the outputs are
    gathered as DataParallel does: ``{head: cat(RGB rows of replicas 0..R-1, IR rows of replicas 0..R-1)}``,
    i.e. in the rows' original order. ``modal_aware``: ``net(x, n_rgb)`` (the released network), else ``net(x)``.
    """
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ValueError(f"replicas: expected an integer >= 1, got {replicas!r}")
    rgb, ir = x_rgb.chunk(replicas), x_ir.chunk(replicas)
    if len(rgb) != replicas or len(ir) != replicas:
        raise ValueError(f"replicas: {replicas} replicas need at least {replicas} RGB and IR rows each that "
                         f"Tensor.chunk cuts into {replicas} pieces; got {x_rgb.shape[0]} RGB and {x_ir.shape[0]} "
                         f"IR rows")
    outs = []
    for r in range(replicas):
        x = torch.cat([rgb[r], ir[r]])
        with contextlib.nullcontext() if r == 0 else frozen_bn_stats(net):
            outs.append(net(x, rgb[r].shape[0]) if modal_aware else net(x))
    n = [t.shape[0] for t in rgb]
    return {h: torch.cat([o[h][:k] for o, k in zip(outs, n)] + [o[h][k:] for o, k in zip(outs, n)])
            for h in outs[0]}


# ================================================================================================ losses
def neighbour_terms_release(x_d, x_s, q_d, q_s, bank_d, bank_s, thresh: float = 0.9, temp: float = 0.05):
    """The release's neighbour-consistency terms of one direction, ``(loss_d, loss_s)``.

    Neighbours of sample i in the target instance memories (``bank_d``, ``bank_s``, unit rows): the entries j
    with ``q_d[i] . bank_d[j] > thresh * max_j(...)`` AND the same in head s (``q_*`` are the sample's own
    instance-memory rows, no gradient); ``n_i`` = their number + 1. For each head h:
    ``loss_h = mean_i -sum_{j in N_i} log max(softmax(normalize(x_h[i]) @ bank_h.T / temp)_j, 1e-8) / n_i``.
    """
    with torch.no_grad():
        sd = q_d.detach() @ bank_d.T
        ss = q_s.detach() @ bank_s.T
        mask = (sd > sd.max(1, keepdim=True).values * thresh) & (ss > ss.max(1, keepdim=True).values * thresh)
        mask = mask.to(x_d.dtype)
        cnt = mask.sum(1) + 1
    out = []
    for x, bank in ((x_d, bank_d), (x_s, bank_s)):
        p = F.softmax(F.normalize(x, dim=1) @ bank.detach().T / temp, dim=1).clamp_min(1e-8)
        out.append((-(p.log() * mask).sum(1) / cnt).mean())
    return out[0], out[1]


@torch.no_grad()
def raw_momentum_update(bank: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, momentum: float) -> None:
    """``bank[i] <- normalize(momentum * bank[i] + (1 - momentum) * x)`` for each (x, i) in batch order, with the
    raw (un-normalised) batch feature as the release's instance memories do; repeated indices apply in turn."""
    idx = idx.long()
    x = x.detach().to(bank.dtype)
    order = torch.argsort(idx, stable=True)
    sidx = idx[order]
    first = torch.ones_like(sidx, dtype=torch.bool)
    first[1:] = sidx[1:] != sidx[:-1]
    start = torch.cummax(torch.where(first, torch.arange(sidx.numel(), device=idx.device),
                                     torch.zeros_like(sidx)), 0).values
    occ = torch.empty_like(idx)
    occ[order] = torch.arange(sidx.numel(), device=idx.device) - start
    for r in range(int(occ.max()) + 1 if occ.numel() else 0):
        sel = occ == r
        rows = idx[sel]
        v = momentum * bank[rows] + (1.0 - momentum) * x[sel]
        bank[rows] = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


__all__ = ["brst_over_all", "build_release_transforms", "CameraSampler", "channel_adap_gray",
           "channel_exchange_release", "channel_random_erasing", "cluster_release", "color_jitter_release",
           "frozen_bn_stats", "FullSizePipeline", "jitter_then_resize", "kmeans_subcentres", "memories_from",
           "neighbour_terms_release", "raw_momentum_update", "ReleaseClusters", "segment_means",
           "split_replicas_forward"]
