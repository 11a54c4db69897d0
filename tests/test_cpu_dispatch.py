"""The portable CPU build: run-time choice of the kNN row kernels, same bits on every path.

The C++ kNN row kernels (int8 tile merges, the float32 dot products of the
rescoring) exist twice: AVX2/FMA (kernels/cpu/x86/knn_avx2.cpp, its own flags)
and portable scalar code. The library picks the AVX2 ones from CPUID; these
tests run every path this CPU can run and require the same bits from each,
and the answer of a float64 brute-force reference.
"""
from __future__ import annotations

import platform
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hilcore._dispatch import native_module

nat = native_module()
pytestmark = pytest.mark.skipif(nat is None, reason="hilcore._native is not built")
if nat is not None:
    from hilcore.backend.native import knn as knn_mod

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def paths():
    """The kNN paths this build and CPU can run; the automatic choice is restored afterwards."""
    yield list(nat.cpu_features()["knn_paths"])
    nat.knn_set_cpu_path("auto")


def _x86_avx2() -> bool:
    f = nat.cpu_features()
    return f["arch"] == "x86_64" and f["avx2"] and f["fma"]


def test_cpu_features_and_the_automatic_choice():
    f = nat.cpu_features()
    for key in ("avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avxvnni"):
        assert isinstance(f[key], bool)
    machine = platform.machine().lower()
    want_arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine, "other")
    assert f["arch"] == want_arch
    assert "scalar" in f["knn_paths"]
    if f["arch"] != "x86_64":
        assert not any(f[key] for key in ("avx2", "fma", "avx512f", "avx512vnni"))
    # the default is the fastest path the CPU runs: AVX2 exactly when CPUID reports AVX2 and FMA
    assert f["knn_path"] == ("avx2" if _x86_avx2() else "scalar") == nat.knn_cpu_path()
    assert ("avx2" in f["knn_paths"]) == _x86_avx2()


def test_int8_path_is_chosen_on_this_cpu():
    """On a CPU with AVX2 (or AVX-512 VNNI) the kNN takes the int8-candidate path with the AVX2 kernels."""
    f = nat.cpu_features()
    if not (_x86_avx2() or f["avx512vnni"]):
        pytest.skip(f"no AVX2/FMA or AVX-512 VNNI on this CPU ({f['arch']})")
    assert knn_mod.int8_matmul() is not None, "torch's int8 GEMM is missing or wrong on this machine"
    x = torch.nn.functional.normalize(torch.randn(4100, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    st = {}
    idx, sim = knn_mod.knn(x, 4, info=st)
    assert st["precision"] == "int8"
    assert nat.cpu_features()["knn_path"] == "avx2"
    exact = (x.double() @ x.double().t())
    want = torch.topk(exact, 4, dim=1).values  # self (1.0) is the largest: first either way
    np.testing.assert_allclose(sim.numpy(), want.numpy(), atol=2e-6, rtol=0)


def test_set_path_rejects_bad_names(paths):
    with pytest.raises(ValueError, match="name: expected 'auto', 'avx2' or 'scalar', got 'sse9'"):
        nat.knn_set_cpu_path("sse9")
    if "avx2" not in paths:
        with pytest.raises(ValueError, match="not available"):
            nat.knn_set_cpu_path("avx2")
    nat.knn_set_cpu_path("scalar")
    assert nat.knn_cpu_path() == "scalar"
    nat.knn_set_cpu_path("auto")
    assert nat.knn_cpu_path() == ("avx2" if _x86_avx2() else "scalar")


def _unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[1::7] = x[0]  # exact duplicates: tied similarities
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("d", [1, 5, 8, 40, 77, 96])
def test_rescore_same_bits_on_every_path_and_near_float64(paths, d):
    """Dot products over d = 1 (tail only), 8 (one 8-block), 77 (32-blocks, an 8-block and a tail) ..."""
    rng = np.random.default_rng(d)
    n, kc, k = 53, 11, 4
    x = _unit_rows(rng, n, d)
    cand = np.stack([np.concatenate([[i], rng.choice(np.delete(np.arange(n), i), kc - 1, replace=False)])
                     for i in range(n)]).astype(np.int64)
    cand_sim = np.sort(rng.random((n, kc)).astype(np.float32), axis=1)[:, ::-1].copy()
    bound = np.full(n, 1e-3, np.float32)
    outs = {}
    for p in paths:
        nat.knn_set_cpu_path(p)
        oi, os_, cert = np.empty((n, k), np.int64), np.empty((n, k), np.float32), np.empty(n, np.uint8)
        nat.knn_rescore(x, x, cand, cand_sim, bound, True, oi, os_, cert)
        outs[p] = (oi, os_, cert)
    ref = outs["scalar"]
    for p, got in outs.items():
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b, err_msg=f"path {p} differs from scalar")
    oi, os_, _ = ref
    exact = np.einsum("id,ikd->ik", x.astype(np.float64), x[oi].astype(np.float64))
    np.testing.assert_allclose(os_, exact, atol=d * 2.0**-23, rtol=0)
    assert (oi[:, 0] == np.arange(n)).all()  # self first


@pytest.mark.parametrize("columns", [False, True])
@pytest.mark.parametrize("c", [1, 16, 37, 130])
def test_int8_merge_same_bits_on_every_path(paths, columns, c):
    """Row mode (8-column compares + tail) and column mode (16-column strips + tail columns), with ties."""
    rng = np.random.default_rng(c)
    b, k, n = 29, 5, 200
    row0, col0 = (0, 40) if columns else (40, 30)  # row mode: the diagonal (self) lies inside the tile
    S = rng.integers(-50, 50, size=(b, c)).astype(np.int32)
    S[:, ::3] = S[:, :1]  # ties
    scale = (rng.random(n).astype(np.float32) * 0.01 + 0.001).astype(np.float32)
    scale[::5] = scale[0]
    outs = {}
    for p in paths:
        nat.knn_set_cpu_path(p)
        bs = np.full((n, k), -np.inf, np.float32)
        bi = np.full((n, k), -1, np.int64)
        nat.knn_topk_merge_i8(S, row0, col0, scale, scale, bs, bi, True, columns)
        outs[p] = (bs, bi)
    for p, (bs, bi) in outs.items():
        np.testing.assert_array_equal(bs, outs["scalar"][0], err_msg=p)
        np.testing.assert_array_equal(bi, outs["scalar"][1], err_msg=p)
    # a slow reference from the formula a_ij = (s_i * s_j) * S_ij (float32, this order): self first, then
    # (a desc, index asc)
    bs, bi = outs["scalar"]
    A = (scale[row0:row0 + b, None] * scale[None, col0:col0 + c]) * S.astype(np.float32)
    for g in (range(col0, col0 + c) if columns else range(row0, row0 + b)):
        vec, base = (A[:, g - col0], row0) if columns else (A[g - row0], col0)
        offers = [(float(v), base + t) for t, v in enumerate(vec)]
        mine = [o for o in offers if o[1] == g]
        want = (mine + sorted((o for o in offers if o[1] != g), key=lambda o: (-o[0], o[1])))[:k]
        got = [(float(v), int(j)) for v, j in zip(bs[g], bi[g]) if j >= 0]
        assert got == want, (g, got, want)
    untouched = np.setdiff1d(np.arange(n), np.arange(col0, col0 + c) if columns else np.arange(row0, row0 + b))
    assert (bi[untouched] == -1).all()


@pytest.mark.parametrize("cap", [1000, 3])
@pytest.mark.parametrize("c", [13, 64])
def test_int8_refine_same_bits_on_every_path_and_reference(paths, cap, c):
    """The second pass: every column with approx + B >= the k-th value, not listed, not self, is rescored."""
    rng = np.random.default_rng(c + cap)
    n, d, k = 90, 45, 4
    x = _unit_rows(rng, n, d)
    q = np.clip(np.rint(x * 127 / np.abs(x).max(1, keepdims=True)), -127, 127)
    scale = (np.abs(x).max(1) / 127).astype(np.float32)
    rows = np.array([3, 17, 40, 41, 88], np.int64)
    col0 = 20
    S = (q[rows] @ q[col0:col0 + c].T).astype(np.int32)
    bound = np.full(rows.size, 0.05, np.float32)
    # start lists: each row's self and k - 1 arbitrary columns, sorted (self first)
    start_idx = np.stack([np.concatenate([[r], rng.choice(np.delete(np.arange(n), r), k - 1, replace=False)])
                          for r in rows]).astype(np.int64)
    start_sim = np.einsum("id,ikd->ik", x[rows], x[start_idx]).astype(np.float32)
    order = np.argsort(-start_sim[:, 1:], axis=1, kind="stable") + 1
    start_idx[:, 1:] = np.take_along_axis(start_idx, order, 1)
    start_sim[:, 1:] = np.take_along_axis(start_sim, order, 1)
    outs = {}
    for p in paths:
        nat.knn_set_cpu_path(p)
        si, ss, cn = start_idx.copy(), start_sim.copy(), np.zeros(rows.size, np.int64)
        nat.knn_refine_i8(S, rows, col0, scale[rows], scale, bound, x, x, ss, si, True, cn, cap)
        outs[p] = (si, ss, cn)
    for p, got in outs.items():
        for a, b in zip(got, outs["scalar"]):
            np.testing.assert_array_equal(a, b, err_msg=p)
    si, ss, cn = outs["scalar"]
    assert (cn > 0).any() if cap > c else (cn == -1).any()
    for i, r in enumerate(rows):
        if cn[i] < 0:
            continue
        # the reference: the true top-k (float64) of {listed} U {columns of the tile} must be what the row holds,
        # up to float32 rounding of the rescored values
        pool = sorted(set(start_idx[i].tolist()) | set(range(col0, col0 + c)))
        exact = {j: float(x[r].astype(np.float64) @ x[j].astype(np.float64)) for j in pool}
        want = [r] + sorted((j for j in pool if j != r), key=lambda j: (-exact[j], j))[:k - 1]
        assert si[i, 0] == r
        np.testing.assert_allclose(ss[i], [exact[j] for j in si[i]], atol=1e-5)
        got_vals = sorted(exact[j] for j in si[i][1:])
        want_vals = sorted(exact[j] for j in want[1:])
        np.testing.assert_allclose(got_vals, want_vals, atol=1e-5)


@pytest.mark.parametrize("n,d,k", [(301, 70, 7), (257, 33, 3)])
def test_knn_int8_same_bits_on_every_path_and_exact(paths, n, d, k):
    rng = np.random.default_rng(n)
    x = _unit_rows(rng, n, d)
    res = {}
    for p in paths:
        nat.knn_set_cpu_path(p)
        st = {}
        res[p] = knn_mod.knn(torch.from_numpy(x), k, tile=64, precision="int8", extra=1, info=st)
        assert st["precision"] == "int8"
        assert st["uncertified_rows"] > 0  # the second pass (refine) ran too
    for p, (i, s) in res.items():
        assert torch.equal(i, res["scalar"][0]) and torch.equal(s, res["scalar"][1]), p
    idx, sim = res["scalar"]
    S = x.astype(np.float64) @ x.astype(np.float64).T
    np.testing.assert_allclose(sim.numpy(), np.take_along_axis(S, idx.numpy(), 1), atol=2e-6, rtol=0)
    assert (idx[:, 0].numpy() == np.arange(n)).all()
    kth = np.sort(S, axis=1)[:, ::-1][:, k - 1]  # self (the largest, 1.0) counts as rank 0
    assert (sim[:, -1].numpy() >= kth - 2e-6).all()


def test_knn_without_an_int8_gemm_takes_fp32(monkeypatch):
    """A torch without a working private int8 GEMM: the int8 path is unavailable, the answer is the fp32 one."""
    x = torch.from_numpy(_unit_rows(np.random.default_rng(3), 150, 64))
    want = knn_mod.knn(x, 5, precision="fp32")
    monkeypatch.setattr(knn_mod, "_INT8_MATMUL", [None])
    st = {}
    got = knn_mod.knn(x, 5, precision="int8", info=st)
    assert st["precision"] == "fp32"
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_int8_matmul_probe_rejects_a_wrong_or_missing_gemm(monkeypatch):
    monkeypatch.setattr(knn_mod, "_INT8_MATMUL", [])
    monkeypatch.setattr(torch, "_int_mm", lambda a, b: (a.to(torch.int32) @ b.to(torch.int32)) + 1, raising=False)
    assert knn_mod.int8_matmul() is None
    monkeypatch.setattr(knn_mod, "_INT8_MATMUL", [])
    monkeypatch.delattr(torch, "_int_mm", raising=False)
    assert knn_mod.int8_matmul() is None
    monkeypatch.undo()
    assert knn_mod.int8_matmul() is not None or not hasattr(torch, "_int_mm")


def test_x86_intrinsics_only_in_the_x86_sources():
    """Every <immintrin.h> user is under kernels/cpu/x86/ (compiled only on x86_64, with its own flags)."""
    users = []
    for path in list((ROOT / "kernels").rglob("*.c*")) + list((ROOT / "kernels").rglob("*.h")) + \
            list((ROOT / "bindings").rglob("*.c*")) + list((ROOT / "bindings").rglob("*.h")):
        text = path.read_text()
        if re.search(r"#\s*include\s*<(imm|x86|[a-z]mm)intrin\.h>", text) or re.search(r"\b_mm(256|512)?_\w+\(", text):
            users.append(path.relative_to(ROOT).as_posix())
    assert users and all(u.startswith("kernels/cpu/x86/") for u in users), users
    cmake = [line.split("#")[0] for line in (ROOT / "CMakeLists.txt").read_text().splitlines()]
    assert not [line for line in cmake if "-march" in line or "-mtune" in line]
