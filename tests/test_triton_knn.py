"""The fused Triton kNN kernel against a brute-force NumPy kNN.

On a machine without a GPU the kernel runs in the Triton interpreter
(tests/conftest.py sets TRITON_INTERPRET=1), so sizes stay small.
"""
import itertools
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import hilcore  # noqa: E402
import hilcore.backend.triton.knn as tknn  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)

NS = (1, 2, 19, 67)
DS = (5, 33, 64)


def brute_knn(x: np.ndarray, k: int, y: np.ndarray | None = None):
    """Full similarity matrix in float64, rows stably sorted by (-sim, idx); self first in self-search."""
    db = x if y is None else y
    s = x.astype(np.float64) @ db.astype(np.float64).T
    key = -s.copy()
    if y is None:
        np.fill_diagonal(key, -np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1), s


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def tie_rows(n: int, d: int, seed: int) -> np.ndarray:
    """Four entries of +-0.5 per row: unit norm, every dot product a multiple of 1/4, exact in float32."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def duplicated(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = x.copy()
    if len(x) >= 2:
        dst = rng.choice(len(x), max(1, len(x) // 3), replace=False)
        x[dst] = x[rng.integers(0, len(x), len(dst))]
    return x


def check(idx, sim, x, k, y=None, *, exact: bool):
    idx = idx.cpu().numpy()
    sim = sim.cpu().numpy()
    ref_idx, ref_sim, full = brute_knn(x, k, y)
    assert idx.shape == sim.shape == (len(x), k)
    assert idx.dtype == np.int64 and sim.dtype == np.float32
    np.testing.assert_allclose(sim, ref_sim, rtol=0, atol=1e-5)
    if y is None:
        np.testing.assert_array_equal(idx[:, 0], np.arange(len(x)))
    if exact:
        np.testing.assert_array_equal(idx, ref_idx)
        return
    # random data: an index may differ only where float32 rounding can swap a near-tie
    for r, a in zip(*np.nonzero(idx != ref_idx)):
        assert abs(full[r, idx[r, a]] - ref_sim[r, a]) <= 1e-5, (r, a, idx[r, a], ref_idx[r, a])
    for r in range(len(x)):
        assert len(set(idx[r].tolist())) == k, f"row {r} repeats a neighbour"


def _cases():
    for n, d in itertools.product(NS, DS):
        for k in sorted({1, 7, n}):
            if k <= n:
                yield pytest.param(n, d, k, id=f"n{n}-d{d}-k{k}")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).to(DEVICE)


@pytest.mark.parametrize("n,d,k", _cases())
def test_self_search_random(n, d, k):
    x = unit_rows(n, d, seed=n * 100 + d)
    idx, sim = tknn.knn(_t(x), k)
    check(idx, sim, x, k, exact=False)


@pytest.mark.parametrize("n,d,k", _cases())
def test_ties_and_duplicates(n, d, k):
    x = duplicated(tie_rows(n, d, seed=n + d), seed=d)
    idx, sim = tknn.knn(_t(x), k)
    check(idx, sim, x, k, exact=True)
    m = max(k, (n + 1) // 2)  # a database of other rows (queries not in it), k <= M
    y = duplicated(tie_rows(m, d, seed=7 * n + d), seed=n)
    idx, sim = tknn.knn(_t(x), k, _t(y))
    check(idx, sim, x, k, y, exact=True)


@pytest.mark.parametrize("n,m,d,k", [(19, 67, 33, 7), (67, 19, 5, 19), (2, 67, 64, 67), (67, 1, 33, 1)])
def test_database_given(n, m, d, k):
    x, y = unit_rows(n, d, seed=1), unit_rows(m, d, seed=2)
    idx, sim = tknn.knn(_t(x), k, _t(y))
    check(idx, sim, x, k, y, exact=False)


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_small_blocks_many_tiles(monkeypatch, kind):
    """16-wide tiles: many column tiles per row, tail tiles in N, M and D, merges and skipped tiles."""
    monkeypatch.setattr(tknn, "_blocks", lambda kp, d, interpret, major=9: (16, 16, 16, 1))
    n, d = 67, 33
    x = unit_rows(n, d, 5) if kind == "random" else duplicated(tie_rows(n, d, 5), 5)
    for k in (1, 7, 20, n):
        idx, sim = tknn.knn(_t(x), k)
        check(idx, sim, x, k, exact=kind == "ties")
    # the best matches all in the first tile: later tiles beat nobody (the merge is skipped)
    y = np.concatenate([x[:16], -x[:16], -x[16:]])
    idx, sim = tknn.knn(_t(x[:16]), 3, _t(y))
    check(idx, sim, x[:16], 3, y, exact=kind == "ties")


def test_largest_k_and_fallback():
    x, y = unit_rows(5, 17, 3), unit_rows(tknn.MAX_K, 17, 4)
    idx, sim = tknn.knn(_t(x), tknn.MAX_K, _t(y))
    check(idx, sim, x, tknn.MAX_K, y, exact=False)
    # past MAX_K the torch backend answers (no kernel launch), same semantics
    yy = unit_rows(tknn.MAX_K + 3, 17, 6)
    idx, sim = tknn.knn(_t(x), tknn.MAX_K + 1, _t(yy))
    check(idx, sim, x, tknn.MAX_K + 1, yy, exact=False)


def test_bad_input_names_the_argument():
    x = _t(unit_rows(4, 8, 0))
    for k in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="k"):
            tknn.knn(x, k)
    with pytest.raises(ValueError, match="y"):
        tknn.knn(x, 1, _t(unit_rows(4, 9, 0)))
    with pytest.raises(ValueError, match="x"):
        tknn.knn(x.double(), 1)


@pytest.mark.parametrize("self_search", [True, False], ids=["self", "y"])
def test_public_api_backend_triton(self_search):
    """hilcore.knn(..., backend="triton") on NumPy input (unnormalised: the API normalises)."""
    x = 3.0 * duplicated(tie_rows(19, 33, 11), 11)
    y = None if self_search else 0.5 * tie_rows(23, 33, 12)
    idx, sim = hilcore.knn(x if DEVICE == "cpu" else _t(x), 7,
                           y=None if y is None else (y if DEVICE == "cpu" else _t(y)), backend="triton")
    idx, sim = torch.as_tensor(idx), torch.as_tensor(sim)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = None if y is None else y / np.linalg.norm(y, axis=1, keepdims=True)
    check(idx, sim, xn, 7, yn, exact=True)
