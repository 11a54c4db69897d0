"""The network of the released HIL code: TransReID ViT-B/16 with the ICS stem, two patch embeddings, heads d and s.

Written from the public release (haonanshi0125/HIL, ``model_vit_cmrefine``;
see /work/shared/HIL_RELEASE.md, "network"), parameter names chosen so that
``HILNet().state_dict()`` has the release's key layout (without DataParallel's
``module.`` prefix):

* ``base.patch_embed`` -- the ICS convolutional stem (``conv``: conv7x7/2
  3->64, IBN, ReLU, conv3x3 64->64, IBN, ReLU, conv3x3 64->64, BN, ReLU; IBN =
  InstanceNorm2d(affine) on the first half of the channels, BatchNorm2d on the
  rest) then ``proj`` = Conv2d(64, D, kernel 8, stride 8), so a 288x144 image
  gives the 18x9 grid of stride 16. ``stem_conv=False``: ``proj`` =
  Conv2d(3, D, 16, 16). ``base.patch_embed2`` is the same for the IR images
  (initialised as a copy of the first after loading pretrained weights).
* ``base.cls_token``, ``base.pos_embed``, ``base.blocks.0..depth-1`` (pre-norm
  blocks, LayerNorm eps 1e-6), ``base.norm``. The base runs all blocks but
  the last and returns the tokens ``x`` and the *shallow* patch tokens
  ``x_s`` (patch embedding + position embedding, before any block).
* ``b1`` = (copy of the last block, copy of the final LayerNorm) on ``x``;
  its cls token -> ``bottleneck`` (BatchNorm1d, shift frozen) = ``feat``.
* ``b2`` = another such copy on ``[cls token of x, x_s]``; its cls token ->
  ``bottlenecks`` (BatchNorm1d, shift frozen) = ``feat_s``.

``forward(x, modal)`` returns ``{"d": feat, "s": feat_s}`` (train and eval);
``modal`` is ``"rgb"`` (``patch_embed``), ``"ir"`` (``patch_embed2``) or an
int ``n``: the first ``n`` rows are RGB, the rest IR (the release's
``modal=0`` training forward). ``extract(x, modal)`` is the release's
clustering feature ``normalize(cat(feat, feat_s))`` (no per-head normalisation).

Loading (:func:`load_hil_weights`): (a) a TransReID / TransReID-SSL ViT file
(``vit_base_ics_cfs_lup.pth``: keys ``patch_embed.conv.*``,
``patch_embed.proj.weight`` [768, 64, 8, 8], ``blocks.*``, ...; DINO
``teacher``/``backbone.`` wrappers peeled) into the base, ``pos_embed``
resized bilinearly with ``hw_ratio`` 2, then ``patch_embed2``, ``b1`` and
``b2`` initialised as copies, as the release's constructor does; (b) a full
training checkpoint of the release or of SDCL (``model_best.pth.tar``:
``{"state_dict": ...}``, keys with or without ``module.``). Shapes must fit
(a message names the key); the :class:`~hilcore.train.backbones.LoadReport`
lists missing, unexpected, ignored and resized keys.

Example::

    net = HILNet()                                       # ViT-B/16, ICS stem, 288x144
    rep = load_hil_weights(net, "vit_base_ics_cfs_lup.pth")
    rep = load_hil_weights(net, "logs/sysu_train_baseline/model_best.pth.tar")
    net.eval(); out = net(images, "ir")                  # {"d": [B, 768], "s": [B, 768]}
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import (Block, LoadReport, _check_vit_input, _copy_into, _fit_vit_tensor, _init_linear_and_norm,
                        _pair, _strip, resize_pos_embed)

__all__ = ["HILNet", "ICSPatchEmbed", "IBN", "ModelSetupError", "load_hil_weights", "read_weights",
           "RELEASE_EXTRA_KEYS"]


class ModelSetupError(ValueError):
    """A weights file or a model option that cannot be used (the message names the file / key / option)."""

# Keys of the release's state dict that no forward pass reads (the TransReID classifier ``fc`` and a
# ``decoder_norm`` left in its constructor); a checkpoint holding them loads with them listed as ignored.
RELEASE_EXTRA_KEYS = ("base.fc.", "base.decoder_norm.")
# Keys the release's pretrained loader skips (``'head' in k or 'dist' in k or 'pre_logits' in k``).
_PRETRAINED_SKIP = ("head", "dist", "pre_logits")


class IBN(nn.Module):
    """Instance-batch normalisation: InstanceNorm2d(affine) on the first ``planes // 2`` channels, BN on the rest."""

    def __init__(self, planes: int):
        super().__init__()
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        a, b = x[:, :self.half].contiguous(), x[:, self.half:].contiguous()
        return torch.cat([self.IN(a), self.BN(b)], dim=1)


class ICSPatchEmbed(nn.Module):
    """Patch embedding with the ICS convolutional stem (``stem_conv=True``) or a plain strided conv."""

    def __init__(self, img_size=(288, 144), patch_size=16, stride=16, in_chans=3, embed_dim=768,
                 stem_conv=True, hidden=64):
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        p, s = _pair(patch_size, "patch_size"), _pair(stride, "stride")
        self.grid = tuple((i - pp) // ss + 1 for i, pp, ss in zip(self.img_size, p, s))
        if min(self.grid) < 1:
            raise ValueError(f"img_size: {self.img_size} is smaller than patch_size {p}")
        self.num_patches = self.grid[0] * self.grid[1]
        self.stem_conv = bool(stem_conv)
        if self.stem_conv:
            if p[0] != p[1] or p[0] % 2:
                raise ValueError(f"patch_size: the ICS stem needs a square even patch, got {p}")
            self.conv = nn.Sequential(
                nn.Conv2d(in_chans, hidden, 7, stride=2, padding=3, bias=False), IBN(hidden), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, hidden, 3, stride=1, padding=1, bias=False), IBN(hidden), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, hidden, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True))
            # the release replaces both the kernel and the stride by patch // 2 after the stride-2 stem
            self.proj = nn.Conv2d(hidden, embed_dim, kernel_size=p[0] // 2, stride=p[0] // 2)
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=p, stride=s)

    def forward(self, x):
        if self.stem_conv:
            x = self.conv(x)
        x = self.proj(x)
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"x: the patch grid {tuple(x.shape[-2:])} differs from the model's {self.grid} "
                             f"(images of size {self.img_size} expected)")
        return x.flatten(2).transpose(1, 2)


class HILBase(nn.Module):
    """The release's TransReID base: two patch embeddings, cls token, position embedding, blocks, final norm."""

    def __init__(self, img_size=(288, 144), patch_size=16, stride=16, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                 stem_conv=True):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth: expected >= 2 blocks (the base runs all but the last), got {depth}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate: expected a value in [0, 1), got {drop_path_rate}")
        mk = lambda: ICSPatchEmbed(img_size, patch_size, stride, 3, embed_dim, stem_conv)  # noqa: E731
        self.patch_embed = mk()
        self.patch_embed2 = mk()
        self.img_size, self.grid = self.patch_embed.img_size, self.patch_embed.grid
        self.embed_dim = embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / (depth - 1) for i in range(depth)]  # torch.linspace(0, rate, depth)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, r)
                                    for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        _init_linear_and_norm(self)

    def embed(self, x, modal):
        if isinstance(modal, str):
            if modal not in ("rgb", "ir"):
                raise ValueError(f"modal: expected 'rgb', 'ir' or the number of leading RGB rows, got {modal!r}")
            return (self.patch_embed if modal == "rgb" else self.patch_embed2)(x)
        n = int(modal)
        if not 0 <= n <= x.shape[0]:
            raise ValueError(f"modal: {n} leading RGB rows requested from a batch of {x.shape[0]}")
        parts = []
        if n > 0:
            parts.append(self.patch_embed(x[:n]))
        if n < x.shape[0]:
            parts.append(self.patch_embed2(x[n:]))
        return torch.cat(parts)

    def forward(self, x, modal="rgb"):
        """``(tokens after all blocks but the last [B, 1+N, D], shallow patch tokens [B, N, D])``."""
        x = self.embed(x, modal)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        x_s = x[:, 1:]
        for blk in self.blocks[:-1]:
            x = blk(x)
        return x, x_s


def _bn_neck(dim: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


class HILNet(nn.Module):
    """The released HIL model; see the module docstring. kwargs: :class:`HILBase`'s (depth, embed_dim, ...)."""

    modal_aware = True

    def __init__(self, img_size=(288, 144), **kw):
        super().__init__()
        self.base = HILBase(img_size=img_size, **kw)
        d = self.base.embed_dim
        self.img_size, self.grid = self.base.img_size, self.base.grid
        self.b1 = nn.Sequential(copy.deepcopy(self.base.blocks[-1]), copy.deepcopy(self.base.norm))
        self.b2 = nn.Sequential(copy.deepcopy(self.base.blocks[-1]), copy.deepcopy(self.base.norm))
        self.bottleneck = _bn_neck(d)
        self.bottlenecks = _bn_neck(d)
        self.dims = {"d": d, "s": d}
        self.feat_dim = 2 * d
        self.load_report = None

    def init_copies(self) -> None:
        """What the release's constructor does after loading the pretrained base: ``patch_embed2`` := copy of
        ``patch_embed``; ``b1``, ``b2`` := copies of the last block and the final LayerNorm."""
        with torch.no_grad():
            self.base.patch_embed2.load_state_dict(self.base.patch_embed.state_dict())
            for b in (self.b1, self.b2):
                b[0].load_state_dict(self.base.blocks[-1].state_dict())
                b[1].load_state_dict(self.base.norm.state_dict())

    def forward(self, x, modal="rgb") -> dict:
        _check_vit_input(x, self.img_size)
        tokens, x_s = self.base(x, modal)
        feat = self.bottleneck(self.b1(tokens)[:, 0])
        feat_s = self.bottlenecks(self.b2(torch.cat([tokens[:, :1], x_s], dim=1))[:, 0])
        return {"d": feat, "s": feat_s}

    @torch.no_grad()
    def extract(self, x, modal="rgb") -> torch.Tensor:
        """``normalize(cat(feat, feat_s))`` ``[B, 2D]`` (the release's clustering feature of one view)."""
        out = self.forward(x, modal)
        return F.normalize(torch.cat([out["d"], out["s"]], dim=1), dim=1)


# ---------------------------------------------------------------------------------------------- loading
def _safe_globals() -> list:
    """What a weights file may hold besides tensors and containers: plain NumPy arrays and scalars (the
    release saves ``best_mAP`` as a NumPy float) and DINO's ``argparse.Namespace``. An object array would need
    further globals and is refused like any other pickled object."""
    import argparse

    import numpy as np

    allowed = [argparse.Namespace, np.ndarray, np.dtype, np._core.multiarray._reconstruct,
               np._core.multiarray.scalar]
    allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n != "ObjectDType"]
    return allowed


def read_weights(path):
    """Read a weights file with :func:`hilcore.train.checkpoint.load_state_file` (``torch.load(weights_only=True)``;
    a ``hil train`` checkpoint is checksum-verified); never runs code from the file. Raises FileNotFoundError, or
    :class:`ModelSetupError` for a file that pickles other objects, is truncated or is not a torch file."""
    from .checkpoint import CheckpointError, load_state_file

    try:
        return load_state_file(path, what="checkpoint", safe_globals=_safe_globals())
    except CheckpointError as e:
        raise ModelSetupError(str(e)) from None


def _unwrap(obj) -> Mapping:
    for _ in range(8):
        if not isinstance(obj, Mapping):
            raise TypeError(f"checkpoint: expected a state dict (a mapping of names to tensors), "
                            f"got {type(obj).__name__}")
        for key in ("state_dict", "model", "teacher", "model_state_dict", "net"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            return obj
    return obj


def _old_grid(n: int, hw_ratio: int, new_grid):
    h = int(math.sqrt(n * hw_ratio))
    w = h // hw_ratio if hw_ratio else 0
    if h * w == n:
        return h, w
    from .backbones import _infer_grid

    return _infer_grid(n, new_grid)


def load_hil_weights(model: HILNet, path_or_state_dict, *, hw_ratio: int = 2, strict: bool = False) -> LoadReport:
    """Load a pretrained ViT file or a full release/SDCL checkpoint into ``model`` (in place); see the module doc.

    A file whose keys name the release's modules (``base.``, ``b1.``, ``b2.``,
    ``bottleneck``) is a full checkpoint: every key is matched as is (after
    stripping ``module.``), shapes must be equal. Otherwise it is a pretrained
    ViT: keys (after ``module.`` / ``backbone.``) go to ``model.base``; keys
    containing ``head``, ``dist`` or ``pre_logits`` are ignored (as the release
    does), and so are TransReID's unused ``fc`` / ``decoder_norm``; ``pos_embed``
    of another grid is resized bilinearly from the grid ``(sqrt(n * hw_ratio),
    . / hw_ratio)``; a 2-D ``patch_embed.proj.weight`` is reshaped; then
    :meth:`HILNet.init_copies`. (Checked once against the release's own
    ``load_param`` and forward: identical weights, outputs within 2e-6.)

    Returns a :class:`LoadReport`; raises :class:`ModelSetupError` (a ValueError) naming the key whose
    shape does not fit, when nothing matches, or (``strict``) when a model key
    is missing or a checkpoint key unexpected.
    """
    if not isinstance(model, HILNet):
        raise TypeError(f"model: expected a HILNet, got {type(model).__name__}")
    src = path_or_state_dict
    obj = read_weights(src) if isinstance(src, (str, Path)) else src
    sd = _unwrap(obj)
    keys = [k for k in sd]
    for k in keys:
        if not isinstance(k, str):
            raise TypeError(f"checkpoint: expected string keys, got {k!r}")
    full = any(_strip(k, ("module.",)).startswith(("base.", "b1.", "b2.", "bottleneck")) for k in keys)
    if full:
        target = model.state_dict()
        prefixes = ("module.",)
    else:
        target = model.base.state_dict()
        prefixes = ("module.", "backbone.")
    new, unexpected, ignored, resized, seen = {}, [], [], [], {}
    for k in keys:
        s = _strip(k, prefixes)
        if s in seen:
            raise ModelSetupError(f"checkpoint: keys {seen[s]!r} and {k!r} both map to {s!r}")
        seen[s] = k
        v = sd[k]
        extra = s.startswith(RELEASE_EXTRA_KEYS) if full else s.startswith(tuple(k[5:] for k in RELEASE_EXTRA_KEYS))
        if extra or not full and any(t in s for t in _PRETRAINED_SKIP):
            ignored.append(k)
            continue
        if s not in target:
            unexpected.append(k)
            continue
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"checkpoint key {k!r}: expected a tensor, got {type(v).__name__}")
        want = target[s].shape
        if v.shape != want and not full:
            v, was_resized = _fit_vit_tensor(s, v, want, lambda p: resize_pos_embed(
                p, model.grid, _old_grid(p.shape[1] - 1, hw_ratio, model.grid), 1, "bilinear"))
            if was_resized:
                resized.append(k)
        if v.shape != want:
            raise ModelSetupError(f"checkpoint key {k!r}: shape {tuple(sd[k].shape)} does not fit the model's {s!r} of "
                             f"shape {tuple(want)}")
        new[s] = v
    if not new:
        raise ModelSetupError(f"checkpoint: no key matches the HIL network (first keys: {keys[:5]})")
    missing = [s for s in target if s not in new]
    if strict and (missing or unexpected):
        raise ModelSetupError(f"checkpoint: strict load failed; missing {missing[:10]}, unexpected {unexpected[:10]}")
    _copy_into(target, new)
    if not full:
        model.init_copies()   # ``missing`` names base keys (patch_embed2 is then a copy)
    report = LoadReport(missing, unexpected, ignored, resized)
    model.load_report = report
    return report


# ---------------------------------------------------------------------------------------------- features
HEADS_CHOICES = ("d", "s", "both")


@torch.no_grad()
def flip_features(net: HILNet, x: torch.Tensor, modal) -> tuple[torch.Tensor, torch.Tensor]:
    """``((f(x) + f(flip(x))) / 2`` for head d and head s, the release's extraction (eval mode is the caller's).

    ``x``: normalised images ``[B, 3, H, W]``; ``flip`` mirrors the width.
    """
    a = net(x, modal)
    b = net(torch.flip(x, dims=[3]), modal)
    return (a["d"] + b["d"]) / 2.0, (a["s"] + b["s"]) / 2.0


def combine_heads(d: torch.Tensor, s: torch.Tensor, heads: str = "both") -> torch.Tensor:
    """The release's clustering feature ``normalize(cat(d, s))`` (``heads="both"``; the heads are not
    normalised before the concatenation), or ``normalize(d)`` / ``normalize(s)``."""
    if heads not in HEADS_CHOICES:
        raise ValueError(f"heads: expected one of {HEADS_CHOICES}, got {heads!r}")
    x = {"d": d, "s": s}.get(heads)
    return F.normalize(torch.cat([d, s], dim=1) if x is None else x, dim=1)


def build_hil_net(size=(288, 144), kwargs=None, pretrained=None, init_from=None, *, hw_ratio: int = 2,
                  log=None) -> HILNet:
    """A :class:`HILNet` for images of ``size``: ``pretrained`` (a TransReID-SSL ViT file) loaded into the base and
    copied, then ``init_from`` (a release / SDCL ``model_best.pth.tar``) over the whole model, as the release
    does before epoch 0. ``log(msg)`` receives one line per file with the key report."""
    try:
        net = HILNet(img_size=tuple(size), **dict(kwargs or {}))
    except (TypeError, ValueError) as e:
        raise ModelSetupError(f"config.model.kwargs: {kwargs!r} do not build the released network (options: "
                              f"depth, embed_dim, num_heads, mlp_ratio, drop_path_rate, stem_conv, ...): {e}") from None
    for what, path in (("pretrained", pretrained), ("init_from", init_from)):
        if path is None:
            continue
        try:
            rep = load_hil_weights(net, path, hw_ratio=hw_ratio)
        except (ModelSetupError, TypeError) as e:
            raise ModelSetupError(f"model.{what}: {e}") from None
        if what == "init_from" and rep.missing:
            raise ModelSetupError(f"model.init_from: {path} is not a full HIL checkpoint: {len(rep.missing)} model "
                             f"keys missing (first: {rep.missing[:5]})")
        if log is not None:
            log(f"weights    {what} {path}: {len(rep.missing)} missing, {len(rep.unexpected)} unexpected "
                f"{rep.unexpected[:5]}, {len(rep.ignored)} ignored, resized {rep.resized}")
    return net
