"""hilcore.cluster_centers / hilcore.subcluster against the loop references (scikit-learn per cluster)."""
import importlib

import numpy as np
import pytest
import torch

import hilcore
from hilcore.ref.centers import cluster_centers_ref, kmeans_inertia_ref, subcluster_inertia, subcluster_ref

centers = importlib.import_module("hilcore.centers")

BACKENDS = list(hilcore.capabilities("cpu")["cluster_centers"])


def blobs(sizes, d=16, *, seed=0, sub=3, noise_frac=0.1):
    """Clusters of the given sizes, each made of ``sub`` sub-blobs; rows shuffled, some noise (-1)."""
    rng = np.random.default_rng(seed)
    xs, labs = [], []
    for c, n in enumerate(sizes):
        centre = 3 * rng.standard_normal(d)
        offs = rng.standard_normal((sub, d))
        xs.append(centre + offs[rng.integers(0, sub, n)] + 0.6 * rng.standard_normal((n, d)))
        labs += [c] * n
    x = np.concatenate(xs).astype(np.float32)
    lab = np.array(labs, dtype=np.int64)
    n_noise = int(noise_frac * len(lab))
    x = np.concatenate([x, rng.standard_normal((n_noise, d)).astype(np.float32)])
    lab = np.concatenate([lab, -np.ones(n_noise, dtype=np.int64)])
    p = rng.permutation(len(lab))
    return x[p], lab[p]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 19, 99, 989])
def test_cluster_centers_matches_reference(backend, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 13)).astype(np.float32) * 5
    c = max(1, n // 7)
    lab = np.concatenate([np.arange(c), rng.integers(-1, c, n - c)]) if n > c else np.arange(n)
    lab = rng.permutation(lab)
    got = hilcore_centers(x, lab, backend)
    assert got.dtype == np.float32 and got.shape == (c, 13)
    np.testing.assert_allclose(got, cluster_centers_ref(x, lab), rtol=0, atol=1e-6)


def hilcore_centers(x, lab, backend):
    return centers.cluster_centers(x, lab, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cluster_centers_families(backend):
    x, lab = blobs([5, 7, 3])
    want = cluster_centers_ref(x, lab)
    got = centers.cluster_centers(torch.from_numpy(x).double(), torch.from_numpy(lab).int(), backend=backend)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


@pytest.mark.parametrize("labels,match", [
    (np.zeros((4, 1), dtype=np.int64), "labels: expected a 1-D"),
    (np.zeros(4, dtype=np.float32), "labels: expected an integer dtype"),
    (np.zeros(3, dtype=np.int64), "labels: expected 4 labels"),
    (np.array([0, -2, 0, 0]), "labels: cluster ids must be >= 0"),
    (np.array([-1, -1, -1, -1]), r"labels: every sample is noise \(-1\); no cluster to average"),
    (np.array([0, 2, 2, -1]), r"labels: cluster ids must be contiguous 0..C-1; ids \[1\] have no member"),
])
def test_label_errors(labels, match):
    x = np.ones((4, 3), dtype=np.float32)
    err = TypeError if "dtype" in match else ValueError
    with pytest.raises(err, match=match):
        centers.cluster_centers(x, labels)
    with pytest.raises(err, match=match):
        centers.subcluster(x, labels)


def test_subcluster_argument_errors():
    x, lab = blobs([12, 12])
    with pytest.raises(ValueError, match="method"):
        centers.subcluster(x, lab, method="spectral")
    with pytest.raises(ValueError, match="weight"):
        centers.subcluster(x, lab, weight=1.5)
    with pytest.raises(ValueError, match="n_sub"):
        centers.subcluster(x, lab, n_sub=0)
    with pytest.raises(hilcore.BackendUnavailable, match="subcluster"):
        centers.subcluster(x, lab, backend="cuml")


@pytest.fixture(scope="module")
def inertia_cases():
    """(x, labels, summed sklearn KMeans(n_init=10) inertia) for structured and unstructured clusters."""
    x, lab = blobs([4, 9, 10, 15, 23, 40, 61, 80, 120, 33], d=24, sub=5)
    rng = np.random.default_rng(3)
    xu = rng.standard_normal((400, 16)).astype(np.float32)
    lu = rng.integers(0, 6, 400)
    return [(x, lab, kmeans_inertia_ref(x, lab, 9)), (xu, lu, kmeans_inertia_ref(xu, lu, 9))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_subcluster_inertia_bar(backend, inertia_cases):
    # within-sub-cluster inertia no worse than 1.05x sklearn KMeans(n_init=10) over the same clusters
    for x, lab, ref in inertia_cases:
        for seed in (0, 1):
            m = centers.subcluster(x, lab, n_sub=9, weight=0.0, seed=seed, backend=backend)
            ours = subcluster_inertia(x, lab, m, 0.0)
            assert ours <= 1.05 * ref, (ours, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_subcluster_layout_and_small_clusters(backend):
    sizes = [1, 9, 10, 30, 5, 57]
    x, lab = blobs(sizes, d=12)
    w = 0.7
    m = centers.subcluster(x, lab, n_sub=9, weight=w, backend=backend)
    assert m.shape == (6, 10, 12) and m.dtype == np.float32
    cen = cluster_centers_ref(x, lab)
    np.testing.assert_allclose(m[:, 0], cen, atol=1e-6)
    for c, n in enumerate(sizes):
        if n <= 9:  # too small: the centre, exactly, in every slot
            assert np.array_equal(m[c, 1:], np.repeat(m[c, :1], 9, axis=0))
            continue
        sub = (m[c, 1:].astype(np.float64) - w * m[c, 0]) / (1 - w)
        assert not np.allclose(sub, cen[c], atol=1e-3)
        # every slot is w*centre + (1-w)*(mean of the members nearest to it); sizes descending
        xn = x[lab == c] / np.linalg.norm(x[lab == c], axis=1, keepdims=True)
        a = ((xn[:, None, :] - sub[None]) ** 2).sum(-1).argmin(1)
        counts = np.bincount(a, minlength=9)
        assert counts.min() >= 1 and np.all(np.diff(counts) <= 0), counts
        for s in range(9):
            np.testing.assert_allclose(sub[s], xn[a == s].mean(0), atol=2e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_subcluster_duplicates_repeat_centre(backend):
    # 12 members but only 3 distinct rows: every k-means run leaves empty sub-clusters
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 8)).astype(np.float32)
    x = np.concatenate([base[np.arange(12) % 3], rng.standard_normal((20, 8)).astype(np.float32)])
    lab = np.array([0] * 12 + [1] * 20)
    m = centers.subcluster(x, lab, n_sub=4, backend=backend)
    assert np.array_equal(m[0, 1:], np.repeat(m[0, :1], 4, axis=0))
    assert not np.allclose(m[1, 1:], m[1, :1])


def test_subcluster_deterministic_and_backends_agree():
    x, lab = blobs([30, 44, 12, 70, 9], d=20, sub=4)
    outs = {b: centers.subcluster(x, lab, seed=7, backend=b) for b in BACKENDS}
    for b in BACKENDS:
        assert np.array_equal(outs[b], centers.subcluster(x, lab, seed=7, backend=b))
    first = outs[BACKENDS[0]]
    for b in BACKENDS[1:]:
        np.testing.assert_allclose(outs[b], first, rtol=0, atol=1e-5)
    t = centers.subcluster(torch.from_numpy(x), torch.from_numpy(lab), seed=7, backend=BACKENDS[0])
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), first)


@pytest.mark.parametrize("backend", BACKENDS)
def test_subcluster_dbscan_matches_sklearn(backend):
    # clusters with well separated density sub-groups of different sizes, plus a few outliers
    rng = np.random.default_rng(5)
    d, xs, labs = 16, [], []
    for c, groups in enumerate([[12, 7, 7, 3], [20], [5, 5, 5, 5, 5, 5], [2, 1]]):
        for g in groups:
            ctr = rng.standard_normal(d)
            xs.append(ctr + 0.02 * rng.standard_normal((g, d)))
            labs += [c] * g
    x = np.concatenate(xs).astype(np.float32)
    lab = np.array(labs)
    p = rng.permutation(len(lab))
    x, lab = x[p], lab[p]
    for n_sub in (2, 4, 9):
        got = centers.subcluster(x, lab, n_sub=n_sub, weight=0.6, method="dbscan", eps=0.05, min_samples=3,
                                 backend=backend)
        want = subcluster_ref(x, lab, n_sub=n_sub, weight=0.6, method="dbscan", eps=0.05, min_samples=3)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert not np.allclose(got[2, 1:7], got[2, :1])  # six 5-member groups: kept, by smallest member index
    assert np.array_equal(got[3, 1:], np.repeat(got[3, :1], 9, axis=0))  # all outliers: the centre


def test_subcluster_kmeans_small_layout_matches_reference():
    # the structural parts that do not depend on the k-means solution equal the sklearn reference
    x, lab = blobs([3, 9, 2], d=10)
    want = subcluster_ref(x, lab, n_sub=9, weight=0.9)
    for b in BACKENDS:
        np.testing.assert_allclose(centers.subcluster(x, lab, n_sub=9, backend=b), want, rtol=0, atol=1e-6)


@pytest.mark.skipif(hilcore._dispatch.native_module() is None, reason="hilcore._native is not built")
def test_native_means_round_like_the_float64_quotient():
    """The native centre update's means (kernels/cpu/rowsum.h; on AVX-512 a product by 1 / n, checked) equal
    float32(float64 sum / n) with the sums in row order, also where the quotient is exactly halfway between
    two float32 values or a few float64 ulps from halfway (the cases the check must hand to the division)."""
    nat = hilcore._dispatch.native_module()
    rng = np.random.default_rng(3)
    one, e = np.float32(1), 2.0 ** -24
    # three rows whose float64 sum is 3 (1 + 2^-24): the mean is exactly halfway between 1 and 1 + 2^-23
    tie = np.array([1 + 2 * e, 1 + 2 * e, 1 - e], dtype=np.float64).astype(np.float32)
    assert float(tie.astype(np.float64).sum()) == 3 * (1 + e)
    cols = [np.tile(tie, 2)]  # labels below: 0, 0, 0, 1, 1, 1
    for j in range(40):  # sums 3 m, m = 1 + (2 j + 1) e halfway between two float32 values, moved by -2..2 ulps:
        for step in range(-2, 3):  # the product by fl(1/3) rounds some of these the other way
            t = 3 * (1 + (2 * j + 1) * e)
            for _ in range(abs(step)):
                t = float(np.nextafter(t, np.inf if step > 0 else -np.inf))
            a = np.float32(t)
            b = np.float32(t - float(a))
            c = np.float32(t - float(a) - float(b))  # t = a + b + c exactly, in this order
            assert (float(a) + float(b)) + float(c) == t
            cols.append(np.array([a, b, c] * 2, dtype=np.float32))
    cols += [rng.standard_normal(6).astype(np.float32) for _ in range(57)]
    x = np.ascontiguousarray(np.stack(cols, axis=1))  # [6, 97]: the vector loop and its tail
    for labels, c in ((np.array([0, 0, 0, 1, 1, 1]), 2), (np.array([0, 0, 0, -1, 1, 1]), 2),
                      (np.array([0, 1, 0, 1, 0, 1]), 2), (np.array([0, 0, 0, 0, 0, 0]), 1)):
        want = np.zeros((c, x.shape[1]), dtype=np.float32)
        for j in range(c):
            s = np.zeros(x.shape[1], dtype=np.float64)
            for i in np.flatnonzero(labels == j):  # row order, one float64 addition at a time
                s = s + x[i].astype(np.float64)
            want[j] = (s / np.float64((labels == j).sum())).astype(np.float32)
        got = nat.cluster_centers(x, labels.astype(np.int64), c)
        np.testing.assert_array_equal(got, want)
    assert want[0, 0] == np.float32(1)  # the tie went to the even neighbour


@pytest.mark.skipif(hilcore._dispatch.native_module() is None, reason="hilcore._native is not built")
def test_native_kmeans_segments_rows_and_out_equal_the_gathered_call():
    """kmeans_segments reading its members through row ids and writing each segment's centres into given rows of
    ``out`` returns what the call on the gathered members returns; bad ids and a half-given output are refused."""
    nat = hilcore._dispatch.native_module()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((90, 13)).astype(np.float32)
    mem = rng.permutation(90)[:70].astype(np.int64)
    starts, sizes = np.array([0, 25, 31], dtype=np.int64), np.array([25, 6, 39], dtype=np.int64)
    u = rng.random((3, 4, 3))
    want = nat.kmeans_segments(np.ascontiguousarray(x[mem]), starts, sizes, 3, 30, u)
    out = np.full((5, 3, 13), 7.0, dtype=np.float32)
    got = nat.kmeans_segments(x, starts, sizes, 3, 30, u, True, mem, out, np.array([4, 0, 2], dtype=np.int64))
    np.testing.assert_array_equal(out[[4, 0, 2]], want[0])
    assert np.all(out[[1, 3]] == 7.0)  # rows no segment names are left alone
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="out, out_ids: pass both or neither"):
        nat.kmeans_segments(x, starts, sizes, 3, 30, u, True, mem, out)
    with pytest.raises(ValueError, match=r"out_ids: expected rows of out in \[0, 5\), got 5"):
        nat.kmeans_segments(x, starts, sizes, 3, 30, u, True, mem, out, np.array([4, 0, 5], dtype=np.int64))
    with pytest.raises(ValueError, match="out_ids: expected distinct rows of out .* row 4 appears twice"):
        nat.kmeans_segments(x, starts, sizes, 3, 30, u, True, mem, out, np.array([4, 0, 4], dtype=np.int64))
    with pytest.raises(ValueError, match=r"rows: expected row ids in \[0, 90\), got rows\[0\] = 90"):
        nat.kmeans_segments(x, starts, sizes, 3, 30, u, True, np.full(70, 90, dtype=np.int64))
