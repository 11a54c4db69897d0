"""compat.compute_jaccard_distance returns the widely used compute_jaccard_distance's matrix, bit for bit,
in every setting pipelines run (against the slow reference hilcore/ref/compat_jaccard.py, written from the
original's formulas with its dense matrices and dtypes); the percentile-eps pipeline gives its eps and labels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN as SkDBSCAN

from hilcore import compat, compat_jaccard
from hilcore.ref.compat_jaccard import jaccard_dense, l2_rank
from hilcore.synthetic import reid_features


def _features(seed, n_ids=8, per=12, dim=24, dup=True):
    x, _, _ = reid_features(n_ids, per, dim=dim, seed=seed)
    x = torch.as_tensor(x)
    if dup:  # exact duplicates: identical weight rows, where the original's 1 - m/(2 - m) leaves tiny values
        x[1::17] = x[0::17][:x[1::17].shape[0]]
    return x


def _percentile_eps(d):
    tri = np.triu(d, 1)
    tri = tri[np.nonzero(tri)]
    tri = np.sort(tri)
    return tri[:np.round(1.6e-3 * tri.size).astype(int)].mean()


SETTINGS = [  # (name, transform of the unit float32 features)
    ("unit-float32", lambda x: x),
    ("unit-float64", lambda x: x.double()),
    ("float16", lambda x: x.half()),
    ("scaled", lambda x: 3.0 * x),
    ("random-norms", lambda x: x * torch.linspace(0.2, 4.0, x.shape[0]).unsqueeze(1)),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name,fn", SETTINGS, ids=[s[0] for s in SETTINGS])
@pytest.mark.parametrize("use_float16", [False, True])
@pytest.mark.parametrize("k1,k2", [(20, 6), (13, 1)])
def test_bitwise_the_original(seed, name, fn, use_float16, k1, k2):
    x = fn(_features(seed))
    got = compat.compute_jaccard_distance(x, k1=k1, k2=k2, print_flag=False, use_float16=use_float16)
    rank = compat_jaccard.ranking(x, k1)
    if name in ("scaled", "random-norms", "float16"):  # the flat-L2 ranking, checked on its own
        np.testing.assert_array_equal(rank.numpy(), l2_rank(x, k1))
    want = jaccard_dense(x, k1, k2, use_float16, rank=rank.numpy())
    assert got.dtype == want.dtype == (np.float16 if use_float16 else np.float32)
    assert got.flags["C_CONTIGUOUS"] and got.flags["WRITEABLE"] and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint16 if use_float16 else np.uint32),
                                  want.view(np.uint16 if use_float16 else np.uint32))


def test_tiny_positives_kept_where_the_original_has_them():
    x = _features(3)
    got = compat.compute_jaccard_distance(x, k1=20, k2=6, print_flag=False)
    exact = compat.compute_jaccard_distance(x, k1=20, k2=6, print_flag=False, exact=True)
    tiny = (got > 0) & (got < 1e-6)
    assert tiny.any()  # the data has rows with equal weights: the original rounds them to tiny positives
    assert (exact[tiny] == 0).all() and (np.diag(exact) == 0).all()
    assert np.abs(got - exact).max() < 1e-5  # otherwise the two differ by float32 rounding only


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentile_eps_pipeline_gives_the_originals_eps_and_labels(seed):
    x = _features(seed, n_ids=10, per=15, dim=32)
    got = compat.compute_jaccard_distance(x, k1=20, k2=6, print_flag=False)
    want = jaccard_dense(x, 20, 6, rank=compat_jaccard.ranking(x, 20).numpy())
    eps_got, eps_want = _percentile_eps(got), _percentile_eps(want)
    assert eps_got == eps_want
    lab = compat.DBSCAN(eps=eps_got, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(got)
    ref = SkDBSCAN(eps=eps_want, min_samples=4, metric="precomputed").fit_predict(want)
    np.testing.assert_array_equal(lab, ref)
    # hilcore's exact variant drops the tiny positives, so its percentile eps is another number
    exact = compat.compute_jaccard_distance(x, k1=20, k2=6, print_flag=False, exact=True)
    assert _percentile_eps(exact) != eps_want


def test_numpy_and_torch_input_agree_and_bad_input_is_named():
    x = _features(4)
    np.testing.assert_array_equal(compat.compute_jaccard_distance(x.numpy(), 20, 6, print_flag=False),
                                  compat.compute_jaccard_distance(x, 20, 6, print_flag=False))
    with pytest.raises(TypeError, match="target_features.*bfloat16"):
        compat.compute_jaccard_distance(x.bfloat16(), print_flag=False)
    with pytest.raises(TypeError, match="exact"):
        compat.compute_jaccard_distance(x, print_flag=False, exact="yes")
    with pytest.raises(ValueError, match="k1"):
        compat.compute_jaccard_distance(x, k1=0, print_flag=False)


@pytest.mark.parametrize("n,k1", [(1, 1), (2, 2), (40, 1), (40, 2), (40, 7), (97, 20), (97, 97), (300, 30)])
def test_native_expansion_sets_are_the_torch_stages_sets(n, k1):
    """_native.compat_expansion_sets (what dense_jaccard uses) against hilcore's torch stages, on random
    self-first rankings (mostly one-sided neighbourhoods) and on a true kNN ranking."""
    from hilcore._core import half_k
    from hilcore._dispatch import native_module
    from hilcore.stages.jaccard import expansion, reciprocal_mask

    rng = np.random.default_rng(n * 1000 + k1)
    rand = np.stack([np.concatenate(([i], rng.permutation(np.delete(np.arange(n), i))[:k1 - 1])) for i in range(n)])
    knn = compat_jaccard.ranking(_features(n, n_ids=-(-n // 10), per=10)[:n], k1).numpy() if n >= 10 else rand
    sizes = []
    for rank in (rand, knn):
        rank = torch.from_numpy(np.ascontiguousarray(rank, dtype=np.int64))
        kk = min(half_k(k1) + 1, k1)
        want = expansion(rank, reciprocal_mask(rank, k1), reciprocal_mask(rank, kk))
        got = native_module().compat_expansion_sets(rank.numpy(), k1)
        np.testing.assert_array_equal(got[0], want[0].numpy())
        np.testing.assert_array_equal(got[1], want[1].numpy())
        sizes.append(np.diff(got[0]))
    assert n < 40 or sizes[1].max() > k1 // 2  # the kNN ranking's sets were expanded, not only self
    with pytest.raises(ValueError, match="rank"):
        native_module().compat_expansion_sets(np.full((3, 2), 3, dtype=np.int64), 2)
    with pytest.raises(ValueError, match="k1"):
        native_module().compat_expansion_sets(np.zeros((3, 2), dtype=np.int64), 3)


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("k2", [1, 2, 6])
def test_native_query_expansion_is_np_mean(half, k2):
    """_native.compat_query_expansion against the original's np.mean(V[rank[i, :k2]], axis=0) on a dense V,
    float32 or float16 (values that round to a float16 zero drop out of the support)."""
    from hilcore._dispatch import native_module

    rng = np.random.default_rng(k2 + 10 * half)
    n = 70
    dt = np.float16 if half else np.float32
    v = np.zeros((n, n), dtype=dt)
    for i in range(n):
        cols = rng.choice(n, size=rng.integers(1, 12), replace=False)
        v[i, cols] = (rng.random(cols.size) * 10.0 ** rng.integers(-7, 0, cols.size)).astype(dt)
    rank = np.stack([np.concatenate(([i], rng.permutation(np.delete(np.arange(n), i))[:k2 - 1])) for i in range(n)])
    want = np.stack([np.mean(v[rank[i, :k2]], axis=0) for i in range(n)])
    r, c = np.nonzero(v)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=n)))).astype(np.int64)
    qptr, qidx, qval = native_module().compat_query_expansion(indptr, c.astype(np.int64), v[r, c].astype(np.float32),
                                                              rank.astype(np.int64), half)
    got = np.zeros((n, n), dtype=np.float32)
    got[np.repeat(np.arange(n), np.diff(qptr)), qidx] = qval
    assert (qval != 0).all() and np.array_equal(np.diff(qptr), (want != 0).sum(1))
    np.testing.assert_array_equal(got.astype(dt).view(np.uint16 if half else np.uint32),
                                  want.view(np.uint16 if half else np.uint32))
    assert np.array_equal(got.astype(dt), got)  # float16 mode returns float16 values
