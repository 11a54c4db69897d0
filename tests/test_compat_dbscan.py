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


def _print_ref(rows: np.ndarray) -> np.ndarray:
    """kernels/cpu/compat_cpu.h's row fingerprint, written out in Python integers."""
    out = []
    for row in rows:
        if row.dtype == np.float16:
            words = row.view(np.uint16).astype(np.int64)
        else:
            words = np.ascontiguousarray(row).view(np.uint32).astype(np.int64)  # float64: low word first
        k = 2 * np.arange(words.size, dtype=np.int64) + 1
        a, b = int(words.sum()) % 2**32, int((words % 2**32 * k % 2**32).sum()) % 2**32
        out.append((a << 32) | b)
    return np.array(out, dtype=np.uint64)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_row_fingerprints_are_the_documented_sums(dtype):
    from hilcore._dispatch import native_module

    rows = np.random.default_rng(0).random((7, 33)).astype(dtype) * 3
    got = native_module().compat_row_fingerprints(rows)
    np.testing.assert_array_equal(got, _print_ref(rows))
    np.testing.assert_array_equal(native_module().compat_dense_eps_rows(rows[:, :7].copy(), 0.5)[3],
                                  _print_ref(rows[:, :7]))
    changed = rows.copy()
    changed[3, 5] = np.nextafter(changed[3, 5], dtype(10))  # one ulp
    assert (native_module().compat_row_fingerprints(changed) != got).tolist() == [i == 3 for i in range(7)]


@pytest.mark.parametrize("kind", ["numpy-f32", "numpy-f64", "numpy-f16", "numpy-fortran", "torch-f32", "torch-f16",
                                  "numpy-int"])
def test_components_copied_on_first_access_equal_sklearns(kind):
    """components_ of dense CPU input is copied from X when first read: the values scikit-learn copies in fit."""
    d = _distances(99, 7, "euclid")
    x = {"numpy-f32": lambda: d.astype(np.float32), "numpy-f64": lambda: d, "numpy-f16": lambda: d.astype(np.float16),
         "numpy-fortran": lambda: np.asfortranarray(d), "torch-f32": lambda: torch.from_numpy(d.astype(np.float32)),
         "torch-f16": lambda: torch.from_numpy(d.astype(np.float16)),
         "numpy-int": lambda: (d * 10).astype(np.int64)}[kind]()
    ref = x.numpy() if isinstance(x, torch.Tensor) else x
    want = SkDBSCAN(eps=0.8 if kind != "numpy-int" else 8, min_samples=4, metric="precomputed").fit(ref)
    got = DBSCAN(eps=0.8 if kind != "numpy-int" else 8, min_samples=4, metric="precomputed").fit(x)
    assert len(want.core_sample_indices_) > 10
    assert ("_lazy_components" in vars(got)) == (kind != "numpy-int")  # integers: converted, copied in fit
    comp = got.components_
    assert type(comp) is type(x) and comp.dtype == x.dtype
    np.testing.assert_array_equal(comp.numpy() if isinstance(comp, torch.Tensor) else comp, want.components_)
    if isinstance(comp, np.ndarray):
        assert comp.flags.c_contiguous == want.components_.flags.c_contiguous
    x[want.core_sample_indices_[0], 0] += 1  # changed after the first access: the copy keeps fit's rows
    np.testing.assert_array_equal(np.asarray(got.components_), want.components_)
    assert got.components_ is comp


@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_components_after_an_in_place_change_raise(container):
    d = _distances(60, 2, "euclid").astype(np.float32)
    x = torch.from_numpy(d.copy()) if container == "torch" else d.copy()
    est = DBSCAN(eps=0.8, min_samples=4, metric="precomputed").fit(x)
    core = est.core_sample_indices_
    assert len(core) > 5
    untouched = DBSCAN(eps=0.8, min_samples=4, metric="precomputed").fit(x)
    x[core[2], core[3]] = float(np.nextafter(np.float32(x[core[2], core[3]]), np.float32(9)))  # one ulp, core row
    with pytest.raises(RuntimeError, match="components_.*changed in place"):
        est.components_
    with pytest.raises(RuntimeError, match="changed in place"):
        untouched.components_
    np.testing.assert_array_equal(est.labels_, untouched.labels_)  # the labels were fixed in fit
    # a change of a non-core row is harmless (torch's version counter still notices it)
    y = d.copy()
    est = DBSCAN(eps=0.8, min_samples=4, metric="precomputed").fit(y)
    other = np.setdiff1d(np.arange(60), est.core_sample_indices_)
    assert other.size
    y[other[0], 0] += 1
    np.testing.assert_array_equal(est.components_, d[est.core_sample_indices_])


def test_lazy_components_pickle_and_refit():
    import pickle

    d = _distances(50, 4, "euclid")
    est = DBSCAN(eps=0.8, min_samples=4, metric="precomputed").fit(d)
    want = d[est.core_sample_indices_]
    back = pickle.loads(pickle.dumps(est))  # the pickle holds the rows, not X
    assert "_lazy_components" not in vars(back) and "_lazy_components" not in vars(est)
    np.testing.assert_array_equal(back.components_, want)
    est.fit(d[:10, :10])  # a refit replaces the rows
    np.testing.assert_array_equal(est.components_, SkDBSCAN(eps=0.8, min_samples=4, metric="precomputed")
                                  .fit(d[:10, :10]).components_)
    assert not hasattr(DBSCAN(), "components_")


@pytest.mark.parametrize("seed", range(4))
def test_csr_symmetric_against_sets(seed):
    from hilcore._dispatch import native_module

    rng = np.random.default_rng(seed)
    n = 40
    a = rng.random((n, n)) < 0.15
    sym = a | a.T
    cases = [(sym, 1), (sym & ~np.eye(n, dtype=bool), 1)]
    b = sym.copy()
    i, j = np.argwhere(np.triu(sym, 1))[0]
    b[i, j] = False  # one missing mirror entry
    cases.append((b, 0))
    for m, want in cases:
        r, c = np.nonzero(m)
        indptr = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=n)))).astype(np.int64)
        assert native_module().compat_csr_symmetric(indptr, c.astype(np.int64)) == want
        shuffled = c.astype(np.int64).copy()
        row = int(np.argmax(np.diff(indptr) > 1))
        shuffled[indptr[row]:indptr[row + 1]] = shuffled[indptr[row]:indptr[row + 1]][::-1]
        assert native_module().compat_csr_symmetric(indptr, shuffled) == -1  # not ascending: unknown
