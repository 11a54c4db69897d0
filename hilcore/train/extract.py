"""``hil extract``: the release's features of a folder of images (one row per image, sorted by file name).

Per image: the release's test transform (PIL bicubic resize to the model's
H x W, to tensor in [0, 1], ImageNet mean/std); per batch:
:func:`hilcore.train.hil_vit.flip_features` of the chosen modality's branch
(``patch_embed`` for RGB, ``patch_embed2`` for IR) and
:func:`~hilcore.train.hil_vit.combine_heads` (``both``: ``normalize(cat(feat,
feat_s))``, what the release clusters).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .augment import IMAGENET_MEAN, IMAGENET_STD
from .hil_vit import combine_heads, flip_features

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def list_images(folder) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by their path relative to it (file-name order)."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"--images: no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"--images: not a folder: {root}")
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files


def load_test_image(path, size) -> torch.Tensor:
    """The release's test transform of one file: ``[3, H, W]`` float32, normalised with ImageNet mean/std."""
    from PIL import Image, UnidentifiedImageError

    h, w = (int(v) for v in size)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((w, h), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"image {path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def extract_files(net, files, modality: str, *, heads: str = "both", batch_size: int = 64, device="cpu",
                  progress: bool = False) -> np.ndarray:
    """``[len(files), D]`` float32 features of ``files`` in the given order (see the module doc)."""
    if modality not in ("rgb", "ir"):
        raise ValueError(f"modality: expected 'rgb' or 'ir', got {modality!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    from tqdm import tqdm

    device = torch.device(device)
    net = net.to(device).eval()
    size = net.img_size
    out = []
    bar = tqdm(total=len(files), desc=f"extract {modality.upper()}", unit="img", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    for i in range(0, len(files), int(batch_size)):
        x = torch.stack([load_test_image(p, size) for p in files[i:i + int(batch_size)]]).to(device)
        d, s = flip_features(net, x, modality)
        out.append(combine_heads(d.float(), s.float(), heads).cpu())
        bar.update(x.shape[0])
    bar.close()
    return torch.cat(out).numpy().astype(np.float32)
