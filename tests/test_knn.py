"""hilcore.knn: every backend against the reference (and scikit-learn) on odd sizes, ties and layouts."""
import importlib

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

import hilcore
from hilcore.ref import knn as ref_knn
from testing import INTERPRETED, KNN_BACKENDS, SIZES, assert_knn_matches, features, reid_features, \
    tie_features, with_duplicates

torch_knn = importlib.import_module("hilcore.backend.torch.knn")


def _sizes_for(backend):
    return [n for n in SIZES if backend not in INTERPRETED or n <= 99]


def _cases():
    for b in KNN_BACKENDS:
        for n in _sizes_for(b.values[0]):
            for kind in ("reid", "ties"):
                yield pytest.param(b.values[0], n, kind, marks=b.marks, id=f"{b.id}-{n}-{kind}")


@pytest.mark.parametrize("backend,n,kind", list(_cases()))
def test_self_search_matches_reference(backend, n, kind):
    x = features(kind, n)
    for k in sorted({1, min(n, 7), min(n, 31)}):
        idx, sim = hilcore.knn(x, k, backend=backend)
        assert_knn_matches(idx, sim, x, k, tie_atol=0.0 if kind == "ties" else 1e-6)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("n,m", [(1, 1), (19, 2), (2, 19), (99, 57)])
def test_cross_search_matches_reference(backend, n, m):
    x, y = tie_features(n, seed=1), tie_features(m, seed=2)
    k = min(m, 5)
    idx, sim = hilcore.knn(x, k, y=y, backend=backend)
    assert_knn_matches(idx, sim, x, k, y)  # exact data: indices identical, ties to the lower index
    xr, yr = reid_features(n, seed=1), reid_features(m, seed=2)
    idx, sim = hilcore.knn(xr, k, y=yr, backend=backend)
    assert_knn_matches(idx, sim, xr, k, yr, tie_atol=1e-6)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_exact_ties_lower_index_wins(backend):
    # rows 0..5 identical; 6..9 identical to each other: every sim is an exact tie
    a = np.array([0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0], dtype=np.float32)
    b = np.array([0.5, 0.5, 0, 0, 0.5, 0.5, 0, 0], dtype=np.float32)
    x = np.stack([a] * 6 + [b] * 4)
    idx, sim = hilcore.knn(x, 8, backend=backend)
    assert idx[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert idx[3].tolist() == [3, 0, 1, 2, 4, 5, 6, 7]  # self first, then the tie in index order
    assert idx[8].tolist() == [8, 6, 7, 9, 0, 1, 2, 3]
    np.testing.assert_allclose(sim[8], [1, 1, 1, 1, .5, .5, .5, .5], atol=1e-6)
    # a tie across the k-th boundary: the lowest indices among the tied must be kept
    idx, _ = hilcore.knn(x, 3, y=x[::-1].copy(), backend=backend)
    assert idx[0].tolist() == [4, 5, 6]
    assert idx[9].tolist() == [0, 1, 2]


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_duplicate_rows(backend):
    x = with_duplicates(reid_features(99))
    idx, sim = hilcore.knn(x, 9, backend=backend)
    assert_knn_matches(idx, sim, x, 9, tie_atol=1e-6)
    xt = with_duplicates(tie_features(99))
    idx, sim = hilcore.knn(xt, 9, backend=backend)
    assert_knn_matches(idx, sim, xt, 9)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_matches_sklearn_on_tie_free_data(backend):
    n = 19 if backend in INTERPRETED else 300
    x = np.random.default_rng(3).standard_normal((n, 24)).astype(np.float32)
    k = 10
    idx, sim = hilcore.knn(x, k, backend=backend)
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x)
    dist, sk_idx = nn.kneighbors(x)
    np.testing.assert_allclose(sim, 1 - dist, atol=1e-5)
    # scikit-learn orders exact ties arbitrarily and rounds differently: an index may
    # differ only where the two candidates are tied to 1e-6 in float64
    xn = ref_knn.normalize(x)
    rows, ranks = np.nonzero(idx != sk_idx)
    assert len(rows) <= idx.size // 100
    for r, a in zip(rows, ranks):
        assert abs(xn[r] @ xn[idx[r, a]] - xn[r] @ xn[sk_idx[r, a]]) <= 1e-6


@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_float64_and_float16_are_cast_to_float32(backend, dtype):
    x = reid_features(57).astype(dtype)
    idx, sim = hilcore.knn(x, 6, backend=backend)
    idx32, sim32 = hilcore.knn(x.astype(np.float32), 6, backend=backend)
    np.testing.assert_array_equal(idx, idx32)
    np.testing.assert_array_equal(sim, sim32)
    assert idx.dtype == np.int64 and sim.dtype == np.float32


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_non_contiguous_input(backend):
    wide = reid_features(57, d=64)
    x = wide[:, ::2]
    assert not x.flags.c_contiguous
    want = hilcore.knn(np.ascontiguousarray(x), 6, backend=backend)
    for view in (x, torch.from_numpy(wide)[:, ::2], torch.from_numpy(np.asfortranarray(x)),
                 torch.from_numpy(np.ascontiguousarray(x)).T.contiguous().T):
        got = hilcore.knn(view, 6, backend=backend)
        np.testing.assert_array_equal(np.asarray(got[0]), want[0])
        np.testing.assert_array_equal(np.asarray(got[1]), want[1])


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_unnormalised_input(backend):
    x = reid_features(99)
    idx, sim = hilcore.knn(x, 8, backend=backend)
    scale = 2.0 ** np.random.default_rng(4).integers(-6, 7, size=(99, 1))  # exact rescaling
    idx2, sim2 = hilcore.knn((x * scale).astype(np.float32), 8, backend=backend)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(sim, sim2)
    xs = (x * np.random.default_rng(5).uniform(0.1, 30, size=(99, 1))).astype(np.float32)
    idx3, sim3 = hilcore.knn(xs, 8, backend=backend)
    assert_knn_matches(idx3, sim3, xs, 8, tie_atol=1e-6)


@pytest.mark.parametrize("backend", KNN_BACKENDS)
def test_torch_in_torch_out(backend):
    x = torch.from_numpy(reid_features(19))
    idx, sim = hilcore.knn(x, 4, backend=backend)
    assert isinstance(idx, torch.Tensor) and idx.dtype == torch.int64 and idx.shape == (19, 4)
    assert isinstance(sim, torch.Tensor) and sim.dtype == torch.float32
    want = hilcore.knn(x.numpy(), 4, backend=backend)
    np.testing.assert_array_equal(idx.numpy(), want[0])


def test_auto_backend_matches_torch():
    x = reid_features(99)
    a = hilcore.knn(x, 5)
    t = hilcore.knn(x, 5, backend="torch")
    assert_knn_matches(a[0], a[1], x, 5, tie_atol=1e-6)
    assert_knn_matches(t[0], t[1], x, 5, tie_atol=1e-6)


@pytest.mark.parametrize("kind", ["reid", "ties"])
def test_torch_blocking_is_invisible(monkeypatch, kind):
    """Tiles of a few rows (tails included) give the answer of one tile (BLAS may round a
    1-row product differently from a 99-row one: sims to 1e-6, indices up to near-ties)."""
    x = with_duplicates(features(kind, 99))
    y = features(kind, 40, seed=9)
    tol = 0.0 if kind == "ties" else 1e-6
    for tile in (7 * 99, 1):  # 7-row tiles with a 1-row tail; 1-row tiles
        monkeypatch.setattr(torch_knn, "TILE_ELEMENTS", tile)
        idx, sim = hilcore.knn(x, 11, backend="torch")
        assert_knn_matches(idx, sim, x, 11, tie_atol=tol)
        idx, sim = hilcore.knn(x, 11, y=y, backend="torch")
        assert_knn_matches(idx, sim, x, 11, y, tie_atol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", [b for b in ("torch", "triton", "cuda") if b in hilcore.backends("cuda")])
def test_cuda_tensors(backend):
    x = with_duplicates(tie_features(989))
    idx, sim = hilcore.knn(torch.from_numpy(x).cuda(), 17, backend=backend)
    assert idx.device.type == "cuda" and sim.device.type == "cuda"
    assert_knn_matches(idx.cpu().numpy(), sim.cpu().numpy(), x, 17)
