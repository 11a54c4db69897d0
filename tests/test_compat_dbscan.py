"""hilcore.compat.DBSCAN as a scikit-learn estimator: estimator checks, and equality with scikit-learn's
DBSCAN(metric="precomputed") on dense and sparse input, with and without sample_weight."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.cluster import DBSCAN as SkDBSCAN
from sklearn.metrics import pairwise_distances
from sklearn.utils.estimator_checks import parametrize_with_checks

from hilcore.compat import DBSCAN
from hilcore.ref.jaccard import jaccard_distance as ref_jaccard

from testing import DBSCAN_BACKENDS
from testing import reid_features as small_features

# With the default metric ("euclidean", scikit-learn's) every check passes; with metric="precomputed"
# check_clustering fits raw 2-D blobs (50 x 2 features, negative values), which is not a distance matrix:
# scikit-learn's own DBSCAN(metric="precomputed") fails it too.
EXPECTED_FAILED = {
    "check_clustering": "fits raw features (50 x 2, negative values), not a square distance matrix; "
                        "sklearn.cluster.DBSCAN(metric='precomputed') fails it as well",
}


@parametrize_with_checks([DBSCAN(), DBSCAN(eps=0.3, min_samples=2, metric="precomputed", backend="torch")],
                         expected_failed_checks=lambda est: EXPECTED_FAILED if est.metric == "precomputed" else {})
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _distances(n, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "euclid":  # blobs: several clusters, noise, varied densities
        centres = rng.normal(size=(max(1, n // 12), 3)) * 4
        x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, 3)) * 0.4
        x[rng.integers(0, n, n // 10)] = x[rng.integers(0, n, n // 10)]  # duplicates: distance-0 ties
        x[rng.integers(0, n, n // 10)] += rng.uniform(-6, 6, size=(n // 10, 3))  # outliers: noise
        d = pairwise_distances(x)
        np.fill_diagonal(d, 0)
        return d
    return ref_jaccard(small_features(n, 32, seed=seed), 20, 6).astype(np.float64)


def _sparse(d, cut):
    """CSR keeping the entries <= cut, zeros included (stored zeros are neighbours, as in scikit-learn)."""
    r, c = np.nonzero(d <= cut)
    return sp.csr_matrix((d[r, c], (r, c)), shape=d.shape)


def _weights(n, seed, kind):
    rng = np.random.default_rng(seed + 100)
    if kind == "int":
        return rng.integers(0, 4, n).astype(np.float64)
    if kind == "float":
        return rng.uniform(0.05, 2.5, n)
    return rng.choice([-1.0, 0.5, 1.0, 2.0, 3.0], n)  # negative weights keep neighbours from being core


def _assert_same(got, want, sparse):
    np.testing.assert_array_equal(got.labels_, want.labels_)
    assert got.labels_.dtype == np.int64
    np.testing.assert_array_equal(got.core_sample_indices_, want.core_sample_indices_)
    # rows of X in X's kind; no core sample: an empty dense [0, N] array, as scikit-learn
    assert sp.issparse(got.components_) == sp.issparse(want.components_) == (sparse and len(want.labels_) > 0
                                                                             and want.labels_.max() >= 0)
    a = got.components_.toarray() if sp.issparse(got.components_) else got.components_
    b = want.components_.toarray() if sp.issparse(want.components_) else want.components_
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 19, 99])
@pytest.mark.parametrize("kind,eps,min_samples", [("euclid", 0.8, 4), ("euclid", 0.5, 2), ("jaccard", 0.6, 4),
                                                   ("jaccard", 0.5, 1)])
@pytest.mark.parametrize("weights", [None, "int", "float", "signed"])
def test_equals_sklearn(backend, n, kind, eps, min_samples, weights):
    d = _distances(n, n, kind)
    sw = None if weights is None else _weights(n, n, weights)
    for sparse in (False, True):
        x = _sparse(d, 1.5 * eps) if sparse else d
        want = SkDBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(x, sample_weight=sw)
        got = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", backend=backend).fit(x, sample_weight=sw)
        _assert_same(got, want, sparse)
        np.testing.assert_array_equal(DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", backend=backend)
                                      .fit_predict(x, sample_weight=sw), want.labels_)


def test_weights_of_one_are_the_unweighted_fit():
    d = _distances(99, 3, "euclid")
    a = DBSCAN(eps=0.8, min_samples=5, metric="precomputed").fit(d)
    b = DBSCAN(eps=0.8, min_samples=5, metric="precomputed").fit(d, sample_weight=np.ones(99))
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.core_sample_indices_, b.core_sample_indices_)
    assert len(set(a.labels_.tolist()) - {-1}) >= 3 and (a.labels_ == -1).any()  # not a vacuous comparison
    # a heavy sample is core on its own; a negative one inhibits its neighbours
    w = np.ones(99)
    w[0] = 5.0
    assert 0 in DBSCAN(eps=1e-9, min_samples=5, metric="precomputed").fit(d, sample_weight=w).core_sample_indices_


def test_torch_input_same_as_numpy():
    d = _distances(60, 5, "jaccard")
    want = SkDBSCAN(eps=0.6, min_samples=3, metric="precomputed").fit(d)
    got = DBSCAN(eps=0.6, min_samples=3, metric="precomputed").fit(torch.from_numpy(d))
    np.testing.assert_array_equal(got.labels_, want.labels_)
    np.testing.assert_array_equal(got.core_sample_indices_, want.core_sample_indices_)
    assert isinstance(got.components_, torch.Tensor)
    np.testing.assert_array_equal(got.components_.numpy(), want.components_)
    got_w = DBSCAN(eps=0.6, min_samples=3, metric="precomputed").fit(torch.from_numpy(d),
                                                                     sample_weight=np.full(60, 1.5))
    want_w = SkDBSCAN(eps=0.6, min_samples=3, metric="precomputed").fit(d, sample_weight=np.full(60, 1.5))
    np.testing.assert_array_equal(got_w.labels_, want_w.labels_)


def test_params_and_clone():
    est = DBSCAN(eps=0.4, min_samples=3, metric="precomputed", backend="torch")
    params = est.get_params()
    assert params["eps"] == 0.4 and params["min_samples"] == 3 and params["metric"] == "precomputed"
    assert {k: v for k, v in DBSCAN().get_params().items() if k != "backend"} == SkDBSCAN().get_params()
    assert params["backend"] == "torch"
    assert est.set_params(eps=0.7) is est and est.eps == 0.7
    c = clone(est)
    assert c is not est and c.get_params() == est.get_params()
    assert not hasattr(c, "labels_")


def test_bad_input():
    pre = dict(metric="precomputed")
    with pytest.raises(ValueError, match="square"):
        DBSCAN(**pre).fit(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="Negative values"):
        DBSCAN(**pre).fit(-np.ones((3, 3)))
    with pytest.raises(ValueError, match="eps"):
        DBSCAN(eps=-1, **pre).fit(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="min_samples"):
        DBSCAN(min_samples=0, **pre).fit(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="sample_weight|shapes"):
        DBSCAN(**pre).fit(np.zeros((3, 3)), sample_weight=np.ones(4))
