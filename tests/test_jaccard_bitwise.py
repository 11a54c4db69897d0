"""The native (C++/OpenMP) Jaccard stages return bitwise the torch stages' CSR given the same ranking.

Both follow the float32 orders of docs/design.md ("Summation orders"); these
tests check the orders themselves against plain loops written from that text,
the two stage backends against each other (indptr, indices and float32 data
with ``torch.equal``, at 1 and 2 threads), the op ``hilcore.jaccard_distance``
for both backends on one ranking, and that rows with identical query-expanded
weights (exact duplicates with the same neighbourhood) are exactly 0 apart.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hilcore
from hilcore import _arrays
from hilcore._core import SparseRows
from hilcore._dispatch import native_module
from hilcore.ref import jaccard as ref_jaccard
from hilcore.backend.torch import jaccard as torch_stages
from hilcore.backend.torch.knn import knn as torch_knn
from testing import csr_to_dense, jaccard_module, reid_features, stored_mask, tie_features, with_duplicates

nat = native_module()
needs_native = pytest.mark.skipif(nat is None, reason="hilcore._native is not built")


# ----------------------------------------------------------------------------- the orders themselves

def _dot_documented(a: np.ndarray, b: np.ndarray) -> np.float32:
    """One dot product, element by element in numpy float32 scalars, as docs/design.md words it."""
    lanes = [np.float32(0.0)] * torch_stages.DOT_LANES
    for t in range(len(a)):
        lanes[t % torch_stages.DOT_LANES] = np.float32(lanes[t % torch_stages.DOT_LANES] + np.float32(a[t] * b[t]))
    w = torch_stages.DOT_LANES
    while w > 1:
        w //= 2
        lanes = [np.float32(lanes[lane] + lanes[lane + w]) for lane in range(w)]
    return lanes[0]


@pytest.mark.parametrize("dim", [1, 5, 15, 16, 17, 40, 256])
def test_dot_rows_is_the_documented_order(dim):
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((9, dim)).astype(np.float32)
    b = rng.standard_normal((9, dim)).astype(np.float32)
    got = torch_stages.dot_rows(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.array([_dot_documented(a[r], b[r]) for r in range(9)], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, (a.astype(np.float64) * b).sum(1), rtol=0, atol=1e-5)


def test_exp_f32_is_within_half_an_ulp_and_saturates():
    z = torch.cat([torch.linspace(-4.1, 0.1, 200_001, dtype=torch.float32),
                   torch.tensor([0.0, -0.0, -4.0, 1e-8, -1e-30, -60.0, -87.0, 80.0], dtype=torch.float32)])
    got = torch_stages.exp_f32(z).numpy().astype(np.float64)
    true = np.exp(z.numpy().astype(np.float64))
    ulp = np.spacing(true.astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got - true) <= 0.5 * ulp * (1 + 1e-6))
    ends = torch_stages.exp_f32(torch.tensor([-200.0, -1e30, 100.0, 1e30, -105.0], dtype=torch.float32))
    assert ends.tolist() == [0.0, 0.0, math.inf, math.inf, 0.0]


@needs_native
@pytest.mark.parametrize("dim", [1, 7, 16, 31, 256, 1536])
def test_native_dot_rows_equal_torch(dim):
    rng = np.random.default_rng(dim + 1)
    a = rng.standard_normal((300, dim)).astype(np.float32)
    b = (a + 0.1 * rng.standard_normal((300, dim))).astype(np.float32)
    want = torch_stages.dot_rows(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(nat.jaccard_dot_rows(a, b), want)
    with pytest.raises(ValueError, match="b: expected the shape of a"):
        nat.jaccard_dot_rows(a, b[:, :-1].copy() if dim > 1 else b[:-1].copy())


@needs_native
def test_native_exp_equals_torch_exp_f32():
    rng = np.random.default_rng(3)
    grid = np.linspace(-4.1, 0.1, 1 << 20, dtype=np.float32)
    bits = rng.integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32).view(np.float32)
    z = np.concatenate([grid, bits[np.isfinite(bits)], np.float32([0.0, -0.0, -4.0, -200.0, 100.0, 1e30, -1e30])])
    np.testing.assert_array_equal(nat.jaccard_exp_f32(z), torch_stages.exp_f32(torch.from_numpy(z)).numpy())


# ----------------------------------------------------------------------------- native == torch, bitwise

def _unit(x: np.ndarray) -> torch.Tensor:
    return _arrays.features(x, "x")[0]  # the op's own normalisation (float32, unit rows)


def _near_ties(n: int, d: int = 24) -> np.ndarray:
    """Rows a few float32 ulps apart from each other: near-ties everywhere in the ranking and the weights."""
    rng = np.random.default_rng(n)
    base = rng.standard_normal((max(1, n // 7), d)).astype(np.float32)
    x = base[rng.integers(0, len(base), n)]
    return x * (1 + rng.integers(-3, 4, (n, 1)).astype(np.float32) * np.finfo(np.float32).eps)


def _data(kind: str, n: int) -> np.ndarray:
    if kind == "reid":
        return reid_features(n, 37, seed=n)
    if kind == "dups":  # many exact duplicates
        return with_duplicates(with_duplicates(reid_features(n, 20, seed=n + 1), seed=1), seed=2)
    if kind == "ties":
        return tie_features(n, 16, seed=n)
    if kind == "same":  # every row identical
        return np.tile(reid_features(1, 12, seed=n), (n, 1))
    if kind == "near":
        return _near_ties(n)
    raise AssertionError(kind)


def _both(x: torch.Tensor, k1: int, k2: int, max_distance: float):
    rank, _ = torch_knn(x, k1, None)
    want = torch_stages.jaccard(x, rank, k1, k2, max_distance)
    from hilcore.backend.native.jaccard import jaccard as native_jaccard

    return native_jaccard(x, rank, k1, k2, max_distance), want


CASES = [("reid", 1, 1, 1), ("reid", 2, 2, 2), ("reid", 19, 7, 3), ("reid", 257, 30, 6), ("reid", 257, 20, 1),
         ("reid", 61, 61, 6), ("dups", 203, 20, 6), ("dups", 99, 30, 1), ("ties", 150, 20, 6),
         ("same", 23, 23, 6), ("same", 40, 9, 1), ("near", 181, 20, 6)]


@needs_native
@pytest.mark.parametrize("kind,n,k1,k2", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
@pytest.mark.parametrize("max_distance", [math.inf, 0.6, 0.0])
def test_native_stages_equal_torch_stages_bitwise(kind, n, k1, k2, max_distance):
    x = _unit(_data(kind, n))
    got, want = _both(x, k1, k2, max_distance)
    for name, g, w in zip(("indptr", "indices", "data"), got, want):
        assert g.dtype == w.dtype and torch.equal(g, w), f"{name} differs"
    assert want[1].numel() >= n  # the diagonal at least


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_bitwise_at_any_thread_count(threads):
    x = _unit(_data("dups", 499))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)  # the extension shares torch's OpenMP runtime
        assert nat.num_threads() == threads
        got, want = _both(x, 20, 6, 0.6)
    finally:
        torch.set_num_threads(old)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@needs_native
def test_identical_weight_rows_are_exactly_zero_apart():
    """Exact duplicates whose V' rows are identical have d = 0 exactly, in both backends, where the
    float64 reference says 0 (up to its own rounding)."""
    x = _data("dups", 203)
    xt = _unit(x)
    k1, k2 = 20, 6
    (indptr, indices, data), _ = _both(xt, k1, k2, math.inf)
    rank, _ = torch_knn(xt, k1, None)
    got = csr_to_dense(_csr(indptr, indices, data, len(x)))
    ref = ref_jaccard.jaccard_distance(x, k1, k2, rank=rank.numpy())
    zero = ref < 1e-9
    dup = (x[:, None, :] == x[None, :, :]).all(axis=2)
    np.fill_diagonal(dup, False)
    assert (zero & dup).sum() > 50  # the data has many such pairs
    assert np.all(got[zero] == 0.0)
    # all rows identical: every pair is exactly 0
    same = _unit(_data("same", 23))
    (ip, ix, dt), _ = _both(same, 23, 6, 0.0)
    assert dt.numel() == 23 * 23 and torch.all(dt == 0)


def _csr(indptr, indices, data, n):
    import scipy.sparse as sp

    return sp.csr_matrix((data.numpy(), indices.numpy(), indptr.numpy()), shape=(n, n))


# ----------------------------------------------------------------------------- the op, both backends

@needs_native
@pytest.mark.parametrize("n,k1,k2,max_distance", [(19, 30, 6, None), (19, 50, 50, 0.6), (257, 20, 1, 0.6),
                                                   (203, 20, 6, None), (203, 30, 6, 0.0)])
def test_op_native_equals_torch_on_one_ranking(monkeypatch, n, k1, k2, max_distance):
    """hilcore.jaccard_distance with backend="native" and "torch": the same CSR when the kNN part
    returns the same ranking (here: the torch kNN for both; k1 > N is clamped by the op)."""
    def rows_on_torch_ranking(x, k1_, k2_, md, impl, timings=None):
        rank, _ = torch_knn(x, k1_, None)
        return SparseRows(*impl.part("stages")(x, rank, k1_, k2_, md), x.shape[0])

    monkeypatch.setattr(jaccard_module, "jaccard_rows", rows_on_torch_ranking)
    x = _data("dups", n)
    a = hilcore.jaccard_distance(x, k1, k2, max_distance=max_distance, backend="native")
    b = hilcore.jaccard_distance(x, k1, k2, max_distance=max_distance, backend="torch")
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.data.dtype == np.float32


@needs_native
def test_default_call_equals_torch_backend_on_exact_tie_data():
    """On data whose similarities are exact in float32 every exact kNN gives one ranking (ties by
    index), so the default call (native kNN and stages) equals the torch backend bitwise."""
    x = with_duplicates(tie_features(301, 16, seed=5))
    a = hilcore.jaccard_distance(x, 20, 6, max_distance=0.6)
    b = hilcore.jaccard_distance(x, 20, 6, max_distance=0.6, backend="torch")
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert stored_mask(a).sum() > 301


@needs_native
def test_stage_benchmark_runs_and_checks_bitwise(tmp_path):
    from benchmarks import bench_jaccard_stages

    out = tmp_path / "r.json"
    res = bench_jaccard_stages.main(["--n", "300", "--dim", "24", "--k1", "20", "--repeats", "1", "--out", str(out)])
    assert out.exists() and res["native_equals_torch"] is True
    assert {(r["backend"], r["threads"]) for r in res["runs"]} == {(b, t) for b in ("native", "torch") for t in (1, 2)}
