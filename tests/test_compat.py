"""hilcore.compat (the one-import switch) against the dense reference, the baseline and scikit-learn."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN as SkDBSCAN
from sklearn.metrics import adjusted_rand_score

import hilcore
from hilcore.compat import DBSCAN, compute_jaccard_distance
from hilcore.ref.jaccard import jaccard_distance as ref_jaccard
from hilcore.synthetic import reid_features

from testing import DBSCAN_BACKENDS, JACCARD_BACKENDS
from testing import reid_features as small_features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.baseline import baseline_cluster, baseline_jaccard  # noqa: E402


@pytest.mark.parametrize("backend", JACCARD_BACKENDS)
@pytest.mark.parametrize("n,k1,k2", [(1, 20, 6), (19, 20, 6), (99, 20, 6), (99, 30, 1), (140, 30, 6)])
def test_compute_jaccard_distance_matches_reference(backend, n, k1, k2):
    x = small_features(n, 32, seed=n)
    got = compute_jaccard_distance(x, k1=k1, k2=k2, print_flag=False, backend=backend, exact=True)
    want = ref_jaccard(x, k1, k2)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (n, n)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.all(np.diag(got) == 0)
    # pairs whose supports do not meet are exactly 1, as in the original
    np.testing.assert_array_equal(got == 1.0, want == 1.0)


def test_compute_jaccard_distance_matches_baseline():
    x = small_features(120, 48, seed=3)
    got = compute_jaccard_distance(x, k1=20, k2=6, print_flag=False, exact=True)
    np.testing.assert_allclose(got, baseline_jaccard(x, 20, 6), rtol=0, atol=1e-5)
    # on normalised rows the original's arithmetic is the baseline's too, to float32 rounding
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(compute_jaccard_distance(xn, k1=20, k2=6, print_flag=False),
                               baseline_jaccard(xn, 20, 6), rtol=0, atol=1e-5)


def test_compute_jaccard_distance_options(capsys):
    x = small_features(60, 16, seed=1)
    base = compute_jaccard_distance(x, 20, 6, print_flag=False)
    assert capsys.readouterr().out == ""
    # torch input (any float dtype) gives the same dense NumPy matrix
    from_torch = compute_jaccard_distance(torch.from_numpy(x).double(), 20, 6, print_flag=False)
    assert isinstance(from_torch, np.ndarray)
    np.testing.assert_allclose(from_torch, base, rtol=0, atol=1e-5)
    # search_option is accepted and ignored
    for opt in (1, 2, 3):
        np.testing.assert_array_equal(compute_jaccard_distance(x, 20, 6, print_flag=False, search_option=opt), base)
    half = compute_jaccard_distance(x, 20, 6, print_flag=False, use_float16=True)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), base, rtol=0, atol=2e-2)  # float16 arithmetic
    compute_jaccard_distance(x, 20, 6, print_flag=True)
    out = capsys.readouterr().out  # the original's two lines
    assert out.count("\n") == 2 and out.startswith("Computing jaccard distance...") and "time cost" in out


def test_compute_jaccard_distance_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        compute_jaccard_distance(np.zeros(10, dtype=np.float32), print_flag=False)
    x = small_features(20, 8)
    x[4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_jaccard_distance(x, print_flag=False)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
@pytest.mark.parametrize("eps,min_samples", [(0.6, 4), (0.3, 2), (0.8, 6), (1e-6, 1)])
def test_dbscan_compat_equals_sklearn(backend, eps, min_samples):
    x = small_features(150, 32, seed=7)
    dist = ref_jaccard(x, 20, 6)
    want = SkDBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
    est = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1, backend=backend)
    assert est.fit(dist) is est
    np.testing.assert_array_equal(est.labels_, want)
    assert est.labels_.dtype == np.int64
    np.testing.assert_array_equal(est.fit_predict(dist), want)
    # the sparse output of hilcore gives the same labels (stored zeros count)
    sparse = hilcore.jaccard_distance(x, 20, 6, max_distance=eps)
    np.testing.assert_array_equal(DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed",
                                                 backend=backend).fit_predict(sparse), want)


def test_dbscan_compat_other_metrics_are_scikit_learns():
    x = small_features(80, 3, seed=2)
    for kw in (dict(eps=0.5, min_samples=4, metric="euclidean"), dict(eps=0.9, metric="cosine")):
        est = DBSCAN(**kw).fit(x)
        np.testing.assert_array_equal(est.labels_, SkDBSCAN(**kw).fit(x).labels_)
    with pytest.raises(ValueError, match="square"):
        DBSCAN(metric="precomputed").fit(np.zeros((3, 4), dtype=np.float32))


def test_one_line_switch_pipeline():
    """The pipeline as existing code writes it, with only the import changed, gives the baseline's labels."""
    x, _, _ = reid_features(20, 15, dim=256, seed=2)
    dist = compute_jaccard_distance(torch.from_numpy(x), k1=30, k2=6, print_flag=False)
    labels = DBSCAN(eps=0.6, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(dist)
    np.testing.assert_array_equal(labels, baseline_cluster(x, 30, 6, 0.6, 4))


def test_baseline_agrees_with_hilcore():
    """The benchmark's baseline and hilcore's sparse pipeline give the same labels on ReID-like data."""
    x, ids, _ = reid_features(15, 20, dim=1536, seed=4)
    want = baseline_cluster(x, 30, 6, 0.6, 4)
    got = hilcore.dbscan(hilcore.jaccard_distance(x, 30, 6, max_distance=0.6), 0.6, 4)
    assert adjusted_rand_score(want, got) >= 0.999
    np.testing.assert_array_equal(got, want)
    assert len(set(got.tolist()) - {-1}) >= 10  # the data has structure; not a vacuous comparison


def test_baseline_matches_reference():
    x = small_features(90, 24, seed=5)
    np.testing.assert_allclose(baseline_jaccard(x, 20, 6), ref_jaccard(x, 20, 6), rtol=0, atol=1e-5)
    np.testing.assert_allclose(baseline_jaccard(x, 30, 1), ref_jaccard(x, 30, 1), rtol=0, atol=1e-5)
