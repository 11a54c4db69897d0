"""The native k-means with bounds (the default) against its plain Lloyd loop: the same bits, fewer distances.

The bounded kernel skips a member-centre distance only when triangle-inequality bounds, widened by the
float32 rounding bound of every score, prove it cannot change an assignment or a seeding minimum
(kernels/cpu/subcluster_cpu.cpp); every distance it does evaluate is the plain loop's arithmetic. So the
outputs must be identical, ties and near-ties included, and the evaluation count must drop on clustered data.
"""
import numpy as np
import pytest
import torch

import hilcore
from hilcore.centers import seeding_uniforms
from hilcore.synthetic import reid_features

pytestmark = pytest.mark.skipif("native" not in hilcore.backends("cpu"), reason="the native extension is not built")


def _run(x, lab, k, iters, seed, n_init=10):
    from hilcore.backend.native.centers import kmeans_subcenters

    xt = torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)
    lab = torch.as_tensor(lab, dtype=torch.int64)
    c = int(lab.max()) + 1
    u = seeding_uniforms(seed, c, n_init, k)
    outs, evals = [], []
    for bounded in (True, False):
        st = {}
        outs.append(kmeans_subcenters(xt, lab, c, k, iters, u, bounded=bounded, info=st))
        evals.append(st["distance_evals"])
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    return evals


def _grid(n, d, levels, seed):
    """Rows on a small integer grid: many exact ties between distances."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, (n, d)).astype(np.float32)
    x[x.sum(1) == 0, 0] = 1  # no zero row
    return x


@pytest.mark.parametrize("d", [2, 3, 13, 64])
@pytest.mark.parametrize("k", [2, 3, 9])
def test_bounded_equals_plain_on_ties(d, k):
    x = _grid(300, d, 3, seed=d * 10 + k)
    lab = np.random.default_rng(k).integers(-1, 4, 300)
    lab[:4] = np.arange(4)
    for iters in (1, 2, 30):
        _run(x, lab, k, iters, seed=iters)


def test_bounded_equals_plain_duplicates_and_symmetry():
    e = np.eye(6, dtype=np.float32)
    sym = np.concatenate([e, -e] * 5)  # every row at the same distance from many others
    dup = np.repeat(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32), 7, axis=0)
    x = np.concatenate([sym, dup])
    lab = np.array([0] * len(sym) + [1] * len(dup))
    for k in (2, 4, 9):
        _run(x, lab, k, 30, seed=k)


@pytest.mark.parametrize("seed", [0, 1])
def test_bounded_equals_plain_and_saves_distances(seed):
    x, ids, _ = reid_features(30, 40, dim=256, seed=seed)
    lab = np.where(np.random.default_rng(seed).random(len(ids)) < 0.05, -1, ids)
    bounded, plain = _run(x, lab, 9, 30, seed=seed)
    # seeding (8 per row and run), the first Lloyd step (9) and the inertia (1) alone are 18 per row and run
    # in the plain loop, and every later step 9 more: the bounds must save a good share of that
    assert bounded <= 0.6 * plain, (bounded, plain)


def test_bounded_equals_plain_few_iterations_unconverged():
    x, ids, _ = reid_features(12, 30, dim=48, seed=3, noise=0.8)
    for iters in (1, 2, 3):
        _run(x, ids, 5, iters, seed=iters, n_init=3)
