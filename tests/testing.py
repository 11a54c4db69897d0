"""Shared test data, backend lists and comparison helpers.

Backends come from the registry: what this installation can run on the CPU
(``hilcore.capabilities("cpu")``) for each op, never faked.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse as sp

import hilcore
from hilcore import synthetic
from hilcore.ref import knn as ref_knn

# the op modules (the package exports functions of the same names)
knn_module = importlib.import_module("hilcore.knn")
jaccard_module = importlib.import_module("hilcore.jaccard")
dbscan_module = importlib.import_module("hilcore.dbscan")

SIZES = (1, 2, 19, 99, 989)
SMALL_SIZES = (1, 2, 19, 99)
INTERPRETED = ("triton",)  # slow on a CPU: sizes <= 99 only


def cpu_backends(op: str) -> list:
    """The backends of ``op`` (a registry name, e.g. ``"knn"``) that can run on the CPU here, as pytest params."""
    return [pytest.param(b, id=b) for b in hilcore.capabilities("cpu")[op]]


def knn_backend_of(op_backend: str, op: str = "jaccard_distance", device: str = "cpu") -> str:
    """The kNN backend the ``op`` pipeline runs for ``op_backend`` on ``device`` (as the registry resolves it)."""
    from hilcore import _dispatch

    return _dispatch.resolve(op, op_backend, device).part("knn").backend


KNN_BACKENDS = cpu_backends("knn")
JACCARD_BACKENDS = cpu_backends("jaccard_distance")
DBSCAN_BACKENDS = cpu_backends("dbscan")


# ---------------------------------------------------------------- data
def reid_features(n: int, d: int = 32, *, seed: int = 0, views: int = 4, per_id: int = 8,
                  outliers: float = 0.1) -> np.ndarray:
    """ReID-like float32 features from :func:`hilcore.synthetic.reid_features` (the one generator:
    identities x cameras + noise, a fraction of outlier rows), about ``per_id`` rows per identity,
    left unnormalised: each row scaled by a norm in [0.5, 4) so every op's normalisation is exercised."""
    x, _, _ = synthetic.reid_features(max(1, n // per_id), n=n, dim=d, n_cams=views, seed=seed, outliers=outliers)
    return (x * np.random.default_rng(seed + 1).uniform(0.5, 4.0, (n, 1))).astype(np.float32)


def tie_features(n: int, d: int = 16, *, seed: int = 0) -> np.ndarray:
    """Rows with four entries of +-0.5 and the rest 0: unit norm, every dot product exact in float32."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def with_duplicates(x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """``x`` with about a quarter of its rows replaced by copies of other rows."""
    rng = np.random.default_rng(seed)
    x = x.copy()
    n = len(x)
    if n >= 2:
        dst = rng.choice(n, max(1, n // 4), replace=False)
        x[dst] = x[rng.integers(0, n, len(dst))]
    return x


def features(kind: str, n: int, **kw) -> np.ndarray:
    return {"reid": reid_features, "ties": tie_features}[kind](n, **kw)


# ---------------------------------------------------------------- comparisons
def assert_knn_matches(idx, sim, x, k, y=None, *, tie_atol: float = 0.0):
    """``(idx, sim)`` against the reference kNN.

    ``tie_atol = 0``: indices must be identical (use on data whose products
    are exact). Otherwise an index may differ from the reference only where
    the two candidates' float64 similarities are within ``tie_atol``: a
    near-tie that float32 rounding may order either way.
    """
    idx, sim = np.asarray(idx), np.asarray(sim)
    ref_idx, ref_sim = ref_knn.knn(x, k, y)
    assert idx.shape == ref_idx.shape == sim.shape
    assert idx.dtype == np.int64 and sim.dtype == np.float32
    np.testing.assert_allclose(sim, ref_sim, rtol=0, atol=1e-5)
    if y is None:
        np.testing.assert_array_equal(idx[:, 0], np.arange(len(idx)))
    if tie_atol == 0.0:
        np.testing.assert_array_equal(idx, ref_idx)
        return
    xn = ref_knn.normalize(x)
    yn = xn if y is None else ref_knn.normalize(y)
    for r, a in zip(*np.nonzero(idx != ref_idx)):
        got, want = xn[r] @ yn[idx[r, a]], xn[r] @ yn[ref_idx[r, a]]
        assert abs(got - want) <= tie_atol, \
            f"row {r} rank {a}: {idx[r, a]} ({got}) vs reference {ref_idx[r, a]} ({want})"
    for r in range(len(idx)):
        assert len(set(idx[r].tolist())) == k, f"row {r} repeats a neighbour"


def csr_to_dense(csr, fill: float = 1.0) -> np.ndarray:
    """Dense copy of a CSR distance matrix; entries not stored become ``fill`` (stored zeros stay 0)."""
    coo = sp.coo_matrix(csr)
    out = np.full(coo.shape, fill, dtype=np.float32)
    out[coo.row, coo.col] = coo.data
    return out


def dbscan_dense(csr, fill: float = 1.0) -> np.ndarray:
    """The dense matrix scikit-learn's DBSCAN sees for a sparse one: unstored off-diagonal entries ``fill``
    (not neighbours when fill > eps), an unstored diagonal entry 0 (scikit-learn sets it explicitly)."""
    out = csr_to_dense(csr, fill)
    stored = stored_mask(csr)
    d = np.arange(out.shape[0])
    out[d, d] = np.where(stored[d, d], out[d, d], 0.0)
    return out


def stored_mask(csr) -> np.ndarray:
    coo = sp.coo_matrix(csr)
    out = np.zeros(coo.shape, dtype=bool)
    out[coo.row, coo.col] = True
    return out


def assert_csr_well_formed(d, n: int):
    """float32 CSR [n, n], canonical (sorted, no duplicates), diagonal stored as 0, exactly symmetric."""
    assert isinstance(d, sp.csr_matrix)
    assert d.shape == (n, n) and d.dtype == np.float32
    assert d.has_canonical_format
    assert np.all(np.diff(d.indptr) >= 1)
    assert np.all(d.data >= 0) and np.all(d.data < 1)
    mask = stored_mask(d)
    assert mask.diagonal().all(), "diagonal not stored"
    assert np.all(d.diagonal() == 0.0)
    np.testing.assert_array_equal(mask, mask.T)
    dense = csr_to_dense(d)
    np.testing.assert_array_equal(dense, dense.T)


def assert_jaccard_matches(d, ref_dense: np.ndarray, max_distance: float | None, *, atol: float = 1e-5):
    """Sparse result against the dense reference: same pairs (up to pairs within atol of
    max_distance), same values within atol."""
    n = ref_dense.shape[0]
    assert_csr_well_formed(d, n)
    md = np.inf if max_distance is None else max_distance
    want = (ref_dense < 1.0) & (ref_dense <= md)
    np.fill_diagonal(want, True)
    got = stored_mask(d)
    differ = got != want
    assert np.all(np.abs(ref_dense[differ] - md) < atol), (
        f"{int(differ.sum())} pair(s) stored in only one result, e.g. {np.argwhere(differ)[:5].tolist()} "
        f"with reference distances {ref_dense[differ][:5].tolist()}")
    both = got & want
    dense = csr_to_dense(d)
    np.testing.assert_allclose(dense[both], ref_dense[both], rtol=0, atol=atol)
