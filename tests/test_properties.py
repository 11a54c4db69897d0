"""Property-based corpus (hypothesis) over every public function and every ``hil`` subcommand.

Each generated case either equals the reference result (hilcore/ref, scikit-learn, or a float64 formula
written here) or raises the documented error (ValueError/TypeError naming the argument; ``hil: error:``
and exit status 2 for the CLI). Inputs vary shape, dtype, layout (negative strides, Fortran order,
strided views, big-endian, read-only, lists, non-contiguous and ``requires_grad`` torch), per-row scale
(2**-120 .. 2**120; float64 beyond the float32 range), NaN/Inf placements, all-zero rows, degenerate
labels and random (valid and broken) CSR structures.

Profiles: ``ci`` (default; the whole file well under a minute on two cores, derandomised so CI is
reproducible) and ``long`` (``HYPOTHESIS_PROFILE=long``, run by hand: many more, random examples).
"""
from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.cluster import DBSCAN as SkDBSCAN

import hilcore
import hilcore.compat as compat
from hilcore import cli
from hilcore.memory import ClusterMemory, InstanceMemory, MultiCenterMemory, cluster_contrast_loss
from hilcore.ref import brst as ref_brst
from hilcore.ref import centers as ref_centers
from hilcore.ref import jaccard as ref_jaccard
from hilcore.ref import mccl as ref_mccl
from hilcore.ref import memory as ref_memory
from testing import assert_jaccard_matches

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=25, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=600, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def few(n):
    """A per-test example budget: ``n`` in CI, 50x that in the long profile."""
    return settings(max_examples=n * 50 if LONG else n)


CPU = [b for b in ("torch", "native") if b in hilcore.backends("cpu")]
EXP_RANGE = {"float16": (-12, 10), "bfloat16": (-110, 110), "float32": (-110, 110), "float64": (-1000, 1000)}
NP_LAYOUTS = ("c", "reversed", "fortran", "strided", "bigendian", "readonly", "list")
TORCH_LAYOUTS = ("torch", "torch_noncontig", "torch_grad")


# ------------------------------------------------------------------ generators
def _np_layout(x: np.ndarray, layout: str):
    """The same values as ``x`` in another memory layout."""
    if layout == "c":
        return np.ascontiguousarray(x)
    if layout == "reversed":
        return np.ascontiguousarray(x[::-1])[::-1]
    if layout == "fortran":
        return np.asfortranarray(x)
    if layout == "strided":
        return np.repeat(x, 2, axis=-1)[..., ::2]
    if layout == "bigendian":
        return x.astype(x.dtype.newbyteorder(">"))
    if layout == "readonly":
        y = x.copy()
        y.setflags(write=False)
        return y
    if layout == "list":
        return x.tolist()
    raise AssertionError(layout)


def _torch_layout(x64: np.ndarray, dtype: str, layout: str):
    t = torch.from_numpy(np.ascontiguousarray(x64)).to(getattr(torch, dtype))
    if layout == "torch_noncontig":
        t = t.T.contiguous().T if t.dim() == 2 else t
    elif layout == "torch_grad":
        t = t.clone().requires_grad_()
    return t


@st.composite
def feature_case(draw, max_n=16, max_d=6, dtypes=("float16", "bfloat16", "float32", "float64"), min_n=1, d=None):
    """``(x64, x_in)``: exact float64 values (small integers times a power of two per row, so every dtype
    holds them exactly) and the same values as the op's input, in a random dtype and layout."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d)) if d is None else d
    dtype = draw(st.sampled_from(dtypes))
    base = draw(arrays(np.int64, (n, d), elements=st.integers(-4, 4))).astype(np.float64)
    zero = ~base.any(axis=1)
    base[zero, 0] = 1.0  # all-zero rows only where a test asks for them
    lo, hi = EXP_RANGE[dtype]
    exps = draw(arrays(np.int64, (n,), elements=st.integers(lo, hi)))
    x64 = base * np.exp2(exps.astype(np.float64))[:, None]
    layouts = TORCH_LAYOUTS + (NP_LAYOUTS if dtype != "bfloat16" else ())
    layout = draw(st.sampled_from(layouts))
    if layout.startswith("torch"):
        return x64, _torch_layout(x64, dtype, layout)
    if layout == "list" and dtype != "float64":
        layout = "c"
    return x64, _np_layout(x64.astype(dtype), layout)


def _unit64(x64: np.ndarray) -> np.ndarray:
    """Rows scaled by their max-abs, then L2-normalised, in float64: the exact unit rows."""
    s = x64 / np.abs(x64).max(axis=1, keepdims=True)
    return s / np.linalg.norm(s, axis=1, keepdims=True)


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _same_input(before, after):
    """The op left its input untouched."""
    if isinstance(after, torch.Tensor):
        assert torch.equal(before, after.detach())
    elif isinstance(after, np.ndarray):
        np.testing.assert_array_equal(before, after)


def _snapshot(a):
    return a.detach().clone() if isinstance(a, torch.Tensor) else (np.array(a, copy=True)
                                                                 if isinstance(a, np.ndarray) else None)


def assert_knn(idx, sim, xq64, k, xd64=None, tol=2e-5):
    """Equal to exact kNN up to the float32 rounding of (near-)ties: every returned index is distinct, its
    similarity is the true one, the list is sorted, and nothing better was left out."""
    qn = _unit64(xq64)
    dn = qn if xd64 is None else _unit64(xd64)
    true = qn @ dn.T
    idx, sim = _np(idx), _np(sim)
    assert idx.shape == sim.shape == (len(qn), k) and idx.dtype == np.int64 and sim.dtype == np.float32
    got = np.take_along_axis(true, idx, axis=1)
    np.testing.assert_allclose(sim, got, rtol=0, atol=tol)
    assert np.all(np.diff(sim, axis=1) <= tol)
    kth = -np.sort(-true, axis=1)[:, k - 1]
    assert np.all(sim[:, -1] >= kth - tol)
    for r in range(len(idx)):
        assert len(set(idx[r].tolist())) == k
    if xd64 is None:
        np.testing.assert_array_equal(idx[:, 0], np.arange(len(idx)))


# ------------------------------------------------------------------ knn
@few(40)
@given(case=feature_case(), data=st.data())
def test_knn_any_input_equals_exact_knn(case, data):
    x64, x = case
    n = len(x64)
    k = data.draw(st.integers(1, n))
    backend = data.draw(st.sampled_from(CPU + (["triton"] if n <= 8 else [])))
    before = _snapshot(x)
    idx, sim = hilcore.knn(x, k, backend=backend)
    assert_knn(idx, sim, x64, k)
    _same_input(before, x)
    if isinstance(x, torch.Tensor):
        assert isinstance(idx, torch.Tensor)
    else:
        assert isinstance(idx, np.ndarray)


@few(25)
@given(dim=st.integers(1, 6), data=st.data())
def test_knn_query_database(dim, data):
    q64, qx = data.draw(feature_case(max_n=8, d=dim))
    d64, dx = data.draw(feature_case(max_n=12, d=dim))
    k = data.draw(st.integers(1, len(d64)))
    if isinstance(qx, torch.Tensor) != isinstance(dx, torch.Tensor) or not isinstance(qx, torch.Tensor):
        dx = d64  # the database as plain float64 NumPy
    idx, sim = hilcore.knn(qx, k, y=dx)
    assert_knn(idx, sim, q64, k, d64)


@st.composite
def poisoned(draw):
    """A feature matrix with NaN/Inf entries and/or all-zero rows, and the error that must come."""
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from(["float16", "float32", "float64"]))
    x = np.asarray(draw(arrays(np.int64, (n, d), elements=st.integers(1, 4))), dtype=np.float64)
    bad_rows = draw(st.sets(st.integers(0, n - 1), max_size=n))
    zero_rows = draw(st.sets(st.integers(0, n - 1), max_size=n)) - bad_rows
    assume(bad_rows or zero_rows)
    for r in bad_rows:
        x[r, draw(st.integers(0, d - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    for r in zero_rows:
        x[r] = 0
    if bad_rows:
        rows = sorted(bad_rows)
        msg = rf"x: {len(rows)} row\(s\) contain NaN or Inf \(first rows: {re.escape(str(rows[:5]))}\)"
    else:
        rows = sorted(zero_rows)
        msg = rf"x: {len(rows)} row\(s\) are all zeros and cannot be L2-normalised \(first rows: {re.escape(str(rows[:5]))}\)"
    as_torch = draw(st.booleans())
    xin = torch.from_numpy(x.astype(dtype)) if as_torch else _np_layout(x.astype(dtype), draw(st.sampled_from(NP_LAYOUTS[:-1])))
    return xin, msg


@few(40)
@given(case=poisoned(), op=st.sampled_from(["knn", "jaccard", "centers", "brst", "subcluster"]))
def test_nan_inf_and_zero_rows_are_named(case, op):
    x, msg = case
    n = len(x)
    lab = np.zeros(n, dtype=np.int64)
    calls = {"knn": lambda: hilcore.knn(x, 1), "jaccard": lambda: hilcore.jaccard_distance(x, 3, 2),
             "centers": lambda: hilcore.cluster_centers(x, lab), "subcluster": lambda: hilcore.subcluster(x, lab),
             "brst": lambda: hilcore.brst(x, lab, np.ones((2, x.shape[1]), np.float32))}
    if op == "brst":
        msg = msg.replace("x:", "x_b:")
    with pytest.raises(ValueError, match=msg):
        calls[op]()


@few(30)
@given(shape=st.sampled_from([(0, 3), (3, 0), (4,), (2, 3, 1), ()]),
       dtype=st.sampled_from(["float32", "int64", "bool", "complex64", "U1", "object"]))
def test_knn_bad_shapes_and_dtypes(shape, dtype):
    x = np.zeros(shape, dtype=dtype) if dtype != "object" else np.empty(shape, dtype=object)
    if dtype in ("complex64", "U1", "object"):  # refused on sight
        err, match = TypeError, r"^x: expected a (real|numeric)"
    elif len(shape) != 2:  # then the rank, the dtype, the size
        err, match = ValueError, r"^x: expected a 2-D array \[N, D\]"
    elif dtype != "float32":
        err, match = TypeError, r"^x: expected a floating dtype"
    else:
        err, match = ValueError, r"^x: expected at least one (row|feature column)"
    with pytest.raises(err, match=match):
        hilcore.knn(x, 1)


# ------------------------------------------------------------------ jaccard
@few(20)
@given(case=feature_case(max_n=18, max_d=5, dtypes=("float32", "float64")), data=st.data())
def test_jaccard_equals_reference(case, data):
    x64, x = case
    n = len(x64)
    k1 = data.draw(st.integers(1, n + 3))
    k2 = data.draw(st.integers(1, k1 + 2))
    md = data.draw(st.sampled_from([None, 0.0, 0.3, 0.6, 0.95]))
    backend = data.draw(st.sampled_from(CPU))
    d = hilcore.jaccard_distance(x, k1, k2, max_distance=md, backend=backend)
    kk1 = min(k1, n)
    rank, _ = hilcore.knn(x64, kk1)  # the same exact ranking (ties: the library's order)
    want = ref_jaccard.jaccard_distance(_unit64(x64), kk1, min(k2, kk1), rank=rank)
    assert_jaccard_matches(d, want, md, atol=2e-5)


@few(25)
@given(k1=st.integers(-3, 10**10), k2=st.integers(-3, 10**10), n=st.integers(1, 12))
def test_jaccard_ranking_lengths(k1, k2, n):
    x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
    if k1 < 1:
        with pytest.raises(ValueError, match=r"k1: expected an integer >= 1"):
            hilcore.jaccard_distance(x, k1, max(k2, 1))
        return
    kk1 = min(k1, n)
    if k1 > n and k1 > 1000:
        with pytest.raises(ValueError, match=rf"k1: expected k1 <= N \(the number of rows\) = {n}"):
            hilcore.jaccard_distance(x, k1, max(k2, 1))
        return
    if k2 < 1:
        with pytest.raises(ValueError, match=r"k2: expected an integer >= 1"):
            hilcore.jaccard_distance(x, k1, k2)
        return
    if k2 > kk1 and k2 > 1000:
        with pytest.raises(ValueError, match=rf"k2: expected k2 <= k1 = {kk1}"):
            hilcore.jaccard_distance(x, k1, k2)
        return
    d = hilcore.jaccard_distance(x, k1, k2)
    same = hilcore.jaccard_distance(x, kk1, min(k2, kk1))
    assert (d != same).nnz == 0


# ------------------------------------------------------------------ dbscan
VALUES = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9], dtype=np.float64)


def _sk(dense, eps, ms):
    eps = eps if eps > 0 else 1e-300  # scikit-learn wants eps > 0; no generated distance lies in (0, 1e-300]
    return SkDBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit_predict(dense).astype(np.int64)


@st.composite
def distance_case(draw, max_n=14, min_n=1):
    """A symmetric distance matrix (values from a small set, so ties with eps are common), which entries are
    stored (sparse forms), and the dense matrix scikit-learn sees (entries not stored: far away)."""
    n = draw(st.integers(min_n, max_n))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    v = draw(arrays(np.int64, (n, n), elements=st.integers(0, len(VALUES) - 1)))
    d = VALUES[np.minimum(v, v.T)].astype(dtype)
    np.fill_diagonal(d, 0)
    m = draw(arrays(np.bool_, (n, n)))
    stored = m | m.T
    return d, stored


def _forms(d, stored, form):
    """``(input, dense_for_sklearn)``."""
    far = np.where(stored, d, 1e6).astype(d.dtype)
    diag = np.arange(len(d))  # scikit-learn sets an unstored diagonal entry to an explicit 0
    far[diag, diag] = np.where(stored[diag, diag], d[diag, diag], 0)
    coo_r, coo_c = np.nonzero(stored)
    csr = sp.csr_matrix((d[coo_r, coo_c], (coo_r, coo_c)), shape=d.shape)
    if form == "dense":
        return d, d
    if form == "dense_reversed":
        return np.ascontiguousarray(d[::-1, ::-1])[::-1, ::-1], d
    if form == "dense_bigendian":
        return d.astype(d.dtype.newbyteorder(">")), d
    if form == "torch":
        return torch.from_numpy(d.copy()).requires_grad_(), d
    if form == "csr":
        return csr, far
    if form == "csc":
        return csr.tocsc(), far
    if form == "coo":
        return csr.tocoo(), far
    if form == "torch_csr":
        return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                       torch.from_numpy(csr.indices.astype(np.int64)), torch.from_numpy(csr.data),
                                       size=d.shape), far
    if form == "torch_coo":
        return torch.sparse_coo_tensor(torch.from_numpy(np.stack([coo_r, coo_c])), torch.from_numpy(d[coo_r, coo_c]),
                                       size=d.shape), far
    raise AssertionError(form)


FORMS = ["dense", "dense_reversed", "dense_bigendian", "torch", "csr", "csc", "coo", "torch_csr", "torch_coo"]


@few(60)
@given(case=distance_case(), form=st.sampled_from(FORMS), eps=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, 1.0]),
       ms=st.integers(1, 5), backend=st.sampled_from(CPU))
def test_dbscan_equals_sklearn(case, form, eps, ms, backend):
    d, stored = case
    dist, dense = _forms(d, stored, form)
    got = _np(hilcore.dbscan(dist, eps, ms, backend=backend))
    want = _sk(dense, eps, ms)
    np.testing.assert_array_equal(got, want)
    if form in ("csr", "csc", "coo"):  # scikit-learn on the sparse matrix itself reads it the same way
        np.testing.assert_array_equal(got, _sk(dist, eps, ms))
    if form in ("dense", "csr"):
        np.testing.assert_array_equal(compat.DBSCAN(eps if eps > 0 else 1e-300, min_samples=ms,
                                                    metric="precomputed", backend=backend).fit_predict(dist), want)


@few(40)
@given(case=distance_case(max_n=10, min_n=2), form=st.sampled_from(["dense", "csr", "torch_csr"]), data=st.data())
def test_dbscan_asymmetric_input(case, form, data):
    d, stored = case
    n = len(d)
    i, j = data.draw(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1]))
    eps = 0.5
    a = d.copy()
    a[i, j] = data.draw(st.sampled_from([0.0, 0.3, 0.6, 0.9]))
    st_a = stored.copy()
    st_a[i, j] = data.draw(st.booleans()) if form != "dense" else True
    # the eps-neighbour relation of the stored entries
    rel = (a <= eps) & (st_a if form != "dense" else True)
    np.fill_diagonal(rel, True)
    mode = data.draw(st.sampled_from([None, "max", "min"]))
    dist, _ = _forms(a, st_a, form)
    if not np.array_equal(rel, rel.T) and mode is None:
        with pytest.raises(ValueError, match=r"dist: expected a symmetric distance matrix; d\[\d+, \d+\] = .* is "
                                             r"within eps = 0.5 but d\[\d+, \d+\] = .* is not"):
            hilcore.dbscan(dist, eps, 2)
        return
    sym = rel if mode is None else (rel & rel.T if mode == "max" else rel | rel.T)
    want = _sk(np.where(sym, 0.0, 1.0), 0.5, 2)
    np.testing.assert_array_equal(_np(hilcore.dbscan(dist, eps, 2, symmetrize=mode)), want)


@st.composite
def broken_csr(draw):
    kind = draw(st.sampled_from(["index_high", "index_low", "indptr_order", "indptr_start", "indptr_len"]))
    n = draw(st.integers(2 if kind == "indptr_order" else 1, 8))
    nnz = draw(st.integers(1 if kind.startswith("index") or kind == "indptr_order" else 0, 12))
    indptr = np.sort(draw(arrays(np.int64, n + 1, elements=st.integers(0, nnz))))
    indptr[0], indptr[-1] = 0, nnz
    indices = draw(arrays(np.int64, nnz, elements=st.integers(0, n - 1)))
    if kind.startswith("index"):
        p = draw(st.integers(0, nnz - 1))
        indices[p] = draw(st.integers(n, n + 10**9)) if kind == "index_high" else draw(st.integers(-10**9, -1))
        msg = rf"dist: stored entry {p} \(row \d+\) has column index {indices[p]}, expected one in \[0, {n}\)"
    elif kind == "indptr_order":
        r = draw(st.integers(1, n - 1))
        indptr[r] = nnz + 1  # above every later offset (the last is nnz)
        msg = rf"dist: indptr must be non-decreasing; indptr\[\d+\] = \d+ > indptr\[\d+\]"
    elif kind == "indptr_start":
        indptr[0] = draw(st.integers(1, 5))
        msg = r"dist: expected indptr\[0\] = 0"
    else:
        indptr = indptr[:-1]
        msg = r"dist: expected an indptr of"
    data = np.full(nnz, 0.1, dtype=np.float32)
    return indptr, indices, data, n, msg


@few(40)
@given(case=broken_csr(), as_torch=st.booleans(), backend=st.sampled_from(CPU))
def test_dbscan_broken_csr_structure_is_named(case, as_torch, backend):
    indptr, indices, data, n, msg = case
    if as_torch:
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            try:
                dist = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices),
                                               torch.from_numpy(data), size=(n, n))
            except RuntimeError:  # torch itself refuses to build some of them: nothing reaches hilcore
                return
    else:
        dist = sp.csr_matrix((n, n), dtype=np.float32)
        dist.indptr, dist.indices, dist.data = indptr, indices, data
    with pytest.raises(ValueError, match=msg):
        hilcore.dbscan(dist, 0.5, 2, backend=backend)


@few(30)
@given(case=distance_case(max_n=8), bad=st.sampled_from([np.nan, -0.5, -1e-30]), form=st.sampled_from(
    ["dense", "torch", "csr", "torch_csr"]), data=st.data())
def test_dbscan_nan_and_negative_values(case, bad, form, data):
    d, stored = case
    n = len(d)
    i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1))
    d = d.copy()
    d[i, j] = d[j, i] = bad
    stored = stored.copy()
    stored[i, j] = stored[j, i] = True
    dist, _ = _forms(d, stored, form)
    match = "NaN" if np.isnan(bad) else "negative"
    with pytest.raises(ValueError, match=rf"dist: contains {match} distances"):
        hilcore.dbscan(dist, 0.5, 2)


@few(20)
@given(eps=st.one_of(st.floats(allow_nan=True), st.text(max_size=2)), ms=st.one_of(st.integers(-5, 5), st.floats()))
def test_dbscan_bad_parameters(eps, ms):
    d = np.zeros((3, 3), np.float32)
    ok_eps = isinstance(eps, float) and np.isfinite(eps) and eps >= 0
    ok_ms = isinstance(ms, int) and ms >= 1
    if ok_eps and ok_ms:
        assert hilcore.dbscan(d, eps, ms).tolist() == ([0, 0, 0] if ms <= 3 else [-1, -1, -1])
        return
    with pytest.raises((ValueError, TypeError), match=r"^(eps|min_samples): expected"):
        hilcore.dbscan(d, eps, ms)


# ------------------------------------------------------------------ labels: centres, sub-clusters, brst, match
@st.composite
def labels_case(draw, n):
    kind = draw(st.sampled_from(["ok", "ok", "ok", "noise", "gap", "huge", "below"]))
    c = draw(st.integers(1, max(1, n)))
    lab = np.asarray(draw(arrays(np.int64, n, elements=st.integers(-1, c - 1))))
    if kind == "ok":
        lab[:c] = np.arange(c)  # every id 0..c-1 has a member
        lab = lab[np.asarray(draw(st.permutations(range(n))), dtype=np.int64)]
        return lab, None
    if kind == "noise":
        return np.full(n, -1), r"labels: every sample is noise"
    if kind == "gap":
        lab[:] = 0
        lab[-1] = draw(st.integers(2, max(2, n)))
        if n < 2 or lab[-1] >= n:
            return lab, r"labels: cluster ids must be contiguous 0..C-1; (got the id|ids \[)"
        return lab, r"labels: cluster ids must be contiguous 0..C-1; ids \["
    if kind == "huge":
        lab[0] = draw(st.integers(n, 2**62))
        return lab, rf"labels: cluster ids must be contiguous 0..C-1; got the id {lab[0]} with only"
    lab[0] = draw(st.integers(-2**62, -2))
    return lab, rf"labels: cluster ids must be >= 0, or -1 for noise; got {lab[0]}"


@few(40)
@given(case=feature_case(max_n=14, max_d=5), data=st.data())
def test_cluster_centers_equal_reference(case, data):
    x64, x = case
    lab, err = data.draw(labels_case(len(x64)))
    ldtype = data.draw(st.sampled_from(["int64", "int32", ">i8", "uint32"]))
    if ldtype == "uint32" and (lab < 0).any():
        ldtype = "int64"
    if abs(lab).max(initial=0) >= 2**31 and ldtype != "int64" and ldtype != ">i8":
        ldtype = "int64"
    labs = lab.astype(ldtype)[::-1][::-1]
    if err:
        with pytest.raises(ValueError, match=err):
            hilcore.cluster_centers(x, labs)
        return
    got = _np(hilcore.cluster_centers(x, labs))
    want = ref_centers.cluster_centers_ref(_unit64(x64), lab)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    n_sub = data.draw(st.integers(1, 3))
    multi = _np(hilcore.subcluster(x, labs, n_sub=n_sub, n_init=2, iters=5))
    assert multi.shape == (want.shape[0], 1 + n_sub, want.shape[1])
    np.testing.assert_allclose(multi[:, 0], got, rtol=0, atol=1e-6)
    sizes = np.bincount(lab[lab >= 0], minlength=want.shape[0])
    for c in np.flatnonzero(sizes <= n_sub):  # too small to split: every slot is the centre
        np.testing.assert_allclose(multi[c], np.repeat(got[c][None], 1 + n_sub, 0), rtol=0, atol=1e-6)


@few(30)
@given(seed=st.integers(0, 2**16), nb=st.integers(1, 20), ca=st.integers(1, 6), d=st.integers(2, 6),
       ratio=st.sampled_from([0.0, 0.5, 0.9, 1.0]), data=st.data())
def test_brst_and_match_equal_reference(seed, nb, ca, d, ratio, data):
    # d >= 2: in one dimension a cluster of +1 and -1 rows has a zero mean, whose direction (the prototype) is undefined
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((nb, d)) * np.exp2(rng.integers(-60, 60, (nb, 1)))
    protos = rng.standard_normal((ca, d))
    lab = rng.integers(-1, 3, nb)
    got = _np(hilcore.brst(torch.from_numpy(xb).requires_grad_(), lab, protos, ratio))
    want = ref_brst.brst_ref(_unit64(xb), lab, protos, ratio)
    np.testing.assert_array_equal(got, want)
    # the matching over two modalities with contiguous labels
    lr = np.arange(nb) % min(nb, 3)
    xi = rng.standard_normal((nb + 2, d))
    li = np.arange(nb + 2) % 2
    mode = data.draw(st.sampled_from(["rgb_to_ir", "ir_to_rgb", "both"]))
    m = hilcore.bidirectional_match(xb[::-1], lr[::-1], xi, li, ratio, mode)
    r = ref_brst.bidirectional_match_ref(_unit64(xb[::-1]), lr[::-1], _unit64(xi), li, ratio, mode)
    got_pairs = np.asarray(m.pairs).reshape(-1, 2)
    ref_pairs = np.asarray(r["pairs"] if isinstance(r, dict) else r.pairs).reshape(-1, 2)
    np.testing.assert_array_equal(got_pairs, ref_pairs)


# ------------------------------------------------------------------ memories and losses
@few(40)
@given(seed=st.integers(0, 2**16), c=st.integers(1, 6), s=st.integers(1, 3), d=st.integers(1, 6),
       b=st.integers(0, 12), scale=st.integers(-100, 100), mom=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       mdtype=st.sampled_from([torch.float32, torch.float64]), xdtype=st.sampled_from(["float32", "float64"]),
       data=st.data())
def test_memory_update_and_losses_equal_reference(seed, c, s, d, b, scale, mom, mdtype, xdtype, data):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d)) * np.exp2(rng.integers(-60, 60, (c, 1)))
    x = (rng.standard_normal((b, d)) * 2.0 ** scale).astype(xdtype).astype(np.float64)  # the values passed
    y = rng.integers(0, c, b)
    xt = torch.from_numpy(x.astype(xdtype))
    mem = ClusterMemory.from_centers(torch.from_numpy(centres), momentum=mom, dtype=mdtype)
    np.testing.assert_allclose(mem.features.numpy(), _unit64(centres), rtol=0, atol=1e-6)
    m0 = mem.features.numpy().astype(np.float64)
    want = ref_memory.update(m0, _unit64(x) if b else x, y, mom)
    # conditioning: mu * m + (1 - mu) * x nearly cancels when x is close to -m (mu = 1/2), and the float32
    # rounding of the memory grows by 1 / ||v|| there
    m, vmin = m0.copy(), 1.0
    for xi, yi in zip(_unit64(x) if b else x, y):
        v = mom * m[yi] + (1 - mom) * xi
        vmin = min(vmin, float(np.linalg.norm(v)))
        m[yi] = v / np.linalg.norm(v)
    assume(vmin > 1e-3)  # (an exact cancellation, v = 0, is documented: the floor NORM_EPS applies)
    mem.update(xt, torch.from_numpy(y))
    tol = (4e-6 if mdtype == torch.float32 else 1e-12) / vmin * max(1, b)
    np.testing.assert_allclose(mem.features.numpy(), want, rtol=0, atol=tol)
    if b == 0:
        return
    # cluster-contrast loss: float64 cross-entropy of the unit rows against the memory
    xg = xt.clone().requires_grad_()
    loss = cluster_contrast_loss(xg, mem, torch.from_numpy(y), reduction="none")
    logits = _unit64(x) @ mem.features.numpy().astype(np.float64).T / mem.temp
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    np.testing.assert_allclose(loss.detach().numpy(), lse - logits[np.arange(b), y], rtol=1e-4, atol=1e-4)
    loss.sum().backward()
    assert xg.grad is not None and bool(torch.isfinite(xg.grad).all())
    multi = rng.standard_normal((c, s, d))
    mm = MultiCenterMemory.from_tensor(torch.from_numpy(multi), dtype=mdtype)
    ml = hilcore.mccl_loss(xt, mm, reduction="none", backend=data.draw(st.sampled_from(CPU)))
    want_l, _ = ref_mccl.mccl(_unit64(x), mm.features.numpy())
    np.testing.assert_allclose(ml.numpy(), want_l, rtol=1e-4, atol=1e-5)
    bad_y = y.copy()
    bad_y[0] = data.draw(st.sampled_from([-1, c, c + 10**12]))
    with pytest.raises(ValueError, match=rf"targets: cluster ids must lie in \[0, {c}\)"):
        mem.update(xt, bad_y)
    with pytest.raises(ValueError, match=rf"targets: cluster ids must lie in \[0, {c}\)"):
        cluster_contrast_loss(xt, mem, bad_y)
    zero = xt.clone()
    zero[0] = 0
    for f in (lambda: mem.update(zero, y), lambda: cluster_contrast_loss(zero, mem, y),
              lambda: hilcore.mccl_loss(zero, mm)):
        with pytest.raises(ValueError, match=r"x: 1 row\(s\) are all zeros"):
            f()
    inst = InstanceMemory.from_features(x, labels=y)
    np.testing.assert_allclose(inst.features.numpy(), _unit64(x), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ epoch and compat
@few(6)
@given(seed=st.integers(0, 2**16), n=st.integers(20, 60), data=st.data())
def test_cluster_epoch_is_its_stages(seed, n, data):
    from hilcore.synthetic import reid_features

    xr, _, _ = reid_features(max(2, n // 10), 10, dim=32, seed=seed)
    xi, _, _ = reid_features(max(2, n // 12), 10, dim=32, seed=seed + 1)
    cfg = hilcore.EpochConfig(k1=data.draw(st.integers(3, 25)), k2=data.draw(st.integers(1, 6)),
                              min_samples=data.draw(st.integers(2, 5)), n_sub=2)
    try:
        out = hilcore.cluster_epoch(torch.from_numpy(xr).requires_grad_(), xi[::-1], cfg)
    except ValueError as e:
        assert "ended all-noise" in str(e)
        return
    want = hilcore.dbscan(hilcore.jaccard_distance(xr, cfg.k1, cfg.k2, max_distance=cfg.eps), cfg.eps,
                          cfg.min_samples)
    np.testing.assert_array_equal(_np(out.labels_rgb), want)


@few(15)
@given(case=feature_case(max_n=14, max_d=5, dtypes=("float32", "float64")), k1=st.integers(1, 20),
       k2=st.integers(1, 6), f16=st.booleans())
def test_compat_compute_jaccard_distance(case, k1, k2, f16):
    from hilcore import _arrays, compat_jaccard
    from hilcore.ref.compat_jaccard import jaccard_dense

    x64, x = case
    # the default: the original's arithmetic, bit for bit its reference given the same ranking (float64 rows
    # beyond the float32 range, which the original's float32 index cannot hold, are refused loudly)
    if not np.all(np.abs(x64) <= np.finfo(np.float32).max):
        with pytest.raises(ValueError, match="target_features"):
            compat.compute_jaccard_distance(x, k1, k2, print_flag=False, use_float16=f16)
    else:
        xt = _arrays.as_tensor(x, "x")[0]
        kk1 = min(k1, xt.shape[0])
        with np.errstate(all="ignore"):
            want = jaccard_dense(xt, kk1, min(k2, kk1), f16, rank=compat_jaccard.ranking(xt, kk1).numpy())
        if np.isnan(want).any():  # products beyond the dtype's range: the original's weights are NaN
            with pytest.raises(ValueError, match="target_features: the original's arithmetic overflows"):
                compat.compute_jaccard_distance(x, k1, k2, print_flag=False, use_float16=f16)
        else:
            got = compat.compute_jaccard_distance(x, k1, k2, print_flag=False, use_float16=f16)
            np.testing.assert_array_equal(got, want)
    # exact=True: hilcore's distance made dense
    dense = compat.compute_jaccard_distance(x, k1, k2, print_flag=False, use_float16=f16, exact=True)
    sparse = hilcore.jaccard_distance(x64, k1, k2)
    want = np.ones(dense.shape, np.float32)
    coo = sparse.tocoo()
    want[coo.row, coo.col] = coo.data
    np.testing.assert_allclose(dense.astype(np.float32), want.astype(dense.dtype), rtol=0,
                               atol=1e-3 if f16 else 1e-6)


# ------------------------------------------------------------------ the CLI
def _cli(args, capsys):
    rc = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _is_user_error(rc, err):
    lines = err.strip().splitlines()
    return rc == 2 and len(lines) == 1 and lines[0].startswith("hil: error: ") and "Traceback" not in err


@few(20)
@given(case=feature_case(max_n=30, max_d=6, dtypes=("float32",), min_n=1),
       fmt=st.sampled_from(["npy", "pt", "pt_dict", "pt_sparse"]), k1=st.integers(-1, 40), k2=st.integers(-1, 8),
       eps=st.sampled_from([-0.1, 0.0, 0.3, 0.6, 1.0]), ms=st.integers(0, 5),
       poison=st.sampled_from([None, None, "nan", "zero"]), out=st.sampled_from(["ok", "dir", "under_file", None]))
def test_hil_cluster(tmp_path_factory, capsys, case, fmt, k1, k2, eps, ms, poison, out):
    tmp = tmp_path_factory.mktemp("cl")
    x64, _ = case
    x = x64.astype(np.float32)
    if poison == "nan":
        x[len(x) // 2, 0] = np.nan
    elif poison == "zero":
        x[0] = 0
    f = tmp / f"f.{fmt.split('_')[0]}"
    if fmt == "npy":
        np.save(f, x.astype(">f4") if len(x) % 2 else x)
    else:
        t = torch.from_numpy(x)
        torch.save(t.to_sparse() if fmt == "pt_sparse" else ({"features": t} if fmt == "pt_dict" else t), f)
    outp = {"ok": tmp / "o" / "l.npy", "dir": tmp, "under_file": f / "l.npy", None: None}[out]
    args = ["cluster", f, "--k1", k1, "--k2", k2, "--eps", eps, "--min-samples", ms, "--progress", "off"]
    if outp is not None:
        args += ["--out", outp]
    rc, stdout, err = _cli(args, capsys)
    valid = k1 >= 1 and k2 >= 1 and eps >= 0 and ms >= 1 and poison is None and out in ("ok", None)
    if not valid:
        assert _is_user_error(rc, err), (rc, err)
        assert stdout == ""
        return
    assert rc == 0, err
    want = hilcore.dbscan(hilcore.jaccard_distance(x, k1, k2, max_distance=eps), eps, ms)
    if outp is not None:
        np.testing.assert_array_equal(np.load(outp), want)
    assert re.search(rf"^clusters\s+{len(set(want.tolist()) - {-1})}$", stdout, flags=re.M)


@few(10)
@given(ids=st.integers(-1, 4), per_id=st.integers(-1, 3), dim=st.integers(0, 8), cams=st.integers(0, 3),
       out=st.sampled_from(["ok", "not_npy", "dir", "under_file"]))
def test_hil_make_features(tmp_path_factory, capsys, ids, per_id, dim, cams, out):
    tmp = tmp_path_factory.mktemp("mf")
    (tmp / "file").write_text("x")
    p = {"ok": tmp / "a" / "f.npy", "not_npy": tmp / "f.txt", "dir": tmp, "under_file": tmp / "file" / "f.npy"}[out]
    rc, stdout, err = _cli(["make-features", p, "--ids", ids, "--per-id", per_id, "--dim", dim, "--cams", cams],
                           capsys)
    if ids >= 1 and per_id >= 1 and dim >= 2 and cams >= 1 and out == "ok":
        assert rc == 0, err
        assert np.load(p).shape == (ids * per_id, dim)
    else:
        assert _is_user_error(rc, err), (rc, err)


@few(6)
@given(ids=st.integers(-1, 4), imgs=st.integers(0, 2), size=st.sampled_from(["16x8", "0x8", "ax8", "16", "8x8"]),
       layout=st.sampled_from(["sysu", "regdb"]), target=st.sampled_from(["new", "file"]))
def test_hil_make_synthetic(tmp_path_factory, capsys, ids, imgs, size, layout, target):
    tmp = tmp_path_factory.mktemp("ms")
    (tmp / "file").write_text("x")
    d = tmp / ("data" if target == "new" else "file")
    rc, stdout, err = _cli(["make-synthetic", d, "--ids", ids, "--imgs-per-cam", imgs, "--size", size,
                            "--layout", layout], capsys)
    if ids >= (3 if layout == "sysu" else 2) and imgs >= 1 and size == "16x8" and target == "new":
        assert rc == 0, err
        assert any(d.rglob("*.jpg")) or any(d.rglob("*.bmp"))
    else:
        assert _is_user_error(rc, err), (rc, err)


@few(12)
@given(key=st.sampled_from(["optim.lr", "optim.epochs", "sampler.P", "run.device", "data.size", "loss.temp",
                            "data.dataset", "nosuch"]),
       value=st.sampled_from(["-1", "0", "1e-4", "bogus", "[1]", "", "cuda:x", "1_0"]),
       device=st.sampled_from([None, "bogus", "cuda:99"]), output=st.sampled_from([None, "file"]))
def test_hil_train_bad_arguments_are_one_line(tmp_path_factory, capsys, key, value, device, output):
    from hilcore.train.config import load_config

    tmp = tmp_path_factory.mktemp("tr")
    (tmp / "file").write_text("x")
    try:
        load_config("configs/demo_tiny.yaml", [f"{key}={value}"])
        config_ok = True
    except (ValueError, TypeError):
        config_ok = False
    if config_ok and not device and not output:
        output = "file"  # never start a real training run here: an output that is a file stops it
    args = ["train", "--config", "configs/demo_tiny.yaml", f"{key}={value}"]
    if device:
        args += ["--device", device]
    if output:
        args += ["--output", tmp / output]
    rc, stdout, err = _cli(args, capsys)
    assert _is_user_error(rc, err), (rc, err)


@few(12)
@given(trials=st.integers(-1, 12), batch=st.integers(-1, 2), workers=st.integers(-1, 1),
       regdb_trial=st.sampled_from([None, 0, 1, 11]), dataset=st.sampled_from(["sysu", "regdb", "synthetic"]),
       ckpt=st.sampled_from(["missing", "garbage"]), root=st.sampled_from(["ok", "missing"]))
def test_hil_eval_bad_arguments_are_one_line(tmp_path_factory, capsys, trials, batch, workers, regdb_trial, dataset,
                                             ckpt, root):
    tmp = tmp_path_factory.mktemp("ev")
    (tmp / "garbage.pt").write_bytes(os.urandom(64))
    args = ["eval", tmp / f"{ckpt}.pt", "--dataset", dataset, "--data-root", tmp if root == "ok" else tmp / "nope",
            "--trials", trials, "--batch-size", batch, "--workers", workers]
    if regdb_trial is not None:
        args += ["--regdb-trial", regdb_trial]
    rc, stdout, err = _cli(args, capsys)
    assert _is_user_error(rc, err), (rc, err)  # a missing or corrupt checkpoint is a user error too


def test_hil_bench_and_version_and_no_command(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("hil (hilcore) ")
    assert cli.main([]) == 2 and "usage" in capsys.readouterr().out
    assert cli.main(["bench", "--no-such-option"]) == 2  # the benchmark's own argparse error, no traceback
    assert "Traceback" not in capsys.readouterr().err
