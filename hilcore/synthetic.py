"""ReID-like synthetic features for demos, tests and benchmarks.

Real ReID training features (SYSU-MM01, RegDB) are L2-normalised embeddings
in which each identity forms a tight group per camera, the groups of one
identity sit near each other across cameras, the camera itself shifts every
feature a little (a camera bias shared by all identities), and a few images
(occlusions, bad crops) land far from their identity. :func:`reid_features`
draws features with that structure:

``x = normalize(c_id + a * b_cam + g * o_{id,cam} + s * e)``

with ``c_id`` a unit identity centre (identities come in loose "look-alike"
groups, which makes hard negatives), ``b_cam`` a unit camera bias shared by all
identities, ``o_{id,cam}`` a unit offset per identity and camera (viewpoint,
modality), ``e`` unit per-image noise, and a fraction ``outliers`` of images
drawn mostly from noise. The defaults are tuned so that the HIL clustering step
(k-reciprocal Jaccard with k1=30, k2=6, then DBSCAN with eps=0.6,
min_samples=4) recovers most identities as clusters and marks a modest share
of images as noise, as on real data.

>>> import numpy as np
>>> from hilcore.synthetic import reid_features, sysu_sizes
>>> x, ids, cams = reid_features(30, 10, dim=256, seed=0)     # 30 identities x 10 images
>>> x.shape, x.dtype, ids.dtype, len(set(ids.tolist())), bool(np.allclose(np.linalg.norm(x, axis=1), 1))
((300, 256), dtype('float32'), dtype('int64'), 30, True)
>>> reid_features(395, n=sysu_sizes["ir"], dim=8)[0].shape   # SYSU-MM01 IR size, uneven per identity
(11909, 8)
"""
from __future__ import annotations

import numpy as np

__all__ = ["reid_features", "sysu_sizes", "regdb_sizes"]

#: Training-set sizes per modality of SYSU-MM01 (395 identities).
sysu_sizes = {"ir": 11909, "rgb": 22258}
#: Training-set sizes per modality of RegDB (206 identities, 10 images each).
regdb_sizes = {"ir": 2060, "rgb": 2060}


def _unit(rng: np.random.Generator, shape) -> np.ndarray:
    v = rng.standard_normal(shape, dtype=np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v


def _split_sizes(rng: np.random.Generator, n: int, n_ids: int) -> np.ndarray:
    """Uneven images-per-identity counts that sum to ``n`` (each >= 1), as in real datasets."""
    if n < n_ids:
        raise ValueError(f"n: expected at least one image per identity (n >= n_ids={n_ids}), got {n}")
    w = rng.gamma(8.0, 1.0, n_ids)
    sizes = np.maximum(1, np.floor(w / w.sum() * n)).astype(np.int64)
    diff = n - int(sizes.sum())
    while diff != 0:  # fix rounding one image at a time, never below one image
        j = int(rng.integers(n_ids))
        if diff > 0:
            sizes[j] += 1
            diff -= 1
        elif sizes[j] > 1:
            sizes[j] -= 1
            diff += 1
    return sizes


def reid_features(n_ids: int = 300, imgs_per_id: int | None = 20, *, n: int | None = None, dim: int = 1536,
                  n_cams: int = 4, seed: int = 0, camera_bias: float = 0.25, camera_offset: float = 0.45,
                  noise: float = 0.6, group_size: int = 4, group_spread: float = 3.0, outliers: float = 0.08,
                  outlier_pull: float = 0.05, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ReID-like L2-normalised features.

    Args:
        n_ids: number of identities.
        imgs_per_id: images per identity (every identity the same), used when ``n`` is None.
        n: total number of images instead; identities then get uneven counts
            (a gamma-distributed share each, at least one image).
        dim: feature dimension (1536 = the two 768-d heads of HIL's backbone).
        n_cams: cameras; each image is taken by one camera at random.
        seed: the whole draw is a function of the arguments and the seed.
        camera_bias: weight of the per-camera bias shared by all identities.
        camera_offset: weight of the per-(identity, camera) offset.
        noise: weight of the per-image noise.
        group_size: identities per look-alike group (their centres are correlated).
        group_spread: how far an identity centre lies from its group direction
            (larger: identities more distinct).
        outliers: fraction of images drawn mostly from noise (junk crops: most become DBSCAN noise).
        outlier_pull: weight of the identity centre in an outlier.
        shuffle: shuffle the rows (otherwise rows are grouped by identity).

    Returns:
        ``(features, ids, cams)``: ``[N, dim]`` float32 unit rows, ``[N]`` int64
        identity per row, ``[N]`` int64 camera per row.
    """
    n_ids = int(n_ids)
    if n_ids < 1:
        raise ValueError(f"n_ids: expected >= 1, got {n_ids}")
    if dim < 2:
        raise ValueError(f"dim: expected >= 2, got {dim}")
    if n_cams < 1:
        raise ValueError(f"n_cams: expected >= 1, got {n_cams}")
    if not 0.0 <= outliers < 1.0:
        raise ValueError(f"outliers: expected a fraction in [0, 1), got {outliers}")
    rng = np.random.default_rng(seed)
    if n is None:
        if imgs_per_id is None or imgs_per_id < 1:
            raise ValueError(f"imgs_per_id: expected >= 1 when n is not given, got {imgs_per_id}")
        sizes = np.full(n_ids, int(imgs_per_id), dtype=np.int64)
    else:
        sizes = _split_sizes(rng, int(n), n_ids)
    total = int(sizes.sum())

    n_groups = max(1, -(-n_ids // max(1, group_size)))
    groups = _unit(rng, (n_groups, dim))
    group_of = rng.integers(0, n_groups, n_ids)
    centres = groups[group_of] + group_spread * _unit(rng, (n_ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cam_bias = _unit(rng, (n_cams, dim))

    ids = np.repeat(np.arange(n_ids, dtype=np.int64), sizes)
    cams = rng.integers(0, n_cams, total).astype(np.int64)
    # per-(identity, camera) offsets are drawn on demand: a table of n_ids*n_cams*dim could be large
    key = ids * n_cams + cams
    uniq, inv = np.unique(key, return_inverse=True)
    offsets = _unit(rng, (len(uniq), dim))

    x = np.empty((total, dim), dtype=np.float32)
    block = 4096
    for s in range(0, total, block):
        e = slice(s, min(total, s + block))
        xb = centres[ids[e]] + camera_bias * cam_bias[cams[e]] + camera_offset * offsets[inv[e]]
        xb += noise * _unit(rng, (xb.shape[0], dim))
        x[e] = xb
    n_out = int(round(outliers * total))
    if n_out:
        rows = rng.choice(total, n_out, replace=False)
        # mostly noise, a little identity: far from every group but not exactly random
        x[rows] = outlier_pull * centres[ids[rows]] + _unit(rng, (n_out, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    if shuffle:
        perm = rng.permutation(total)
        x, ids, cams = x[perm], ids[perm], cams[perm]
    return np.ascontiguousarray(x), ids, cams
