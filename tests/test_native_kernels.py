"""Direct tests of the C++ kernels (hilcore._native through hilcore.backend.native)
against slow NumPy loops written from the formulas of docs/design.md, and against
scikit-learn's DBSCAN on the dense matrix."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hilcore._dispatch import native_module
from testing import reid_features, with_duplicates

nat = native_module()
pytestmark = pytest.mark.skipif(nat is None, reason="hilcore._native is not built")

if nat is not None:
    from hilcore.backend.native.dbscan import dbscan as native_dbscan
    from hilcore.backend.native.jaccard import jaccard as native_jaccard
    from hilcore.backend.native.knn import knn as native_knn


# ----------------------------------------------------------------------------- references

def ref_topk(S: np.ndarray, k: int, self_search: bool):
    """Sort each row by (sim desc, index asc), the row's own column first in self-search."""
    n, m = S.shape
    idx = np.empty((n, k), np.int64)
    for i in range(n):
        keys = [(-math.inf if (self_search and j == i) else -float(S[i, j]), j) for j in range(m)]
        idx[i] = [j for _, j in sorted(keys)[:k]]
    return idx, np.take_along_axis(S, idx, 1)


def ref_rank(x: np.ndarray, k: int) -> np.ndarray:
    S = x.astype(np.float64) @ x.astype(np.float64).T
    return ref_topk(S, k, True)[0]


def ref_jaccard_dense(x: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Dense Jaccard distance (float64), from the formulas, one loop per row."""
    n = x.shape[0]
    kh = round(k1 / 2)
    xd = x.astype(np.float64)

    def recip(i, k):
        m = min(k + 1, k1)
        return [int(j) for j in rank[i, :m] if i in rank[j, :m].tolist()]

    V = np.zeros((n, n))
    for i in range(n):
        ri = recip(i, k1)
        e = set(ri)
        for c in ri:
            rc = recip(c, kh)
            if len(set(rc) & set(ri)) > 2 / 3 * len(rc):
                e |= set(rc)
        e = sorted(e)
        logits = -(2 - 2 * (xd[e] @ xd[i]))
        w = np.exp(logits - logits.max())
        V[i, e] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    D = np.ones((n, n))
    for i in range(n):
        m = np.minimum(V[i][None, :], V).sum(axis=1)
        D[i] = np.where(m > 0, np.maximum(1 - m / (2 - m), 0.0), 1.0)
    np.fill_diagonal(D, 0.0)
    return D


def to_dense(indptr, indices, data, n, fill=1.0):
    D = np.full((n, n), fill, np.float32)
    for i in range(n):
        for p in range(int(indptr[i]), int(indptr[i + 1])):
            D[i, indices[p]] = data[p]
    return D


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of the shared generators (tests/testing.py) scaled to unit norm, float32 (the kernels' input)."""
    return (x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)


def identical_pairs(x: np.ndarray) -> np.ndarray:
    same = (x[:, None, :] == x[None, :, :]).all(axis=2)
    np.fill_diagonal(same, False)
    return same


# ----------------------------------------------------------------------------- kNN

@pytest.mark.parametrize("n,m,k,self_search", [
    (1, 1, 1, True), (2, 2, 2, True), (19, 19, 5, True), (200, 200, 30, True), (200, 200, 200, True),
    (1, 1, 1, False), (2, 2, 2, False), (19, 19, 5, False), (19, 7, 7, False), (200, 200, 30, False),
    (200, 57, 1, False)])
def test_topk_merge_ties_any_tile_order(n, m, k, self_search):
    rng = np.random.default_rng(n * 1000 + m)
    S = rng.integers(-3, 4, size=(n, m)).astype(np.float32) / 4  # many exact ties
    bs = np.full((n, k), -np.inf, np.float32)
    bi = np.full((n, k), -1, np.int64)
    tiles = [(i0, j0) for i0 in range(0, n, 8) for j0 in range(0, m, 5)]
    rng.shuffle(tiles)
    for i0, j0 in tiles:
        nat.knn_topk_merge(np.ascontiguousarray(S[i0:i0 + 8, j0:j0 + 5]), i0, j0, bs, bi, self_search)
    idx, sim = ref_topk(S, k, self_search)
    np.testing.assert_array_equal(bi, idx)
    np.testing.assert_array_equal(bs, sim)


@pytest.mark.parametrize("n,k,tile", [(1, 1, 4), (2, 2, 1), (19, 5, 4), (19, 19, 7), (200, 30, 64), (200, 200, 2048)])
def test_knn_self_search_exact_ties_duplicates(n, k, tile):
    # small-integer rows: every dot product is exact in float32, so ties are
    # real ties and the (sim desc, index asc) order is checked exactly
    rng = np.random.default_rng(n + k)
    x = rng.integers(-2, 3, size=(n, 6)).astype(np.float32)
    x[n // 2:n // 2 + n // 4] = x[:n // 4]  # duplicate rows
    x[np.abs(x).sum(1) == 0, 0] = 1
    idx, sim = native_knn(torch.from_numpy(x), k, None, tile=tile)
    ridx, rsim = ref_topk(x.astype(np.float64) @ x.T.astype(np.float64), k, True)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    np.testing.assert_array_equal(sim.numpy(), rsim.astype(np.float32))
    assert (idx[:, 0].numpy() == np.arange(n)).all()


@pytest.mark.parametrize("n,m,k,tile", [(1, 3, 3, 2), (19, 7, 4, 3), (200, 150, 10, 64)])
def test_knn_database(n, m, k, tile):
    rng = np.random.default_rng(m)
    x = rng.integers(-2, 3, size=(n, 5)).astype(np.float32)
    y = rng.integers(-2, 3, size=(m, 5)).astype(np.float32)
    idx, sim = native_knn(torch.from_numpy(x), k, torch.from_numpy(y), tile=tile)
    ridx, rsim = ref_topk(x.astype(np.float64) @ y.T.astype(np.float64), k, False)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    np.testing.assert_array_equal(sim.numpy(), rsim.astype(np.float32))


def test_knn_real_features_match_float64():
    x = unit(reid_features(200, 32, seed=0))
    idx, sim = native_knn(torch.from_numpy(x), 10, None, tile=48)
    S = x.astype(np.float64) @ x.T.astype(np.float64)
    ridx, rsim = ref_topk(S, 10, True)
    np.testing.assert_allclose(sim.numpy(), rsim, atol=1e-5)
    assert (idx.numpy() == ridx).mean() > 0.99  # float32 rounding may swap near-ties only


def test_topk_merge_validation():
    bs = np.full((4, 2), -np.inf, np.float32)
    bi = np.full((4, 2), -1, np.int64)
    with pytest.raises(ValueError, match="S: expected dtype float32"):
        nat.knn_topk_merge(np.zeros((2, 2)), 0, 0, bs, bi, True)
    with pytest.raises(ValueError, match="row0"):
        nat.knn_topk_merge(np.zeros((2, 2), np.float32), 3, 0, bs, bi, True)
    with pytest.raises(ValueError, match="best_idx"):
        nat.knn_topk_merge(np.zeros((2, 2), np.float32), 0, 0, bs, bi[:, :1].copy(), True)
    with pytest.raises(ValueError, match="S: expected a C-contiguous"):
        nat.knn_topk_merge(np.zeros((2, 4), np.float32)[:, ::2], 0, 0, bs, bi, True)


# ----------------------------------------------------------------------------- Jaccard

JACCARD_CASES = [(1, 1, 1), (2, 2, 1), (2, 2, 2), (19, 5, 1), (19, 7, 3), (19, 19, 6), (200, 20, 6), (200, 30, 1),
                 (200, 9, 9)]


@pytest.mark.parametrize("n,k1,k2", JACCARD_CASES)
def test_jaccard_matches_dense_loops(n, k1, k2):
    x = unit(with_duplicates(reid_features(n, 16, seed=n + k1)))
    rank = ref_rank(x, k1)
    indptr, indices, data = native_jaccard(torch.from_numpy(x), torch.from_numpy(rank), k1, k2, math.inf)
    indptr, indices, data = indptr.numpy(), indices.numpy(), data.numpy()
    D = ref_jaccard_dense(x, rank, k1, k2)
    # every pair whose supports meet is stored (d < 1 in the reference), nothing else
    stored = to_dense(indptr, indices, np.ones_like(data), n, fill=0.0).astype(bool)
    np.fill_diagonal(stored, True)
    ref_stored = D < 1.0 - 1e-12
    np.fill_diagonal(ref_stored, True)
    np.testing.assert_array_equal(stored, ref_stored)
    np.testing.assert_allclose(to_dense(indptr, indices, data, n), D, atol=2e-5)
    for i in range(n):  # sorted indices, diagonal exactly 0
        row = indices[indptr[i]:indptr[i + 1]]
        assert (np.diff(row) > 0).all()
        assert data[indptr[i]:indptr[i + 1]][row == i].tolist() == [0.0]
    # pairs at distance 0 in float64 (identical rows with identical V') are exactly 0, not a rounding above
    dense = to_dense(indptr, indices, data, n)
    assert np.all(dense[D < 1e-9] == 0.0)
    if n >= 19:
        assert (identical_pairs(x) & (D < 1e-9)).any()


@pytest.mark.parametrize("n,k1,k2", [(19, 7, 3), (200, 20, 6), (200, 30, 1)])
@pytest.mark.parametrize("max_distance", [0.0, 0.3, 0.6, 0.9])
def test_jaccard_max_distance_and_exact_symmetry(n, k1, k2, max_distance):
    x = unit(with_duplicates(reid_features(n, 16, seed=7)))
    rank = ref_rank(x, k1)
    indptr, indices, data = (t.numpy() for t in native_jaccard(torch.from_numpy(x), torch.from_numpy(rank),
                                                               k1, k2, max_distance))
    A = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    assert (A != A.T).nnz == 0  # bit-identical m(i, j) and m(j, i)
    assert (data <= np.float32(max_distance)).all()
    assert (A.diagonal() == 0).all() and all(i in indices[indptr[i]:indptr[i + 1]] for i in range(n))
    D = ref_jaccard_dense(x, rank, k1, k2)
    dense = to_dense(indptr, indices, data, n, fill=np.inf)
    clear = np.abs(D - max_distance) > 1e-5  # away from the threshold, the kept set is exact
    np.testing.assert_array_equal((dense <= max_distance)[clear], (D <= max_distance)[clear])
    kept = np.isfinite(dense)
    np.testing.assert_allclose(dense[kept], D[kept], atol=2e-5)
    # exact duplicates at distance 0 are stored with exactly 0 (they are neighbours at any max_distance)
    zero = identical_pairs(x) & (D < 1e-9)
    assert zero.any() and np.all(dense[zero] == 0.0)


def test_jaccard_stores_zero_distances_of_identical_rows():
    x = np.repeat(unit(reid_features(4, 8, seed=3)), 5, axis=0)  # 4 groups of 5 identical rows
    rank = ref_rank(x, 5)
    indptr, indices, data = (t.numpy() for t in native_jaccard(torch.from_numpy(x), torch.from_numpy(rank), 5, 2,
                                                               0.6))
    dense = to_dense(indptr, indices, data, 20, fill=np.inf)
    for g in range(4):
        block = dense[5 * g:5 * g + 5, 5 * g:5 * g + 5]
        assert np.isfinite(block).all() and np.all(block == 0.0)


def test_jaccard_validation():
    x = torch.from_numpy(unit(reid_features(10, 4, seed=0)))
    rank = torch.from_numpy(ref_rank(x.numpy(), 4))
    with pytest.raises(ValueError, match="rank: expected dtype int64"):
        nat.jaccard(x.numpy(), rank.numpy().astype(np.int32), 4, 2, 0.6)
    with pytest.raises(ValueError, match="x: expected dtype float32"):
        nat.jaccard(x.numpy().astype(np.float64), rank.numpy(), 4, 2, 0.6)
    with pytest.raises(ValueError, match="k1"):
        nat.jaccard(x.numpy(), rank.numpy(), 5, 2, 0.6)
    with pytest.raises(ValueError, match="k2"):
        nat.jaccard(x.numpy(), rank.numpy(), 4, 5, 0.6)
    bad = rank.numpy().copy()
    bad[3, 2] = 10
    with pytest.raises(ValueError, match=r"rank: entry \[3, 2\]"):
        nat.jaccard(x.numpy(), bad, 4, 2, 0.6)
    with pytest.raises(ValueError, match="rank: expected 10 rows"):
        nat.jaccard(x.numpy(), rank.numpy()[:5].copy(), 4, 2, 0.6)


# ----------------------------------------------------------------------------- DBSCAN

def ref_sklearn(D, eps, min_samples):
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(D)


def csr_of_dense(D, keep):
    A = sp.csr_matrix(np.where(keep, 1.0, 0.0))
    A.sort_indices()
    return (torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64)),
            torch.from_numpy(D[keep].astype(np.float32)))


@pytest.mark.parametrize("n", [1, 2, 19, 200])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps,min_samples", [(1e-6, 1), (1e-6, 2), (0.2, 3), (0.35, 4), (0.5, 5), (1.0, 200)])
def test_dbscan_matches_sklearn_random_symmetric(n, seed, eps, min_samples):
    rng = np.random.default_rng(seed * 7 + n)
    # quantised distances: exact ties at eps and exact zeros off the diagonal
    D = np.round(rng.random((n, n)) * 20) / 40
    D = np.minimum(D, D.T).astype(np.float32)
    np.fill_diagonal(D, 0)
    expect = ref_sklearn(D, eps, min_samples)
    # every entry stored (zeros included) ...
    got_all = native_dbscan(*csr_of_dense(D, np.ones_like(D, bool)), n, eps, min_samples)
    np.testing.assert_array_equal(got_all.numpy(), expect)
    # ... and only the entries within eps, the diagonal among them
    keep = D <= np.float32(eps)
    got = native_dbscan(*csr_of_dense(D, keep), n, eps, min_samples)
    np.testing.assert_array_equal(got.numpy(), expect)
    # the kernel counts what is stored (scikit-learn's count): a diagonal left out is a point not its own
    # neighbour, as scikit-learn reads a dense matrix whose diagonal lies above eps
    np.fill_diagonal(keep, False)
    far = D.copy()
    np.fill_diagonal(far, 2.0)
    got = native_dbscan(*csr_of_dense(D, keep), n, eps, min_samples)
    np.testing.assert_array_equal(got.numpy(), ref_sklearn(far, eps, min_samples))


def test_dbscan_float32_threshold_like_sklearn():
    d = np.float32(0.6)
    D = np.array([[0, d, 1], [d, 0, 1], [1, 1, 0]], np.float32)
    got = native_dbscan(*csr_of_dense(D, np.ones_like(D, bool)), 3, 0.6, 2)
    np.testing.assert_array_equal(got.numpy(), ref_sklearn(D, 0.6, 2))
    assert got.tolist() == [0, 0, -1]


@pytest.mark.parametrize("n,k1,k2", [(19, 7, 3), (200, 20, 6), (200, 30, 1)])
@pytest.mark.parametrize("min_samples", [1, 4, 8])
def test_dbscan_on_jaccard_output_matches_sklearn(n, k1, k2, min_samples):
    x = unit(with_duplicates(reid_features(n, 16, seed=11)))
    rank = ref_rank(x, k1)
    for eps in (0.3, 0.6):
        indptr, indices, data = native_jaccard(torch.from_numpy(x), torch.from_numpy(rank), k1, k2, eps)
        dense = to_dense(indptr.numpy(), indices.numpy(), data.numpy(), n, fill=1.0)
        got = native_dbscan(indptr, indices, data, n, eps, min_samples)
        np.testing.assert_array_equal(got.numpy(), ref_sklearn(dense, eps, min_samples))


def test_dbscan_validation():
    ip = np.array([0, 1, 2], np.int64)
    ix = np.array([0, 1], np.int64)
    dt = np.array([0, 0], np.float32)
    with pytest.raises(ValueError, match="indptr: expected length"):
        nat.dbscan(ip, ix, dt, 3, 0.5, 2)
    with pytest.raises(ValueError, match="indices: entry 1"):
        nat.dbscan(ip, np.array([0, 5], np.int64), dt, 2, 0.5, 2)
    with pytest.raises(ValueError, match="data: expected dtype float32"):
        nat.dbscan(ip, ix, dt.astype(np.float64), 2, 0.5, 2)
    with pytest.raises(ValueError, match="indptr: expected non-decreasing"):
        nat.dbscan(np.array([0, 2, 1], np.int64), ix, dt, 2, 0.5, 2)
    with pytest.raises(ValueError, match="min_samples"):
        nat.dbscan(ip, ix, dt, 2, 0.5, 0)
    assert nat.dbscan(ip, ix, dt, 2, 0.5, 1).tolist() == [0, 1]


# ----------------------------------------------------------------------------- kNN: the int8-candidate path

if nat is not None:
    from hilcore.backend.native import knn as knn_mod


def assert_knn_exact(idx, sim, x, y, k, self_search, atol=2e-6):
    """(idx, sim) is a top-k of the float64 similarities up to float32 rounding: the returned values
    are the true ones, sorted, and no left-out column beats the k-th by more than atol; self first."""
    idx, sim = np.asarray(idx), np.asarray(sim)
    S = x.astype(np.float64) @ (x if y is None else y).astype(np.float64).T
    n, m = S.shape
    assert idx.shape == (n, k) and sim.shape == (n, k)
    for i in range(n):
        row = idx[i]
        assert len(set(row.tolist())) == k and row.min() >= 0 and row.max() < m
        np.testing.assert_allclose(sim[i], S[i, row], atol=atol, rtol=0)
        start = 0
        if self_search:
            assert row[0] == i
            start = 1
        assert (np.diff(sim[i, start:]) <= atol).all()
        rest = np.delete(S[i], row)
        if rest.size and k > start:
            assert rest.max() <= S[i, row[start:]].min() + atol


def reid(n, d, seed=0):
    from hilcore.synthetic import reid_features

    x, _, _ = reid_features(max(2, n // 20), n=n, dim=d, seed=seed)
    return x


@pytest.mark.parametrize("n,d,k,tile,extra", [(700, 128, 10, 256, None), (523, 96, 30, 128, 4), (300, 64, 5, 2048, 0)])
def test_knn_int8_reid_matches_fp32_and_float64(n, d, k, tile, extra):
    x = reid(n, d, seed=n)
    xt = torch.from_numpy(x)
    st, st32 = {}, {}
    i8, s8 = native_knn(xt, k, None, tile=tile, precision="int8", extra=extra, info=st)
    i32, s32 = native_knn(xt, k, None, tile=tile, precision="fp32", info=st32)
    assert st["precision"] == "int8" and st32["precision"] == "fp32"
    if extra is None:  # the default candidates certify most rows (few extras send many to the second pass)
        assert st["uncertified_fraction"] < 0.5
    assert_knn_exact(i8, s8, x, None, k, True)
    assert_knn_exact(i32, s32, x, None, k, True)
    np.testing.assert_allclose(s8.numpy(), s32.numpy(), atol=2e-6, rtol=0)
    assert (i8 == i32).float().mean() > 0.995  # only float32 near-ties may swap


@pytest.mark.parametrize("extra", [0, 3, 40])
def test_knn_int8_exact_ties_equal_fp32_bitwise(extra):
    # rows with four entries of +-0.5 (unit norm): int8 quantisation is exact, every product is
    # a multiple of 1/4 computed exactly, so ties are real and both paths must agree bit for bit
    rng = np.random.default_rng(5)
    n, d, k = 300, 64, 12
    x = np.zeros((n, d), np.float32)
    for i in range(n):
        cols = rng.choice(8, 4, replace=False)  # few distinct supports: many ties, many duplicates
        x[i, cols] = rng.choice([-0.5, 0.5], 4)
    xt = torch.from_numpy(x)
    i8, s8 = native_knn(xt, k, None, tile=64, precision="int8", extra=extra)
    i32, s32 = native_knn(xt, k, None, tile=64, precision="fp32")
    ridx, rsim = ref_topk(x.astype(np.float64) @ x.T.astype(np.float64), k, True)
    np.testing.assert_array_equal(i8.numpy(), ridx)
    np.testing.assert_array_equal(s8.numpy(), rsim.astype(np.float32))
    np.testing.assert_array_equal(i32.numpy(), ridx)


def test_knn_int8_crowded_rows_take_the_fallbacks():
    # near-identical rows: every approximate value lies within the bound of every other, nothing
    # certifies, and the second pass overflows its cap -> the fp32 path must produce the answer
    rng = np.random.default_rng(1)
    n, d, k = 400, 128, 8
    base = rng.standard_normal(d)
    x = base + 1e-3 * rng.standard_normal((n, d))
    x[300:] = x[:100]  # exact duplicates too
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    st = {}
    i8, s8 = native_knn(torch.from_numpy(x), k, None, tile=128, precision="int8", info=st)
    assert st["uncertified_fraction"] > 0.9 and st["fallback_rows"] > 0
    assert_knn_exact(i8, s8, x, None, k, True, atol=1e-6)
    i32, s32 = native_knn(torch.from_numpy(x), k, None, tile=128, precision="fp32")
    np.testing.assert_allclose(s8.numpy(), s32.numpy(), atol=1e-6, rtol=0)


def test_knn_int8_second_pass_without_fp32():
    # extra=0: no row certifies from its k candidates, but ReID rows are spread enough that
    # the second int8 pass settles every row without the fp32 fallback
    x = reid(600, 128, seed=3)
    st = {}
    i8, s8 = native_knn(torch.from_numpy(x), 10, None, tile=256, precision="int8", extra=0, info=st)
    assert st["uncertified_fraction"] > 0.5 and st["fallback_rows"] == 0
    assert_knn_exact(i8, s8, x, None, 10, True)


@pytest.mark.parametrize("n,m,k,tile,extra", [(300, 500, 10, 128, None), (77, 600, 1, 64, 2), (19, 130, 130, 64, 5),
                                              (5, 33, 7, 16, 0)])
def test_knn_int8_database(n, m, k, tile, extra):
    x = reid(n + m, 64, seed=m)
    q, db = x[:n].copy(), x[n:].copy()
    st = {}
    idx, sim = native_knn(torch.from_numpy(q), k, torch.from_numpy(db), tile=tile, precision="int8", extra=extra,
                          info=st)
    assert st["precision"] == "int8"
    assert_knn_exact(idx, sim, q, db, k, False)
    i32, s32 = native_knn(torch.from_numpy(q), k, torch.from_numpy(db), tile=tile, precision="fp32")
    np.testing.assert_allclose(sim.numpy(), s32.numpy(), atol=2e-6, rtol=0)


@pytest.mark.parametrize("n,k,tile", [(1, 1, 16), (2, 2, 16), (19, 5, 16), (19, 19, 7), (40, 1, 16), (99, 3, 33)])
def test_knn_int8_small_sizes_and_tails(n, k, tile):
    x = reid(n, 64, seed=n + k) if n >= 2 else np.ones((1, 64), np.float32) / 8
    x[n // 2:n // 2 + n // 4] = x[:n // 4]  # duplicates
    st = {}
    idx, sim = native_knn(torch.from_numpy(x), k, None, tile=tile, precision="int8", extra=1, info=st)
    assert st["precision"] == "int8"
    assert_knn_exact(idx, sim, x, None, k, True)


def test_knn_int8_zero_rows_and_unnormalised():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((150, 70)) / 8 * rng.uniform(0.2, 3, (150, 1))).astype(np.float32)  # norms 0.2..3
    x[[3, 80]] = 0  # zero rows: scale 0, their products all 0
    x[5, :] = 0
    x[5, 7] = 2.0  # a single spike
    idx, sim = native_knn(torch.from_numpy(x), 6, None, tile=64, precision="int8", extra=3)
    assert_knn_exact(idx, sim, x, None, 6, True, atol=1e-5)  # values up to ~9


def test_knn_int8_bound_holds_for_every_pair():
    # the certificate's B_i bounds |float32 dot - approximate| for every column j, on adversarial rows too
    rng = np.random.default_rng(4)
    x = reid(300, 96, seed=9)
    x[:10] = rng.standard_normal((10, 96)) ** 3  # heavy-tailed rows: large quantisation residuals
    x[10, :] = 0
    x[10, 0] = 1
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q, s, xn, pn, en = knn_mod._quantize(nat, torch.from_numpy(x))
    q, s = q.numpy().astype(np.int64), s.numpy()
    assert np.abs(q).max() <= 127
    np.testing.assert_allclose(en.numpy(), np.linalg.norm(x - s[:, None] * q, axis=1), rtol=1e-5, atol=1e-7)
    assert (en.numpy().astype(np.float64) >= np.linalg.norm(x.astype(np.float64) - s[:, None].astype(np.float64) * q,
                                                            axis=1)).all()
    B = knn_mod.row_bounds(96, xn.numpy(), pn.numpy(), en.numpy(), xn.numpy(), pn.numpy(), en.numpy())
    approx = (s[:, None] * s[None, :]).astype(np.float32) * (q @ q.T).astype(np.float32)
    exact32 = x @ x.T  # a float32 product (any summation order is covered by the bound)
    assert (np.abs(exact32.astype(np.float64) - approx) <= B[:, None]).all()
    assert (np.abs(x.astype(np.float64) @ x.T.astype(np.float64) - approx) <= B[:, None]).all()


def test_knn_precision_auto_and_validation():
    x = reid(4096, 64, seed=1)
    st = {}
    idx, sim = native_knn(torch.from_numpy(x), 5, None, info=st)
    assert st["precision"] == "int8"
    assert st["uncertified_fraction"] < 0.5
    ri, rs = native_knn(torch.from_numpy(x), 5, None, precision="fp32")
    np.testing.assert_allclose(sim.numpy(), rs.numpy(), atol=2e-6, rtol=0)
    assert (idx == ri).float().mean() > 0.999
    st = {}
    native_knn(torch.from_numpy(x[:4095]), 5, None, info=st)
    assert st["precision"] == "fp32"
    st = {}
    native_knn(torch.from_numpy(x[:, :63].copy()), 5, None, info=st)
    assert st["precision"] == "fp32"
    # beyond exact int32 accumulation the int8 request falls back to fp32
    big = np.zeros((3, knn_mod.INT8_MAX_DIM + 1), np.float32)
    big[:, 0] = 1
    st = {}
    native_knn(torch.from_numpy(big), 2, None, precision="int8", info=st)
    assert st["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        native_knn(torch.from_numpy(x[:10]), 2, None, precision="bf16")
    with pytest.raises(ValueError, match="extra"):
        native_knn(torch.from_numpy(x[:10]), 2, None, precision="int8", extra=-1)


@pytest.mark.parametrize("columns", [False, True])
@pytest.mark.parametrize("self_search", [True, False])
def test_topk_merge_i8_matches_reference(columns, self_search):
    # power-of-two scales: (s_i * s_j) * S is exact, so ties in S are ties in the values
    rng = np.random.default_rng(int(columns) * 2 + int(self_search))
    n, k = 90, 7
    S = rng.integers(-4, 5, size=(n, n)).astype(np.int32)
    S = np.triu(S) + np.triu(S, 1).T  # symmetric, like a self-search product
    scale = (2.0 ** rng.integers(-3, 2, n)).astype(np.float32)
    A = (scale[:, None] * scale[None, :]).astype(np.float32) * S.astype(np.float32)
    bs = np.full((n, k), -np.inf, np.float32)
    bi = np.full((n, k), -1, np.int64)
    edges = [0, 17, 40, 41, 90]
    tiles = [(a, b) for a in range(4) for b in range(4) if not columns or b > a]
    rng.shuffle(tiles)
    for a, b in tiles:
        r0, r1, c0, c1 = edges[a], edges[a + 1], edges[b], edges[b + 1]
        tile = np.ascontiguousarray(S[r0:r1, c0:c1])
        nat.knn_topk_merge_i8(tile, r0, c0, scale, scale, bs, bi, self_search, False)
        if columns:  # the same tile, merged into its columns' lists (the lower triangle)
            nat.knn_topk_merge_i8(tile, r0, c0, scale, scale, bs, bi, self_search, True)
    if columns:  # the diagonal blocks: rows only
        for a in range(4):
            r0, r1 = edges[a], edges[a + 1]
            nat.knn_topk_merge_i8(np.ascontiguousarray(S[r0:r1, r0:r1]), r0, r0, scale, scale, bs, bi,
                                  self_search, False)
    idx, sim = ref_topk(A, k, self_search)
    np.testing.assert_array_equal(bi, idx)
    np.testing.assert_array_equal(bs, sim)


def test_topk_merge_i8_validation():
    bs = np.full((40, 2), -np.inf, np.float32)
    bi = np.full((40, 2), -1, np.int64)
    sc = np.ones(40, np.float32)
    with pytest.raises(ValueError, match="S: expected dtype int32"):
        nat.knn_topk_merge_i8(np.zeros((2, 2), np.float32), 0, 0, sc, sc, bs, bi, True, False)
    with pytest.raises(ValueError, match="columns"):
        nat.knn_topk_merge_i8(np.zeros((20, 20), np.int32), 0, 10, sc, sc, bs, bi, True, True)
    with pytest.raises(ValueError, match="col0"):
        nat.knn_topk_merge_i8(np.zeros((2, 20), np.int32), 0, 30, sc, sc, bs, bi, True, False)
    with pytest.raises(ValueError, match="cand_idx"):
        ci = np.full((40, 2), 99, np.int64)
        x = np.ones((40, 4), np.float32)
        nat.knn_rescore(x, x, ci, bs, sc, True, bi, bs, np.zeros(40, np.uint8))
