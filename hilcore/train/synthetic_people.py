"""Procedurally drawn people written to disk in the SYSU-MM01 and RegDB layouts.

Each identity gets fixed clothing colours (upper and lower, saturated and
well apart), a clothing pattern (solid, horizontal/vertical stripes, checks),
skin and hair tones, a build (height, shoulder width, leg width), short or
long sleeves and maybe a bag. Each image jitters pose (stride, arm swing,
mirror), scale and position and lighting, over a camera-specific background.
Cameras differ less than people do (a mild colour cast, a dim low-contrast
background), so that identity, not the camera, is what most of the pixels
say -- a random-init CNN can then start from features a clustering can use
(the demo, ``configs/demo_tiny.yaml``, still centres features per camera).

The IR cameras get a near-infrared-like rendering of the same geometry: skin
brightest, each clothing part at a grey level that follows its visible
luminance (reflectance) plus an identity-specific material offset, so that
patterns show as the luminance contrast of their two colours; background dark,
slightly blurred; stored as three equal channels like SYSU-MM01's IR jpgs.
Hue is invisible in IR, so cross-modal matching has to rely on shape, pattern
and brightness, as with real data.

Everything is deterministic in ``seed``: the same arguments write byte-identical files.

Defaults (96 identities x 6 cameras x 4 images at 64 x 32, ~2,300 jpgs, ~5 s to
write on one core) are sized for a tiny CNN trained on a CPU in minutes; the
train/val/test split keeps SYSU-MM01's proportions (296/99/96 of 491), so
``n_ids=491`` reproduces its identity counts.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
try:
    from PIL import Image, ImageFilter
except ImportError:  # without the 'train' extra: importable, the renderers raise MissingExtra
    Image = ImageFilter = None

from .._extras import require
from .._files import atomic_open, write_text

SYSU_SPLIT = (296, 99, 96)
_PATTERNS_UPPER = ("solid", "hstripes", "vstripes", "checks")
_PATTERNS_LOWER = ("solid", "hstripes", "checks")
_SKIN = np.array([[0.96, 0.80, 0.69], [0.88, 0.67, 0.52], [0.76, 0.57, 0.42], [0.55, 0.38, 0.26],
                  [0.40, 0.27, 0.18]])
_HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.15], [0.70, 0.58, 0.35],
                  [0.55, 0.55, 0.55]])
# label map codes
_BG, _SKIN_L, _HAIR_L, _UPPER, _LOWER, _SHOE, _BAG = range(7)


def _need_pil() -> None:
    if Image is None:
        require("PIL", "hilcore.train.synthetic_people (rendering images)")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _lum(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _identity(seed: int, pid: int) -> dict:
    rng = np.random.default_rng([seed, 101, pid])
    # saturated, well-separated clothing colours: identity dominates the image, not the camera
    up = _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
    if rng.random() < 0.5:
        up2 = _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0))
    else:
        up2 = np.full(3, 0.95) if _lum(up) < 0.5 else np.full(3, 0.08)
    low = _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.9))
    low2 = np.clip(low * rng.uniform(0.3, 0.6) + rng.uniform(0.0, 0.4), 0, 1)
    ident = dict(
        upper=up, upper2=up2, lower=low, lower2=low2,
        upper_pattern=_PATTERNS_UPPER[rng.choice(4, p=[0.3, 0.25, 0.2, 0.25])],
        lower_pattern=_PATTERNS_LOWER[rng.choice(3, p=[0.6, 0.15, 0.25])],
        period=rng.uniform(0.04, 0.09),
        skin=_SKIN[rng.integers(len(_SKIN))], hair=_HAIR[rng.integers(len(_HAIR))],
        shoe=_hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.05, 0.6)),
        height=rng.uniform(0.80, 0.95), shoulder=rng.uniform(0.12, 0.20), leg=rng.uniform(0.035, 0.065),
        waist=rng.uniform(0.45, 0.57), long_sleeves=bool(rng.random() < 0.6), long_hair=bool(rng.random() < 0.35),
        bag=_hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.15, 0.8)) if rng.random() < 0.35 else None,
        t_skin=rng.uniform(0.88, 1.0),
    )
    # IR (near-infrared-like): a part's brightness follows its reflectance, i.e. its visible luminance, plus
    # an identity-specific material offset; patterns show as the luminance contrast of their two colours
    for part in ("upper", "upper2", "lower", "lower2"):
        ident[f"t_{part}"] = float(np.clip(0.1 + 0.9 * _lum(ident[part]) + rng.uniform(-0.1, 0.1), 0.05, 0.95))
    return ident


def _camera(seed: int, cam: int) -> dict:
    rng = np.random.default_rng([seed, 202, cam])
    # a mild colour cast and a dim, low-contrast background (cf. the person): cameras differ, but less than people
    grey = rng.uniform(0.3, 0.6)
    return dict(base=np.clip(grey + rng.uniform(-0.06, 0.06, 3), 0, 1), cast=rng.uniform(0.95, 1.05, 3),
                t_level=rng.uniform(0.08, 0.16))


def _segment(yy, xx, a, b, r):
    """Mask of points within distance r of segment a-b (points as (y, x))."""
    ay, ax = a
    by, bx = b
    dy, dx = by - ay, bx - ax
    t = np.clip(((yy - ay) * dy + (xx - ax) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    return (yy - (ay + t * dy)) ** 2 + (xx - (ax + t * dx)) ** 2 <= r * r


def _pattern(kind: str, u, v, period: float):
    if kind == "solid":
        return np.zeros(u.shape, dtype=bool)
    hs = (np.floor(u / period).astype(np.int64) % 2) == 1
    vs = (np.floor(v / period).astype(np.int64) % 2) == 1
    return {"hstripes": hs, "vstripes": vs, "checks": hs ^ vs}[kind]


def _smooth_noise(rng, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    small = (rng.random(cells) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0 - 0.5


def render_person(ident: dict, cam: dict, rng: np.random.Generator, size: tuple[int, int],
                  infrared: bool) -> np.ndarray:
    """One image ``[H, W, 3]`` uint8 of the identity ``ident`` seen by camera ``cam``."""
    _need_pil()
    h_out, w_out = size
    ss = 2 if h_out < 160 else 1  # supersample small images, then area-average
    h, w = h_out * ss, w_out * ss
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    label, g = _body_labels(ident, rng, yy, xx)
    p, cx, sh = g["p"], g["cx"], g["sh"]
    # pattern coordinates move with the body
    pu = _pattern(ident["upper_pattern"], (yy - g["y_neck"]) / p, (xx - cx) / p, ident["period"])
    pl = _pattern(ident["lower_pattern"], (yy - g["y_waist"]) / p, (xx - cx) / p, ident["period"] * 1.3)
    shade = 1.0 - 0.25 * np.clip(((xx - cx) / (1.2 * sh)) ** 2, 0.0, 1.0)  # rounded body
    paint = _paint_infrared if infrared else _paint_visible
    return paint(ident, cam, rng, label, pu, pl, shade, ss, (h_out, w_out))


def _body_labels(ident: dict, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray):
    """The body-part label map ``[h, w]`` of one pose (drawn from ``rng``) and its geometry
    (``p`` height, ``cx`` centre, ``sh`` half shoulder width, ``y_neck``, ``y_waist``; pixels)."""
    h, w = yy.shape
    p = ident["height"] * rng.uniform(0.85, 1.0) * h                   # person height in pixels
    top = (h - p) / 2 + rng.uniform(-0.04, 0.04) * h
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    flip = rng.random() < 0.5
    stride = rng.uniform(-1.0, 1.0)
    sh = ident["shoulder"] * p * rng.uniform(0.9, 1.1)                 # half shoulder width (view angle)
    y_neck, y_waist, y_foot = top + 0.14 * p, top + ident["waist"] * p, top + 0.97 * p
    leg_r, arm_r = ident["leg"] * p, 0.034 * p

    label = np.zeros((h, w), dtype=np.uint8)
    # back arm, legs, shoes, torso, bag, front arm, head: painter's order
    arm_len = 0.36 * p
    swing = 0.35 * stride
    sides = (-1.0, 1.0) if not flip else (1.0, -1.0)
    arms = []
    for k, side in enumerate(sides):
        a = (y_neck + 0.03 * p, cx + side * (sh - arm_r * 0.6))
        ang = swing if k == 0 else -swing
        b = (a[0] + arm_len * np.cos(ang), a[1] + arm_len * np.sin(ang) + side * 0.02 * p)
        elbow = (a[0] + 0.5 * (b[0] - a[0]), a[1] + 0.5 * (b[1] - a[1]))
        arms.append((a, elbow, b))

    def draw_arm(arm):
        a, elbow, b = arm
        label[_segment(yy, xx, a, elbow, arm_r)] = _UPPER
        label[_segment(yy, xx, elbow, b, arm_r * 0.9)] = _UPPER if ident["long_sleeves"] else _SKIN_L
        label[(yy - b[0]) ** 2 + (xx - b[1]) ** 2 <= (arm_r * 1.1) ** 2] = _SKIN_L

    draw_arm(arms[0])
    leg_sw = 0.28 * stride
    for k, side in enumerate((-1.0, 1.0)):
        hip = (y_waist, cx + side * 0.45 * sh)
        ang = leg_sw if k == 0 else -leg_sw
        foot = (y_foot - 0.03 * p, hip[1] + (y_foot - y_waist) * np.sin(ang))
        label[_segment(yy, xx, hip, foot, leg_r)] = _LOWER
        shoe = (np.abs(yy - (foot[0] + 0.015 * p)) <= 0.02 * p) & (np.abs(xx - foot[1] - 0.02 * p * side)
                                                                    <= leg_r * 1.3)
        label[shoe] = _SHOE
    # torso: trapezoid, shoulders wider than the waist
    frac = np.clip((yy - y_neck) / max(y_waist - y_neck, 1.0), 0.0, 1.0)
    half = sh * (1.0 - 0.18 * frac)
    label[(yy >= y_neck) & (yy <= y_waist + 0.02 * p) & (np.abs(xx - cx) <= half)] = _UPPER
    if ident["bag"] is not None:
        bx = cx + (sh + 0.02 * p) * (1.0 if flip else -1.0)
        label[(np.abs(yy - (y_waist - 0.02 * p)) <= 0.08 * p) & (np.abs(xx - bx) <= 0.06 * p)] = _BAG
    draw_arm(arms[1])
    head_c, head_r = (top + 0.075 * p, cx), 0.068 * p
    head = ((yy - head_c[0]) / (head_r * 1.15)) ** 2 + ((xx - head_c[1]) / head_r) ** 2 <= 1.0
    label[(yy >= y_neck - 0.03 * p) & (yy <= y_neck + 0.01 * p) & (np.abs(xx - cx) <= 0.03 * p)] = _SKIN_L
    label[head] = _SKIN_L
    hair = head & (yy <= head_c[0] - 0.25 * head_r)
    if ident["long_hair"]:
        hair |= ((yy - head_c[0]) ** 2 / (1.3 * head_r) ** 2 + (xx - head_c[1]) ** 2 / (1.1 * head_r) ** 2 <= 1) \
            & (yy >= head_c[0]) & (np.abs(xx - cx) >= 0.7 * head_r)
    label[hair] = _HAIR_L
    return label, {"p": p, "cx": cx, "sh": sh, "y_neck": y_neck, "y_waist": y_waist}


def _paint_infrared(ident, cam, rng, label, pu, pl, shade, ss: int, size) -> np.ndarray:
    """The thermal image of a label map: temperatures per part, blur, downsample, sensor noise; grey x 3."""
    h, w = label.shape
    h_out, w_out = size
    bg = cam["t_level"] + 0.05 * _smooth_noise(rng, h, w, (5, 3))
    t = np.empty((h, w), dtype=np.float32)
    t[:] = bg
    t_up = np.where(pu, ident["t_upper2"], ident["t_upper"])
    t_lo = np.where(pl, ident["t_lower2"], ident["t_lower"])
    warmth = {_SKIN_L: ident["t_skin"], _HAIR_L: 0.55 * ident["t_skin"], _SHOE: 0.3, _BAG: 0.25}
    for code, val in warmth.items():
        t[label == code] = val
    t = np.where(label == _UPPER, t_up, t)
    t = np.where(label == _LOWER, t_lo, t)
    body = label != _BG
    t = np.where(body, t * (0.85 + 0.15 * shade), t) * rng.uniform(0.9, 1.1)
    img = Image.fromarray((np.clip(t, 0, 1) * 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(radius=0.5 * ss))
    if ss > 1:
        img = img.resize((w_out, h_out), Image.BOX)
    g = np.asarray(img, dtype=np.float32) / 255.0
    g = np.clip(g + rng.normal(0.0, 0.02, g.shape), 0, 1)
    g8 = (g * 255).astype(np.uint8)
    return np.repeat(g8[:, :, None], 3, axis=2)


def _paint_visible(ident, cam, rng, label, pu, pl, shade, ss: int, size) -> np.ndarray:
    """The colour image of a label map: camera background, clothes, shading, colour cast, downsample, noise."""
    h, w = label.shape
    h_out, w_out = size
    bg = cam["base"][None, None, :] + 0.10 * _smooth_noise(rng, h, w, (6, 3))[:, :, None]
    bg = bg + 0.04 * _smooth_noise(rng, h, w, (24, 12))[:, :, None] * rng.uniform(0.5, 1.5, 3)
    rgb = bg.astype(np.float32)
    colours = {_SKIN_L: ident["skin"], _HAIR_L: ident["hair"], _SHOE: ident["shoe"]}
    if ident["bag"] is not None:
        colours[_BAG] = ident["bag"]
    for code, col in colours.items():
        rgb[label == code] = col
    rgb = np.where((label == _UPPER)[:, :, None],
                   np.where(pu[:, :, None], ident["upper2"], ident["upper"]), rgb)
    rgb = np.where((label == _LOWER)[:, :, None],
                   np.where(pl[:, :, None], ident["lower2"], ident["lower"]), rgb)
    rgb = np.where((label != _BG)[:, :, None], rgb * shade[:, :, None], rgb)
    rgb = rgb * cam["cast"][None, None, :] * rng.uniform(0.85, 1.1)
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    if ss > 1:
        img = img.resize((w_out, h_out), Image.BOX)
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = np.clip(a + rng.normal(0.0, 0.02, a.shape), 0, 1)
    return (a * 255).astype(np.uint8)


def _prepare_root(root: Path, owned: tuple[str, ...], overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"root: {root} exists and is not a folder")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"root: {root} is not empty (pass overwrite=True to replace the dataset there)")
        for name in owned:
            if (root / name).is_dir():
                shutil.rmtree(root / name)
    root.mkdir(parents=True, exist_ok=True)


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"size: expected (H, W), got {size!r}") from None
    if h < 16 or w < 8:
        raise ValueError(f"size: expected H >= 16 and W >= 8, got {size}")
    return h, w


def _check_count(v, name: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")
    return int(v)


def _write_sysu_identity(root: str, seed: int, pid: int, h: int, w: int, cam_presence: float,
                         imgs_per_cam: int) -> None:
    """All images of one identity (every draw depends only on seed, pid, camera and image number)."""
    root = Path(root)
    ident = _identity(seed, pid)
    prng = np.random.default_rng([seed, 404, pid])
    present = prng.random(6) < cam_presence
    if not present[[0, 1, 3, 4]].any():
        present[[0, 1, 3, 4][prng.integers(4)]] = True
    if not present[[2, 5]].any():
        present[[2, 5][prng.integers(2)]] = True
    for c in range(1, 7):
        if not present[c - 1]:
            continue
        folder = root / f"cam{c}" / f"{pid:04d}"
        folder.mkdir(parents=True)
        cam = _camera(seed, c)
        for k in range(1, imgs_per_cam + 1):
            irng = np.random.default_rng([seed, 505, pid, c, k])
            arr = render_person(ident, cam, irng, (h, w), infrared=c in (3, 6))
            with atomic_open(folder / f"{k:04d}.jpg", sync=False) as fh:   # (a whole dataset: no fsync each)
                Image.fromarray(arr).save(fh, format="JPEG", quality=92)


def make_synthetic_sysu(root, n_ids: int = 96, imgs_per_cam: int = 4, size: tuple[int, int] = (64, 32),
                        seed: int = 0, cam_presence: float = 1.0, overwrite: bool = False,
                        workers: int = 1) -> Path:
    """Write a synthetic dataset in the SYSU-MM01 layout and return its root.

    Layout: ``root/cam1..cam6/<4-digit id>/NNNN.jpg`` (RGB cameras 1, 2, 4, 5; IR
    cameras 3, 6) and ``root/exp/{train,val,test}_id.txt`` (comma-separated ids,
    one line). Identities are numbered 1..n_ids and split at random (by
    ``seed``) in SYSU-MM01's proportions 296 : 99 : 96, each part at least one.

    Args:
        root: output folder; must be empty or absent unless ``overwrite``.
        n_ids: identities (>= 3).
        imgs_per_cam: images per identity and camera.
        size: ``(H, W)`` of the written images.
        seed: everything drawn depends only on it.
        cam_presence: probability that an identity appears in a given camera;
            every identity keeps at least one RGB and one IR camera.
        overwrite: replace the ``cam*``/``exp`` folders of an existing dataset.
        workers: processes drawing identities in parallel (the files do not
            depend on it). At 288 x 144 one image takes ~10 ms on one core,
            so SYSU-MM01 size (491 ids x 6 cameras x 20 images) wants several.

    Example:
        >>> root = make_synthetic_sysu("/tmp/syn", n_ids=12, imgs_per_cam=2)   # doctest: +SKIP
    """
    _need_pil()
    n_ids = _check_count(n_ids, "n_ids", 3)
    imgs_per_cam = _check_count(imgs_per_cam, "imgs_per_cam", 1)
    workers = _check_count(workers, "workers", 1)
    h, w = _check_size(size)
    if not 0.0 < float(cam_presence) <= 1.0:
        raise ValueError(f"cam_presence: expected a probability in (0, 1], got {cam_presence}")
    root = Path(root)
    _prepare_root(root, tuple(f"cam{c}" for c in range(1, 7)) + ("exp",), overwrite)

    rng = np.random.default_rng([seed, 303])
    n_val = max(1, int(round(n_ids * SYSU_SPLIT[1] / sum(SYSU_SPLIT))))
    n_test = max(1, int(round(n_ids * SYSU_SPLIT[2] / sum(SYSU_SPLIT))))
    n_train = n_ids - n_val - n_test
    if n_train < 1:
        n_train, n_val, n_test = 1, 1, n_ids - 2
    perm = rng.permutation(np.arange(1, n_ids + 1))
    split = {"train": sorted(perm[:n_train].tolist()), "val": sorted(perm[n_train:n_train + n_val].tolist()),
             "test": sorted(perm[n_train + n_val:].tolist())}
    (root / "exp").mkdir()
    for name, ids in split.items():
        write_text(root / "exp" / f"{name}_id.txt", ",".join(str(i) for i in ids) + "\n")

    jobs = [(str(root), seed, pid, h, w, float(cam_presence), imgs_per_cam) for pid in range(1, n_ids + 1)]
    if workers == 1:
        for job in jobs:
            _write_sysu_identity(*job)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_sysu_identity, *zip(*jobs), chunksize=max(1, len(jobs) // (4 * workers))))
    for c in range(1, 7):
        (root / f"cam{c}").mkdir(exist_ok=True)  # a camera nobody appears in still exists
    return root


def make_synthetic_regdb(root, n_ids: int = 40, imgs_per_id: int = 4, n_trials: int = 10,
                         size: tuple[int, int] = (64, 32), seed: int = 0, overwrite: bool = False) -> Path:
    """Write a synthetic dataset in the RegDB layout and return its root.

    Layout: ``root/Visible/<id>/v_<id>_<k>.bmp``, ``root/Thermal/<id>/t_<id>_<k>.bmp``
    and, per trial ``t`` in 1..n_trials, ``root/idx/{train,test}_{visible,thermal}_{t}.txt``
    with lines ``relative/path label``. Each trial splits the identities at
    random in halves (train gets the extra one when ``n_ids`` is odd); labels
    are ``0..n-1`` within each half, in increasing identity order, like the
    released files (412 identities give 206/206).
    """
    _need_pil()
    n_ids = _check_count(n_ids, "n_ids", 2)
    imgs_per_id = _check_count(imgs_per_id, "imgs_per_id", 1)
    n_trials = _check_count(n_trials, "n_trials", 1)
    h, w = _check_size(size)
    root = Path(root)
    _prepare_root(root, ("Visible", "Thermal", "idx"), overwrite)
    cams = {1: _camera(seed, 11), 2: _camera(seed, 12)}
    files: dict[tuple[int, str], list[str]] = {}
    for pid in range(1, n_ids + 1):
        ident = _identity(seed, pid)
        for cam, mod, tag in ((1, "Visible", "v"), (2, "Thermal", "t")):
            folder = root / mod / str(pid)
            folder.mkdir(parents=True)
            rels = []
            for k in range(1, imgs_per_id + 1):
                irng = np.random.default_rng([seed, 606, pid, cam, k])
                arr = render_person(ident, cams[cam], irng, (h, w), infrared=cam == 2)
                rel = f"{mod}/{pid}/{tag}_{pid:04d}_{k:02d}.bmp"
                with atomic_open(root / rel, sync=False) as fh:
                    Image.fromarray(arr).save(fh, format="BMP")
                rels.append(rel)
            files[(pid, mod)] = rels
    (root / "idx").mkdir()
    n_train = (n_ids + 1) // 2
    for trial in range(1, n_trials + 1):
        perm = np.random.default_rng([seed, 707, trial]).permutation(np.arange(1, n_ids + 1))
        for part, ids in (("train", sorted(perm[:n_train].tolist())), ("test", sorted(perm[n_train:].tolist()))):
            for mod in ("Visible", "Thermal"):
                lines = [f"{rel} {label}" for label, pid in enumerate(ids) for rel in files[(pid, mod)]]
                write_text(root / "idx" / f"{part}_{mod.lower()}_{trial}.txt", "\n".join(lines) + "\n")
    return root
