"""backend="triton" of cluster_centers / subcluster against the torch backend and the references (tiny sizes;
on CPU the kernels run under TRITON_INTERPRET=1, set by conftest)."""
import importlib

import numpy as np
import pytest
import torch

import hilcore
from hilcore.ref.centers import cluster_centers_ref, subcluster_ref

centers = importlib.import_module("hilcore.centers")

pytestmark = pytest.mark.skipif("triton" not in hilcore.backends("cpu"),
                                reason="triton needs a GPU or TRITON_INTERPRET=1")


def separated(sizes, d, sub, *, seed=0, spread=0.05, noise=3):
    """Clusters made of ``sub`` tight, well separated sub-blobs (a unique k-means optimum), shuffled, with noise."""
    rng = np.random.default_rng(seed)
    xs, labs = [], []
    for c, n in enumerate(sizes):
        offs = rng.standard_normal((sub, d))
        xs.append(offs[np.arange(n) % sub] + spread * rng.standard_normal((n, d)))
        labs += [c] * n
    x = np.concatenate(xs + [rng.standard_normal((noise, d))]).astype(np.float32)
    lab = np.array(labs + [-1] * noise)
    p = rng.permutation(len(lab))
    return x[p], lab[p]


@pytest.mark.parametrize("n,d", [(1, 1), (19, 13), (60, 32), (37, 17)])
def test_cluster_centers_triton_matches_torch_and_reference(n, d):
    rng = np.random.default_rng(n + d)
    x = (rng.standard_normal((n, d)) * 4).astype(np.float32)
    c = max(1, n // 6)
    lab = rng.permutation(np.concatenate([np.arange(c), rng.integers(-1, c, n - c)])) if n > c else np.arange(n)
    got = centers.cluster_centers(x, lab, backend="triton")
    assert got.dtype == np.float32 and got.shape == (c, d)
    np.testing.assert_allclose(got, cluster_centers_ref(x, lab), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, centers.cluster_centers(x, lab, backend="torch"), rtol=0, atol=1e-6)
    assert np.array_equal(got, centers.cluster_centers(x, lab, backend="triton"))  # deterministic, bit for bit


def test_cluster_centers_triton_torch_input():
    x, lab = separated([7, 5, 9], 10, 2)
    got = centers.cluster_centers(torch.from_numpy(x).double(), torch.from_numpy(lab).int(), backend="triton")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), cluster_centers_ref(x, lab), atol=1e-6)


@pytest.mark.parametrize("k,d", [(2, 5), (3, 32), (9, 20)])
def test_assign_kernel_nearest_own_subcentre(k, d):
    from hilcore.backend.triton.centers import assign

    rng = np.random.default_rng(k * 100 + d)
    e, m = 4, 57
    seg = torch.from_numpy(np.sort(rng.integers(0, e, m)))
    xm = torch.from_numpy(rng.standard_normal((m, d)).astype(np.float32))
    cen = torch.from_numpy(rng.standard_normal((e, k, d)).astype(np.float32))
    got = assign(xm, seg, cen).numpy()
    x64, c64 = xm.double().numpy(), cen.double().numpy()[seg.numpy()]  # [M, k, D] own segment's sub-centres
    dist = ((x64[:, None, :] - c64) ** 2).sum(-1)
    srt = np.sort(dist, axis=1)
    clear = srt[:, 1] - srt[:, 0] > 1e-4
    assert clear.sum() > m // 2
    np.testing.assert_array_equal(got[clear], dist.argmin(1)[clear])
    # the torch backend's own rule on the same input
    want = torch.argmin((cen * cen).sum(2)[seg] - 2 * torch.einsum("md,mkd->mk", xm, cen[seg]), dim=1).numpy()
    np.testing.assert_array_equal(got[clear], want[clear])


def test_assign_kernel_ties_go_to_lower_subcentre():
    from hilcore.backend.triton.centers import assign

    rng = np.random.default_rng(1)
    xm = torch.from_numpy(rng.standard_normal((10, 8)).astype(np.float32))
    seg = torch.tensor([0] * 5 + [1] * 5)
    base = torch.from_numpy(rng.standard_normal((2, 1, 8)).astype(np.float32))
    far = torch.full((2, 1, 8), 50.0)
    # slots 1 and 2 are the same point (exact tie), slot 0 is far away; slot 3 duplicates slot 0
    cen = torch.cat([far, base, base.clone(), far], dim=1)
    assert assign(xm, seg, cen).tolist() == [1] * 10


@pytest.mark.parametrize("n_sub", [2, 3])
def test_subcluster_triton_identical_to_torch_and_reference(n_sub):
    x, lab = separated([12, 5, 20, 3, 16], 24, n_sub, seed=n_sub)
    for w in (0.9, 0.0):
        got = centers.subcluster(x, lab, n_sub=n_sub, weight=w, seed=3, backend="triton")
        assert got.shape == (5, 1 + n_sub, 24) and got.dtype == np.float32
        want = centers.subcluster(x, lab, n_sub=n_sub, weight=w, seed=3, backend="torch")
        assert np.array_equal(got, want)  # well separated sub-blobs: no near-tie in any assignment
        np.testing.assert_allclose(got, subcluster_ref(x, lab, n_sub=n_sub, weight=w), rtol=0, atol=1e-5)
    assert np.array_equal(got, centers.subcluster(x, lab, n_sub=n_sub, weight=0.0, seed=3, backend="triton"))


def test_subcluster_triton_random_data_agrees_with_torch():
    # unstructured clusters: same seeding and updates, assignments may differ only on float32 near-ties
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 16)).astype(np.float32)
    lab = rng.integers(-1, 3, 60)
    for n_sub in (2, 3):
        got = centers.subcluster(x, lab, n_sub=n_sub, seed=1, iters=10, n_init=3, backend="triton")
        want = centers.subcluster(x, lab, n_sub=n_sub, seed=1, iters=10, n_init=3, backend="torch")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_subcluster_triton_dbscan_method():
    x, lab = separated([12, 9], 8, 3, spread=0.01)
    got = centers.subcluster(x, lab, n_sub=3, weight=0.5, method="dbscan", eps=0.05, min_samples=2,
                             backend="triton")
    want = subcluster_ref(x, lab, n_sub=3, weight=0.5, method="dbscan", eps=0.05, min_samples=2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("labels,match", [
    (np.zeros(3, dtype=np.int64), "labels: expected 4 labels"),
    (np.array([0, -2, 0, 0]), "labels: cluster ids must be >= 0"),
    (np.array([-1, -1, -1, -1]), r"labels: every sample is noise \(-1\); no cluster to average"),
    (np.array([0, 2, 2, -1]), r"labels: cluster ids must be contiguous 0..C-1; ids \[1\] have no member"),
])
def test_triton_label_errors(labels, match):
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        centers.cluster_centers(x, labels, backend="triton")
    with pytest.raises(ValueError, match=match):
        centers.subcluster(x, labels, backend="triton")


def test_triton_argument_errors(monkeypatch):
    x, lab = separated([6, 6], 4, 2)
    with pytest.raises(ValueError, match="x: 1 row"):
        centers.cluster_centers(np.where(np.arange(15)[:, None] == 2, np.nan, x), lab, backend="triton")
    with pytest.raises(ValueError, match="n_sub"):
        centers.subcluster(x, lab, n_sub=0, backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not torch.cuda.is_available():
        with pytest.raises(hilcore.BackendUnavailable, match="cluster_centers: backend 'triton' cannot run"):
            centers.cluster_centers(x, lab, backend="triton")


def test_lloyd_bounds_skip_rows_and_change_nothing(monkeypatch):
    """The Lloyd loop's assignment skips the rows whose Hamerly bounds (widened by the float32 rounding
    bound of a score) prove their assignment unchanged: far fewer rows computed than (steps x rows), and
    bit for bit what the per-step loop gives (the torch backend's Lloyd loop with the plain Triton
    assignment of every row, float64 index_add_ updates)."""
    from hilcore.backend.triton import centers as tc

    x, lab = separated([40, 33, 25], 24, 3, seed=11, spread=0.3)
    seen = {}
    orig = tc.lloyd

    def counting(xm, segv, starts, sizes, cen, iters, counts=None):
        counts = torch.zeros(segv.numel(), dtype=torch.int32)
        out = orig(xm, segv, starts, sizes, cen, iters, counts=counts)
        seen["rows"], seen["computed"] = segv.numel(), int(counts.sum())
        return out

    monkeypatch.setattr(tc, "lloyd", counting)
    got = centers.subcluster(x, lab, n_sub=5, seed=2, backend="triton")
    # 4 steps run here (all runs converged by the first check): 4 x rows without the bounds
    assert 0 < seen["computed"] <= 2 * seen["rows"], seen
    monkeypatch.setattr(tc, "lloyd", None)
    monkeypatch.setattr(tc, "segment_mean", None)
    assert np.array_equal(got, centers.subcluster(x, lab, n_sub=5, seed=2, backend="triton"))
