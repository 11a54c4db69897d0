"""hilcore.eval against the per-query reference (hilcore.ref.eval) and hand-worked cases."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import hilcore.eval as ev
from hilcore.ref import eval as ref


def _case(rng, nq, ng, n_ids, ties):
    if ties:  # few distinct values: many ties, broken by gallery index
        d = rng.integers(0, 4, (nq, ng)).astype(np.float32)
    else:
        d = rng.random((nq, ng))
    q_pids = rng.integers(0, n_ids + 2, nq)  # some query identities absent from the gallery
    g_pids = rng.integers(0, n_ids, ng)
    q_cams = rng.choice([3, 6], nq)
    g_cams = rng.choice([1, 2, 3, 4, 5, 6], ng)
    return d, q_pids, g_pids, q_cams, g_cams


def _same(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-12)
    assert got[1] == pytest.approx(want[1], abs=1e-12)
    assert got[2] == pytest.approx(want[2], abs=1e-12)


def _both(fn_fast, fn_ref, *args, **kw):
    """Both raise 'no valid query' or both return the same metrics."""
    try:
        want = fn_ref(*args, **kw)
    except ValueError:
        with pytest.raises(ValueError, match="no valid query"):
            fn_fast(*args, **kw)
        return False
    _same(fn_fast(*args, **kw), want)
    return True


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_random_against_reference(seed, ties):
    rng = np.random.default_rng(seed)
    nq, ng = int(rng.integers(1, 40)), int(rng.integers(1, 60))
    d, qp, gp, qc, gc = _case(rng, nq, ng, int(rng.integers(1, 8)), ties)
    max_rank = int(rng.integers(1, 25))  # also longer than the number of gallery identities
    _both(ev.sysu_metrics, ref.sysu_metrics, d, qp, gp, qc, gc, max_rank=max_rank)
    _both(ev.regdb_metrics, ref.regdb_metrics, d, qp, gp, max_rank=max_rank)


def test_many_queries_exercise_both_paths():
    """A larger case where most queries are valid and camera 3/2 filtering matters."""
    rng = np.random.default_rng(7)
    d, qp, gp, qc, gc = _case(rng, 120, 90, 10, ties=False)
    assert _both(ev.sysu_metrics, ref.sysu_metrics, d, qp, gp, qc, gc, max_rank=20)
    assert _both(ev.regdb_metrics, ref.regdb_metrics, d, qp, gp, max_rank=20)


def test_query_blocks(monkeypatch):
    """Splitting queries into blocks changes nothing."""
    rng = np.random.default_rng(3)
    d, qp, gp, qc, gc = _case(rng, 37, 23, 5, ties=True)
    want_s = ev.sysu_metrics(d, qp, gp, qc, gc)
    want_r = ev.regdb_metrics(d, qp, gp)
    monkeypatch.setattr(ev, "_BLOCK_ELEMS", 23 * 4)  # 4 queries per block
    _same(ev.sysu_metrics(d, qp, gp, qc, gc), want_s)
    _same(ev.regdb_metrics(d, qp, gp), want_r)
    _same(ev.sysu_metrics(d, qp, gp, qc, gc), ref.sysu_metrics(d, qp, gp, qc, gc))


def test_single_identity_gallery():
    rng = np.random.default_rng(5)
    d = rng.random((6, 9))
    gp = np.full(9, 4)
    qp = np.array([4, 4, 1, 4, 4, 2])
    qc = np.array([3, 6, 3, 3, 6, 6])
    gc = rng.choice([1, 2, 4, 5], 9)
    for got, want in ((ev.sysu_metrics(d, qp, gp, qc, gc, max_rank=5), ref.sysu_metrics(d, qp, gp, qc, gc, 5)),
                      (ev.regdb_metrics(d, qp, gp, max_rank=5), ref.regdb_metrics(d, qp, gp, 5))):
        _same(got, want)
    # one identity: every valid query finds it first among distinct identities
    cmc, _, _ = ev.sysu_metrics(d, qp, gp, qc, gc, max_rank=5)
    assert cmc.tolist() == [1.0] * 5


def test_hand_worked_sysu():
    # query: pid 7, camera 3. Gallery by distance: (5,c2) (7,c2) (5,c1) (5,c4) (7,c4) (7,c5)
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    gp = [5, 7, 5, 5, 7, 7]
    gc = [2, 2, 1, 4, 4, 5]
    # camera 2 dropped -> kept ranking pids 5, 5, 7, 7; distinct identities 5, 7 -> rank 2
    cmc, mAP, mINP = ev.sysu_metrics(d, [7], gp, [3], gc, max_rank=3)
    assert cmc.tolist() == [0.0, 1.0, 1.0]
    assert mAP == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert mINP == pytest.approx(2 / 4)
    # the same query from camera 6 keeps camera 2: ranking 5, 7, ...; the (7, c6) image would be dropped
    cmc, mAP, mINP = ev.sysu_metrics(np.hstack([[[0.0]], d]), [7], [7] + gp, [6], [6] + gc, max_rank=3)
    assert cmc.tolist() == [0.0, 1.0, 1.0]
    assert mAP == pytest.approx((1 / 2 + 2 / 5 + 3 / 6) / 3)
    assert mINP == pytest.approx(3 / 6)


def test_hand_worked_regdb_and_distinct_vs_standard_cmc():
    d = np.array([[0.1, 0.2, 0.3, 0.4]])
    gp = [5, 5, 7, 7]
    cmc, mAP, mINP = ev.regdb_metrics(d, [7], gp, max_rank=4)
    assert cmc.tolist() == [0.0, 0.0, 1.0, 1.0]  # standard CMC: two images ahead
    assert mAP == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert mINP == pytest.approx(2 / 4)
    cmc, _, _ = ev.sysu_metrics(d, [7], gp, [3], [1, 1, 1, 1], max_rank=4)
    assert cmc.tolist() == [0.0, 1.0, 1.0, 1.0]  # one distinct identity ahead


def test_ties_follow_gallery_order():
    d = np.zeros((1, 3))
    cmc, mAP, _ = ev.regdb_metrics(d, [1], [0, 1, 1], max_rank=2)
    assert cmc.tolist() == [0.0, 1.0] and mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_no_valid_query_raises():
    d = np.random.default_rng(0).random((3, 4))
    with pytest.raises(ValueError, match="no valid query"):
        ev.regdb_metrics(d, [9, 9, 9], [0, 1, 2, 3])
    # matches exist but are all removed: same camera, or camera 2 for a camera-3 query
    with pytest.raises(ValueError, match="no valid query"):
        ev.sysu_metrics(d, [1, 1, 2], [1, 1, 2, 0], [3, 3, 6], [2, 2, 6, 1])


def test_input_families_agree():
    rng = np.random.default_rng(11)
    d, qp, gp, qc, gc = _case(rng, 25, 30, 6, ties=False)
    want = ev.sysu_metrics(d, qp, gp, qc, gc)
    _same(ev.sysu_metrics(torch.from_numpy(d), torch.from_numpy(qp), torch.from_numpy(gp), torch.from_numpy(qc),
                          torch.from_numpy(gc)), want)
    _same(ev.sysu_metrics(d.tolist(), qp.tolist(), gp.tolist(), qc.tolist(), gc.tolist()), want)
    di = (d * 1000).astype(np.int64)  # integer distances are accepted
    _same(ev.regdb_metrics(di, qp.astype(np.int32), gp), ref.regdb_metrics(di, qp, gp))
    dh = d.astype(np.float16)
    _same(ev.regdb_metrics(dh, qp, gp), ref.regdb_metrics(dh.astype(np.float64), qp, gp))
    cmc, mAP, mINP = want
    assert isinstance(cmc, np.ndarray) and cmc.dtype == np.float64 and cmc.shape == (20,)
    assert isinstance(mAP, float) and isinstance(mINP, float)
    assert np.all(np.diff(cmc) >= 0) and 0 <= mINP <= mAP <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    d, qp, gp, qc, gc = _case(rng, 300, 200, 30, ties=True)
    want = ev.sysu_metrics(d, qp, gp, qc, gc)
    _same(ev.sysu_metrics(torch.from_numpy(d).cuda(), qp, gp, qc, gc), want)
    _same(ev.regdb_metrics(torch.from_numpy(d).cuda(), qp, gp), ev.regdb_metrics(d, qp, gp))


@pytest.mark.parametrize("bad, exc, match", [
    (dict(distmat=np.zeros(4)), ValueError, "distmat: expected a 2-D"),
    (dict(distmat=np.zeros((0, 4))), ValueError, "distmat: expected at least one"),
    (dict(distmat=np.full((3, 4), np.nan)), ValueError, "distmat: contains NaN"),
    (dict(distmat=np.zeros((3, 4), dtype=bool)), TypeError, "distmat: expected a numeric"),
    (dict(q_pids=[1, 2]), ValueError, "q_pids: expected 3 labels"),
    (dict(g_pids=[1, 2, 3, 4, 5]), ValueError, "g_pids: expected 4 labels"),
    (dict(q_camids=[3, 3]), ValueError, "q_camids: expected 3 labels"),
    (dict(g_camids=np.array([[1, 2, 4, 5]])), ValueError, "g_camids: expected a 1-D"),
    (dict(q_pids=np.array([1.0, 2.0, 3.0])), TypeError, "q_pids: expected an integer dtype"),
    (dict(max_rank=0), ValueError, "max_rank"),
    (dict(distmat="x"), TypeError, "distmat"),
])
def test_bad_input(bad, exc, match):
    args = dict(distmat=np.zeros((3, 4)), q_pids=[1, 2, 3], g_pids=[1, 2, 3, 4], q_camids=[3, 6, 3],
                g_camids=[1, 2, 4, 5], max_rank=20)
    args.update(bad)
    with pytest.raises(exc, match=match):
        ev.sysu_metrics(**args)
    if "camids" not in str(bad):
        del args["q_camids"], args["g_camids"]
        with pytest.raises(exc, match=match):
            ev.regdb_metrics(**args)


# ---------------------------------------------------------------------------- SYSU gallery sampling


def _gallery_pool(seed=0, n_ids=15, max_imgs=4, presence=0.7):
    rng = np.random.default_rng(seed)
    paths, pids, cams = [], [], []
    for pid in rng.choice(np.arange(1, 400), n_ids, replace=False):
        for cam in (1, 2, 4, 5):
            if rng.random() < presence:
                for k in range(int(rng.integers(1, max_imgs + 1))):
                    paths.append(f"/data/cam{cam}/{pid:04d}/{k + 1:04d}.jpg")
                    pids.append(int(pid))
                    cams.append(cam)
    return paths, np.array(pids), np.array(cams)


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_sysu_gallery_camera_rules_and_determinism(mode):
    paths, pids, cams = _gallery_pool()
    want_cams = {"all": {1, 2, 4, 5}, "indoor": {1, 2}}[mode]
    want_pairs = {(p, c) for p, c in zip(pids.tolist(), cams.tolist()) if c in want_cams}
    draws = []
    for trial in range(10):
        idx = ev.sysu_gallery(paths, pids, cams, mode=mode, trial=trial)
        assert idx.dtype == np.int64
        pairs = [(int(pids[i]), int(cams[i])) for i in idx]
        assert len(pairs) == len(set(pairs)) and set(pairs) == want_pairs  # one image per (id, camera)
        np.testing.assert_array_equal(idx, ev.sysu_gallery(paths, pids, cams, mode=mode, trial=trial))
        np.testing.assert_array_equal(idx, ref.sysu_gallery(paths, pids, cams, mode=mode, trial=trial))
        draws.append(tuple(idx.tolist()))
    assert len(set(draws)) > 1  # the trial number changes the draw


def test_sysu_gallery_ignores_input_order():
    paths, pids, cams = _gallery_pool(seed=1)
    perm = np.random.default_rng(0).permutation(len(paths))
    a = ev.sysu_gallery(paths, pids, cams, trial=4)
    b = ev.sysu_gallery([paths[i] for i in perm], pids[perm], cams[perm], trial=4)
    assert sorted(paths[i] for i in a) == sorted(paths[perm[i]] for i in b)


def test_sysu_gallery_follows_the_published_draw():
    """random.seed(trial), identities ascending, cameras 1, 2, 4, 5, random.choice over sorted files."""
    paths, pids, cams = [], [], []
    for pid in (3, 1):
        for cam in (5, 1):
            for k in (3, 1, 2):
                paths.append(f"cam{cam}/{pid:04d}/{k:04d}.jpg")
                pids.append(pid)
                cams.append(cam)
    r = random.Random(2)
    want = []
    for pid in (1, 3):
        for cam in (1, 5):
            want.append(r.choice([f"cam{cam}/{pid:04d}/{k:04d}.jpg" for k in (1, 2, 3)]))
    idx = ev.sysu_gallery(paths, np.array(pids), np.array(cams), trial=2)
    assert [paths[i] for i in idx] == want


def test_sysu_gallery_bad_input():
    paths, pids, cams = _gallery_pool()
    with pytest.raises(ValueError, match="mode"):
        ev.sysu_gallery(paths, pids, cams, mode="outdoor")
    with pytest.raises(ValueError, match="g_pids"):
        ev.sysu_gallery(paths, pids[:-1], cams)
    with pytest.raises(TypeError, match="g_camids"):
        ev.sysu_gallery(paths, pids, cams.astype(float))
    with pytest.raises(ValueError, match="trial"):
        ev.sysu_gallery(paths, pids, cams, trial=-1)
