"""Bad input raises a clear ValueError/TypeError naming the argument, before any kernel runs."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import hilcore
from testing import DBSCAN_BACKENDS, JACCARD_BACKENDS, KNN_BACKENDS, reid_features

X = reid_features(19)


def _with(value, row=3, col=5):
    x = X.copy()
    x[row, col] = value
    return x


def _ops(backend_knn, backend_jac):
    return [lambda x: hilcore.knn(x, 3, backend=backend_knn),
            lambda x: hilcore.jaccard_distance(x, 5, 2, backend=backend_jac)]


@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("op", ["knn", "jaccard"])
@pytest.mark.parametrize("bad,error,match", [
    (_with(np.nan), ValueError, r"x: 1 row\(s\) contain NaN or Inf \(first rows: \[3\]\)"),
    (_with(np.inf), ValueError, r"x: .*NaN or Inf"),
    (_with(-np.inf, row=0), ValueError, r"x: .*first rows: \[0\]"),
    (np.where(np.arange(19)[:, None] == 7, 0, X).astype(np.float32), ValueError, r"x: 1 row\(s\) are all zeros.*\[7\]"),
    (X[0], ValueError, r"x: expected a 2-D array"),
    (X[None], ValueError, r"x: expected a 2-D array"),
    (np.zeros((0, 4), np.float32), ValueError, r"x: expected at least one row"),
    (np.zeros((4, 0), np.float32), ValueError, r"x: expected at least one feature column"),
    ((X * 100).astype(np.int64), TypeError, r"x: expected a floating dtype"),
    (X.astype(bool), TypeError, r"x: expected a floating dtype"),
    ("features.npy", TypeError, r"x: expected a NumPy array"),
])
def test_bad_features(backend, op, bad, error, match):
    if op == "jaccard" and backend not in [b.values[0] for b in JACCARD_BACKENDS]:
        pytest.skip("no jaccard for this backend")
    call = _ops(backend, backend)[op == "jaccard"]
    with pytest.raises(error, match=match):
        call(bad)
    if isinstance(bad, np.ndarray) and bad.dtype.kind == "f" and bad.ndim == 2 and bad.size:
        with pytest.raises(error, match=match):  # torch input: same checks
            call(torch.from_numpy(bad))


@pytest.mark.parametrize("k,error,match", [
    (20, ValueError, r"k: expected k <= 19"),
    (0, ValueError, r"k: expected an integer >= 1, got 0"),
    (-3, ValueError, r"k: expected an integer >= 1"),
    (2.0, TypeError, r"k: expected an integer"),
    (True, TypeError, r"k: expected an integer"),
])
def test_knn_bad_k(k, error, match):
    with pytest.raises(error, match=match):
        hilcore.knn(X, k)


def test_knn_bad_y():
    with pytest.raises(ValueError, match=r"y: expected 32 columns like x, got shape \(5, 16\)"):
        hilcore.knn(X, 3, y=X[:5, :16].copy())
    with pytest.raises(ValueError, match=r"k: expected k <= 5"):
        hilcore.knn(X, 6, y=X[:5])
    with pytest.raises(ValueError, match=r"y: .*NaN"):
        hilcore.knn(X, 3, y=_with(np.nan))
    with pytest.raises(ValueError, match=r"y: expected a 2-D array"):
        hilcore.knn(X, 3, y=X[0])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(k1=0), ValueError, r"k1: expected an integer >= 1, got 0"),
    (dict(k2=0), ValueError, r"k2: expected an integer >= 1, got 0"),
    (dict(k1=3.5), TypeError, r"k1: expected an integer"),
    (dict(max_distance=-0.1), ValueError, r"max_distance: expected a finite number >= 0"),
    (dict(max_distance=np.nan), ValueError, r"max_distance: expected a finite number >= 0"),
    (dict(max_distance="0.6x"), TypeError, r"max_distance: expected a number"),
])
def test_jaccard_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        hilcore.jaccard_distance(X, **kwargs)


D = np.array([[0, .1, .9], [.1, 0, .9], [.9, .9, 0]], dtype=np.float32)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
@pytest.mark.parametrize("dist,kwargs,error,match", [
    (D, dict(eps=-0.1), ValueError, r"eps: expected a finite number >= 0"),
    (D, dict(eps=np.inf), ValueError, r"eps: expected a finite number >= 0"),
    (D, dict(min_samples=0), ValueError, r"min_samples: expected an integer >= 1, got 0"),
    (D, dict(min_samples=2.5), TypeError, r"min_samples: expected an integer"),
    (D[:, :2], {}, ValueError, r"dist: expected a square \[N, N\] distance matrix, got shape \(3, 2\)"),
    (D[0], {}, ValueError, r"dist: expected a square"),
    (sp.csr_matrix(D[:2]), {}, ValueError, r"dist: expected a square"),
    (D - 0.5, {}, ValueError, r"dist: contains negative distances"),
    (sp.csr_matrix(D - 0.5), {}, ValueError, r"dist: contains negative distances"),
    (np.where(D == 0.9, np.nan, D), {}, ValueError, r"dist: contains NaN"),
    (D.astype(np.int32), {}, TypeError, r"dist: expected floating-point distances"),
])
def test_dbscan_bad_input(backend, dist, kwargs, error, match):
    with pytest.raises(error, match=match):
        hilcore.dbscan(dist, backend=backend, **{"eps": 0.5, "min_samples": 2, **kwargs})


def test_unknown_backend():
    for call in (lambda: hilcore.knn(X, 3, backend="gpu"), lambda: hilcore.jaccard_distance(X, backend="gpu"),
                 lambda: hilcore.dbscan(D, backend="gpu")):
        with pytest.raises(ValueError, match=r"backend: expected one of .*got 'gpu'"):
            call()
    with pytest.raises(TypeError, match=r"backend: expected a string"):
        hilcore.knn(X, 3, backend=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only check")
def test_explicit_unavailable_backend_raises():
    with pytest.raises(hilcore.BackendUnavailable, match=r"knn: backend 'cuda' cannot run"):
        hilcore.knn(X, 3, backend="cuda")
    with pytest.raises(hilcore.BackendUnavailable, match=r"jaccard_distance: backend 'cuda' cannot run"):
        hilcore.jaccard_distance(X, backend="cuda")
    with pytest.raises(hilcore.BackendUnavailable, match=r"dbscan: backend 'cuda' cannot run"):
        hilcore.dbscan(D, backend="cuda")
    with pytest.raises(hilcore.BackendUnavailable, match=r"dbscan: backend 'triton' is not implemented"):
        hilcore.dbscan(D, backend="triton")
    assert "cuda" not in hilcore.backends("cpu")
    # "auto" never raises for lack of a backend: it falls back
    assert hilcore.dbscan(D, 0.5, 2).tolist() == [0, 0, -1]


def test_huge_finite_rows_normalise_instead_of_vanishing():
    # squares of 1e20 overflow float32; the rows must still come out unit-norm, and the input untouched
    from hilcore._arrays import features

    x = np.full((3, 4), 1e20, dtype=np.float32)
    x[1] = [3e20, 4e20, 0, 0]
    x0 = x.copy()
    f, _ = features(x)
    np.testing.assert_allclose(f.numpy()[0], 0.5, rtol=1e-6)
    np.testing.assert_allclose(f.numpy()[1], [0.6, 0.8, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(x, x0)
