"""The CUDA Jaccard stage's per-row hash tables, tested on the host (no GPU needed).

kernels/cuda/jaccard_table.h holds the table code of the kernels jaccard_partners
and jaccard_rows (sizing, probing, accumulation, the kept test). Here it is built
into a host program (tests/native/jaccard_table_test.cpp) with g++ and, when
present, nvcc (its __host__ __device__ path), run on V' matrices, and compared
bit for bit with a float32 reference written from the formulas (m summed in
ascending t, docs/design.md), and within float tolerance with the torch backend
and the dense reference hilcore/ref/jaccard.py. The Python side of the CUDA stage
(hilcore.backend.cuda.jaccard.pairs: the shared/global split, the per-warp regions,
the chunked staging, the per-row sort) runs against a CPU model of the kernels'
contract (launchers.h; tests/cuda_model.py). The CUDA kernels themselves run only in tests/test_cuda.py,
on a GPU.
"""
import functools
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import hilcore
from hilcore.backend.cuda import jaccard as cj
from hilcore.ref import jaccard as ref_jaccard
from hilcore.backend.torch import jaccard as tj
from hilcore.stages import jaccard as SJ
from cuda_model import KernelModel as _ModelKernels
from jaccard_rows_ref import assert_bitwise, capacity, reference, synthetic
from testing import assert_jaccard_matches, csr_to_dense, reid_features, stored_mask, with_duplicates

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "tests" / "native" / "jaccard_table_test.cpp"
LAUNCHERS = ROOT / "kernels" / "cuda" / "launchers.h"


def _smem_slots():
    import re
    text = LAUNCHERS.read_text()
    return tuple(int(re.search(rf"k{name}SmemSlots = (\d+)", text)[1]) for name in ("JaccardPartners", "JaccardRows"))


SMEM_PARTNERS, SMEM_ROWS = _smem_slots()


def _compile(compiler, out):
    cmd = [compiler, "-O2", "-std=c++17", "-I", str(ROOT / "kernels"), str(SRC), "-o", str(out)]
    cmd[1:1] = ["-x", "cu"] if Path(compiler).name == "nvcc" else ["-Wall", "-Wextra", "-Werror"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def host_prog(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    return _compile(cxx, tmp_path_factory.mktemp("jtable") / "jt_gxx")


# ---------------------------------------------------------------- running the host program
def _run(prog, tmp_path, q_ptr, q_idx, q_val, max_distance, seed=1, undersize=False):
    n = q_ptr.size - 1
    src, dst = tmp_path / f"in_{seed}.bin", tmp_path / f"out_{seed}.bin"
    with open(src, "wb") as f:
        f.write(np.array([n, q_idx.size], np.int64).tobytes())
        f.write(np.float32(max_distance).tobytes())
        f.write(q_ptr.astype(np.int64).tobytes())
        f.write(q_idx.astype(np.int32).tobytes())
        f.write(q_val.astype(np.float32).tobytes())
    args = [str(prog), str(src), str(dst), str(seed)] + (["undersize"] if undersize else [])
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    buf = dst.read_bytes()
    pos = 0

    def take(dtype, count):
        nonlocal pos
        a = np.frombuffer(buf, dtype=dtype, count=count, offset=pos)
        pos += a.nbytes
        return a

    n2, nnz = take(np.int64, 2)
    assert n2 == n
    out = dict(indptr=take(np.int64, n + 1), indices=take(np.int32, nnz), data=take(np.float32, nnz),
               bound=take(np.int64, n), partners=take(np.int64, n), slots=take(np.int64, n),
               status=take(np.int64, n), shared_rows=take(np.int64, 2), layout=int(take(np.uint64, 1)[0]))
    assert pos == len(buf)
    return out


# ---------------------------------------------------------------- inputs
def _vprime(n, k1, k2, dup):
    """V' of ReID-like features through the torch backend's stages (CSR: numpy)."""
    x = reid_features(n, seed=n)
    if dup:
        x = with_duplicates(x, seed=n)
    xt = hilcore._arrays.features(x, "x")[0]
    k1 = min(k1, n)
    k2 = min(k2, k1)
    rank, _ = hilcore.knn(xt, k1, backend="torch")
    kk = min(hilcore._core.half_k(k1) + 1, k1)
    eptr, eidx = SJ.expansion(rank, SJ.reciprocal_mask(rank, k1), SJ.reciprocal_mask(rank, kk))
    vals = SJ.weights(xt, eptr, eidx)
    if k2 > 1:
        eptr, eidx, vals = SJ.query_expansion(rank, k2, eptr, eidx, vals)
    return x, xt, rank, k1, k2, eptr.numpy(), eidx.numpy().astype(np.int32), vals.numpy()


@functools.lru_cache(maxsize=None)
def _synthetic_ref(max_distance):
    q = synthetic()
    return q, reference(*q, max_distance)


# ---------------------------------------------------------------- tests of the header on the host
@pytest.mark.parametrize("max_distance", [math.inf, 0.6, 0.0], ids=["all", "eps", "zero"])
def test_tables_bitwise_on_synthetic_rows(host_prog, tmp_path, max_distance):
    (q_ptr, q_idx, q_val), ref = _synthetic_ref(max_distance)
    n = q_ptr.size - 1
    out = _run(host_prog, tmp_path, q_ptr, q_idx, q_val, max_distance)
    assert not out["status"].any()
    assert_bitwise(out, ref)
    partners = np.array([r[2] for r in ref])
    summed = np.array([r[3] for r in ref])
    np.testing.assert_array_equal(out["partners"], partners)  # exact distinct partners
    np.testing.assert_array_equal(out["bound"], [capacity(min(s, n)) for s in summed])
    np.testing.assert_array_equal(out["slots"], [capacity(p) for p in partners])
    big = partners > 16  # tables past the 32-slot minimum: load factor in (1/4, 1/2]
    load = partners[big] / out["slots"][big]
    assert load.size and load.min() > 0.25 and load.max() <= 0.5
    assert (partners == 0).any() and (np.diff(q_ptr) == 0).any()
    # both kinds of table in both passes: shared-memory sized rows and rows past it (hub rows)
    assert 0 < out["shared_rows"][0] < n and 0 < out["shared_rows"][1] < n
    assert (out["slots"] > SMEM_ROWS).sum() >= 500 and (out["bound"] > SMEM_PARTNERS).sum() >= 500


def test_tables_do_not_depend_on_lane_order(host_prog, tmp_path):
    (q_ptr, q_idx, q_val), _ = _synthetic_ref(0.6)
    runs = [_run(host_prog, tmp_path, q_ptr, q_idx, q_val, 0.6, seed=s) for s in (1, 2, 3, 4)]
    for r in runs[1:]:
        for key in ("indptr", "indices", "partners", "slots"):
            np.testing.assert_array_equal(r[key], runs[0][key])
        assert r["data"].tobytes() == runs[0]["data"].tobytes()
    assert len({r["layout"] for r in runs}) > 1  # the order did move keys between slots


def test_undersized_tables_report_overflow_instead_of_looping(host_prog, tmp_path):
    (q_ptr, q_idx, q_val), ref = _synthetic_ref(math.inf)
    out = _run(host_prog, tmp_path, q_ptr, q_idx, q_val, math.inf, undersize=True)  # 32 slots for every row
    partners = np.array([r[2] for r in ref])
    np.testing.assert_array_equal(out["status"] != 0, partners > 32)
    assert (partners > 32).any() and (partners == 32).sum() + (partners < 32).sum() > 0
    ok = np.flatnonzero(out["status"] == 0)
    for i in ok:  # rows that fit, up to a full table, are still exact
        lo, hi = out["indptr"][i], out["indptr"][i + 1]
        np.testing.assert_array_equal(out["indices"][lo:hi], ref[i][0])
        assert out["data"][lo:hi].tobytes() == ref[i][1].tobytes()


@pytest.mark.parametrize("n", [1, 2, 19, 257])
@pytest.mark.parametrize("k2", [6, 1])
@pytest.mark.parametrize("dup", [False, True], ids=["plain", "dups"])
def test_tables_on_reid_vprime_match_reference_and_torch(host_prog, tmp_path, n, k2, dup):
    x, xt, rank, k1, k2, q_ptr, q_idx, q_val = _vprime(n, 20, k2, dup)
    for md in (math.inf, 0.6):
        out = _run(host_prog, tmp_path, q_ptr, q_idx, q_val, md)
        assert not out["status"].any()
        assert_bitwise(out, reference(q_ptr, q_idx, q_val, md))
        got = _scipy(out, n)
        # the whole pipeline's value, within float tolerance: torch backend, dense reference
        t_ptr, t_idx, t_val = tj.jaccard(xt, rank, k1, k2, md)
        want = _scipy(dict(indptr=t_ptr.numpy(), indices=t_idx.numpy(), data=t_val.numpy()), n)
        _assert_close_csr(got, want, md)
        dense = ref_jaccard.jaccard_distance(x, k1, k2, rank=rank.numpy())
        assert_jaccard_matches(got, dense, None if md == math.inf else md, atol=1e-5)


def _scipy(out, n):
    import scipy.sparse as sp
    return sp.csr_matrix((out["data"], out["indices"], out["indptr"]), shape=(n, n))


def _assert_close_csr(a, b, md, atol=1e-5):
    """Same stored pairs up to pairs within atol of md, same values within atol."""
    ma, mb = stored_mask(a), stored_mask(b)
    da, db = csr_to_dense(a), csr_to_dense(b)
    differ = ma != mb
    assert np.all(np.abs(np.where(ma, da, db)[differ] - md) < atol), int(differ.sum())
    np.testing.assert_allclose(da[ma & mb], db[ma & mb], rtol=0, atol=atol)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_header_compiled_by_nvcc_gives_the_same_bits(host_prog, tmp_path):
    prog = _compile(shutil.which("nvcc"), tmp_path / "jt_nvcc")
    (q_ptr, q_idx, q_val), ref = _synthetic_ref(0.6)
    a = _run(host_prog, tmp_path, q_ptr, q_idx, q_val, 0.6)
    b = _run(prog, tmp_path, q_ptr, q_idx, q_val, 0.6)
    assert_bitwise(b, ref)
    for key in ("indptr", "indices", "data", "bound", "partners", "slots", "status", "shared_rows"):
        assert a[key].tobytes() == b[key].tobytes(), key


# ---------------------------------------------------------------- the Python side, on a model of the kernels
def _pairs_on_model(q, max_distance, workspace, model):
    q_ptr, q_idx, q_val = (torch.from_numpy(np.ascontiguousarray(a)) for a in q)
    n = q_ptr.numel() - 1
    p_ptr, p_row, p_val = cj._postings(q_ptr, q_idx, q_val, n)
    return cj.pairs(model, q_ptr, q_idx, q_val, p_ptr, p_row, p_val, n, max_distance, workspace)


@pytest.mark.parametrize("workspace", [1 << 30, 4096, 1], ids=["whole", "chunks", "row-per-chunk"])
def test_pairs_orchestration_on_a_kernel_model(workspace):
    q = synthetic(n=300, seed=3, hub=120)
    model = _ModelKernels()
    indptr, indices, data = _pairs_on_model(q, 0.6, workspace, model)
    ref = reference(*q, 0.6)
    want_ptr = np.concatenate([[0], np.cumsum([r[0].size for r in ref])])
    np.testing.assert_array_equal(indptr.numpy(), want_ptr)
    np.testing.assert_array_equal(indices.numpy(), np.concatenate([r[0] for r in ref]))
    assert data.numpy().tobytes() == np.concatenate([r[1] for r in ref]).tobytes()
    assert indices.dtype == torch.int64 and data.dtype == torch.float32 and indptr.dtype == torch.int64
    kinds = {(name, shared) for name, shared, _, _ in model.launches}
    assert kinds == {("partners", True), ("partners", False), ("rows", True), ("rows", False)}
    rows_launches = [x for x in model.launches if x[0] == "rows"]
    if workspace == 1:  # chunks of one row with partners (plus rows with none): many launches
        assert len(rows_launches) >= sum(r[2] > 1 for r in ref) > 100
    if workspace == 1 << 30:  # one shared-memory launch per table size that fits, one global launch
        caps = {capacity(r[2]) for r in ref}
        assert sorted(x[3] for x in rows_launches if x[1]) == sorted(c for c in caps if c <= 64)
        assert len(caps & {32, 64}) == 2
        assert sorted(x[3] for x in rows_launches if not x[1]) == sorted(c for c in caps if c > 64)
        assert len([c for c in caps if c > 64]) >= 2  # global tables of several sizes: one launch each


def test_pairs_reports_a_kernel_error():
    class Broken(_ModelKernels):
        def partners(self, *args):
            super().partners(*args)
            err = args[-1]
            err |= 2  # a table filled up (in place: the kernels' error word)
            args[-3].fill_(1 << 45)  # and its partner counts are garbage: staging them would ask for 2^45 pairs

    with pytest.raises(RuntimeError, match="overflow"):
        _pairs_on_model(synthetic(n=40, seed=1, hub=10), math.inf, 1 << 20, Broken())


def test_regions_are_warp_multiples_within_budget():
    assert cj._regions(1, 64, 8, 1 << 30) == 8
    assert cj._regions(100, 64, 8, 1 << 30) == 104
    assert cj._regions(10 ** 6, 1024, 8, 1 << 20) == 128  # 1 MiB / 8 KiB per region
    assert cj._regions(10 ** 6, 32, 4, 1 << 40) == cj._MAX_REGIONS
    assert cj._regions(10, 1 << 20, 8, 1) == 8  # at least one block of warps
    for rows, slots, budget in [(37, 256, 100_000), (5000, 4096, 1 << 24)]:
        r = cj._regions(rows, slots, 8, budget)
        assert r % 8 == 0 and (r - 8) * slots * 8 < budget
