"""Issue 21 point 2: every integer label dtype, huge or NumPy-typed integer arguments, meta tensors, the
``info`` argument, exact kNN ties on the torch backend, memory and loss arguments."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import hilcore
from hilcore import cli, compat
from hilcore.ref.knn import knn as ref_knn
from hilcore.synthetic import reid_features

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.fixture(scope="module")
def data():
    x, labels, _ = reid_features(4, 12, dim=16, seed=0, outliers=0.0)
    return x, labels.astype(np.int64)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_every_integer_label_dtype(data, dtype, container):
    x, labels = data
    lab = labels.astype(dtype)
    if container == "torch":
        lab = torch.from_numpy(lab)
    np.testing.assert_array_equal(hilcore.cluster_centers(x, lab), hilcore.cluster_centers(x, labels))
    np.testing.assert_array_equal(hilcore.subcluster(x, lab, n_sub=2, n_init=2),
                                  hilcore.subcluster(x, labels, n_sub=2, n_init=2))
    centres = torch.as_tensor(hilcore.cluster_centers(x, labels))
    a, b = hilcore.ClusterMemory.from_centers(centres), hilcore.ClusterMemory.from_centers(centres)
    a.update(torch.as_tensor(x[:8]), lab[:8])
    b.update(torch.as_tensor(x[:8]), torch.as_tensor(labels[:8]))
    assert torch.equal(a.features, b.features)


def test_uint64_labels_beyond_int64_are_named(data):
    x, labels = data
    lab = labels.astype(np.uint64)
    lab[3] = np.uint64(2 ** 63 + 5)
    with pytest.raises(ValueError, match=r"labels: expected .* below 2\*\*63, got 9223372036854775813"):
        hilcore.cluster_centers(x, lab)


@pytest.mark.parametrize("ms", [2 ** 62, 2 ** 63, 2 ** 80, np.uint64(2 ** 63), np.int64(4), np.uint8(4)])
@pytest.mark.parametrize("backend", ["torch", "native"])
def test_huge_or_numpy_min_samples(data, ms, backend):
    x, _ = data
    d = hilcore.jaccard_distance(x, 20, 6, max_distance=0.6)
    got = hilcore.dbscan(d, 0.6, ms, backend=backend)
    want = hilcore.dbscan(d, 0.6, int(min(int(ms), 10 ** 6)), backend=backend)
    np.testing.assert_array_equal(got, want)
    if int(ms) > 100:
        assert (got == -1).all()


def test_hil_cluster_refuses_a_huge_min_samples_before_any_work(tmp_path, capsys):
    f = tmp_path / "f.npy"
    np.save(f, reid_features(20, 10, dim=32, seed=0)[0])
    t0 = time.perf_counter()
    assert cli.main(["cluster", str(f), "--min-samples", str(2 ** 63)]) == 2
    assert time.perf_counter() - t0 < 5
    assert "--min-samples" in capsys.readouterr().err


def test_meta_tensor_and_info_argument_named(data):
    with pytest.raises(ValueError, match="x: a meta tensor"):
        hilcore.knn(torch.empty(10, 4, device="meta"), 3)
    with pytest.raises(ValueError, match="x: a meta tensor"):
        hilcore.jaccard_distance(torch.empty(10, 4, device="meta"), 3, 2)
    with pytest.raises(TypeError, match="info: expected a dict"):
        hilcore.jaccard_distance(data[0], 20, 6, info=[])
    with pytest.raises(ValueError, match="n_sub"):
        hilcore.subcluster(data[0], data[1], n_sub=2 ** 63)


def test_torch_knn_breaks_exact_ties_by_the_lower_index():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 70)).astype(np.float32)
    x[150:160] = x[3]  # identical database rows: exact ties
    x[5], x[7] = x[200], x[201]
    want, _ = ref_knn(x, 12)
    for backend in ("torch", "native"):
        idx, sim = hilcore.knn(x, 12, backend=backend)
        np.testing.assert_array_equal(idx, want)
    idx, sim = hilcore.knn(x[:20], 15, y=x, backend="torch")
    np.testing.assert_array_equal(idx, ref_knn(x[:20], 15, x)[0])
    assert idx[3, :11].tolist() == [3] + list(range(150, 160))
    assert len(set(sim[3, :11].tolist())) == 1  # the duplicates' similarities are bitwise equal


@pytest.mark.parametrize("kw,err", [(dict(momentum=True), TypeError), (dict(momentum="0.2"), TypeError),
                                    (dict(temp="0.05"), TypeError), (dict(temp=1e-45), ValueError),
                                    (dict(temp=float("nan")), ValueError), (dict(momentum=1.5), ValueError)])
def test_memory_arguments_checked(kw, err):
    name = next(iter(kw))
    for make in (lambda: hilcore.ClusterMemory(4, 3, **kw), lambda: compat.ClusterMemory(4, 3, **kw),
                 lambda: hilcore.ClusterMemory.from_centers(torch.eye(3), **kw),
                 lambda: compat.Memory_wise_v3(4, 3, 2, **kw), lambda: compat.Memory(4, 3, 2, **kw)):
        with pytest.raises(err, match=name):
            make()


def test_nan_memory_refused_by_the_losses():
    mem = hilcore.ClusterMemory.from_centers(torch.eye(3))
    mem.features[1, 0] = float("nan")
    x, y = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="memory: 1 row"):
        hilcore.cluster_contrast_loss(x, mem, y)
    with pytest.raises(ValueError, match="memory"):
        hilcore.cluster_contrast_loss(x, mem.features.clone(), y)
    ok = hilcore.cluster_contrast_loss(x, hilcore.ClusterMemory.from_centers(torch.eye(3), temp=1e-30), y)
    assert torch.isfinite(ok)  # the smallest temperature accepted still gives a number
