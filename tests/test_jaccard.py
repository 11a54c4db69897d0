"""hilcore.jaccard_distance: every backend against the dense reference of docs/design.md."""
import functools
import importlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import hilcore
from hilcore.ref import jaccard as ref_jaccard
from hilcore.ref import knn as ref_knn
from testing import INTERPRETED, JACCARD_BACKENDS, knn_backend_of, assert_csr_well_formed, assert_jaccard_matches, \
    assert_knn_matches, csr_to_dense, features, jaccard_module, reid_features, stored_mask, tie_features, \
    with_duplicates

stage_jaccard = importlib.import_module("hilcore.stages.jaccard")  # the torch backend's stages

K1, K2, EPS = 20, 6, 0.6
# the triton backend's Jaccard stages are the torch ones on a CPU: only its (interpreted,
# slow) kNN differs, so it runs the reference comparisons at small sizes and nothing else
COMPILED = [b for b in JACCARD_BACKENDS if b.values[0] not in INTERPRETED]


@functools.lru_cache(maxsize=None)
def _data(kind, n, dup):
    x = features(kind, n)
    x = with_duplicates(x) if dup else x
    return x


@functools.lru_cache(maxsize=None)
def _reference(kind, n, dup, k1, k2):
    return ref_jaccard.jaccard_distance(_data(kind, n, dup), k1, k2)


def _reference_for(backend, kind, n, dup, k1, k2):
    """The dense reference on the backend's own ranking.

    Exact-tie data: the backend's kNN must equal the reference's. ReID-like
    data: it may differ at float32 near-ties (checked to 1e-6), and then the
    reference is evaluated on the backend's ranking so that what is compared
    is the Jaccard stage itself.
    """
    x = _data(kind, n, dup)
    k1c = min(k1, n)
    rank, sim = hilcore.knn(x, k1c, backend=knn_backend_of(backend))
    assert_knn_matches(rank, sim, x, k1c, tie_atol=0.0 if kind == "ties" else 1e-6)
    if np.array_equal(rank, ref_knn.knn(x, k1c)[0]):
        return _reference(kind, n, dup, k1, k2)
    return ref_jaccard.jaccard_distance(x, k1, k2, rank=rank)


def _cases():
    for b in JACCARD_BACKENDS:
        name = b.values[0]
        for n in (1, 2, 19, 99, 989):
            if name in INTERPRETED and n > 19:
                continue
            for kind in ("reid", "ties"):
                if n == 989 and kind == "ties":
                    continue
                for md in (None, EPS):
                    yield pytest.param(name, n, kind, md, marks=b.marks, id=f"{b.id}-{n}-{kind}-{md}")


@pytest.mark.parametrize("backend,n,kind,max_distance", list(_cases()))
def test_matches_reference(backend, n, kind, max_distance):
    d = hilcore.jaccard_distance(_data(kind, n, False), K1, K2, max_distance=max_distance, backend=backend)
    assert_jaccard_matches(d, _reference_for(backend, kind, n, False, K1, K2), max_distance)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("kind", ["reid", "ties"])
def test_duplicate_rows_store_their_zeros(backend, kind):
    x = _data(kind, 99, True)
    d = hilcore.jaccard_distance(x, K1, K2, max_distance=EPS, backend=backend)
    ref = _reference_for(backend, kind, 99, True, K1, K2)
    assert_jaccard_matches(d, ref, EPS)
    mask = stored_mask(d)
    dense = csr_to_dense(d)
    dup = (x[:, None, :] == x[None, :, :]).all(axis=2)
    assert dup.sum() > 99  # the data has duplicates besides the diagonal
    assert mask[dup].all(), "a pair of identical rows is not stored"
    assert np.all(dense[dup] <= 1e-6)
    zero = dup & (ref < 1e-9)  # at distance 0 up to float64 rounding: stored as exactly 0
    assert zero.sum() > 99 and np.all(dense[zero] == 0.0)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("k1,k2", [(30, 6), (19, 19), (50, 1), (1, 1), (2, 2)])
def test_k1_above_n_is_clamped(backend, k1, k2):
    x = _data("reid", 19, False)
    d = hilcore.jaccard_distance(x, k1, k2, backend=backend)
    assert_jaccard_matches(d, _reference_for(backend, "reid", 19, False, k1, k2), None)
    same = hilcore.jaccard_distance(x, min(k1, 19), min(k2, k1, 19), backend=backend)
    assert (d != same).nnz == 0


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("kind", ["reid", "ties"])
def test_k2_one_means_no_query_expansion(backend, kind):
    x = _data(kind, 99, False)
    d = hilcore.jaccard_distance(x, K1, 1, backend=backend)
    assert_jaccard_matches(d, _reference_for(backend, kind, 99, False, K1, 1), None)
    with_qe = hilcore.jaccard_distance(x, K1, K2, backend=backend)
    assert (d != with_qe).nnz > 0


@pytest.mark.parametrize("backend", COMPILED)
def test_threshold_is_a_filter_of_the_full_result(backend):
    x = _data("reid", 99, False)
    full = hilcore.jaccard_distance(x, K1, K2, backend=backend)
    cut = hilcore.jaccard_distance(x, K1, K2, max_distance=EPS, backend=backend)
    keep = full.copy()
    keep.data[keep.data > EPS] = 2.0  # mark, then drop
    want = stored_mask(keep) & (csr_to_dense(keep) <= EPS)
    np.testing.assert_array_equal(stored_mask(cut), want)
    np.testing.assert_array_equal(csr_to_dense(cut)[want], csr_to_dense(full)[want])
    assert stored_mask(full).sum() > stored_mask(cut).sum() > 99
    zero = hilcore.jaccard_distance(x, K1, K2, max_distance=0.0, backend=backend)
    assert np.all(zero.data == 0.0) and np.all(stored_mask(zero).diagonal())


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_float64_and_float16_are_cast_to_float32(backend, dtype):
    x = _data("reid", 57, False).astype(dtype)
    d = hilcore.jaccard_distance(x, K1, K2, max_distance=EPS, backend=backend)
    want = hilcore.jaccard_distance(x.astype(np.float32), K1, K2, max_distance=EPS, backend=backend)
    assert_csr_well_formed(d, 57)
    np.testing.assert_array_equal(stored_mask(d), stored_mask(want))
    np.testing.assert_array_equal(d.data, want.data)


@pytest.mark.parametrize("backend", COMPILED)
def test_non_contiguous_and_torch_input(backend):
    wide = reid_features(57, d=64)
    x = wide[:, ::2]
    want = hilcore.jaccard_distance(np.ascontiguousarray(x), K1, K2, backend=backend)
    for view in (x, torch.from_numpy(wide)[:, ::2], torch.from_numpy(np.asfortranarray(x))):
        d = hilcore.jaccard_distance(view, K1, K2, backend=backend)
        assert isinstance(d, sp.csr_matrix)  # CPU torch input gives SciPy too
        np.testing.assert_array_equal(d.indptr, want.indptr)
        np.testing.assert_array_equal(d.indices, want.indices)
        np.testing.assert_array_equal(d.data, want.data)


@pytest.mark.parametrize("backend", COMPILED)
def test_unnormalised_input(backend):
    x = _data("reid", 99, False)
    want = hilcore.jaccard_distance(x, K1, K2, max_distance=EPS, backend=backend)
    scale = 2.0 ** np.random.default_rng(4).integers(-6, 7, size=(99, 1))  # exact rescaling
    got = hilcore.jaccard_distance((x * scale).astype(np.float32), K1, K2, max_distance=EPS, backend=backend)
    assert (got != want).nnz == 0 and np.array_equal(got.indices, want.indices)
    xt = tie_features(99)
    xs = (xt * np.random.default_rng(5).uniform(0.1, 30, size=(99, 1))).astype(np.float32)
    got = hilcore.jaccard_distance(xs, K1, K2, max_distance=EPS, backend=backend)
    assert_jaccard_matches(got, _reference("ties", 99, False, K1, K2), EPS)


@pytest.mark.parametrize("backend", COMPILED)
def test_one_identity(backend):
    """Every row a noisy copy of one vector: one dense block of small distances."""
    x = (np.ones((1, 16)) + 0.05 * np.random.default_rng(6).standard_normal((40, 16))).astype(np.float32)
    d = hilcore.jaccard_distance(x, K1, K2, backend=backend)
    rank, _ = hilcore.knn(x, K1, backend=knn_backend_of(backend))
    assert_jaccard_matches(d, ref_jaccard.jaccard_distance(x, K1, K2, rank=rank), None)


@pytest.mark.parametrize("kind", ["reid", "ties"])
def test_torch_chunking_is_invisible(monkeypatch, kind):
    """Chunks of a few rows and few triples (tails included), and super-blocks of few pairs in the last
    stage, give the one-chunk answer."""
    x = _data(kind, 99, True)
    want = hilcore.jaccard_distance(x, K1, K2, backend="torch")
    monkeypatch.setattr(stage_jaccard, "CHUNK_ELEMENTS", 997)
    monkeypatch.setattr(stage_jaccard, "PAIR_BUDGET", 300)
    got = hilcore.jaccard_distance(x, K1, K2, backend="torch")
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=0, atol=1e-6)
    assert_jaccard_matches(got, _reference_for("torch", kind, 99, True, K1, K2), None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", [b for b in ("torch", "triton", "cuda") if b in hilcore.backends("cuda")])
def test_cuda_tensors(backend):
    x = _data("ties", 989, True)
    d = hilcore.jaccard_distance(torch.from_numpy(x).cuda(), K1, K2, max_distance=EPS, backend=backend)
    assert d.layout == torch.sparse_csr and d.device.type == "cuda"
    csr = sp.csr_matrix((d.values().cpu().numpy(), d.col_indices().cpu().numpy(), d.crow_indices().cpu().numpy()),
                        shape=d.shape)
    assert_jaccard_matches(csr, _reference("ties", 989, True, K1, K2), EPS)
