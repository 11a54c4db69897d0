"""The native BRST scan's register tiles (kernels/cpu/brst_tile.h): AVX-512 (12 rows x 32 prototypes), AVX2 + FMA
(6 x 16) and portable (std::fma) give the same bits, those of the sequential-FMA reference
(hilcore.ref.brst.fma_similarities), on sizes that are no multiple of any tile, with ties; and the row ids
the kernel reads in place give what the gathered rows give."""
from __future__ import annotations

import numpy as np
import pytest

from hilcore._dispatch import native_module
from hilcore.ref.brst import fma_similarities

nat = native_module()
pytestmark = pytest.mark.skipif(nat is None, reason="hilcore._native is not built")


@pytest.fixture
def paths():
    """The tiles this build and CPU can run; the automatic choice is restored afterwards."""
    yield list(nat.brst_cpu_paths())
    nat.brst_set_cpu_path("auto")


def _scan(path, x, p, rows=None):
    nat.brst_set_cpu_path(path)
    assert nat.brst_cpu_path() == path
    return nat.brst_scan(x, p, rows)


def _ref(x, p):
    s = fma_similarities(x, p)
    best = np.argmax(s, axis=1)  # the first maximum: ties to the lower prototype
    return best, s[np.arange(s.shape[0]), best], s.max(axis=0)


def _assert_same(got, want, what):
    for name, g, w in zip(("best", "best_sim", "col_max"), got, want):
        assert np.array_equal(np.asarray(g), np.asarray(w)), f"{what}: {name} differs"


def test_paths_follow_the_cpu(paths):
    f = nat.cpu_features()
    assert paths[-1] == "portable"
    assert ("avx2" in paths) == (f["arch"] == "x86_64" and f["avx2"] and f["fma"])
    if "avx512" in paths:
        assert f["arch"] == "x86_64" and f["avx512f"]
    if f["arch"] != "x86_64":
        assert paths == ["portable"]
    assert nat.brst_cpu_path() == paths[0]  # the automatic choice is the first (fastest) one
    for name in ("avx512", "avx2"):
        if name not in paths:
            with pytest.raises(ValueError, match=f"the '{name}' BRST tile needs"):
                nat.brst_set_cpu_path(name)
    with pytest.raises(ValueError, match="name: expected 'auto', 'avx512', 'avx2' or 'portable', got 'sse9'"):
        nat.brst_set_cpu_path("sse9")


@pytest.mark.parametrize("m,c,d", [(1, 1, 1), (5, 15, 3), (11, 17, 33), (13, 31, 17), (25, 33, 7), (37, 47, 65),
                                   (97, 64, 40), (203, 35, 129)])
def test_every_tile_equals_the_sequential_fma_reference(paths, m, c, d):
    rng = np.random.default_rng(m * 1000 + c * 10 + d)
    x = rng.standard_normal((m, d)).astype(np.float32)
    p = rng.standard_normal((c, d)).astype(np.float32)
    want = _ref(x, p)
    for path in paths:
        _assert_same(_scan(path, x, p), want, f"{path} m={m} c={c} d={d}")


def test_ties_go_to_the_lower_prototype(paths):
    """Exact products (entries +-0.5 or 0): many rows tie between prototypes, and prototypes repeat across the
    two panels of an AVX-512 tile and across tiles."""
    rng = np.random.default_rng(5)
    m, d = 29, 19
    x = (rng.integers(-1, 2, (m, d)) * 0.5).astype(np.float32)
    base = (rng.integers(-1, 2, (7, d)) * 0.5).astype(np.float32)
    p = np.concatenate([base] * 7)[:45]  # 45 prototypes: c % 16 and c % 32 both nonzero
    want = _ref(x, p)
    assert np.all(want[0] < 7)
    for path in paths:
        _assert_same(_scan(path, x, p), want, path)


def test_row_ids_read_in_place_equal_the_gathered_rows(paths):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 70)).astype(np.float32)
    p = rng.standard_normal((41, 70)).astype(np.float32)
    rows = np.concatenate([rng.permutation(300)[:113], [5, 5, 299, 0]]).astype(np.int64)  # any order, repeats
    results = [_scan(path, x, p, rows) for path in paths]
    want = _scan(paths[-1], np.ascontiguousarray(x[rows]), p)
    for path, got in zip(paths, results):
        _assert_same(got, want, path)
    empty = _scan(paths[0], x, p, np.zeros(0, dtype=np.int64))
    assert empty[0].shape == (0,) and np.all(empty[2] == -np.inf)
    with pytest.raises(ValueError, match=r"rows: expected row ids in \[0, 300\), got rows\[1\] = 300"):
        nat.brst_scan(x, p, np.array([0, 300], dtype=np.int64))
    with pytest.raises(ValueError, match="rows: expected dtype int64"):
        nat.brst_scan(x, p, rows.astype(np.int32))


def test_avx512_equals_avx2_at_the_epoch_size(paths):
    """One SYSU-like shape (D = 1536, hundreds of prototypes): the AVX-512 tile's bits are the AVX2 and portable
    tiles', without the slow reference."""
    if "avx512" not in paths:
        pytest.skip(f"no AVX-512 tile on this CPU or build (tiles: {paths})")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1003, 1536)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = rng.standard_normal((421, 1536)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    results = [_scan(path, x, p) for path in paths]
    for path, got in zip(paths[1:], results[1:]):
        _assert_same(got, results[0], f"{path} vs {paths[0]}")
