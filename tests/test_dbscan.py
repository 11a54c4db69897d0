"""hilcore.dbscan: every backend against the textbook reference and scikit-learn."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

import hilcore
from hilcore.ref import dbscan as ref_dbscan
from testing import DBSCAN_BACKENDS, SIZES, csr_to_dense, dbscan_dense, reid_features, tie_features, with_duplicates


def _sklearn(dense, eps, min_samples):
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dense).astype(np.int64)


def _blobs(n, seed=0, dtype=np.float32):
    """Euclidean distances of 2-D points in a few blobs of varied density plus uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 10, size=(max(1, n // 20), 2))
    pts = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.4, size=(n, 2))
    pts[: n // 5] = rng.uniform(0, 10, size=(n // 5, 2))
    pts = np.round(pts, 2)  # coincident points and tied distances
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return d.astype(dtype)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_matches_sklearn_and_reference(backend, n, dtype):
    d = _blobs(n, dtype=dtype)
    for eps, min_samples in [(0.3, 4), (0.5, 2), (0.2, 1), (1.0, 10), (1e-9, 2)]:
        want = _sklearn(d, eps, min_samples)
        np.testing.assert_array_equal(ref_dbscan.dbscan(d, eps, min_samples), want)
        got = hilcore.dbscan(d, eps, min_samples, backend=backend)
        assert got.dtype == np.int64 and got.shape == (n,)
        np.testing.assert_array_equal(got, want)


def _jaccard_cases():
    for kind, n in [("reid", 19), ("reid", 99), ("reid", 989), ("ties", 99), ("dup", 99), ("dup", 989)]:
        yield pytest.param(kind, n, id=f"{kind}-{n}")


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
@pytest.mark.parametrize("kind,n", list(_jaccard_cases()))
def test_on_jaccard_output(backend, kind, n):
    """Sparse output (stored zeros for duplicates) vs its dense form (missing = 1.0), sklearn, reference."""
    x = {"reid": lambda: reid_features(n), "ties": lambda: tie_features(n),
         "dup": lambda: with_duplicates(reid_features(n))}[kind]()
    for max_distance, eps, min_samples in [(0.6, 0.6, 4), (None, 0.6, 4), (0.5, 0.45, 2)]:
        if max_distance is None and n > 99:
            continue  # the textbook reference is slow on the full matrix
        dist = hilcore.jaccard_distance(x, 20, 6, max_distance=max_distance, backend="torch")
        dense = dbscan_dense(dist, fill=1.0)
        want = _sklearn(dense, eps, min_samples)
        np.testing.assert_array_equal(ref_dbscan.dbscan(dense, eps, min_samples), want)
        np.testing.assert_array_equal(hilcore.dbscan(dist, eps, min_samples, backend=backend), want)
        np.testing.assert_array_equal(hilcore.dbscan(dense, eps, min_samples, backend=backend), want)
        if max_distance is not None and n >= 99:
            assert want.max() >= 1 and (want == -1).any()  # several clusters and some noise


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_stored_zeros_count(backend):
    """Duplicates stored as explicit 0 are neighbours (scikit-learn's sparse path would drop them)."""
    rows = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 5]
    cols = [1, 2, 3, 0, 2, 3, 0, 1, 3, 0, 1, 2, 5, 4]
    vals = [0.0] * 12 + [0.1, 0.1]
    d = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(7, 7))
    assert d.nnz == 14  # the zeros are stored
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.5, 4, backend=backend), [0, 0, 0, 0, -1, -1, -1])
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.5, 2, backend=backend), [0, 0, 0, 0, 1, 1, -1])
    dense = dbscan_dense(d, fill=np.inf)
    np.testing.assert_array_equal(ref_dbscan.dbscan(dense, 0.5, 4), [0, 0, 0, 0, -1, -1, -1])
    # the same zeros through COO, CSC and torch sparse input
    for other in (d.tocoo(), d.tocsc(), torch.sparse_csr_tensor(torch.from_numpy(d.indptr.astype(np.int64)),
                                                             torch.from_numpy(d.indices.astype(np.int64)),
                                                             torch.from_numpy(d.data), size=(7, 7))):
        got = hilcore.dbscan(other, 0.5, 4, backend=backend)
        np.testing.assert_array_equal(np.asarray(got), [0, 0, 0, 0, -1, -1, -1])


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_border_point_takes_smallest_label(backend):
    # cliques {0, 1, 2, 8} and {4, 5, 6, 9} are the cores (min_samples=4); border 3 touches
    # 2 and 6 and takes the smaller label, 7 touches only 6; clusters are numbered by
    # their smallest core index
    n = 10
    d = np.full((n, n), 9.0, dtype=np.float32)
    np.fill_diagonal(d, 0)
    for clique in ([0, 1, 2, 8], [4, 5, 6, 9]):
        for a in clique:
            for b in clique:
                d[a, b] = 0.0 if a == b else 1.0
    for a, b in [(2, 3), (3, 6), (6, 7)]:
        d[a, b] = d[b, a] = 1.0
    want = _sklearn(d, 1.0, 4)
    np.testing.assert_array_equal(want, [0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(hilcore.dbscan(d, 1.0, 4, backend=backend), want)
    rng = np.random.default_rng(8)
    for _ in range(5):  # relabelled points: numbering and border choice follow the indices
        p = rng.permutation(n)
        dp = d[np.ix_(p, p)]
        want = _sklearn(dp, 1.0, 4)
        np.testing.assert_array_equal(ref_dbscan.dbscan(dp, 1.0, 4), want)
        np.testing.assert_array_equal(hilcore.dbscan(dp, 1.0, 4, backend=backend), want)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_all_noise_and_one_cluster(backend):
    d = _blobs(99)
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.0, 5, backend=backend), np.full(99, -1))
    np.testing.assert_array_equal(hilcore.dbscan(d, 100.0, 5, backend=backend), np.zeros(99))
    np.testing.assert_array_equal(hilcore.dbscan(d, 100.0, 99, backend=backend), np.zeros(99))
    np.testing.assert_array_equal(hilcore.dbscan(d, 100.0, 100, backend=backend), np.full(99, -1))
    distinct = np.abs(np.arange(19)[:, None] - np.arange(19)[None, :]).astype(np.float32)
    np.testing.assert_array_equal(hilcore.dbscan(distinct, 0.5, 1, backend=backend), np.arange(19))


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_long_chain_is_one_cluster(backend):
    """A path through 989 points in shuffled order: union-find must merge it all into cluster 0."""
    n = 989
    order = np.random.default_rng(7).permutation(n)
    a, b = order[:-1], order[1:]
    d = sp.csr_matrix((np.full(2 * (n - 1), 0.5, np.float32), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.5, 2, backend=backend), np.zeros(n))
    # min_samples=3: the two ends of the path are border points of the single cluster
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.5, 3, backend=backend), np.zeros(n))
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.5, 4, backend=backend), np.full(n, -1))


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_torch_in_torch_out(backend):
    d = _blobs(99)
    want = hilcore.dbscan(d, 0.3, 4, backend=backend)
    got = hilcore.dbscan(torch.from_numpy(d), 0.3, 4, backend=backend)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)
    nc = np.asfortranarray(d[:, :])
    np.testing.assert_array_equal(hilcore.dbscan(torch.from_numpy(nc), 0.3, 4, backend=backend).numpy(), want)


def test_auto_backend():
    d = _blobs(99)
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.3, 4), _sklearn(d, 0.3, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", [b for b in ("torch", "cuda") if b in hilcore.backends("cuda")])
def test_cuda_tensors(backend):
    d = _blobs(989)
    want = _sklearn(d, 0.3, 4)
    got = hilcore.dbscan(torch.from_numpy(d).cuda(), 0.3, 4, backend=backend)
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), want)
    sparse = hilcore.jaccard_distance(torch.from_numpy(reid_features(989)).cuda(), 20, 6, max_distance=0.6)
    got = hilcore.dbscan(sparse, 0.6, 4, backend=backend)
    rows = sp.csr_matrix((sparse.values().cpu().numpy(), sparse.col_indices().cpu().numpy(),
                          sparse.crow_indices().cpu().numpy()), shape=sparse.shape)
    np.testing.assert_array_equal(got.cpu().numpy(), _sklearn(dbscan_dense(rows, fill=1.0), 0.6, 4))
