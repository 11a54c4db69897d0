"""Backbones and the two-head ReID model of the HIL driver, in plain PyTorch.

Three backbones, each an ``nn.Module`` mapping ``[B, 3, H, W]`` images to a
pooled feature ``[B, out_dim]``:

* :class:`VisionTransformer` -- ViT-B/16 for ReID (patch 16, stride 16, input
  288x144 -> an 18x9 patch grid, embed 768, depth 12, 12 heads, MLP 3072,
  pre-norm blocks, cls token, learned position embedding, final LayerNorm,
  configurable drop-path). The feature is the cls token after the final LayerNorm. Parameter
  names are those of TransReID / TransReID-SSL, so their ``.pth`` files load
  with :func:`load_transreid_checkpoint`.
* :class:`ResNet50` -- bottleneck blocks 3-4-6-3 with the last stride set to
  1 (as in ReID: a 288x144 input gives an 18x9 map), GeM or average pooling.
  Parameter names follow the usual ImageNet ResNet layout (``conv1``,
  ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ...).
* :class:`TinyCNN` -- four conv-BN-ReLU stages (~0.4M parameters) for CPU runs.

:class:`ReIDModel` puts two heads on a backbone (docs/design.md: "two heads, 'd'
and 's'; clustering uses the normalised concatenation"):

* head ``"d"``: a BNNeck -- ``BatchNorm1d(out_dim)`` on the pooled feature,
  its shift frozen at 0; ``feat_d`` has ``out_dim`` entries;
* head ``"s"``: its own BNNeck ``BatchNorm1d(out_dim)`` followed by a linear
  projection ``out_dim -> s_dim`` without bias (``s_dim`` defaults to
  ``out_dim``).

``forward(x)`` returns ``{"d": feat_d, "s": feat_s}`` (un-normalised; the
losses normalise); ``extract(x)`` returns the L2-normalised concatenation
``normalize(cat(normalize(feat_d), normalize(feat_s)))`` -- each head weighs
the same -- of shape ``[B, out_dim + s_dim]``, for clustering and evaluation.

Example::

    model = build_model("tiny")
    out = model(torch.rand(8, 3, 288, 144))      # {"d": [8, 256], "s": [8, 256]}
    model.eval(); feats = model.extract(x)       # [8, 512], rows of unit norm

    vit = build_model("vit_b16", pretrained="transreid_ssl_vit_base.pth")
"""
from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import check_images

__all__ = ["BACKBONES", "GeM", "LoadReport", "ReIDModel", "ResNet50", "TinyCNN", "VisionTransformer",
           "build_backbone", "build_model", "load_transreid_checkpoint", "resize_pos_embed"]


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    try:
        a, b = (int(t) for t in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an int or a pair (H, W), got {v!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"{name}: expected positive sizes, got {v!r}")
    return a, b


# ----------------------------------------------------------------------------------------------
# ViT-B/16
# ----------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``p`` (scaled by 1/(1-p))."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """Image -> patch tokens with one strided convolution; ``grid`` is the (rows, cols) token grid."""

    def __init__(self, img_size=(288, 144), patch_size=16, stride=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        self.patch_size = _pair(patch_size, "patch_size")
        self.stride = _pair(stride, "stride")
        self.grid = tuple((s - p) // st + 1 for s, p, st in zip(self.img_size, self.patch_size, self.stride))
        if min(self.grid) < 1:
            raise ValueError(f"img_size: {self.img_size} is smaller than patch_size {self.patch_size}")
        self.num_patches = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.stride)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    """Multi-head self-attention; ``qkv`` rows are laid out [q; k; v], each [heads x head_dim]."""

    def __init__(self, dim, num_heads, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide embed_dim {dim}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, head_dim]; softmax(q k^T / sqrt(head_dim)) v
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop=0.0, attn_drop=0.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _init_linear_and_norm(module: nn.Module) -> None:
    """The ViT initialisation of ``module``'s sub-modules, in ``modules()`` order: every Linear weight
    truncated-normal (std 0.02) with a zero bias, every LayerNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _check_vit_input(x, img_size) -> None:
    """:func:`check_images`, then a ValueError unless ``x``'s (H, W) is the model's ``img_size``."""
    check_images(x)
    if tuple(x.shape[-2:]) != img_size:
        raise ValueError(f"x: expected images of size {img_size} (the model's img_size), "
                         f"got {tuple(x.shape[-2:])}")


class VisionTransformer(nn.Module):
    """ViT for ReID; defaults are ViT-B/16 at 288x144 (18x9 patches). Output: the cls token after the final LayerNorm.

    ``drop_path_rate`` is the stochastic-depth rate of the last block (linearly
    increasing from 0 over the blocks). The input must have size ``img_size``.
    """

    def __init__(self, img_size=(288, 144), patch_size=16, stride=16, in_chans=3, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0):
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate: expected a value in [0, 1), got {drop_path_rate}")
        self.patch_embed = PatchEmbed(img_size, patch_size, stride, in_chans, embed_dim)
        self.img_size = self.patch_embed.img_size
        self.grid = self.patch_embed.grid
        self.embed_dim = self.out_dim = embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, r)
                                    for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        _init_linear_and_norm(self)

    def forward_tokens(self, x):
        """All tokens after the final LayerNorm: ``[B, 1 + rows*cols, D]`` (cls first)."""
        _check_vit_input(x, self.img_size)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x):
        return self.forward_tokens(x)[:, 0]


def _infer_grid(n: int, target: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) of a checkpoint grid of ``n`` tokens.

    In order: the factorisation with the target's exact aspect ratio (256x128
    -> 16x8 for an 18x9 target), a square (224x224 -> 14x14), else the
    factorisation whose aspect ratio is closest to the target's.
    """
    pairs = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
    th, tw = target
    exact = [(h, w) for h, w in pairs if h * tw == w * th]
    if exact:
        return exact[0]
    r = math.isqrt(n)
    if r * r == n:
        return r, r
    goal = math.log(th / tw)
    return min(pairs, key=lambda p: abs(math.log(p[0] / p[1]) - goal))


def resize_pos_embed(pos_embed: torch.Tensor, new_grid, old_grid=None, num_extra_tokens: int = 1,
                     mode: str = "bicubic") -> torch.Tensor:
    """Resize a ``[1, E + gh*gw, D]`` position embedding to ``[1, 1 + new_h*new_w, D]``.

    The first of the ``E`` extra tokens (the cls token) is kept as is, other
    extra tokens (DeiT's distillation token) are dropped; the grid part is
    interpolated (``mode`` "bicubic" or "bilinear", ``align_corners=False``)
    from ``old_grid`` (inferred from the token count when None, see
    :func:`_infer_grid`) to ``new_grid``.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed: expected shape [1, tokens, dim], got {tuple(pos_embed.shape)}")
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"mode: expected 'bicubic' or 'bilinear', got {mode!r}")
    new_grid = _pair(new_grid, "new_grid")
    cls_tok, grid = pos_embed[:, :1], pos_embed[:, num_extra_tokens:]
    n, dim = grid.shape[1], grid.shape[2]
    old_grid = _infer_grid(n, new_grid) if old_grid is None else _pair(old_grid, "old_grid")
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid: {old_grid} does not hold the {n} grid tokens of pos_embed")
    if old_grid != new_grid:
        g = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2).float()
        g = F.interpolate(g, size=new_grid, mode=mode, align_corners=False)
        grid = g.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([cls_tok, grid], dim=1)


class LoadReport(NamedTuple):
    """What :func:`load_transreid_checkpoint` did; key names are the checkpoint's own (before prefix stripping)
    except ``missing``, which names the model's parameters that the checkpoint did not provide."""

    missing: list
    unexpected: list
    ignored: list
    resized: list


WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
KEY_PREFIXES = ("module.", "backbone.", "base.")
IGNORED_PREFIXES = ("head.", "heads.", "fc.", "classifier.", "bottleneck.")


def _unwrap_state_dict(obj, prefer: str):
    """Peel ``{"model": ...}``, ``{"state_dict": ...}`` and DINO ``{"teacher"/"student": ...}`` wrappers."""
    other = "student" if prefer == "teacher" else "teacher"
    for _ in range(8):
        if not isinstance(obj, Mapping):
            raise TypeError(f"checkpoint: expected a state dict (a mapping of names to tensors), "
                            f"got {type(obj).__name__}")
        for key in (*WRAPPER_KEYS, prefer, other):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            return obj
    return obj


def _strip(key: str, prefixes=KEY_PREFIXES) -> str:
    """``key`` with the ``prefixes`` peeled off its front, repeatedly, in any order."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def load_transreid_checkpoint(model, path_or_state_dict, *, prefer: str = "teacher", ckpt_grid=None,
                              interpolation: str = "bicubic", strict: bool = False,
                              weights_only: bool = True) -> LoadReport:
    """Load a TransReID / TransReID-SSL / DINO ViT checkpoint into ``model`` (in place).

    ``model`` is a :class:`VisionTransformer` or a :class:`ReIDModel` holding
    one (its backbone is loaded, the heads are left alone).
    ``path_or_state_dict``: a ``.pth`` path or an already loaded object. It may
    be wrapped (``{"model": sd}``, ``{"state_dict": sd}``, DINO
    ``{"teacher": sd, "student": sd}`` -- ``prefer`` picks which), and keys may
    carry the prefixes ``module.``, ``backbone.``, ``base.`` (any order, any
    number). Keys under ``head.``, ``heads.``, ``fc.``, ``classifier.``,
    ``bottleneck.`` are ignored. A ``pos_embed`` from another patch grid is
    resized (``interpolation``; cls token kept; the checkpoint's grid is
    ``ckpt_grid`` or inferred from its token count); a 2-D
    ``patch_embed.proj.weight`` (old JAX layout) is reshaped.

    Returns a :class:`LoadReport` (missing, unexpected, ignored, resized).
    Raises ``ValueError`` when no key matches the model, on a shape that cannot
    be reconciled (naming the key), and with ``strict=True`` when anything is
    missing or unexpected.

    Files are read with ``torch.load(weights_only=True)`` (tensors, containers
    and DINO's ``argparse.Namespace`` of arguments) by
    :func:`hilcore.train.checkpoint.load_state_file`; a checkpoint that pickles
    other Python objects is refused (ValueError): load a file you trust
    yourself and pass the object.
    """
    if isinstance(model, ReIDModel):
        model = model.backbone
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"model: expected a VisionTransformer or a ReIDModel with one, got {type(model).__name__}")
    if prefer not in ("teacher", "student"):
        raise ValueError(f"prefer: expected 'teacher' or 'student', got {prefer!r}")
    if isinstance(path_or_state_dict, (str, Path)):
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"path_or_state_dict: checkpoint {path} does not exist")
        if not weights_only:
            raise ValueError("weights_only=False: hilcore never unpickles files in full (that can run code); "
                             "load a file you trust yourself and pass the loaded object")
        from .checkpoint import load_state_file

        obj = load_state_file(path, what="path_or_state_dict", safe_globals=[argparse.Namespace])
    else:
        obj = path_or_state_dict
    sd = _unwrap_state_dict(obj, prefer)

    target = model.state_dict()
    names = {}
    for k in sd:
        if not isinstance(k, str):
            raise TypeError(f"checkpoint: expected string keys, got {k!r}")
        s = _strip(k)
        if s in names:
            raise ValueError(f"checkpoint: keys {names[s]!r} and {k!r} both map to {s!r}")
        names[s] = k
    num_extra = 2 if "dist_token" in names else 1

    new, unexpected, ignored, resized = {}, [], [], []
    for s, k in names.items():
        v = sd[k]
        if s.startswith(IGNORED_PREFIXES):
            ignored.append(k)
            continue
        if s not in target:
            unexpected.append(k)
            continue
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"checkpoint key {k!r}: expected a tensor, got {type(v).__name__}")
        want = target[s].shape
        if v.shape != want:
            v, was_resized = _fit_vit_tensor(s, v, want, lambda p: resize_pos_embed(p, model.grid, ckpt_grid,
                                                                                     num_extra, interpolation))
            if was_resized:
                resized.append(k)
            if v.shape != want:
                hint = ""
                if s == "patch_embed.proj.weight" and "patch_embed.conv.0.weight" in names:
                    hint = ("; this file has the ICS convolutional stem (TransReID-SSL vit_base_ics_*): load it "
                            "with model.backbone: hil_vit (configs/sysu_hil.yaml)")
                raise ValueError(f"checkpoint key {k!r}: shape {tuple(sd[k].shape)} cannot be loaded into "
                                 f"the model's {s!r} of shape {tuple(want)}{hint}")
        new[s] = v
    if not new:
        raise ValueError(f"checkpoint: no key matches the ViT's parameters (first keys: {list(sd)[:5]})")
    missing = [s for s in target if s not in new]
    if strict and (missing or unexpected):
        raise ValueError(f"checkpoint: strict load failed; missing {missing}, unexpected {unexpected}")
    _copy_into(target, new)
    return LoadReport(missing, unexpected, ignored, resized)


def _fit_vit_tensor(s: str, v: torch.Tensor, want, resize) -> tuple[torch.Tensor, bool]:
    """The ViT loaders' shape reconciliation of checkpoint tensor ``v`` for parameter ``s`` of shape ``want``:
    a ``[1, n, D]`` ``pos_embed`` of another grid becomes ``resize(v)``, a 2-D ``patch_embed.proj.weight``
    with ``want``'s element count is reshaped; anything else comes back unchanged (the caller checks the
    shape). Returns ``(tensor, resized)``."""
    if s == "pos_embed" and v.dim() == 3 and v.shape[0] == 1 and v.shape[2] == want[2]:
        return resize(v), True
    if s == "patch_embed.proj.weight" and v.dim() == 2 and v.numel() == math.prod(want):
        return v.reshape(want), False
    return v, False


def _copy_into(target: Mapping, new: Mapping) -> None:
    """Copy every ``new[name]`` into the parameter / buffer ``target[name]`` in place (no autograd)."""
    with torch.no_grad():
        for s, v in new.items():
            target[s].copy_(v)


# ----------------------------------------------------------------------------------------------
# ResNet-50 and the tiny CNN
# ----------------------------------------------------------------------------------------------
class GeM(nn.Module):
    """Generalised-mean pooling ``(mean x^p)^(1/p)`` over H, W with a learned ``p`` (init 3)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x):
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


def _pool(pooling: str) -> nn.Module:
    if pooling == "gem":
        return GeM()
    if pooling == "avg":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    raise ValueError(f"pooling: expected 'gem' or 'avg', got {pooling!r}")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet50(nn.Module):
    """ResNet-50 trunk (3-4-6-3 bottlenecks, stride on the 3x3 conv), ``last_stride`` 1 for ReID; out_dim 2048."""

    def __init__(self, last_stride: int = 1, pooling: str = "gem", layers=(3, 4, 6, 3)):
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride: expected 1 or 2, got {last_stride}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], last_stride)
        self.pool = _pool(pooling)
        self.out_dim = 512 * Bottleneck.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes, blocks, stride):
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x):
        """The layer4 map ``[B, 2048, H/16, W/16]`` (last stride 1)."""
        check_images(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.pool(self.forward_features(x))


class TinyCNN(nn.Module):
    """Four stride-2 conv3x3-BN-ReLU stages (w, 2w, 4w, 8w channels; w=32 -> ~0.39M params), pooled."""

    def __init__(self, width: int = 32, pooling: str = "avg"):
        super().__init__()
        if width < 1:
            raise ValueError(f"width: expected a positive int, got {width}")
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = _pool(pooling)
        self.out_dim = chans[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        check_images(x)
        return self.features(x)

    def forward(self, x):
        return self.pool(self.forward_features(x))


# ----------------------------------------------------------------------------------------------
# The two-head ReID model
# ----------------------------------------------------------------------------------------------
class BNNeck(nn.Module):
    """BatchNorm1d with its shift frozen at 0 (BNNeck), then an optional bias-free linear projection."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.proj = None if out_dim is None else nn.Linear(dim, out_dim, bias=False)
        self.out_dim = dim if out_dim is None else out_dim

    def forward(self, x):
        x = self.bn(x)
        return x if self.proj is None else self.proj(x)


class ReIDModel(nn.Module):
    """backbone -> pooled feature -> heads ``"d"`` (BNNeck) and ``"s"`` (BNNeck + projection to ``s_dim``).

    ``forward(x)`` -> ``{"d": [B, out_dim], "s": [B, s_dim]}``, un-normalised.
    ``extract(x)`` -> ``[B, out_dim + s_dim]``, the L2-normalised concatenation
    of the L2-normalised heads (no gradient; put the model in eval mode first
    so the BNNecks use their running statistics).
    """

    def __init__(self, backbone: nn.Module, s_dim: int | None = None):
        super().__init__()
        dim = int(backbone.out_dim)
        s_dim = dim if s_dim is None else int(s_dim)
        if s_dim < 1:
            raise ValueError(f"s_dim: expected a positive int, got {s_dim}")
        self.backbone = backbone
        self.heads = nn.ModuleDict({"d": BNNeck(dim), "s": BNNeck(dim, s_dim)})
        self.dims = {"d": dim, "s": s_dim}
        self.feat_dim = dim + s_dim

    def forward(self, x) -> dict:
        f = self.backbone(x)
        return {name: head(f) for name, head in self.heads.items()}

    @torch.no_grad()
    def extract(self, x) -> torch.Tensor:
        out = self.forward(x)
        cat = torch.cat([F.normalize(out["d"], dim=1), F.normalize(out["s"], dim=1)], dim=1)
        return F.normalize(cat, dim=1)


BACKBONES = ("vit_b16", "resnet50", "tiny")


def build_backbone(name: str, **kw) -> nn.Module:
    """``"vit_b16"`` (kw: VisionTransformer's, e.g. img_size, drop_path_rate), ``"resnet50"`` (last_stride,
    pooling) or ``"tiny"`` (width, pooling)."""
    if name == "vit_b16":
        return VisionTransformer(**kw)
    if name == "resnet50":
        return ResNet50(**kw)
    if name == "tiny":
        return TinyCNN(**kw)
    raise ValueError(f"name: expected one of {BACKBONES}, got {name!r}")


def build_model(name: str, *, s_dim: int | None = None, pretrained=None, **kw) -> ReIDModel:
    """A :class:`ReIDModel` on backbone ``name`` in {"vit_b16", "resnet50", "tiny"}.

    ``kw`` go to the backbone (e.g. ``img_size=(288, 144), drop_path_rate=0.1``
    for the ViT, ``pooling="avg"`` for the CNNs). ``pretrained`` (ViT only): a
    TransReID / TransReID-SSL checkpoint path or state dict, loaded with
    :func:`load_transreid_checkpoint`; the report is kept as ``model.load_report``
    (a warning names the parameters it left missing).
    """
    model = ReIDModel(build_backbone(name, **kw), s_dim=s_dim)
    model.load_report = None
    if pretrained is not None:
        if name != "vit_b16":
            raise ValueError(f"pretrained: only the 'vit_b16' backbone loads checkpoints, got name={name!r}")
        model.load_report = load_transreid_checkpoint(model, pretrained)
        if model.load_report.missing:
            warnings.warn(f"pretrained: the checkpoint left {len(model.load_report.missing)} ViT parameters at "
                          f"their initial values: {model.load_report.missing[:8]}", stacklevel=2)
    return model
