"""The fp16 tensor-core path of the Triton kNN: candidates, rescoring, certificate, fp32 fallback.

Against a float64 brute-force kNN (the helpers of test_triton_knn) and the fp32
kernel. Runs in the Triton interpreter on CPU (sizes stay small); the block
shapes of the GPU dispatch are run too.
"""
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import hilcore.backend.triton.knn as tknn  # noqa: E402
from test_triton_knn import DEVICE, _t, brute_knn, check, duplicated, tie_rows, unit_rows  # noqa: E402

if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)


def run(x, k, y=None, precision="fp16"):
    stats: dict = {}
    idx, sim = tknn.knn(_t(x), k, None if y is None else _t(y), precision=precision, info=stats)
    return idx.cpu().numpy(), sim.cpu().numpy(), stats


@pytest.mark.parametrize("n,d,k", [(300, 64, 7), (131, 130, 11), (1, 5, 1), (2, 33, 2), (45, 17, 45)])
def test_random_rows_certified_and_exact(n, d, k):
    """Well-separated random rows: every row certified (none left to fp32), the exact top-k."""
    x = unit_rows(n, d, seed=n + d)
    idx, sim, st = run(x, k)
    assert st["precision"] == "fp16" and st["candidates"] == tknn.candidates(k)
    if n > st["candidates"]:
        assert st["uncertified_rows"] <= n // 50, st  # the bound is tight enough to certify nearly all
    check(torch.from_numpy(idx), torch.from_numpy(sim), x, k, exact=False)
    # certified or not, the same neighbours as the fp32 kernel up to float32 near-ties
    i32, s32, _ = run(x, k, precision="fp32")
    np.testing.assert_allclose(sim, s32, rtol=0, atol=2e-6)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_exact_ties_and_duplicates_go_uncertified_and_stay_exact(k):
    """Dot products that are exact multiples of 1/4; 40 copies of one row: more ties at the k-th value than KC."""
    x = duplicated(tie_rows(70, 8, seed=k), seed=k)
    x[:40] = x[7]
    idx, sim, st = run(x, k)
    if k == 1:
        assert st["uncertified_rows"] == 0  # k = 1 in self-search: the row itself, always certified
    else:
        assert st["uncertified_rows"] > 0  # a tie at the k-th value can never be certified
    check(torch.from_numpy(idx), torch.from_numpy(sim), x, k, exact=True)
    y = duplicated(tie_rows(53, 8, seed=k + 1), seed=3)
    idx, sim, _ = run(x, k, y)
    check(torch.from_numpy(idx), torch.from_numpy(sim), x, k, y, exact=True)


def test_near_ties_force_the_fp32_pass():
    """Columns within the rounding bound of each other: the rows fall back and equal the fp32 kernel."""
    rng = np.random.default_rng(0)
    base = unit_rows(1, 48, 1)[0]
    x = base[None, :] + 1e-5 * rng.standard_normal((60, 48)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    x = np.concatenate([x, unit_rows(40, 48, 2)])
    idx, sim, st = run(x, 5)
    assert st["uncertified_rows"] >= 60
    i32, s32, _ = run(x, 5, precision="fp32")
    np.testing.assert_array_equal(idx[:60], i32[:60])  # the same fp32 kernel answered them
    np.testing.assert_array_equal(sim[:60], s32[:60])
    check(torch.from_numpy(idx), torch.from_numpy(sim), x, 5, exact=False)


def test_float16_overflow_falls_back():
    """Entries beyond the float16 range: the bound is infinite, every row is answered in fp32."""
    x = unit_rows(30, 16, 4) * np.float32(1e5)
    idx, sim, st = run(x, 3)
    assert st["uncertified_rows"] == 30
    i32, s32, _ = run(x, 3, precision="fp32")
    np.testing.assert_array_equal(idx, i32)
    np.testing.assert_array_equal(sim, s32)


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_split_column_sweep(monkeypatch, kind):
    """Few row tiles for the SM count: the sweep splits and the rescoring merges the splits."""
    monkeypatch.setattr(tknn, "INTERPRET_SMS", 8)
    monkeypatch.setattr(tknn, "_tc_blocks", lambda kc, d, interpret, major=9: (16, 16, 16, 1))
    n, m, d = 20, 150, 20
    x = unit_rows(n, d, 9) if kind == "random" else duplicated(tie_rows(n, d, 9), 9)
    y = unit_rows(m, d, 10) if kind == "random" else duplicated(tie_rows(m, d, 10), 10)
    for k in (1, 6, 20):
        idx, sim, st = run(x, k, y)
        assert st["splits"] > 1
        check(torch.from_numpy(idx), torch.from_numpy(sim), x, k, y, exact=kind == "ties")
    monkeypatch.setattr(tknn, "SYMMETRIC", False)  # the full sweep's splits (symmetric: test_triton_knn_sym.py)
    idx, sim, st = run(y, 6)  # self-search with splits: self stays first
    assert st["splits"] > 1 and not st["symmetric"]
    check(torch.from_numpy(idx), torch.from_numpy(sim), y, 6, exact=kind == "ties")


@pytest.mark.parametrize("k", [6, 30, 100, 200])
def test_gpu_block_shapes(monkeypatch, k):
    """The block shapes, warps and splits the GPU dispatch picks, run in the interpreter."""
    def gpu_branch(f, pos):  # the launcher's block function with interpret=False
        return lambda *a: f(*a[:pos], False, *a[pos + 1:])

    for name, pos in (("_tc_blocks", 2), ("_rescore_blocks", 3), ("_blocks", 2)):
        monkeypatch.setattr(tknn, name, gpu_branch(getattr(tknn, name), pos))
    monkeypatch.setattr(tknn, "INTERPRET_SMS", 132)
    n, m, d = 40, 230, 40
    kind = k % 4
    x = unit_rows(n, d, k) if kind else duplicated(tie_rows(n, d, k), k)
    y = unit_rows(m, d, k + 1) if kind else duplicated(tie_rows(m, d, k + 1), k)
    idx, sim, st = run(x, k, y)
    assert st["candidates"] == tknn.candidates(k) and st["splits"] >= 1
    check(torch.from_numpy(idx), torch.from_numpy(sim), x, k, y, exact=not kind)


def test_candidates_and_bad_precision():
    assert tknn.candidates(1) == 16 and tknn.candidates(30) == 64 and tknn.candidates(7) == 16
    for k in (1, 6, 30, 100, 200, 205):
        assert k + 8 <= tknn.candidates(k) <= tknn.MAX_KC
    assert tknn.candidates(206) > tknn.MAX_KC  # larger k: the fp32 kernel alone
    with pytest.raises(ValueError, match="precision"):
        tknn.knn(_t(unit_rows(4, 8, 0)), 1, precision="tf32")


def test_bounds_dominate_the_measured_error():
    """B_i >= |rescored - tensor-core approximation| on every pair (float64 oracle of both)."""
    x = torch.from_numpy(unit_rows(50, 96, 3))
    xh = x.half()
    sq = torch.stack([(x * x).sum(1), (xh.float() ** 2).sum(1), ((x - xh.float()) ** 2).sum(1)])
    b = tknn.bounds(96, tknn._norms_up(sq, 96), tknn._norms_up(sq, 96)).double()
    approx = xh.double() @ xh.double().T
    exact = x.double() @ x.double().T
    gap = (exact - approx).abs().max(dim=1).values
    assert torch.all(gap < b) and torch.all(b < 5e-3)


@pytest.mark.parametrize("self_search", [True, False])
def test_uncertified_rows_through_the_column_split_fp32_sweep(self_search):
    """The fallback's 2-D grid (row tiles x column ranges, then the merge kernel) on odd sizes, exact ties and
    duplicate rows: the same lists, bit for bit, as one sweep of the whole database, and the exact top-k."""
    x = duplicated(tie_rows(37, 8, seed=5), seed=5)
    x[3:9] = x[20]  # duplicates: their self entries must stay first across the split holding them
    y = x if self_search else duplicated(tie_rows(83, 8, seed=6), seed=6)
    xt, yt = _t(x), _t(y)
    rows = torch.tensor([0, 3, 4, 20, 36, 11], device=xt.device)
    for k in (1, 5, 12):
        want_i = torch.zeros((37, k), dtype=torch.int64, device=xt.device)
        want_s = torch.zeros((37, k), dtype=torch.float32, device=xt.device)
        tknn._exact(xt, yt, k, self_search, rows=rows, idx=want_i, sim=want_s, splits=1)
        for splits in (2, 3):
            idx = torch.full((37, k), -7, dtype=torch.int64, device=xt.device)
            sim = torch.zeros((37, k), dtype=torch.float32, device=xt.device)
            tknn._exact(xt, yt, k, self_search, rows=rows, idx=idx, sim=sim, splits=splits)
            assert torch.equal(idx[rows], want_i[rows]) and torch.equal(sim[rows], want_s[rows]), (k, splits)
            others = torch.ones(37, dtype=torch.bool)
            others[rows.cpu()] = False
            assert bool((idx.cpu()[others] == -7).all())  # rows not asked for are not written
        r = rows.cpu().numpy()
        ref_i, ref_s, _ = brute_knn(x, k, None if self_search else y)
        np.testing.assert_array_equal(want_i.cpu().numpy()[r], ref_i[r])
        np.testing.assert_allclose(want_s.cpu().numpy()[r], ref_s[r], rtol=0, atol=1e-5)


def test_split_choice_minimises_waves_times_tiles():
    """One program per SM: RGB (174 row tiles of 128) splits 3 ways, IR (94) 4 ways on 132 SMs; a lone row tile
    splits up to the merged-key cap."""
    assert tknn._splits(174, 22258, 128, 64, 132) == 3
    assert tknn._splits(94, 11909, 128, 64, 132) == 4
    assert tknn._splits(1, 22258, 64, 32, 132, tknn.FALLBACK_KEYS) == 87  # ceil(348 tiles / 4) column tiles
    assert tknn._splits(500, 22258, 128, 64, 132) == 1
