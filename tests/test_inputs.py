"""Issue 11: every example of the hostile-user report gives the right answer or a clear error.

Each test names the example it covers. Right answers are checked against the references
(hilcore/ref, scikit-learn) or against the same call on a plain, contiguous, native copy of the input.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN as SkDBSCAN

import hilcore
import hilcore.compat as compat
from hilcore import cli
from hilcore.memory import ClusterMemory, MultiCenterMemory, cluster_contrast_loss
from hilcore.ref import memory as ref_memory
from hilcore.ref import mccl as ref_mccl
from testing import DBSCAN_BACKENDS, KNN_BACKENDS, assert_knn_matches, reid_features

X = reid_features(99)  # float32 [99, 32], ReID-like


def _sk(d, eps, ms):
    return SkDBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit_predict(d).astype(np.int64)


def _sym_dist(n, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.random((n, n)).astype(np.float32)
    d = np.minimum(d, d.T)
    np.fill_diagonal(d, 0)
    return d


# ------------------------------------------------------------------ silent wrong answers
@pytest.mark.parametrize("backend", KNN_BACKENDS)
@pytest.mark.parametrize("scale", [1e-22, 1e-30, 1e20, 1e30])
def test_tiny_and_huge_rows_get_the_right_neighbours(backend, scale):
    x = (X * scale).astype(np.float32)
    idx, sim = hilcore.knn(x, 7, backend=backend)
    assert_knn_matches(idx, sim, X, 7, tie_atol=1e-6)  # cosine is scale-invariant: X's neighbours
    np.testing.assert_allclose(sim[:, 0], 1.0, rtol=0, atol=1e-6)  # self-similarity 1, not 1.03


def test_float64_rows_beyond_the_float32_range_are_accepted():
    x = X.astype(np.float64) * 1e300
    idx, sim = hilcore.knn(x, 5)
    assert_knn_matches(idx, sim, X, 5, tie_atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_memory_from_huge_centres_and_huge_update(dtype):
    c = torch.full((3, 4), 1e20)
    mem = ClusterMemory.from_centers(c, dtype=dtype)
    torch.testing.assert_close(mem.features, torch.full((3, 4), 0.5, dtype=dtype))
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 0])
    want = ref_memory.update(mem.features.numpy(), f.numpy(), y.numpy(), 0.1)
    mem.update(f * 1e20, y)
    np.testing.assert_allclose(mem.features.numpy(), want, rtol=0, atol=1e-6)
    mem2 = ClusterMemory.from_centers(c, dtype=dtype)
    mem2.update(f * 1e-25, y)
    np.testing.assert_allclose(mem2.features.numpy(), want, rtol=0, atol=1e-6)
    multi = MultiCenterMemory.from_tensor(torch.full((2, 3, 4), 1e-30))
    torch.testing.assert_close(multi.features, torch.full((2, 3, 4), 0.5))


def test_losses_reject_all_zero_rows_and_are_scale_invariant():
    g = torch.Generator().manual_seed(1)
    mem = ClusterMemory.from_centers(torch.randn(5, 8, generator=g))
    x, y = torch.randn(4, 8, generator=g), torch.tensor([0, 1, 2, 3])
    bad = x.clone()
    bad[2] = 0
    for loss in (lambda v: cluster_contrast_loss(v, mem, y), lambda v: hilcore.mccl_loss(v, mem)):
        with pytest.raises(ValueError, match=r"x: 1 row\(s\) are all zeros .*first rows: \[2\]"):
            loss(bad)
        for s in (1e-22, 1e20):
            torch.testing.assert_close(loss(x * s), loss(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"x: .*all zeros"):  # knn says the same for such rows
        hilcore.knn(bad.numpy(), 2)
    want, _ = ref_mccl.mccl(x.numpy() * 1e-22, mem.features.unsqueeze(1).numpy())
    np.testing.assert_allclose(hilcore.mccl_loss(x * 1e-22, mem, reduction="none").numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_csr_out_of_range_or_broken_structure_is_refused(backend):
    data, ok_ix, ip = np.array([0.1, 0.1], np.float32), np.array([1, 0]), np.array([0, 1, 2])
    good = sp.csr_matrix((data, ok_ix, ip), shape=(2, 2))
    np.testing.assert_array_equal(hilcore.dbscan(good, 0.5, 2, backend=backend), [0, 0])
    cases = [
        (sp.csr_matrix((data, np.array([1, 7]), ip), shape=(2, 2)), r"dist: stored entry 1 \(row 1\) has column index 7"),
        (sp.csr_matrix((data, np.array([1, -1]), ip), shape=(2, 2)), r"column index -1, expected one in \[0, 2\)"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            hilcore.dbscan(bad, 0.5, 2, backend=backend)
        t = torch.sparse_csr_tensor(torch.from_numpy(bad.indptr.astype(np.int64)),
                                    torch.from_numpy(bad.indices.astype(np.int64)), torch.from_numpy(bad.data),
                                    size=(2, 2))
        with pytest.raises(ValueError, match=r"dist: stored entry 1"):
            hilcore.dbscan(t, 0.5, 2, backend=backend)
    nonmono = sp.csr_matrix((2, 2), dtype=np.float32)
    nonmono.indptr = np.array([0, 2, 1])
    nonmono.indices = np.array([0, 1])
    nonmono.data = data
    with pytest.raises(ValueError, match=r"indptr must be non-decreasing; indptr\[1\] = 2 > indptr\[2\] = 1"):
        hilcore.dbscan(nonmono, 0.5, 2, backend=backend)
    csc = sp.csc_matrix((data, np.array([1, 9]), ip), shape=(2, 2))
    with pytest.raises(ValueError, match=r"row index 9"):
        hilcore.dbscan(csc, 0.5, 2, backend=backend)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_asymmetric_input_raises_or_is_symmetrised_on_request(backend):
    d = _sym_dist(60, seed=3)
    eps = 0.08
    a = d.copy()
    near = np.argwhere((d <= eps) & ~np.eye(60, dtype=bool))
    i, j = near[len(near) // 2]
    a[i, j] = 0.9  # only one direction leaves the eps-ball
    first = min((int(i), int(j)), (int(j), int(i)))
    for dist in (a, torch.from_numpy(a), sp.csr_matrix(a)):
        with pytest.raises(ValueError, match=r"dist: expected a symmetric distance matrix; d\[%d, %d\]"
                           % first):
            hilcore.dbscan(dist, eps, 3, backend=backend)
    # compat.DBSCAN is scikit-learn's: it takes the asymmetric matrix as scikit-learn does
    np.testing.assert_array_equal(compat.DBSCAN(eps, min_samples=3, metric="precomputed").fit_predict(a),
                                  _sk(a, eps, 3))
    for mode, combined in (("max", np.maximum(a, a.T)), ("min", np.minimum(a, a.T))):
        want = _sk(combined, eps, 3)
        for dist in (a, sp.csr_matrix(a)):
            got = hilcore.dbscan(dist, eps, 3, symmetrize=mode, backend=backend)
            np.testing.assert_array_equal(got, want)
    # only the eps-neighbour relation matters: rounding-level asymmetry within the ball is fine
    b = d.copy()
    b[np.triu_indices(60, 1)] *= np.float32(1 + 1e-6)
    np.testing.assert_array_equal(hilcore.dbscan(b, eps, 3, backend=backend), _sk(b, eps, 3))
    with pytest.raises(ValueError, match=r"symmetrize: expected None, 'max' or 'min', got 'avg'"):
        hilcore.dbscan(d, eps, 3, symmetrize="avg", backend=backend)


def test_sparse_symmetrize_missing_mirror_counts_as_infinite():
    # (0, 1) stored only one way: "max" drops the pair, "min" keeps it
    d = sp.csr_matrix((np.array([0.1], np.float32), (np.array([0]), np.array([1]))), shape=(3, 3))
    with pytest.raises(ValueError, match=r"d\[0, 1\] = 0.1 is within eps = 0.5 but d\[1, 0\] = not stored"):
        hilcore.dbscan(d, 0.5, 2)
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.5, 2, symmetrize="max"), [-1, -1, -1])
    np.testing.assert_array_equal(hilcore.dbscan(d, 0.5, 2, symmetrize="min"), [0, 0, -1])


def test_train_device_bogus_is_an_error(capsys):
    assert cli.main(["train", "--config", "configs/demo_tiny.yaml", "--device", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "hil: error: --device: expected auto, cpu, cuda or cuda:N, got 'bogus'"
    assert cli.main(["train", "--config", "configs/demo_tiny.yaml", "run.device=gpu"]) == 2
    assert "config.run.device: expected auto, cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err


# ------------------------------------------------------------------ valid input refused
def _grad(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_()


def test_requires_grad_is_accepted_everywhere():
    x = X
    lab = hilcore.dbscan(hilcore.jaccard_distance(x, 20, 6, max_distance=0.6), 0.6, 4)
    assert lab.max() >= 1
    xt, lt = _grad(x), torch.from_numpy(lab)
    d_np = _sym_dist(40)
    pairs = [
        (lambda v: hilcore.knn(v, 5), x),
        (lambda v: hilcore.jaccard_distance(v, 20, 6).toarray(), x),
        (lambda v: hilcore.cluster_centers(v, lt), x),
        (lambda v: hilcore.subcluster(v, lt, n_sub=2, n_init=2), x),
        (lambda v: hilcore.brst(v, lt, v[:4]), x),
        (lambda v: hilcore.bidirectional_match(v, lt, v, lt, mode="both").labels_rgb, x),
        (lambda v: hilcore.dbscan(v, 0.2, 3), d_np),
        (lambda v: compat.DBSCAN(0.2, min_samples=3, metric="precomputed").fit_predict(v), d_np),
        (lambda v: compat.compute_jaccard_distance(v, 20, 6, print_flag=False), x),
    ]
    for f, a in pairs:
        got, want = f(_grad(a)), f(torch.from_numpy(a.copy()))
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            np.testing.assert_array_equal(np.asarray(torch.as_tensor(g).detach()), np.asarray(torch.as_tensor(w)))
    e1 = hilcore.cluster_epoch(xt, xt, hilcore.EpochConfig(k1=20))
    e2 = hilcore.cluster_epoch(torch.from_numpy(x), torch.from_numpy(x), hilcore.EpochConfig(k1=20))
    torch.testing.assert_close(e1.shared_labels_rgb, e2.shared_labels_rgb)
    torch.testing.assert_close(e1.shared_multi, e2.shared_multi)


def test_negative_strides_big_endian_read_only_non_contiguous():
    base_idx, base_sim = hilcore.knn(np.ascontiguousarray(X[::-1]), 5)
    ro = np.ascontiguousarray(X[::-1])
    ro.setflags(write=False)
    variants = [X[::-1], X[::-1].astype(">f4"), ro, np.asfortranarray(X[::-1]),
                np.repeat(X[::-1], 2, axis=1)[:, ::2]]
    for v in variants:
        idx, sim = hilcore.knn(v, 5)
        np.testing.assert_array_equal(idx, base_idx)
        np.testing.assert_allclose(sim, base_sim, rtol=0, atol=1e-6)
    t = torch.from_numpy(np.repeat(X[::-1], 2, axis=1).copy())[:, ::2]  # non-contiguous torch
    np.testing.assert_array_equal(hilcore.knn(t, 5)[0].numpy(), base_idx)
    d = _sym_dist(50)
    want = _sk(d, 0.1, 3)
    perm = np.arange(50)[::-1]
    want_rev = _sk(np.ascontiguousarray(d[::-1, ::-1]), 0.1, 3)
    np.testing.assert_array_equal(hilcore.dbscan(d[::-1, ::-1], 0.1, 3), want_rev)
    np.testing.assert_array_equal(hilcore.dbscan(d.astype(">f8"), 0.1, 3), want)
    assert perm.size == 50
    lab = np.arange(99) % 5
    np.testing.assert_allclose(hilcore.cluster_centers(X[::-1], lab[::-1].astype(">i8")),
                               hilcore.cluster_centers(np.ascontiguousarray(X[::-1]), np.ascontiguousarray(lab[::-1])),
                               rtol=0, atol=1e-7)


def test_big_endian_features_in_hil_cluster(tmp_path, capsys):
    f, g = tmp_path / "be.npy", tmp_path / "le.npy"
    np.save(f, X.astype(">f4"))
    np.save(g, X)
    assert cli.main(["cluster", str(f), "--k1", "20", "--out", str(tmp_path / "a.npy")]) == 0
    assert cli.main(["cluster", str(g), "--k1", "20", "--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_config_override_numbers_are_yaml_1_2():
    from hilcore.train.config import load_config, load_yaml

    cfg = load_config("configs/demo_tiny.yaml", ["optim.lr=1e-4", "optim.weight_decay=5e-5"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == 5e-5
    assert [load_yaml(v) for v in ("1e-4", "-2E3", "017", "0o17", "0x10", ".5", "1.")] == [
        1e-4, -2000.0, 17, 15, 16, 0.5, 1.0]
    assert load_yaml("1_000") == "1_000" and load_yaml("true") is True and load_yaml("[64, 32]") == [64, 32]


# ------------------------------------------------------------------ unclear errors
def test_label_ids_far_above_the_number_of_labels():
    lab = np.array([0, 1, 10**12] + [0] * 96)
    for f in (lambda: hilcore.cluster_centers(X, lab), lambda: hilcore.subcluster(X, lab),
              lambda: hilcore.bidirectional_match(X, lab, X, lab)):
        with pytest.raises(ValueError, match=r"labels(_rgb)?: cluster ids must be contiguous 0..C-1; got the id "
                                             r"1000000000000 with only 99 labelled sample\(s\)"):
            f()


def test_k1_far_above_n_is_refused_not_clamped():
    with pytest.raises(ValueError, match=r"k1: expected k1 <= N \(the number of rows\) = 99 \(values up to 1000 "
                                         r"are clamped to it\), got 1000000000"):
        hilcore.jaccard_distance(X, 10**9, 6)
    with pytest.raises(ValueError, match=r"k2: expected k2 <= k1 = 20"):
        hilcore.jaccard_distance(X, 20, 5000)
    # a modestly larger k1 is still clamped to N (a small data set with the default k1)
    a = hilcore.jaccard_distance(X[:19], 30, 6)
    b = hilcore.jaccard_distance(X[:19], 19, 6)
    assert (a != b).nnz == 0


def _cluster_err(capsys, *args):
    rc = cli.main(["cluster", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_out_paths_are_checked_before_the_work(tmp_path, capsys):
    f = tmp_path / "f.npy"
    np.save(f, X)
    (tmp_path / "adir").mkdir()
    for out, match in ((tmp_path / "adir", r"--out: .*adir is a directory, expected a file path"),
                       (f / "x.npy", r"--out: cannot create .*f.npy: .*f.npy is a file, not a folder")):
        rc, stdout, err = _cluster_err(capsys, f, "--k1", 20, "--out", out)
        assert rc == 2 and stdout == "", stdout  # nothing clustered, nothing printed
        assert err.count("\n") == 1 and err.startswith("hil: error: "), err
        assert __import__("re").search(match, err), err
    rc, stdout, err = _cluster_err(capsys, f, "--k1", 20, "--out", tmp_path / "new" / "deeper" / "l.npy")
    assert rc == 0 and (tmp_path / "new" / "deeper" / "l.npy").is_file()  # a missing folder is created
    rc, _, err = _cluster_err(capsys, f, "--k1", 10**9)
    assert rc == 2 and "--k1: expected --k1 <= N (the number of rows) = 99" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cli_devices(tmp_path, capsys):
    f = tmp_path / "f.npy"
    np.save(f, X)
    for dev, match in (("bogus", "--device: expected cpu, cuda or cuda:N, got 'bogus'"),
                       ("cuda", "--device cuda: no CUDA device is available"),
                       ("cuda:x", "--device: expected cpu, cuda or cuda:N, got 'cuda:x'")):
        rc, stdout, err = _cluster_err(capsys, f, "--device", dev)
        assert rc == 2 and stdout == "" and match in err, err
        assert cli.main(["eval", str(f), "--dataset", "sysu", "--data-root", str(tmp_path), "--device", dev]) == 2
        assert match in capsys.readouterr().err


@pytest.mark.parametrize("opt,val", [("--trials", 0), ("--batch-size", 0), ("--workers", -1), ("--regdb-trial", 11)])
def test_eval_numbers(tmp_path, capsys, opt, val):
    ck = tmp_path / "last.pt"
    ck.write_bytes(b"not read: the numbers are checked first")
    rc = cli.main(["eval", str(ck), "--dataset", "sysu", "--data-root", str(tmp_path), opt, str(val)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"hil: error: {opt}: expected a number") and err.count("\n") == 1


def test_sparse_tensor_in_pt_gives_the_dense_answer(tmp_path, capsys):
    t = torch.from_numpy(X)
    torch.save(t.to_sparse(), tmp_path / "coo.pt")
    torch.save({"features": t.to_sparse_csr()}, tmp_path / "csr.pt")
    np.save(tmp_path / "dense.npy", X)
    got = []
    for name in ("coo.pt", "csr.pt", "dense.npy"):
        assert cli.main(["cluster", str(tmp_path / name), "--k1", "20", "--out", str(tmp_path / (name + ".l.npy"))]) == 0
        got.append(np.load(tmp_path / (name + ".l.npy")))
    np.testing.assert_array_equal(got[0], got[2])
    np.testing.assert_array_equal(got[1], got[2])


def test_internal_error_says_where_to_report_and_traceback_only_with_debug(tmp_path, capsys, monkeypatch):
    f = tmp_path / "f.npy"
    np.save(f, X)

    def boom(*a, **k):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(hilcore, "jaccard_distance", boom)
    assert cli.main(["cluster", str(f)]) == 1
    err = capsys.readouterr().err
    assert "hil: internal error: RuntimeError: kernel exploded" in err and "report" in err
    assert "Traceback" not in err and "--debug" in err
    assert cli.main(["--debug", "cluster", str(f)]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    assert cli.main(["cluster", str(f), "--debug"]) == 1  # also after the command
    assert "Traceback" in capsys.readouterr().err


def test_dense_dbscan_blocks_agree_with_sklearn(monkeypatch):
    """The block scan (forced to 7-row blocks here) gives scikit-learn's labels and the same CSR."""
    from hilcore import _arrays

    d = _sym_dist(97, seed=5)
    want = [_sk(d, e, 3) for e in (0.02, 0.1)]
    monkeypatch.setattr(_arrays, "DENSE_BLOCK_ELEMS", 7 * 97)
    for e, w in zip((0.02, 0.1), want):
        np.testing.assert_array_equal(hilcore.dbscan(d, e, 3), w)
        np.testing.assert_array_equal(hilcore.dbscan(torch.from_numpy(d).to(torch.bfloat16).float(), e, 3),
                                      _sk(torch.from_numpy(d).to(torch.bfloat16).float().numpy(), e, 3))
    ip, ix, data = _arrays.dense_distance_rows(torch.from_numpy(d), 0.1, "dist")
    ref = sp.csr_matrix(np.where(d <= 0.1, d, 0))
    ref.setdiag(0)
    keep = d <= 0.1
    np.testing.assert_array_equal(ip.numpy(), np.r_[0, np.cumsum(keep.sum(1))])
    np.testing.assert_array_equal(ix.numpy(), np.nonzero(keep)[1])
    np.testing.assert_array_equal(data.numpy(), d[keep])


@pytest.mark.parametrize("mode", [None, "max", "min"])
def test_gpu_paths_of_the_checks_on_the_cpu(mode):
    """The torch-only code paths (used for CUDA input) give the CPU paths' answers: the sort-based
    symmetry check of CSR input and the torch block scan of dense input (bfloat16 takes it on the CPU)."""
    from hilcore import _arrays

    d = _sym_dist(41, seed=9)
    a = d.copy()
    a[3, 7], a[7, 3] = 0.01, 0.95  # asymmetric at eps = 0.1
    eps = 0.1
    csr = sp.csr_matrix(a)
    ip, ix = torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64))
    data = torch.from_numpy(csr.data)
    if mode is None:
        for f in (_arrays.symmetric_neighbours,
                  lambda *z: _arrays._symmetric_sorted(*z[:4], z[2] <= z[4], z[5], z[4], z[6], None)):
            with pytest.raises(ValueError, match=r"d\[3, 7\] = 0.01 is within eps = 0.1 but d\[7, 3\] = 0.95"):
                f(ip, ix, data, 41, eps, mode, "dist")
        bf = torch.from_numpy(a).to(torch.bfloat16)
        with pytest.raises(ValueError, match=r"symmetric"):
            hilcore.dbscan(bf, eps, 2)
        return
    cpu = _arrays.symmetric_neighbours(ip, ix, data, 41, eps, mode, "dist")
    srt = _arrays._symmetric_sorted(ip, ix, data, 41, data <= eps, mode, eps, "dist", None)
    for u, v in zip(cpu[:2], srt[:2]):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    combined = np.maximum(a, a.T) if mode == "max" else np.minimum(a, a.T)
    np.testing.assert_array_equal(hilcore.dbscan(csr, eps, 2, symmetrize=mode), _sk(combined, eps, 2))
    bf = torch.from_numpy(a).to(torch.bfloat16)
    bfc = bf.float().numpy()
    want = _sk(np.maximum(bfc, bfc.T) if mode == "max" else np.minimum(bfc, bfc.T), eps, 2)
    np.testing.assert_array_equal(hilcore.dbscan(bf, eps, 2, symmetrize=mode).numpy(), want)
