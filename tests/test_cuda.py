"""GPU backends (cuda kernels, triton kNN pipeline, cuml) against torch, native, the
reference and scikit-learn on the same inputs. Skipped entirely without a CUDA device."""
import functools
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

import hilcore
from hilcore.ref import jaccard as ref_jaccard
from jaccard_rows_ref import assert_bitwise, reference, synthetic
from testing import assert_csr_well_formed, assert_jaccard_matches, csr_to_dense, reid_features, stored_mask, \
    with_duplicates

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not hilcore.has_cuda(), reason="hilcore was built without CUDA kernels"),
]

K1, K2, EPS = 20, 6, 0.6
SIZES = (1, 2, 19, 989, 5000)
ATOL = 1e-5


def _cuda_jaccard():
    from hilcore.backend.cuda import jaccard as m

    return m.jaccard


def _native_jaccard():
    from hilcore.backend.native import jaccard as m

    return m.jaccard


@functools.lru_cache(maxsize=None)
def _data(n, dup):
    x = reid_features(n, seed=n)
    return with_duplicates(x, seed=n) if dup else x


@functools.lru_cache(maxsize=None)
def _rank(n, dup, k1):
    """One ranking (torch kNN on the CPU) shared by every backend under comparison."""
    xt = hilcore._arrays.features(_data(n, dup), "x")[0]
    idx, _ = hilcore.knn(xt, min(k1, n), backend="torch")
    return xt, idx


def _scipy(indptr, indices, data, n):
    return sp.csr_matrix((data.cpu().numpy(), indices.cpu().numpy(), indptr.cpu().numpy()), shape=(n, n))


def _torch_csr_to_scipy(t):
    n = t.shape[0]
    return _scipy(t.crow_indices(), t.col_indices(), t.values(), n)


def _assert_same_sparse(a, b, max_distance, atol=ATOL):
    """Two CSR results: same stored pairs up to pairs within atol of max_distance, same values within atol."""
    n = a.shape[0]
    assert_csr_well_formed(a, n)
    assert_csr_well_formed(b, n)
    ma, mb = stored_mask(a), stored_mask(b)
    da, db = csr_to_dense(a), csr_to_dense(b)
    md = math.inf if max_distance is None else max_distance
    differ = ma != mb
    vals = np.where(ma, da, db)[differ]
    assert np.all(np.abs(vals - md) < atol), f"{int(differ.sum())} pairs stored in one result only: {vals[:5]}"
    both = ma & mb
    np.testing.assert_allclose(da[both], db[both], rtol=0, atol=atol)


# ---------------------------------------------------------------- the CUDA stages
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dup", [False, True], ids=["plain", "dups"])
@pytest.mark.parametrize("k2", [K2, 1])
@pytest.mark.parametrize("max_distance", [None, EPS], ids=["all", "eps"])
def test_cuda_stages_match_native_and_reference(n, dup, k2, max_distance):
    xt, rank = _rank(n, dup, K1)
    k1 = min(K1, n)
    k2 = min(k2, k1)
    md = math.inf if max_distance is None else max_distance
    got = _scipy(*_cuda_jaccard()(xt.cuda(), rank.cuda(), k1, k2, md), n)
    # stored entries of a row never repeat, sorted, on the device asked for
    want = _scipy(*_native_jaccard()(xt, rank, k1, k2, md), n)
    _assert_same_sparse(got, want, max_distance)
    if n <= 989:
        ref = ref_jaccard.jaccard_distance(_data(n, dup), k1, k2, rank=rank.numpy())
        assert_jaccard_matches(got, ref, max_distance, atol=ATOL)


def test_cuda_jaccard_deterministic_and_symmetric_bitwise():
    xt, rank = _rank(989, True, K1)
    a = _cuda_jaccard()(xt.cuda(), rank.cuda(), K1, K2, math.inf)
    b = _cuda_jaccard()(xt.cuda(), rank.cuda(), K1, K2, math.inf)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    d = _scipy(*a, 989)
    dense = csr_to_dense(d)
    assert np.array_equal(dense, dense.T)  # bit-for-bit, not allclose


def test_cuda_jaccard_small_workspace_chunks_give_same_result():
    xt, rank = _rank(989, False, K1)
    whole = _cuda_jaccard()(xt.cuda(), rank.cuda(), K1, K2, EPS)
    chunked = _cuda_jaccard()(xt.cuda(), rank.cuda(), K1, K2, EPS, workspace_bytes=1)  # one row per chunk
    for u, v in zip(whole, chunked):
        assert torch.equal(u, v)


def test_cuda_jaccard_rejects_bad_rank():
    xt, rank = _rank(19, False, K1)
    bad = rank.clone().cuda()
    bad[3, 2] = 19
    with pytest.raises(ValueError, match="rank"):
        _cuda_jaccard()(xt.cuda(), bad, 19, 6, math.inf)
    with pytest.raises(ValueError, match="k1"):
        _cuda_jaccard()(xt.cuda(), rank.cuda(), 20, 6, math.inf)


# ---------------------------------------------------------------- the last stage's kernels, bit for bit
def _pairs_cuda(q, max_distance, workspace, smem_slots=None):
    """jaccard_slots / jaccard_rows_count / jaccard_rows_fill (through backend.cuda.jaccard.pairs) on V' = q;
    smem_slots lowers the largest shared-memory tables (partners pass, rows pass) to force global ones."""
    from hilcore.backend.cuda import jaccard as cj

    q_ptr, q_idx, q_val = (torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in q)
    n = q_ptr.numel() - 1
    p_ptr, p_row, p_val = cj._postings(q_ptr, q_idx, q_val, n)
    k = cj._Kernels(cj._native(), torch.cuda.current_stream().cuda_stream)
    if smem_slots is not None:
        k.smem_slots = smem_slots
    out = cj.pairs(k, q_ptr, q_idx, q_val, p_ptr, p_row, p_val, n, max_distance, workspace)
    assert all(t.is_cuda for t in out)
    return dict(indptr=out[0].cpu().numpy(), indices=out[1].cpu().numpy(), data=out[2].cpu().numpy())


@functools.lru_cache(maxsize=None)
def _synthetic_case(n, max_distance):
    q = synthetic() if n is None else synthetic(n=n, seed=n, hub=n // 3)
    return q, reference(*q, max_distance)


@pytest.mark.parametrize("max_distance", [math.inf, EPS, 0.0], ids=["all", "eps", "zero"])
@pytest.mark.parametrize("workspace", [1 << 30, 1 << 16], ids=["whole", "chunks"])
def test_cuda_pair_kernels_bitwise_on_synthetic_vprime(max_distance, workspace):
    """Empty rows, duplicate rows, zero weights and hub rows (tables past the device's shared
    memory): the kernels' m(i, j) and d are the float32 sums in ascending t of the reference,
    bit for bit."""
    q, ref = _synthetic_case(None, max_distance)
    assert_bitwise(_pairs_cuda(q, max_distance, workspace), ref)


@pytest.mark.parametrize("max_distance", [math.inf, EPS], ids=["all", "eps"])
@pytest.mark.parametrize("workspace", [1 << 30, 1 << 12, 1], ids=["whole", "chunks", "row-per-chunk"])
def test_cuda_pair_kernels_bitwise_with_small_shared_tables(max_distance, workspace):
    """Shared-memory tables capped at 64 / 32 slots: most rows in global memory; a tiny
    workspace makes 8 warps reuse their regions over many rows, one chunk per row."""
    q, ref = _synthetic_case(301, max_distance)
    assert_bitwise(_pairs_cuda(q, max_distance, workspace, smem_slots=(64, 32)), ref)


@pytest.mark.parametrize("n", (1, 2, 19, 989))
@pytest.mark.parametrize("dup", [False, True], ids=["plain", "dups"])
@pytest.mark.parametrize("k2", [K2, 1])
def test_cuda_pair_kernels_bitwise_on_reid_vprime(n, dup, k2):
    """V' of ReID-like features (the torch backend's stages): the CUDA last stage equals the
    float32 reference bit for bit, and the torch backend's pairs within float tolerance."""
    from hilcore.backend.torch import jaccard as tj
    from hilcore.stages import jaccard as SJ

    xt, rank = _rank(n, dup, K1)
    k1 = min(K1, n)
    k2 = min(k2, k1)
    kk = min(hilcore._core.half_k(k1) + 1, k1)
    eptr, eidx = SJ.expansion(rank, SJ.reciprocal_mask(rank, k1), SJ.reciprocal_mask(rank, kk))
    vals = SJ.weights(xt, eptr, eidx)
    if k2 > 1:
        eptr, eidx, vals = SJ.query_expansion(rank, k2, eptr, eidx, vals)
    q = (eptr.numpy(), eidx.numpy().astype(np.int32), vals.numpy())
    for md in (math.inf, EPS):
        got = _pairs_cuda(q, md, 1 << 30)
        assert_bitwise(got, reference(*q, md))
        want = _scipy(*tj.jaccard(xt, rank, k1, k2, md), n)
        _assert_same_sparse(_scipy(torch.from_numpy(got["indptr"]), torch.from_numpy(got["indices"]),
                                   torch.from_numpy(got["data"]), n), want, None if md == math.inf else md)


# ---------------------------------------------------------------- public pipeline on CUDA input
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("n", (2, 19, 989))
@pytest.mark.parametrize("max_distance", [None, EPS], ids=["all", "eps"])
def test_pipeline_on_cuda_matches_torch_and_native(backend, n, max_distance):
    x = _data(n, True)
    xc = torch.from_numpy(x).cuda()
    got = hilcore.jaccard_distance(xc, K1, K2, max_distance=max_distance, backend=backend)
    assert got.layout == torch.sparse_csr and got.device == xc.device and got.dtype == torch.float32
    assert got.crow_indices().dtype == torch.int64
    on_torch = hilcore.jaccard_distance(xc, K1, K2, max_distance=max_distance, backend="torch")
    _assert_same_sparse(_torch_csr_to_scipy(got), _torch_csr_to_scipy(on_torch), max_distance)
    native = hilcore.jaccard_distance(x, K1, K2, max_distance=max_distance, backend="native")
    _assert_same_sparse(_torch_csr_to_scipy(got), native, max_distance)


def test_pipeline_cupy_in_cupyx_out():
    cupy = pytest.importorskip("cupy")
    import cupyx.scipy.sparse as csp

    x = _data(99, False)
    got = hilcore.jaccard_distance(cupy.asarray(x), K1, K2, max_distance=EPS, backend="cuda")
    assert isinstance(got, csp.csr_matrix)
    want = hilcore.jaccard_distance(x, K1, K2, max_distance=EPS, backend="native")
    _assert_same_sparse(got.get().tocsr(), want, EPS)
    labels = hilcore.dbscan(got, eps=EPS, min_samples=4, backend="cuda")
    assert isinstance(labels, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(labels), hilcore.dbscan(want, eps=EPS, min_samples=4,
                                                                       backend="native"))


# ---------------------------------------------------------------- DBSCAN
def _sklearn(dense, eps, min_samples):
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dense)


def _random_sparse(n, density, seed, zeros=0.0):
    """Symmetric float32 CSR with distances in [0, 1), some stored zeros, the diagonal stored as 0."""
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=density, random_state=rng, format="coo", dtype=np.float32)
    up = a.row < a.col
    r, c, v = a.row[up], a.col[up], a.data[up].copy()
    v[rng.random(v.size) < zeros] = 0.0
    d = np.arange(n)
    m = sp.coo_matrix((np.concatenate([v, v, np.zeros(n, np.float32)]),
                       (np.concatenate([r, c, d]), np.concatenate([c, r, d]))), shape=(n, n)).tocsr()
    m.sort_indices()
    assert m.nnz == 2 * v.size + n  # explicit zeros kept
    return m


def _torch_cuda_csr(m):
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                   torch.from_numpy(m.indices.astype(np.int64)),
                                   torch.from_numpy(m.data), size=m.shape).cuda()


@pytest.mark.parametrize("n", (1, 2, 19, 989, 5000))
@pytest.mark.parametrize("min_samples", (1, 2, 4, 10))
@pytest.mark.parametrize("eps", (1e-6, 0.3, 0.6))  # sklearn needs eps > 0; tiny eps: stored zeros only
def test_dbscan_cuda_matches_sklearn_on_random_sparse(n, min_samples, eps):
    m = _random_sparse(n, min(1.0, 8.0 / n), seed=n + min_samples, zeros=0.1)
    got = hilcore.dbscan(_torch_cuda_csr(m), eps=eps, min_samples=min_samples, backend="cuda")
    assert got.is_cuda and got.dtype == torch.int64
    dense = csr_to_dense(m, fill=eps + 1.0)  # unstored: not neighbours; stored zeros: neighbours
    np.testing.assert_array_equal(got.cpu().numpy(), _sklearn(dense, eps, min_samples))


@pytest.mark.parametrize("n", (19, 989, 5000))
def test_dbscan_cuda_on_jaccard_matches_sklearn_and_native(n):
    x = torch.from_numpy(_data(n, True)).cuda()
    d = hilcore.jaccard_distance(x, K1, K2, max_distance=EPS, backend="cuda")
    got = hilcore.dbscan(d, eps=EPS, min_samples=4, backend="cuda").cpu().numpy()
    dense = csr_to_dense(_torch_csr_to_scipy(d), fill=1.0)
    np.testing.assert_array_equal(got, _sklearn(dense, EPS, 4))
    assert got.max() >= 0  # ReID-like data has clusters: the test can fail on labels, not only on -1s


def test_dbscan_cuda_threshold_is_float32_inclusive():
    e = np.float32(0.6)
    dense = np.array([[0, e, 1], [e, 0, np.nextafter(e, np.float32(1))], [1, 1, 0]], dtype=np.float32)
    got = hilcore.dbscan(torch.from_numpy(dense).cuda(), eps=0.6, min_samples=2, backend="cuda")
    np.testing.assert_array_equal(got.cpu().numpy(), _sklearn(dense, 0.6, 2))
    np.testing.assert_array_equal(got.cpu().numpy(), [0, 0, -1])


def test_dbscan_cuda_border_takes_smallest_label():
    # chain: cores {0,1} and {3,4}; 2 is a border of both; 5 is noise
    dense = np.full((6, 6), 1.0, dtype=np.float32)
    np.fill_diagonal(dense, 0)
    for i, j in [(0, 1), (3, 4), (1, 2), (2, 3)]:
        dense[i, j] = dense[j, i] = 0.1
    dense[0, 4] = dense[4, 0] = 0.1  # makes 0,1,3,4 core with min_samples 3
    got = hilcore.dbscan(torch.from_numpy(dense).cuda(), eps=0.5, min_samples=3, backend="cuda")
    np.testing.assert_array_equal(got.cpu().numpy(), _sklearn(dense, 0.5, 3))


def test_dbscan_cuda_rejects_bad_indices():
    from hilcore.backend.cuda import dbscan as m

    indptr = torch.tensor([0, 1, 2], device="cuda")
    with pytest.raises(ValueError, match="indices"):
        m.dbscan(indptr, torch.tensor([0, 2], device="cuda"), torch.zeros(2, device="cuda"), 2, 0.5, 2)
    with pytest.raises(ValueError, match="indptr"):
        m.dbscan(indptr[:2], torch.tensor([0, 1], device="cuda"), torch.zeros(2, device="cuda"), 2, 0.5, 2)


@pytest.mark.skipif(importlib.util.find_spec("cuml") is None, reason="cuml is not installed")
@pytest.mark.parametrize("n", (19, 989))
def test_dbscan_cuml_matches_sklearn(n):
    m = _random_sparse(n, min(1.0, 8.0 / n), seed=n, zeros=0.1)
    got = hilcore.dbscan(_torch_cuda_csr(m), eps=0.6, min_samples=4, backend="cuml")
    dense = csr_to_dense(m, fill=2.0)
    np.testing.assert_array_equal(got.cpu().numpy(), _sklearn(dense, 0.6, 4))


def test_cuml_backend_rejects_cpu_input():
    from hilcore.backend.cuml import dbscan as cuml_dbscan

    with pytest.raises(ValueError, match="CUDA"):
        cuml_dbscan.dbscan(torch.tensor([0, 1]), torch.tensor([0]), torch.zeros(1), 1, 0.5, 1)


# ---------------------------------------------------------------- memcheck
@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer is not on PATH")
def test_compute_sanitizer_memcheck():
    code = textwrap.dedent("""
        import numpy as np, torch, hilcore
        rng = np.random.default_rng(0)
        x = rng.standard_normal((300, 16)).astype(np.float32)
        x[10:20] = x[0]  # duplicates
        xc = torch.from_numpy(x).cuda()
        for md in (None, 0.6):
            for k2 in (1, 6):
                d = hilcore.jaccard_distance(xc, 20, k2, max_distance=md, backend="cuda")
                labels = hilcore.dbscan(d, eps=0.6, min_samples=4, backend="cuda")
        from hilcore.backend.cuda.jaccard import jaccard
        from hilcore.jaccard import jaccard_rows
        xt = torch.nn.functional.normalize(xc, dim=1)
        idx, _ = hilcore.knn(xt, 20, backend="torch")
        jaccard(xt, idx, 20, 6, 0.6, workspace_bytes=1)
        hilcore.jaccard_distance(xc[:1], 20, 6, backend="cuda")
        torch.cuda.synchronize()
        print("ok", int(labels.max()))
    """)
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    r = subprocess.run(["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "1", sys.executable, "-c",
                        code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "ok" in r.stdout
