"""The symmetric candidate pass of the Triton kNN's fp16 self-search (_knn_sym_kernel + _knn_sym_merge_kernel).

Each unordered pair of row blocks is multiplied once; the tile feeds its rows' running lists and, stored
transposed, its columns' lists. Checked against the float64 brute force of test_triton_knn and against the
full sweep (SYMMETRIC off), in the Triton interpreter, with small square tiles so that sizes stay small and
still span many blocks: N not a multiple of the tile, N below one tile, an even and an odd block count,
duplicates across the diagonal tiles, k = 1 and k = N, split sweeps.
"""
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import hilcore.backend.triton.knn as tknn  # noqa: E402
from test_triton_knn import DEVICE, _t, check, duplicated, tie_rows, unit_rows  # noqa: E402

if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)


def run(x, k, y=None, precision="fp16"):
    info: dict = {}
    idx, sim = tknn.knn(_t(x), k, None if y is None else _t(y), precision=precision, info=info)
    return idx.cpu(), sim.cpu(), info


@pytest.fixture
def tiles16(monkeypatch):
    """16 x 16 tiles (the symmetric tile is the smaller side) and one SM: many blocks at small N."""
    monkeypatch.setattr(tknn, "_tc_blocks", lambda kc, d, interpret, major=9: (16, 16, 16, 1))
    monkeypatch.setattr(tknn, "INTERPRET_SMS", 1)


def _both(monkeypatch, x, k):
    """(symmetric result, full-sweep result)."""
    sym = run(x, k)
    assert sym[2]["symmetric"] is True
    monkeypatch.setattr(tknn, "SYMMETRIC", False)
    full = run(x, k)
    monkeypatch.setattr(tknn, "SYMMETRIC", True)
    assert full[2]["symmetric"] is False
    return sym, full


# n: below one tile, one tile, 1 tile + 1 row (2 blocks), 3 blocks + 5 rows (NB = 4, even), NB = 5 (odd)
@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (16, 16), (17, 1), (17, 17), (53, 4), (77, 9)])
def test_ties_and_duplicates_exact(tiles16, monkeypatch, n, k):
    """Dot products exact in float32 (multiples of 1/4) and duplicated rows: the exact ranking (ties to the lower
    index, self first), bit for bit the full sweep's answer."""
    x = duplicated(tie_rows(n, 8, seed=n + k), seed=n)
    (idx, sim, st), (fi, fs, _) = _both(monkeypatch, x, k)
    check(idx, sim, x, k, exact=True)
    assert torch.equal(idx, fi) and torch.equal(sim, fs)


@pytest.mark.parametrize("n,d,k", [(50, 24, 5), (81, 40, 12), (33, 17, 33)])
def test_random_rows(tiles16, monkeypatch, n, d, k):
    """Random rows: certified like the full sweep, the same neighbours up to float32 near-ties."""
    x = unit_rows(n, d, seed=n + d)
    (idx, sim, st), (fi, fs, fst) = _both(monkeypatch, x, k)
    check(idx, sim, x, k, exact=False)
    if n > st["candidates"]:
        assert st["uncertified_rows"] <= n // 20, st
    np.testing.assert_allclose(sim.numpy(), fs.numpy(), rtol=0, atol=2e-6)


def test_duplicates_straddle_the_diagonal_tiles(tiles16, monkeypatch):
    """Copies of rows in other blocks, on both sides of the diagonal (the row side and the stored column side of
    the same tiles), more copies than k: the copy with the lower index wins each tie."""
    x = tie_rows(70, 8, seed=5)
    for src, dsts in ((3, (20, 37, 64)), (40, (2, 15, 16, 69)), (66, (0, 31, 47))):
        x[list(dsts)] = x[src]
    for k in (1, 2, 4, 6):
        (idx, sim, st), (fi, fs, _) = _both(monkeypatch, x, k)
        check(idx, sim, x, k, exact=True)
        assert torch.equal(idx, fi) and torch.equal(sim, fs)
    # row 20 (block 1): its copies 3 (block 0, column side), 37 and 64 (row side) follow it in index order
    assert idx[20, :4].tolist() == [20, 3, 37, 64]
    assert idx[0, :4].tolist() == [0, 31, 47, 66]


@pytest.mark.slow
@pytest.mark.parametrize("kind,k", [("random", 1), ("ties", 6)])
def test_split_symmetric_sweep(tiles16, monkeypatch, kind, k):
    """More SMs than blocks: the blocks' sweeps split, the rescoring merges the splits and the column side."""
    monkeypatch.setattr(tknn, "INTERPRET_SMS", 64)
    n, d = 260, 12  # 17 blocks of 16 rows, 9 tiles each: two splits of 5 and 4 tiles
    x = unit_rows(n, d, 9) if kind == "random" else duplicated(tie_rows(n, d, 9), 9)
    idx, sim, st = run(x, k)
    assert st["symmetric"] and st["splits"] > 1
    check(idx, sim, x, k, exact=kind == "ties")


def test_gpu_tiles_in_the_interpreter(monkeypatch):
    """The GPU's tiles (128 x 128 at k = 30: two blocks for N = 130)."""
    gpu = tknn._tc_blocks
    monkeypatch.setattr(tknn, "_tc_blocks", lambda kc, d, interpret, major=9: gpu(kc, d, False, major))
    x = duplicated(tie_rows(130, 8, seed=1), seed=1)
    idx, sim, st = run(x, 30)
    assert st["symmetric"]
    check(idx, sim, x, 30, exact=True)


def test_when_symmetric(monkeypatch):
    """Only self-search, only with the flag on, only when the stored tiles fit SYM_MAX_BYTES."""
    assert tknn.symmetric(10**6, 64, 768, False) is False  # 10^6 rows: ~2 TB of stored tiles, the full sweep
    assert tknn.symmetric(22258, 64, 1536, False) is True  # SYSU-MM01 RGB: ~0.99 GB
    x = duplicated(tie_rows(40, 8, seed=2), seed=2)
    y = tie_rows(30, 8, seed=3)
    assert run(x, 3)[2]["symmetric"] is True
    _, _, st = run(x, 3, y)
    assert st["symmetric"] is False
    monkeypatch.setattr(tknn, "SYM_MAX_BYTES", 2 * 1 * 32 * 32 * 4 - 1)  # NB x (NB // 2) x BT^2 x 4, 32-row tiles
    assert not tknn.symmetric(40, 16, 8, True)
    idx, sim, st = run(x, 3)
    assert st["symmetric"] is False
    check(idx, sim, x, 3, exact=True)
    monkeypatch.setattr(tknn, "SYM_MAX_BYTES", 2 * 1 * 32 * 32 * 4)
    assert tknn.symmetric(40, 16, 8, True)


@pytest.mark.parametrize("n,k,sms", [(17, 3, 1), (53, 4, 1), (77, 9, 1), (260, 6, 64)])
def test_candidate_keys_equal_the_full_sweep(tiles16, monkeypatch, n, k, sms):
    """The candidate stage alone (no certificate or fallback to hide a lost candidate): on rows whose float16
    products are exact (so a_ij == a_ji whichever tile computed it), the symmetric pass leaves each row exactly
    the KC best keys (value desc, column asc; self on top) of the full sweep's _knn_cand_kernel."""
    import triton

    monkeypatch.setattr(tknn, "INTERPRET_SMS", sms)
    x = _t(duplicated(tie_rows(n, 8, seed=n), seed=k))
    kc = tknn.candidates(k)
    bm, bn, bk, _ = tknn._tc_blocks(kc, 8, True)
    dp = triton.cdiv(8, bk) * bk
    xh, _ = tknn._prep(x, dp, True)
    sym, splits = tknn._sym_pass(xh, kc, bm, bk, 1, sms, True)
    assert sym.shape == (n, kc) and (splits > 1) == (sms > 1)
    full = torch.empty((n, kc), dtype=torch.int64, device=x.device)
    tknn._knn_cand_kernel[(triton.cdiv(n, bm), 1)](xh, xh, full, n, n, dp, triton.cdiv(n, bn) * bn, SELF=True, KP=kc,
                                                   BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=1, num_stages=1)
    valid = -(2**63) + 2**32  # keys below are empty slots
    for r in range(n):
        got = sorted(v for v in sym[r].tolist() if v >= valid)
        want = sorted(v for v in full[r].tolist() if v >= valid)
        assert got == want, r
        assert len(got) == min(n, kc)
