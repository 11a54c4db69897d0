"""hilcore.brst / hilcore.bidirectional_match against the per-sample loop references."""
import importlib

import numpy as np
import pytest
import torch

import hilcore
from hilcore.ref.brst import bidirectional_match_ref, brst_ref

brst_mod = importlib.import_module("hilcore.brst")

BACKENDS = list(hilcore.capabilities("cpu")["brst"])
INTERPRETED = ("triton",)


def exact_rows(n, d=16, *, seed=0):
    """Rows with four entries of +-0.5: unit norm, every dot product (and so every tie) exact."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def two_modalities(c_rgb=7, c_ir=6, n_rgb=150, n_ir=120, d=12, *, seed=0, noise=0.9):
    """RGB and IR samples of shared identities (IR ids permuted), some noise labels."""
    rng = np.random.default_rng(seed)
    ident = rng.standard_normal((max(c_rgb, c_ir), d))
    perm = rng.permutation(c_ir)
    lab_r = np.concatenate([np.arange(c_rgb), rng.integers(-1, c_rgb, n_rgb - c_rgb)])
    lab_i = np.concatenate([np.arange(c_ir), rng.integers(-1, c_ir, n_ir - c_ir)])
    xr = ident[np.maximum(lab_r, 0)] + noise * rng.standard_normal((n_rgb, d))
    xi = ident[perm[np.maximum(lab_i, 0)]] + noise * rng.standard_normal((n_ir, d))
    return xr.astype(np.float32), lab_r, xi.astype(np.float32), lab_i


def _sizes(backend):
    return [(1, 1), (19, 5), (99, 37)] + ([] if backend in INTERPRETED else [(989, 130)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9, 1.0])
def test_brst_matches_reference(backend, ratio):
    rng = np.random.default_rng(1)
    for n, c in _sizes(backend):
        x = rng.standard_normal((n, 20)).astype(np.float32) * 3
        p = rng.standard_normal((c, 20)).astype(np.float32)
        lab = rng.integers(-1, 4, n)
        got = brst_mod.brst(x, lab, p, ratio, backend=backend)
        assert got.dtype == np.int64 and got.shape == (n,)
        np.testing.assert_array_equal(got, brst_ref(x, lab, p, ratio))
        # exact ties: the lower prototype wins, and cos == ratio * max is accepted
        xe, pe = exact_rows(n, seed=n), exact_rows(c, seed=c + 1)
        pe = np.concatenate([pe, pe])  # every prototype twice
        got = brst_mod.brst(xe, lab, pe, ratio, backend=backend)
        np.testing.assert_array_equal(got, brst_ref(xe, lab, pe, ratio))
        assert np.all(got < c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_brst_noise_and_families(backend):
    x = exact_rows(9)
    p = exact_rows(3, seed=4)
    lab = np.array([-1] * 9)
    assert np.array_equal(brst_mod.brst(x, lab, p, backend=backend), -np.ones(9, dtype=np.int64))
    lab = np.array([0, -1, 2, 2, -1, 0, 1, 1, 7])
    got = brst_mod.brst(torch.from_numpy(x), torch.from_numpy(lab).int(), torch.from_numpy(p), 0.5, backend=backend)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    want = brst_ref(x, lab, p, 0.5)
    np.testing.assert_array_equal(got.numpy(), want)
    assert np.all(got.numpy()[lab < 0] == -1)


def test_brst_argument_errors():
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="protos_a: expected 3 columns"):
        brst_mod.brst(x, np.zeros(4, dtype=int), np.ones((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="labels_b: expected 4 labels"):
        brst_mod.brst(x, np.zeros(5, dtype=int), np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="ratio"):
        brst_mod.brst(x, np.zeros(4, dtype=int), np.ones((2, 3), dtype=np.float32), ratio=-1)
    with pytest.raises(ValueError, match="x_b"):
        brst_mod.brst(np.ones(4, dtype=np.float32), np.zeros(4, dtype=int), np.ones((2, 3), dtype=np.float32))


def _check_match(r, q, c_rgb, c_ir):
    np.testing.assert_array_equal(r.labels_rgb, q["labels_rgb"])
    np.testing.assert_array_equal(r.labels_ir, q["labels_ir"])
    assert r.pairs.dtype == np.int64 and r.pairs.shape[1] == 2
    assert r.pairs.tolist() == [list(p) for p in q["pairs"]]
    assert r.unmatched_rgb.tolist() == list(q["unmatched_rgb"])
    assert r.unmatched_ir.tolist() == list(q["unmatched_ir"])
    assert r.n_shared == q["n_shared"]
    for a in (r.labels_rgb, r.labels_ir, r.unmatched_rgb, r.unmatched_ir):
        assert a.dtype == np.int64


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["rgb_to_ir", "ir_to_rgb", "both"])
def test_bidirectional_match_matches_reference(backend, mode):
    small = backend in INTERPRETED
    for seed, (c_rgb, c_ir) in enumerate([(7, 6), (1, 4), (5, 1)]):
        n_rgb, n_ir = (60, 50) if small else (300, 240)
        xr, lr, xi, li = two_modalities(c_rgb, c_ir, n_rgb, n_ir, seed=seed)
        for ratio in (0.5, 0.95):
            r = brst_mod.bidirectional_match(xr, lr, xi, li, ratio, mode, backend=backend)
            q = bidirectional_match_ref(xr, lr, xi, li, ratio, mode)
            _check_match(r, q, c_rgb, c_ir)
            if mode == "both":
                # every cluster is matched or listed unmatched, and the shared ids are 0..n_shared-1
                assert sorted(r.pairs[:, 0].tolist() + r.unmatched_rgb.tolist()) == list(range(c_rgb))
                assert sorted(r.pairs[:, 1].tolist() + r.unmatched_ir.tolist()) == list(range(c_ir))
                used = set(r.labels_rgb.tolist()) | set(r.labels_ir.tolist())
                assert used - {-1} == set(range(r.n_shared))
                for k, (a, b) in enumerate(r.pairs):
                    assert set(r.labels_rgb[lr == a]) == {k} and set(r.labels_ir[li == b]) == {k}


def test_bidirectional_both_recovers_identity_permutation():
    xr, lr, xi, li = two_modalities(6, 6, 200, 200, seed=3, noise=0.3)
    r = brst_mod.bidirectional_match(xr, lr, xi, li, mode="both")
    gen = np.random.default_rng(3)
    gen.standard_normal((6, 12))  # the identities, drawn first by two_modalities
    perm = gen.permutation(6)
    # IR cluster b holds identity perm[b]: RGB cluster a pairs with the b where perm[b] == a
    want = [[a, int(np.flatnonzero(perm == a)[0])] for a in range(6)]
    assert r.pairs.tolist() == want and r.n_shared == 6
    assert r.unmatched_rgb.size == 0 and r.unmatched_ir.size == 0


def test_bidirectional_match_errors():
    xr, lr, xi, li = two_modalities(3, 3, 30, 30)
    with pytest.raises(ValueError, match=r"labels_ir: every sample is noise"):
        brst_mod.bidirectional_match(xr, lr, xi, -np.ones_like(li), mode="both")
    with pytest.raises(ValueError, match=r"labels_rgb: every sample is noise"):
        brst_mod.bidirectional_match(xr, -np.ones_like(lr), xi, li)
    with pytest.raises(ValueError, match="mode"):
        brst_mod.bidirectional_match(xr, lr, xi, li, mode="sideways")
    with pytest.raises(ValueError, match="x_ir: expected 12 columns"):
        brst_mod.bidirectional_match(xr, lr, xi[:, :5], li)
    with pytest.raises(ValueError, match="labels_ir: cluster ids must be contiguous"):
        brst_mod.bidirectional_match(xr, lr, xi, np.where(li == 1, 2, li))


@pytest.mark.parametrize("seed", range(4))
def test_majority_vote_matches_loop(seed):
    """The sync-free majority vote (sorted runs of (a, b) keys) against a Counter loop: most frequent b per a
    among the accepted samples, ties to the lower b, -1 when a sample of a was never accepted."""
    import collections

    from hilcore.brst import _majority

    rng = np.random.default_rng(seed)
    n, n_src, n_dst = int(rng.integers(0, 60)), int(rng.integers(1, 7)), int(rng.integers(1, 5))
    src = torch.from_numpy(rng.integers(-1, n_src, n))
    new = torch.from_numpy(rng.integers(-1, n_dst, n))
    want = []
    for a in range(n_src):
        votes = collections.Counter(int(b) for s, b in zip(src.tolist(), new.tolist()) if s == a and b >= 0)
        want.append(min(votes, key=lambda b: (-votes[b], b)) if votes else -1)
    assert _majority(src, new, n_src, n_dst).tolist() == want
