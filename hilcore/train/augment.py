"""Training and test augmentations for the two modalities, as batched tensor ops.

Every op takes images ``x`` of shape ``[B, 3, H, W]`` (float, values in
``[0, 1]`` before :func:`normalize`) on any device and returns a new tensor of
the same shape. Randomness is drawn per sample on the CPU from ``generator``
(a CPU ``torch.Generator``; None uses torch's global generator) and then moved
to ``x.device``, so a fixed seed gives the same result on every device and
for every batch layout of the same draw order.

Ops: :func:`color_jitter` (brightness, contrast, saturation), :func:`pad_crop`,
:func:`hflip`, :func:`random_erasing`, :func:`channel_exchange` (RGB, after
CAJ: replicate one random channel, or permute the channels),
:func:`ir_adapt` (IR: three identical channels from a random channel or the
luminance, random contrast and brightness), :func:`to_grey`, :func:`resize`,
:func:`normalize` (ImageNet mean/std).

:func:`build_transforms` assembles them::

    tf = build_transforms("rgb", train=True, size=(288, 144))
    g = torch.Generator().manual_seed(0)
    batch = tf(images, generator=g)       # [B, 3, 288, 144], normalised

Pipelines (train): RGB -- resize, colour jitter, channel exchange, pad 10 +
random crop, flip, random erasing, normalise; IR -- resize, IR adaptation,
pad + crop, flip, random erasing with a grey fill, normalise (the IR images
keep three equal channels up to the normalisation). Test: resize (IR: to
grey), normalise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Transform", "build_transforms", "channel_exchange",
           "color_jitter", "denormalize", "hflip", "ir_adapt", "normalize", "pad_crop", "random_erasing",
           "resize", "to_grey"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma


def check_images(x, name: str = "x") -> None:
    """Raise unless ``x`` is a floating-point image batch ``[B, 3, H, W]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected images [B, 3, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def _check_generator(generator):
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator: expected a CPU generator (draws happen on the CPU), "
                             f"got one on {generator.device}")


def _check_prob(p, name: str) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p}")
    return p


def _rand(shape, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [B] CPU draw as a [B, 1, 1, 1] tensor on x's device and dtype."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _factors(n: int, strength: float, generator) -> torch.Tensor:
    """n factors uniform in [max(0, 1 - strength), 1 + strength]."""
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    return lo + (hi - lo) * _rand(n, generator)


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)  # [B, 1, H, W]


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """Luminance (0.299 R + 0.587 G + 0.114 B) replicated to three channels."""
    check_images(x)
    return _grey(x).expand(-1, 3, -1, -1).contiguous()


def color_jitter(x, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, p: float = 1.0,
                 generator=None) -> torch.Tensor:
    """Per sample, with probability ``p``: brightness ``x * b``, contrast ``(x - mean(grey)) * c + mean(grey)``,
    saturation ``(x - grey) * s + grey``, in that order, clamped to [0, 1] after each; each factor is uniform
    in ``[max(0, 1 - strength), 1 + strength]``."""
    check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if v < 0:
            raise ValueError(f"{name}: expected a non-negative strength, got {v}")
    B = x.shape[0]
    apply = _rand(B, generator) < p
    fb, fc, fs = (_factors(B, s, generator) for s in (brightness, contrast, saturation))
    one = torch.ones(B)
    fb, fc, fs = (torch.where(apply, f, one) for f in (fb, fc, fs))
    out = (x * _per_sample(fb, x)).clamp(0, 1)
    m = _grey(out).mean(dim=(2, 3), keepdim=True)
    out = ((out - m) * _per_sample(fc, x) + m).clamp(0, 1)
    g = _grey(out)
    out = ((out - g) * _per_sample(fs, x) + g).clamp(0, 1)
    return torch.where(_per_sample(apply, x).bool(), out, x)  # untouched samples pass through bit-exact


def pad_crop(x, padding: int = 10, fill: float = 0.0, generator=None) -> torch.Tensor:
    """Pad every side by ``padding`` with ``fill``, then crop a random H x W window per sample."""
    check_images(x)
    _check_generator(generator)
    padding = int(padding)
    if padding < 0:
        raise ValueError(f"padding: expected a non-negative int, got {padding}")
    B, _, H, W = x.shape
    offs = torch.randint(0, 2 * padding + 1, (B, 2), generator=generator)
    if padding == 0:
        return x.clone()
    xp = F.pad(x, (padding,) * 4, value=float(fill))
    offs = offs.to(x.device)
    rows = offs[:, :1] + torch.arange(H, device=x.device)  # [B, H]
    cols = offs[:, 1:] + torch.arange(W, device=x.device)  # [B, W]
    b = torch.arange(B, device=x.device).view(B, 1, 1)
    out = xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def hflip(x, p: float = 0.5, generator=None) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``."""
    check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    apply = _rand(x.shape[0], generator) < p
    return torch.where(_per_sample(apply, x).bool(), x.flip(-1), x)


def random_erasing(x, p: float = 0.5, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=IMAGENET_MEAN,
                   attempts: int = 10, generator=None) -> torch.Tensor:
    """Random erasing (Zhong et al.): with probability ``p`` fill one rectangle per sample with ``value``.

    The rectangle has area ``U(scale) * H * W`` and aspect ratio h/w
    log-uniform in ``ratio``; of ``attempts`` draws the first that fits
    strictly inside the image is used (none fits: nothing is erased).
    ``value``: a scalar or one value per channel (the ImageNet mean by
    default, i.e. 0 after normalisation).
    """
    check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale: expected 0 < lo <= hi <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio: expected 0 < lo <= hi, got {ratio}")
    B, C, H, W = x.shape
    apply = _rand(B, generator) < p
    area = (scale[0] + (scale[1] - scale[0]) * _rand((B, attempts), generator)) * (H * W)
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand((B, attempts), generator)
    h = torch.round(torch.sqrt(area * torch.exp(logr))).long()
    w = torch.round(torch.sqrt(area / torch.exp(logr))).long()
    h, w, fits = _first_fit(h, w, (h < H) & (w < W) & (h > 0) & (w > 0), apply)
    top = (_rand(B, generator) * (H - h + 1)).long().clamp(max=H - 1)
    left = (_rand(B, generator) * (W - w + 1)).long().clamp(max=W - 1)
    fill = torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1)
    if fill.numel() not in (1, C):
        raise ValueError(f"value: expected a scalar or {C} values, got {fill.numel()}")
    return _fill_box(x, top, left, h, w, fits, fill)


def _first_fit(h, w, ok, apply):
    """Per image (rows of ``[B, attempts]``) the first attempt whose box fits: ``(h, w, fits)`` of ``[B]``
    (attempt 0 with ``fits`` False when none fits or ``apply`` is False)."""
    first = torch.argmax(ok.int(), dim=1)
    idx = torch.arange(h.shape[0])
    return h[idx, first], w[idx, first], ok[idx, first] & apply


def _fill_box(x, top, left, h, w, fits, fill):
    """``x`` with rows ``[top, top + h)`` x columns ``[left, left + w)`` of each image where ``fits`` set to
    ``fill`` (a tensor of 1 or C values, x's dtype); the box arguments are ``[B]`` tensors."""
    B, C, H, W = x.shape
    dev = x.device
    top, left, h, w, fits = (t.to(dev).view(B, 1, 1) for t in (top, left, h, w, fits))
    r = torch.arange(H, device=dev).view(1, H, 1)
    c = torch.arange(W, device=dev).view(1, 1, W)
    mask = (r >= top) & (r < top + h) & (c >= left) & (c < left + w) & fits
    return torch.where(mask[:, None], fill.reshape(1, -1, 1, 1).expand(B, C, H, W), x)


def channel_exchange(x, p: float = 0.5, mode: str = "replicate", generator=None) -> torch.Tensor:
    """CAJ-style channel augmentation for RGB, per sample with probability ``p``.

    ``mode="replicate"``: one channel drawn uniformly from R, G, B is copied to
    all three; ``mode="permute"``: the channels are put in a random order.
    """
    check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    if mode not in ("replicate", "permute"):
        raise ValueError(f"mode: expected 'replicate' or 'permute', got {mode!r}")
    B = x.shape[0]
    apply = _rand(B, generator) < p
    if mode == "replicate":
        src = torch.randint(0, 3, (B, 1), generator=generator).expand(B, 3)
    else:
        src = torch.argsort(_rand((B, 3), generator), dim=1)
    src = torch.where(apply[:, None], src, torch.arange(3).expand(B, 3)).to(x.device)
    return torch.gather(x, 1, src.view(B, 3, 1, 1).expand_as(x))


def ir_adapt(x, p: float = 0.5, contrast: float = 0.3, brightness: float = 0.2, generator=None) -> torch.Tensor:
    """IR channel adaptation: three identical channels, random contrast and brightness.

    Per sample, the grey source is (with probability ``p``) one of R, G, B or
    the luminance drawn uniformly, else the luminance; then brightness and
    contrast factors uniform in ``[1 - s, 1 + s]`` are applied (about the
    image mean) and the result is clamped to [0, 1].
    """
    check_images(x)
    _check_generator(generator)
    p = _check_prob(p, "p")
    B = x.shape[0]
    apply = _rand(B, generator) < p
    choice = torch.randint(0, 4, (B,), generator=generator)
    choice = torch.where(apply, choice, torch.full((B,), 3)).to(x.device)
    cand = torch.cat([x, _grey(x)], dim=1)  # [B, 4, H, W]: R, G, B, luminance
    g = torch.gather(cand, 1, choice.view(B, 1, 1, 1).expand(B, 1, *x.shape[2:]))
    fb, fc = _factors(B, brightness, generator), _factors(B, contrast, generator)
    g = (g * _per_sample(fb, x)).clamp(0, 1)
    m = g.mean(dim=(2, 3), keepdim=True)
    g = ((g - m) * _per_sample(fc, x) + m).clamp(0, 1)
    return g.expand(-1, 3, -1, -1).contiguous()


def resize(x, size) -> torch.Tensor:
    """Bilinear resize to ``size = (H, W)`` (antialiased when shrinking); a no-op copy when already that size."""
    check_images(x)
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x.clone()
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink).clamp(0, 1)


def normalize(x, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    check_images(x)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean``."""
    check_images(x)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


class Transform:
    """A pipeline of ops; call it on ``[3, H, W]`` or ``[B, 3, H, W]`` images.

    ``steps``: ``(name, op, takes_generator, kwargs)`` tuples, applied in
    order as ``op(x, **kwargs[, generator=g])`` (module-level functions, so a
    transform pickles into DataLoader workers). ``tf(x, generator=None)`` uses
    ``generator`` if given, else the generator the transform was built with
    (None: torch's global one). ``steps`` reads back the op names in order.
    """

    def __init__(self, steps, generator=None):
        _check_generator(generator)
        self._steps = list(steps)
        self.generator = generator

    @property
    def steps(self) -> list[str]:
        return [step[0] for step in self._steps]

    def __call__(self, x, generator=None):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        check_images(x)
        _check_generator(generator)
        g = self.generator if generator is None else generator
        for _, op, takes_generator, kwargs in self._steps:
            x = op(x, **kwargs, generator=g) if takes_generator else op(x, **kwargs)
        return x[0] if single else x

    def __repr__(self) -> str:
        return f"Transform({' -> '.join(self.steps)})"


def build_transforms(modality: str, train: bool, size=(288, 144), *, normalized: bool = True,
                     padding: int = 10, flip_p: float = 0.5, erase_p: float = 0.5, jitter=(0.2, 0.2, 0.2),
                     jitter_p: float = 0.5, channel_p: float = 0.5, channel_mode: str = "replicate",
                     ir_p: float = 0.5, ir_contrast: float = 0.3, ir_brightness: float = 0.2,
                     generator=None) -> Transform:
    """The augmentation pipeline of ``modality`` in {"rgb", "ir"} for training (``train=True``) or test.

    ``size = (H, W)`` is the output size; ``normalized=False`` leaves out the
    ImageNet normalisation (outputs stay in [0, 1]). The keyword arguments are
    the strengths and probabilities of the ops (see each op).
    """
    if modality not in ("rgb", "ir"):
        raise ValueError(f"modality: expected 'rgb' or 'ir', got {modality!r}")
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size: expected (H, W) with positive entries, got {size}")
    for name, v in (("flip_p", flip_p), ("erase_p", erase_p), ("jitter_p", jitter_p), ("channel_p", channel_p),
                    ("ir_p", ir_p)):
        _check_prob(v, name)
    if channel_mode not in ("replicate", "permute"):
        raise ValueError(f"channel_mode: expected 'replicate' or 'permute', got {channel_mode!r}")
    steps = [("resize", resize, False, {"size": size})]
    if modality == "ir":
        if train:
            steps.append(("ir_adapt", ir_adapt, True, {"p": ir_p, "contrast": ir_contrast,
                                                       "brightness": ir_brightness}))
        else:
            steps.append(("to_grey", to_grey, False, {}))
        erase_value = sum(IMAGENET_MEAN) / 3.0  # one value: the channels stay equal
    else:
        if train:
            b, c, s = jitter
            steps.append(("color_jitter", color_jitter, True, {"brightness": b, "contrast": c, "saturation": s,
                                                               "p": jitter_p}))
            steps.append(("channel_exchange", channel_exchange, True, {"p": channel_p, "mode": channel_mode}))
        erase_value = IMAGENET_MEAN
    if train:
        steps.append(("pad_crop", pad_crop, True, {"padding": padding, "fill": 0.0}))
        steps.append(("hflip", hflip, True, {"p": flip_p}))
        steps.append(("random_erasing", random_erasing, True, {"p": erase_p, "value": erase_value}))
    if normalized:
        steps.append(("normalize", normalize, False, {}))
    return Transform(steps, generator)
