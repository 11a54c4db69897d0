"""hilcore.synthetic: shapes, determinism, and that the data is ReID-like for the HIL clustering step."""
from __future__ import annotations

import numpy as np
import pytest

import hilcore
from hilcore.synthetic import regdb_sizes, reid_features, sysu_sizes


def test_shapes_and_determinism():
    x, ids, cams = reid_features(10, 7, dim=48, n_cams=3, seed=5)
    assert x.shape == (70, 48) and x.dtype == np.float32 and x.flags.c_contiguous
    assert ids.dtype == np.int64 and cams.dtype == np.int64
    assert np.bincount(ids).tolist() == [7] * 10
    assert set(cams.tolist()) <= {0, 1, 2}
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    x2, ids2, cams2 = reid_features(10, 7, dim=48, n_cams=3, seed=5)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(cams, cams2)
    x3, _, _ = reid_features(10, 7, dim=48, n_cams=3, seed=6)
    assert not np.array_equal(x, x3)


@pytest.mark.parametrize("n_ids,n", [(395, sysu_sizes["ir"]), (7, 50), (5, 5)])
def test_total_n(n_ids, n):
    x, ids, cams = reid_features(n_ids, n=n, dim=16, seed=0)
    assert x.shape == (n, 16) and len(ids) == len(cams) == n
    counts = np.bincount(ids, minlength=n_ids)
    assert counts.sum() == n and counts.min() >= 1


def test_sizes():
    assert sysu_sizes == {"ir": 11909, "rgb": 22258}
    assert regdb_sizes == {"ir": 2060, "rgb": 2060}


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_ids"):
        reid_features(0, 5)
    with pytest.raises(ValueError, match="n"):
        reid_features(10, n=5)
    with pytest.raises(ValueError, match="outliers"):
        reid_features(3, 3, outliers=1.5)


def test_identity_structure():
    """Same identity, same camera > same identity, other camera > other identities (cosine)."""
    x, ids, cams = reid_features(40, 12, dim=1536, seed=1)
    s = x @ x.T
    same, cam = ids[:, None] == ids[None], cams[:, None] == cams[None]
    off = ~np.eye(len(x), dtype=bool)
    a, b, c = s[same & cam & off].mean(), s[same & ~cam].mean(), s[~same].mean()
    assert a > b > c + 0.3


def test_clustering_finds_most_identities():
    """Jaccard(k1=30, k2=6) + DBSCAN(0.6, 4) recovers most identities, with some noise, on the defaults."""
    x, ids, _ = reid_features(40, 20, seed=0)
    labels = hilcore.dbscan(hilcore.jaccard_distance(x, 30, 6, max_distance=0.6), 0.6, 4)
    found, pure = 0, 0
    for c in set(labels.tolist()) - {-1}:
        members = np.bincount(ids[labels == c])
        pure += members.max()
        if members.max() > 0.5 * np.sum(ids == members.argmax()):
            found += 1
    noise = float(np.mean(labels == -1))
    assert found >= 0.8 * 40
    assert 0.01 <= noise <= 0.25
    assert pure / max(1, int((labels >= 0).sum())) >= 0.9
