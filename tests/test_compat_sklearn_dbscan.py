"""hilcore.compat.DBSCAN is scikit-learn's DBSCAN: its own test module, and every container against it.

The first test runs the installed scikit-learn's ``sklearn/cluster/tests/test_dbscan.py`` (read from the
installation, not copied) with ``DBSCAN`` patched to hilcore's, in a subprocess. The others compare
``labels_``, ``core_sample_indices_`` and ``components_`` with ``sklearn.cluster.DBSCAN`` on odd matrices:
diagonal entries above eps, unstored diagonals, repeated and explicit-zero entries, asymmetric
neighbourhoods, float16/32/64 and integer dtypes, eps on a float32 boundary, sample weights, in NumPy,
SciPy CSR/CSC/COO/LIL and torch dense/CSR/CSC/COO containers.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import DBSCAN as SkDBSCAN  # noqa: E402

from hilcore import compat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_scikit_learns_own_dbscan_tests_pass_against_compat(tmp_path):
    module = Path(sklearn.__file__).parent / "cluster" / "tests" / "test_dbscan.py"
    if not module.exists():
        pytest.skip("this scikit-learn installation has no test modules")
    count = tmp_path / "fits.txt"
    (tmp_path / "patch_compat_dbscan.py").write_text(textwrap.dedent(f"""
        import hilcore.compat as compat
        import sklearn.cluster._dbscan as skmod

        fits = []

        class Counted(compat.DBSCAN):
            def fit(self, X, y=None, sample_weight=None):
                fits.append(self.metric)
                return super().fit(X, y, sample_weight)

        def pytest_configure(config):
            skmod.DBSCAN = Counted
            import sklearn.cluster.tests.test_dbscan as t
            t.DBSCAN = Counted

        def pytest_unconfigure(config):
            open({str(count)!r}, "w").write("\\n".join(map(str, fits)))
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # --confcutdir at the folder holding sklearn/: pytest then loads sklearn/conftest.py (its fixtures, such as
    # global_random_seed) as that module's conftest, once, with every pytest version (naming it with -p too
    # registers it twice under pytest >= 9.2)
    site = Path(sklearn.__file__).parents[1]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--confcutdir={site}",
                        "-p", "patch_compat_dbscan", str(module)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    fits = count.read_text().split()
    assert fits.count("precomputed") >= 10 and len(fits) >= 30  # the patched estimator did the fits


def _same(ours, theirs):
    assert np.array_equal(ours.labels_, theirs.labels_)
    assert ours.labels_.dtype == theirs.labels_.dtype
    assert np.array_equal(ours.core_sample_indices_, theirs.core_sample_indices_)
    a, b = ours.components_, theirs.components_
    if isinstance(a, torch.Tensor):
        a = a.to_dense().cpu().numpy() if a.layout != torch.strided else a.cpu().numpy()
    a = a.toarray() if sp.issparse(a) else np.asarray(a)
    b = b.toarray() if sp.issparse(b) else np.asarray(b)
    assert a.shape == b.shape and np.array_equal(a.astype(np.float64), b.astype(np.float64))


def _matrix(rng, n, dtype, diag_mode):
    pts = rng.random((n, 2))
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    if diag_mode == "random":
        np.fill_diagonal(d, rng.random(n) * 0.4)
    elif diag_mode == "large":
        np.fill_diagonal(d, 0.9)
    return d.astype(dtype)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("diag_mode", ["zero", "random", "large"])
def test_dense_containers_equal_sklearn(seed, dtype, diag_mode):
    rng = np.random.default_rng(seed)
    d = _matrix(rng, 40, dtype, diag_mode)
    eps, ms = 0.15 + 0.05 * seed, 1 + seed % 4
    want = SkDBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit(d)
    _same(compat.DBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit(d), want)
    t = torch.from_numpy(d.copy())
    _same(compat.DBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit(t), want)
    w = rng.random(40) * 2
    want_w = SkDBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit(d, sample_weight=w)
    _same(compat.DBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit(t, sample_weight=w), want_w)


def test_issue_example_diagonal_above_eps_is_not_a_neighbour():
    d = np.array([[.9, .1, .8], [.1, .9, .8], [.8, .8, .9]])
    for x in (d, sp.csr_matrix(d), torch.from_numpy(d), torch.from_numpy(d).to_sparse_csr()):
        est = compat.DBSCAN(eps=0.5, min_samples=2, metric="precomputed").fit(x)
        assert est.labels_.tolist() == [-1, -1, -1]


def test_float32_boundary_compared_as_scikit_learn_does():
    e = np.float32(0.6)  # 0.6000000238 > 0.6: a neighbour at eps=0.6 on float32 (compared in float32) ...
    d32 = np.array([[0, e], [e, 0]], dtype=np.float32)
    for eps in (0.6, np.float64(0.6), np.float32(0.6)):
        want = SkDBSCAN(eps=eps, min_samples=2, metric="precomputed").fit(d32)
        _same(compat.DBSCAN(eps=eps, min_samples=2, metric="precomputed").fit(d32), want)
        _same(compat.DBSCAN(eps=eps, min_samples=2, metric="precomputed").fit(torch.from_numpy(d32)), want)
        _same(compat.DBSCAN(eps=eps, min_samples=2, metric="precomputed").fit(sp.csr_matrix(d32)),
              SkDBSCAN(eps=eps, min_samples=2, metric="precomputed").fit(sp.csr_matrix(d32)))
    d16 = d32.astype(np.float16)  # ... and not on float16 (compared in float64)
    _same(compat.DBSCAN(eps=0.6, min_samples=2, metric="precomputed").fit(d16),
          SkDBSCAN(eps=0.6, min_samples=2, metric="precomputed").fit(d16))


def _sparse_cases(rng, n):
    """(name, scipy matrix) with repeated entries, explicit zeros, stored and unstored diagonals."""
    rows = rng.integers(0, n, 5 * n)
    cols = rng.integers(0, n, 5 * n)
    vals = np.round(rng.random(5 * n) * 0.5, 2)
    vals[rng.random(5 * n) < 0.1] = 0.0
    sym_r, sym_c = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    sym_v = np.concatenate([vals, vals])
    # a CSR with repeated entries kept (not summed): built from its arrays, rows in order
    order = np.lexsort((sym_c, sym_r))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(sym_r, minlength=n))))
    dup_csr = sp.csr_matrix((sym_v[order], sym_c[order], indptr), shape=(n, n))
    coo = sp.coo_matrix((sym_v, (sym_r, sym_c)), shape=(n, n))
    return [("csr-repeated", dup_csr), ("coo-repeated", coo), ("csc", coo.tocsc()), ("lil", coo.tolil()),
            ("csr-asym", sp.csr_matrix((vals, (rows, cols)), shape=(n, n)))]


def _torch_like(m):
    """The same stored entries as torch sparse CSR / CSC / COO (repeated entries kept)."""
    out = []
    if m.format == "csr":
        out.append(torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                           torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(m.data), size=m.shape))
    if m.format == "coo":
        out.append(torch.sparse_coo_tensor(torch.from_numpy(np.stack([m.row, m.col]).astype(np.int64)),
                                           torch.from_numpy(m.data), size=m.shape))
    if m.format == "csc":
        out.append(torch.sparse_csc_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                           torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(m.data), size=m.shape))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_sparse_containers_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    for name, m in _sparse_cases(rng, 30):
        for ms in (1, 2, 4, 7):
            want = SkDBSCAN(eps=0.2, min_samples=ms, metric="precomputed").fit(m)
            _same(compat.DBSCAN(eps=0.2, min_samples=ms, metric="precomputed").fit(m), want)
            for t in _torch_like(m):
                got = compat.DBSCAN(eps=0.2, min_samples=ms, metric="precomputed").fit(t)
                assert np.array_equal(got.labels_, want.labels_), name
                assert np.array_equal(got.core_sample_indices_, want.core_sample_indices_), name
            w = rng.random(30) * 3 - 0.5
            _same(compat.DBSCAN(eps=0.2, min_samples=ms, metric="precomputed").fit(m, sample_weight=w),
                  SkDBSCAN(eps=0.2, min_samples=ms, metric="precomputed").fit(m, sample_weight=w))


def test_asymmetric_dense_goes_to_sklearns_search():
    rng = np.random.default_rng(3)
    for _ in range(10):
        d = rng.random((25, 25)) * 0.6
        for ms in (2, 3, 5):
            want = SkDBSCAN(eps=0.1, min_samples=ms, metric="precomputed").fit(d)
            _same(compat.DBSCAN(eps=0.1, min_samples=ms, metric="precomputed").fit(d), want)


def test_integer_matrix_and_huge_or_numpy_min_samples():
    d = np.array([[0, 1, 5], [1, 0, 5], [5, 5, 0]], dtype=np.int64)
    for ms in (2, np.uint64(2), np.int8(3), 2 ** 63, 2 ** 80):
        want = SkDBSCAN(eps=1.5, min_samples=ms, metric="precomputed").fit(d)
        _same(compat.DBSCAN(eps=1.5, min_samples=ms, metric="precomputed").fit(d), want)
        _same(compat.DBSCAN(eps=1.5, min_samples=ms, metric="precomputed").fit(torch.from_numpy(d)), want)


@pytest.mark.parametrize("kw", [dict(eps=0), dict(eps=-1), dict(min_samples=0), dict(min_samples=1.5),
                                dict(metric="nope"), dict(eps="0.5")])
def test_bad_parameters_raise_as_sklearn(kw):
    d = np.zeros((3, 3))
    with pytest.raises((ValueError, TypeError)) as theirs:
        SkDBSCAN(metric="precomputed", **kw).fit(d) if "metric" not in kw else SkDBSCAN(**kw).fit(d)
    with pytest.raises(type(theirs.value)) as ours:
        compat.DBSCAN(metric="precomputed", **kw).fit(d) if "metric" not in kw else compat.DBSCAN(**kw).fit(d)
    assert str(ours.value) == str(theirs.value)


def test_negative_nan_and_non_square_rejected():
    for bad in (np.array([[0, -1.0], [-1.0, 0]]), np.array([[0, np.nan], [np.nan, 0]])):
        for x in (bad, torch.from_numpy(bad)):
            with pytest.raises(ValueError, match="X"):
                compat.DBSCAN(eps=0.5, metric="precomputed").fit(x)
    with pytest.raises(ValueError, match="square"):
        compat.DBSCAN(eps=0.5, metric="precomputed").fit(np.zeros((2, 3)))


def test_other_metrics_are_sklearns():
    rng = np.random.default_rng(0)
    x = rng.random((60, 3))
    for kw in (dict(), dict(metric="manhattan", eps=0.3), dict(metric="minkowski", p=3, eps=0.2)):
        _same(compat.DBSCAN(**kw).fit(x), SkDBSCAN(**kw).fit(x))


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize("seed", range(4))
def test_hilcore_dbscan_reads_every_container_as_sklearn(backend, seed):
    """hilcore.dbscan (symmetric input) gives scikit-learn's labels on the same odd matrices."""
    import hilcore

    rng = np.random.default_rng(seed)
    for diag_mode in ("zero", "random", "large"):
        for dtype in (np.float64, np.float32):
            d = _matrix(rng, 30, dtype, diag_mode)
            for ms in (1, 2, 4):
                want = SkDBSCAN(eps=0.2, min_samples=ms, metric="precomputed").fit(d).labels_
                for x in (d, torch.from_numpy(d.copy())):
                    np.testing.assert_array_equal(np.asarray(hilcore.dbscan(x, 0.2, ms, backend=backend)), want)
    for name, m in _sparse_cases(rng, 30):
        if name == "csr-asym":
            continue
        for ms in (1, 2, 4, 7):
            want = SkDBSCAN(eps=0.2, min_samples=ms, metric="precomputed").fit(m).labels_
            np.testing.assert_array_equal(hilcore.dbscan(m, 0.2, ms, backend=backend), want, err_msg=name)
            for t in _torch_like(m):
                np.testing.assert_array_equal(hilcore.dbscan(t, 0.2, ms, backend=backend).numpy(), want,
                                              err_msg=name)
    d = np.array([[.9, .1, .8], [.1, .9, .8], [.8, .8, .9]])
    assert hilcore.dbscan(d, 0.5, 2, backend=backend).tolist() == [-1, -1, -1]
    assert hilcore.dbscan(sp.csr_matrix(d), 0.5, 2, backend=backend).tolist() == [-1, -1, -1]


def test_cuml_backend_refuses_repeated_entries():
    """scikit-learn counts a repeated CSR entry twice; cuML's dense input cannot: refused, not miscounted."""
    from hilcore.backend.cuml import dbscan as cuml_dbscan

    indptr = torch.tensor([0, 2, 3, 4])
    cuml_dbscan.check_no_repeats(indptr, torch.tensor([1, 2, 0, 0]), 3)  # distinct entries pass
    with pytest.raises(ValueError, match="dist: the cuml backend cannot count a repeated"):
        cuml_dbscan.check_no_repeats(indptr, torch.tensor([1, 1, 0, 0]), 3)
    with pytest.raises(ValueError, match="repeated"):  # a repeat on the diagonal too
        cuml_dbscan.check_no_repeats(torch.tensor([0, 2]), torch.tensor([0, 0]), 1)
