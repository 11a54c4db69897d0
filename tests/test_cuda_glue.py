"""The CUDA backend's Python glue (hilcore/backend/cuda: jaccard(), dbscan()) run for real on CPU
tensors, with the extension's ``cuda_*`` entry points replaced by the CPU model of their contract
(tests/cuda_model.py), as the census of the GPU code path runs it (tests/census.py). Results against
the dense Jaccard reference and the torch backend, DBSCAN against scikit-learn; the host syncs per
call, whatever N and the number of table sizes. The kernels themselves run only in
tests/test_cuda.py, on a GPU."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

import hilcore
from census import census, gpu_dispatch_on_cpu
from cuda_model import NativeModel
from hilcore.backend.cuda import dbscan as cd
from hilcore.backend.cuda import jaccard as cj
from hilcore.ref import jaccard as ref_jaccard
from testing import assert_jaccard_matches, reid_features, with_duplicates


def _features(n, dup, seed=0):
    x = reid_features(n, seed=seed + n)
    if dup:
        x = with_duplicates(x, seed=n)
    return x, hilcore._arrays.features(x, "x")[0]


@pytest.fixture
def glue(monkeypatch):
    return gpu_dispatch_on_cpu(monkeypatch)


@pytest.mark.parametrize("n", [1, 2, 37, 150])
@pytest.mark.parametrize("k2", [6, 1])
@pytest.mark.parametrize("dup", [False, True], ids=["plain", "dups"])
def test_jaccard_glue_on_the_model_matches_the_reference(glue, n, k2, dup):
    x, xt = _features(n, dup)
    k1 = min(20, n)
    k2 = min(k2, k1)
    rank, _ = hilcore.knn(xt, k1, backend="torch")
    dense = ref_jaccard.jaccard_distance(x, k1, k2, rank=rank.numpy())
    for md, ws in ((math.inf, None), (0.6, None), (0.6, 3000)):  # 3000 bytes: many staging chunks
        ip, ix, d = cj.jaccard(xt, rank, k1, k2, md, workspace_bytes=ws)
        assert ip.dtype == ix.dtype == torch.int64 and d.dtype == torch.float32
        got = sp.csr_matrix((d.numpy(), ix.numpy(), ip.numpy()), shape=(n, n))
        for i in range(n):  # columns sorted per row
            assert np.all(np.diff(ix.numpy()[ip[i]:ip[i + 1]]) > 0)
        assert_jaccard_matches(got, dense, None if md == math.inf else md, atol=1e-5)
    assert "jaccard_rows_fill" in glue.calls and ("query_expansion_fill" in glue.calls) == (k2 > 1)


@pytest.mark.parametrize("n,eps,min_samples", [(1, 0.5, 1), (50, 0.45, 3), (300, 0.55, 4), (300, 1e-6, 1)])
def test_dbscan_glue_on_the_model_matches_sklearn(glue, n, eps, min_samples):
    x, xt = _features(n, dup=True, seed=1)
    rank, _ = hilcore.knn(xt, min(20, n), backend="torch")
    ip, ix, d = cj.jaccard(xt, rank, min(20, n), min(6, n), 0.7)
    got = cd.dbscan(ip, ix, d, n, eps, min_samples).numpy()
    a = sp.csr_matrix((d.numpy(), ix.numpy(), ip.numpy()), shape=(n, n)).toarray()
    a[sp.csr_matrix((np.ones_like(d.numpy()), ix.numpy(), ip.numpy()), shape=(n, n)).toarray() == 0] = 10.0  # not stored: far (Jaccard distances are <= 1)
    np.fill_diagonal(a, 0)
    want = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(a).labels_
    np.testing.assert_array_equal(got, want)
    assert (got >= 0).any()


def test_glue_keeps_refusing_cpu_tensors(monkeypatch):
    """The seam is only the census's: with the model but without it, CPU input is still refused."""
    monkeypatch.setattr(cj, "_native", lambda: NativeModel())
    x = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    rank, _ = hilcore.knn(x, 4, backend="torch")
    with pytest.raises(ValueError, match="x: the cuda backend needs a CUDA"):
        cj.jaccard(x, rank, 4, 2, 0.5)
    with pytest.raises(ValueError, match="the cuda backend needs CUDA"):
        cd.dbscan(torch.zeros(2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0), 1, 0.5, 1)


def test_glue_checks_its_input_on_the_model(glue):
    x = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    rank, _ = hilcore.knn(x, 4, backend="torch")
    bad = rank.clone()
    bad[3, 2] = 8
    with pytest.raises(ValueError, match=r"rank: entries must lie in \[0, 8\)"):
        cj.jaccard(x, bad, 4, 2, 0.5)
    ip, ix, d = cj.jaccard(x, rank, 4, 2, 0.5)
    with pytest.raises(ValueError, match="indptr: expected to start at 0"):
        cd.dbscan(ip + 1, ix, d, 8, 0.5, 2)
    wrong = ip.clone()
    wrong[2], wrong[3] = wrong[3], wrong[2] - 1
    with pytest.raises(ValueError, match="non-decreasing"):
        cd.dbscan(wrong, ix, d, 8, 0.5, 2)
    with pytest.raises(ValueError, match=r"indices: entries must lie in \[0, 8\)"):
        cd.dbscan(ip, torch.where(ix == 0, 9, ix), d, 8, 0.5, 2)


@pytest.mark.parametrize("n", [60, 400])
def test_glue_host_syncs_per_call(glue, n):
    """7 host reads per Jaccard call with one staging chunk (the rank check, the sizes of the three count
    passes, the table sizes of the partners pass, the staging offsets with the rows' table sizes, the
    chunk's kept count with the error word), one more per further chunk; 1 per DBSCAN call (its CSR
    checks). Whatever N and the number of table sizes; every kernel entry point is one launch."""
    x, xt = _features(n, dup=True)
    rank, _ = hilcore.knn(xt, 20, backend="torch")
    with census() as get:
        ip, ix, d = cj.jaccard(xt, rank, 20, 6, 0.6)
    c = get()
    assert c.syncs == 7, c
    assert c.launches == len(glue.calls) and c.by_kernel["cuda:jaccard_rows_fill"] >= 1, c
    with census() as get:
        cj.jaccard(xt, rank, 20, 6, 0.6, workspace_bytes=8 * 200)  # chunks of ~200 staged pairs
    chunks = -(-int(ip[-1]) // 200)
    c = get()
    assert c.syncs >= 6 + chunks, c
    with census() as get:
        cd.dbscan(ip, ix, d, n, 0.5, 4)
    c = get()
    assert c.syncs == 1 and c.launches == 3, c
