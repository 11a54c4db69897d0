"""The native kNN's answer does not depend on the path: fp32 or int8 candidates, AVX2 or scalar row
kernels, the tile size, the thread count, the candidate count. On every path the lists are the exact
top-k under (v desc, index asc), self first, with v = dot_f32 (the fixed summation order of
knn_simd::Ops::dot_f32); the reference computes v from that definition in NumPy (hilcore.ref.knn.dot_f32,
one correctly rounded fma at a time) and sorts the whole matrix.

The data has exact duplicates (more than the candidates, so the candidates' boundary is tied) and
rows one to three float32 ulps from another (near-ties at the rounding level of the GEMM).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hilcore
from hilcore import _arrays
from hilcore._dispatch import native_module
from hilcore.ref import knn as ref

nat = native_module()
pytestmark = pytest.mark.skipif(nat is None, reason="hilcore._native is not built")
if nat is not None:
    from hilcore.backend.native import knn as knn_mod


def tie_data(n: int = 300, d: int = 40, seed: int = 0) -> np.ndarray:
    """Unit float32 rows: 31 copies of row 20, rows 81..96 row 7 nudged by 1-3 ulps in one coordinate."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[50:81] = x[20]
    for t in range(81, 97):
        x[t] = x[7]
        j = int(rng.integers(d))
        for _ in range(t % 3 + 1):
            x[t, j] = np.nextafter(x[t, j], np.float32(np.inf if t % 2 else -np.inf))
    return x


def _normalised(x: np.ndarray) -> np.ndarray:
    """The rows the library works on (its own normalisation)."""
    return _arrays.features(torch.from_numpy(x), "x")[0].numpy()


@pytest.fixture
def paths():
    yield list(nat.cpu_features()["knn_paths"])
    nat.knn_set_cpu_path("auto")


def test_reference_dot_is_the_native_dot():
    """hilcore.ref.knn.dot_f32 (from the definition) == the native dot on every path, for D with every tail."""
    rng = np.random.default_rng(1)
    for d in (1, 7, 8, 24, 37, 64, 70, 100):
        x = _normalised(rng.standard_normal((60, d)).astype(np.float32))
        want = ref.dot_f32(x, x)
        for p in nat.cpu_features()["knn_paths"]:
            nat.knn_set_cpu_path(p)
            idx, sim = knn_mod.knn(torch.from_numpy(x), 60, precision="fp32")  # k = N: every value
            got = np.empty_like(want)
            np.put_along_axis(got, idx.numpy(), sim.numpy(), axis=1)
            assert np.array_equal(got, want), (d, p)
    nat.knn_set_cpu_path("auto")


def test_fma_reference_rounds_once():
    """fma_f32 against exact rational arithmetic on values built to hit float32 midpoints."""
    from fractions import Fraction

    rng = np.random.default_rng(2)
    a = rng.standard_normal(1200).astype(np.float32)
    b = rng.standard_normal(1200).astype(np.float32)
    c = rng.standard_normal(1200).astype(np.float32)
    # float64 sums that land exactly on a float32 midpoint with a nonzero rest: c = +-2^s (1 + j 2^-23),
    # a b = +-2^s (2^-24 - 2^-70) = (1 + 2^-23) * 2^(s-24) (1 - 2^-23): the rest (+-2^-70) decides
    j = np.arange(200)
    sc = np.float32(2.0) ** (j % 9 - 4).astype(np.float32)
    sign_c = np.where(j % 2, 1, -1).astype(np.float32)
    sign_b = np.where((j // 2) % 2, 1, -1).astype(np.float32)
    c[:200] = sign_c * sc * (np.float32(1) + (j % 50).astype(np.float32) * np.float32(2.0**-23))
    a[:200] = np.float32(1 + 2.0**-23)
    b[:200] = sign_b * sc * np.float32(2.0**-24) * np.float32(1 - 2.0**-23)
    got = ref.fma_f32(a, b, c)
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    assert not np.array_equal(got[:200], naive[:200])  # double rounding would get some of them wrong
    for i in list(range(200)) + list(range(200, 1200, 7)):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        r = np.float32(float(exact))  # nearest double first ...
        lo = np.nextafter(r, np.float32(-np.inf))
        hi = np.nextafter(r, np.float32(np.inf))
        best = min((abs(Fraction(float(v)) - exact), int(np.float32(v).view(np.int32)) & 1, v) for v in (lo, r, hi))
        assert got[i] == best[2], i  # ... then the nearest float32 (ties to even) by exact distance


@pytest.mark.parametrize("d,k", [(40, 9), (70, 1), (37, 16)])
def test_every_native_path_returns_the_reference(paths, d, k):
    x = tie_data(300, d, seed=d)
    xn = _normalised(x)
    want_i, want_s = ref.knn_native_values(xn, k)
    xt = torch.from_numpy(xn)
    threads = torch.get_num_threads()
    seen = []
    try:
        for p in paths:
            nat.knn_set_cpu_path(p)
            for precision in ("fp32", "int8"):
                for tile in (2048, 64, 37):
                    for extra in (None, 0, 120):  # 120: lists longer than a merge batch (32)
                        for nt in ((1, 2) if tile == 64 else (2,)):
                            torch.set_num_threads(nt)
                            st: dict = {}
                            i, s = knn_mod.knn(xt, k, precision=precision, tile=tile, extra=extra, info=st)
                            seen.append((precision, st["uncertified_rows"], st["fallback_rows"]))
                            assert np.array_equal(i.numpy(), want_i), (p, precision, tile, extra, nt)
                            assert np.array_equal(s.numpy(), want_s), (p, precision, tile, extra, nt)
    finally:
        torch.set_num_threads(threads)
    # the certificates failed for some rows (ties), so the exact completions ran on both paths
    # (k = 1 in self-search: every list is the row itself, certified)
    assert k == 1 or any(pr == "fp32" and u > 0 for pr, u, _ in seen)
    assert k == 1 or any(pr == "int8" and u > 0 for pr, u, _ in seen)
    # and the public call (default backend) is the same answer
    hi, hs = hilcore.knn(x, k)
    assert np.array_equal(hi, want_i) and np.array_equal(hs, want_s)


def test_int8_overflow_rows_take_the_exact_completion(monkeypatch):
    """Rows that pass the int8 refine cap go to the fp32 path's exact completion: same bits."""
    x = tie_data(300, 40, seed=5)
    xn = _normalised(x)
    want = ref.knn_native_values(xn, 9)
    real = nat.knn_refine_i8

    def capped(*args):  # a cap of one rescored column: every uncertified row overflows
        args = list(args)
        args[-1] = 1
        return real(*args)

    monkeypatch.setattr(knn_mod, "native_module", lambda: _Proxy(nat, knn_refine_i8=capped))
    st: dict = {}
    i, s = knn_mod.knn(torch.from_numpy(xn), 9, precision="int8", extra=26, info=st)  # few: rows uncertified
    assert st["fallback_rows"] > 0
    assert np.array_equal(i.numpy(), want[0]) and np.array_equal(s.numpy(), want[1])


class _Proxy:
    def __init__(self, mod, **over):
        self._mod, self._over = mod, over

    def __getattr__(self, name):
        return self._over.get(name) or getattr(self._mod, name)


def test_database_search_and_gathered_rows_with_own_columns():
    x = tie_data(200, 24, seed=3)
    xn = _normalised(x)
    q, db = torch.from_numpy(xn[:90]), torch.from_numpy(xn[40:])
    # database search (no self)
    want = ref.knn_native_values(xn[:90], 7, xn[40:])
    for precision in ("fp32", "int8"):
        i, s = knn_mod.knn(q, 7, db, precision=precision, tile=33)
        assert np.array_equal(i.numpy(), want[0]) and np.array_equal(s.numpy(), want[1]), precision
    # gathered rows whose own column is inside the database (rows 40..89) or not (0..39)
    own = torch.arange(90) - 40
    want = ref.knn_native_values(xn[:90], 7, xn[40:], self_ids=own.numpy())
    for tile in (2048, 16):
        st: dict = {}
        i, s = knn_mod.exact_rows(q, 7, db, own, tile=tile, info=st)
        assert np.array_equal(i.numpy(), want[0]) and np.array_equal(s.numpy(), want[1]), tile
        assert torch.equal(i[40:, 0], torch.arange(50))
    # k = 1 with and without the own column
    i, s = knn_mod.exact_rows(q, 1, db, own)
    w1 = ref.knn_native_values(xn[:90], 1, xn[40:], self_ids=own.numpy())
    assert np.array_equal(i.numpy(), w1[0]) and np.array_equal(s.numpy(), w1[1])
    e_i, e_s = knn_mod.exact_rows(q[:0], 3, db)
    assert e_i.shape == (0, 3) and e_s.shape == (0, 3)


def test_fp32_bound_covers_the_gemm_error():
    """B_i >= |dot_f32 - GEMM| on every pair (and is small: about 2 D 2^-24)."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy(_normalised(rng.standard_normal((150, 300)).astype(np.float32)))
    b = knn_mod.fp32_bounds(x, x)
    g = torch.mm(x, x.t()).double()
    v = torch.from_numpy(ref.dot_f32(x.numpy(), x.numpy())).double()
    assert bool(((v - g).abs() <= torch.from_numpy(b).double().unsqueeze(1)).all())
    assert float(b.max()) < 4 * 300 * 2.0**-24


def test_rescore_rejects_bad_self_ids():
    x = np.ascontiguousarray(tie_data(100, 8)[:20])
    ci = np.tile(np.arange(5, dtype=np.int64), (20, 1))
    cs = np.zeros((20, 5), np.float32)
    out_i, out_s, cert = np.empty((20, 3), np.int64), np.empty((20, 3), np.float32), np.empty(20, np.uint8)
    with pytest.raises(ValueError, match="self_ids"):
        nat.knn_rescore(x, x, ci, cs, np.zeros(20, np.float32), True, out_i, out_s, cert, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="xq"):
        nat.knn_refine_f32(np.zeros((4, 20), np.float32), 0, np.zeros(4, np.int64), np.zeros(4, np.float32),
                           x[:3], x, out_s[:4], out_i[:4], np.zeros(4, np.int64))


@pytest.mark.parametrize("scale", [1.0, 2.0**-70, 2.0**-90])
def test_rows_with_tiny_norms_keep_a_sound_bound(scale):
    """Rows handed to the native backend as they are (``exact_rows``, the fp32 path) with entries so small
    that their float32 squares underflow: the norm bounds come from float64 squares, so the certificate
    still covers the GEMM error and the lists are the exact top-k under dot_f32."""
    xn = _normalised(tie_data(260, 64, seed=5))
    q = np.ascontiguousarray((xn[:40] * np.float32(scale)).astype(np.float32))
    db = np.ascontiguousarray(xn[20:])
    want = ref.knn_native_values(q, 9, db)
    for precision in ("fp32", "int8"):
        i, s = knn_mod.knn(torch.from_numpy(q), 9, torch.from_numpy(db), precision=precision, tile=37)
        assert np.array_equal(i.numpy(), want[0]) and np.array_equal(s.numpy(), want[1]), precision
    b = knn_mod.fp32_bounds(torch.from_numpy(q), torch.from_numpy(db))
    g = torch.mm(torch.from_numpy(q), torch.from_numpy(db).t()).double()
    v = torch.from_numpy(ref.dot_f32(q, db)).double()
    assert bool(((v - g).abs() <= torch.from_numpy(b).double().unsqueeze(1)).all())


def _merge_reference(S: np.ndarray, kc: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the full approximate matrix (self-search, unit scales): the row itself first, then the
    kc - 1 best other columns by (value desc, index asc)."""
    n = S.shape[0]
    sim = np.empty((n, kc), np.float32)
    idx = np.empty((n, kc), np.int64)
    for i in range(n):
        others = [(-float(S[i, j]), j) for j in range(n) if j != i]
        others.sort()
        best = [(-float(S[i, i]), i)] + others[:kc - 1]
        sim[i] = [-v for v, _ in best]
        idx[i] = [j for _, j in best]
    return sim, idx


@pytest.mark.parametrize("kc", [3, 31, 33, 90])
def test_int8_tile_merges_keep_the_best_candidates(paths, kc):
    """knn_topk_merge_i8 over a self-search sweep (tiles on and above the diagonal, off-diagonal tiles merged
    into their rows and their columns) leaves each row's kc best under (value desc, index asc), self first:
    values drawn from a few integers (ties everywhere), lists longer and shorter than a merge batch."""
    rng = np.random.default_rng(kc)
    n, tile = 157, 40
    full = rng.integers(-6, 7, size=(n, n)).astype(np.int32)
    full = np.triu(full) + np.triu(full, 1).T  # symmetric, as a self-search GEMM
    want_s, want_i = _merge_reference(full, kc)
    ones = np.ones(n, np.float32)
    for p in paths:
        nat.knn_set_cpu_path(p)
        sim = np.full((n, kc), -np.inf, np.float32)
        idx = np.full((n, kc), -1, np.int64)
        for i0 in range(0, n, tile):
            for j0 in range(i0, n, tile):
                s = np.ascontiguousarray(full[i0:i0 + tile, j0:j0 + tile])
                nat.knn_topk_merge_i8(s, i0, j0, ones, ones, sim, idx, True, False)
                if j0 != i0:
                    nat.knn_topk_merge_i8(s, i0, j0, ones, ones, sim, idx, True, True)
        assert np.array_equal(idx, want_i), p
        assert np.array_equal(sim, want_s), p


def test_choose_extra_follows_the_data():
    """The int8 pass's candidate count: the floor (2k + 8) when each row's k-th value stands clear of the
    other columns (clusters of k images far apart), more in a structureless crowd (many columns within the
    bound of the k-th value), never more than max_extra; and the answer is the fp32 path's either way."""
    k = 10
    rng = np.random.default_rng(0)
    d = 256
    centres = rng.standard_normal((500, d))
    apart = np.repeat(centres, k, axis=0) + 0.05 * rng.standard_normal((5000, d))  # k images a cluster
    common = rng.standard_normal(d)
    crowd = 1.5 * common / np.linalg.norm(common) * np.sqrt(d) + rng.standard_normal((5000, d))  # one blob
    picks = {}
    for name, x in (("big", apart), ("crowd", crowd)):
        xn = _normalised(np.ascontiguousarray(x, dtype=np.float32))
        t = torch.from_numpy(xn)
        qx, sx, nx, px, ex = knn_mod._quantize(nat, t)
        bound = torch.from_numpy(knn_mod.row_bounds(d, nx.numpy(), px.numpy(), ex.numpy(), nx.numpy(),
                                                    px.numpy(), ex.numpy()))
        picks[name] = knn_mod.choose_extra(t, t, qx, sx, qx.t().contiguous(), sx, bound, k, True, 2048)
        assert knn_mod.default_extra(k, 5000) <= picks[name] <= knn_mod.max_extra(k, 5000)
        st: dict = {}
        i, s = knn_mod.knn(t, k, precision="int8", info=st)
        assert st["candidates"] == k + picks[name]
        fi, fs = knn_mod.knn(t, k, precision="fp32")  # the fp32 path (checked against the reference above)
        assert np.array_equal(i.numpy(), fi.numpy()) and np.array_equal(s.numpy(), fs.numpy())
    assert picks["big"] == knn_mod.default_extra(k, 5000)
    assert picks["crowd"] > knn_mod.default_extra(k, 5000)
    # a memory cap: a long list never passes 1 GiB of candidates
    assert knn_mod.max_extra(30, 10**7) == knn_mod.default_extra(30, 10**7)
    assert 10**5 * (30 + knn_mod.max_extra(30, 10**5)) * 12 <= 1 << 30
