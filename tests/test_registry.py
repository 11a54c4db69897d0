"""The backend registry: resolution, errors that name why, truthful labels, capabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hilcore
from hilcore import _dispatch
from testing import reid_features

PUBLIC_OPS = ("knn", "jaccard_distance", "dbscan", "cluster_centers", "subcluster", "brst", "bidirectional_match",
              "memory.update", "mccl_loss")


def test_capabilities_cover_every_op_and_agree_with_backends():
    caps = hilcore.capabilities()
    for op in PUBLIC_OPS:
        assert "torch" in caps[op], op  # the readable version exists for every op
    on_cpu = hilcore.capabilities("cpu")
    for op, row in on_cpu.items():
        assert set(row) <= set(caps[op])
        assert set(row) <= set(hilcore.backends("cpu"))
        for b, cap in row.items():
            assert cap.available("cpu") and cap.why_not("cpu") is None
            assert "cpu" in cap.devices


@pytest.mark.parametrize("op", PUBLIC_OPS)
def test_every_runnable_entry_resolves_to_its_own_backend(op):
    for b in hilcore.capabilities("cpu")[op]:
        impl = _dispatch.resolve(op, b, "cpu")
        assert impl.backend == b and impl.op == op
        for _, part in impl.parts:
            assert callable(part.fn)
        if not impl.parts:
            assert callable(impl.fn) and impl.label == b


def test_auto_takes_the_first_runnable_backend_of_the_preference_order():
    for op in PUBLIC_OPS:
        got = _dispatch.resolve(op, "auto", "cpu").backend
        order = [b for b in _dispatch.AUTO_ORDER["cpu"] + ("torch",) if b in hilcore.capabilities("cpu")[op]]
        assert got == order[0], op


def test_labels_say_what_ran():
    assert _dispatch.resolve("jaccard_distance", "torch", "cpu").label == "knn=torch, stages=torch"
    if "native" in hilcore.backends("cpu"):
        assert _dispatch.resolve("jaccard_distance", "native", "cpu").label == "knn=native, stages=native"
    if "triton" in hilcore.backends("cpu"):  # TRITON_INTERPRET=1: the stages of a CPU tensor are torch's
        assert _dispatch.resolve("jaccard_distance", "triton", "cpu").label == "knn=triton, stages=torch"


def test_unknown_and_unavailable_backends_raise_with_the_reason():
    with pytest.raises(ValueError, match=r"backend: expected one of .*got 'bogus'"):
        _dispatch.resolve("knn", "bogus", "cpu")
    with pytest.raises(TypeError, match="backend: expected a string"):
        _dispatch.resolve("knn", 3, "cpu")
    with pytest.raises(hilcore.BackendUnavailable, match=r"dbscan: backend 'triton' is not implemented"):
        _dispatch.resolve("dbscan", "triton", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(hilcore.BackendUnavailable, match=r"knn: backend 'cuda' cannot run: .*cuda tensors"):
            _dispatch.resolve("knn", "cuda", "cpu")
    with pytest.raises(ValueError, match="bogus"):
        hilcore.EpochConfig(backend="bogus")
    with pytest.raises(ValueError, match="bogus"):
        hilcore.jaccard_distance(reid_features(19), 5, 2, backend="bogus")
    mem = hilcore.ClusterMemory(4, 3)
    with pytest.raises(ValueError, match="bogus"):
        mem.update(torch.randn(2, 4), torch.tensor([0, 1]), backend="bogus")
    with pytest.raises(ValueError, match="bogus"):
        hilcore.mccl_loss(torch.randn(2, 4), torch.randn(3, 2, 4), backend="bogus")


def test_a_pipeline_falls_back_along_its_candidates_and_reports_it():
    _dispatch.register("test.leaf", "native", devices=("cpu",), impl="math:sqrt")
    _dispatch.register("test.leaf", "torch", devices=("cpu", "cuda"), impl="math:floor")
    _dispatch.register("test.pipe", "torch", devices=("cpu", "cuda"),
                       parts={"a": ("test.leaf", ("cuda", "native", "torch")), "b": ("test.leaf", ("torch",))})
    _dispatch.register("test.alias", "torch", devices=("cpu",), parts={"x": ("test.leaf", ("torch",))})
    try:
        pipe = _dispatch.resolve("test.pipe", "torch", "cpu")
        want_a = "native" if _dispatch.has_native() else "torch"
        assert pipe.label == f"a={want_a}, b=torch"
        with pytest.raises(TypeError, match="pipeline of several parts"):
            pipe(1.0)
        alias = _dispatch.resolve("test.alias", "torch", "cpu")
        assert alias(2.5) == 2 and alias.label == "x=torch"  # one part: callable, and says what runs
        # a part with no runnable candidate makes the whole pipeline unavailable, naming the part
        _dispatch.register("test.broken", "torch", devices=("cpu",), parts={"p": ("test.leaf", ("cuda",))})
        with pytest.raises(hilcore.BackendUnavailable, match=r"its p part cannot run .*cuda"):
            _dispatch.resolve("test.broken", "torch", "cpu")
    finally:
        for key in [k for k in _dispatch._TABLE if k[0].startswith("test.")]:
            del _dispatch._TABLE[key]


def test_jaccard_info_reports_the_label_and_measured_stage_times():
    x = reid_features(99)
    info: dict = {}
    d = hilcore.jaccard_distance(x, 10, 3, max_distance=0.6, info=info, backend="torch")
    assert info["backend"] == "knn=torch, stages=torch" and info["knn"] == "torch" and info["stages"] == "torch"
    t = info["timings"]
    assert all(t[k] >= 0 for k in ("knn", "stages", "output", "total"))
    assert t["knn"] + t["stages"] <= t["total"] + 1e-9
    plain = hilcore.jaccard_distance(x, 10, 3, max_distance=0.6, backend="torch")
    assert (d != plain).nnz == 0
    if "native" in hilcore.backends("cpu"):
        info = {}
        hilcore.jaccard_distance(x, 10, 3, max_distance=0.6, info=info, backend="native")
        assert {"stages.reciprocal_weights", "stages.query_expansion", "stages.inverted_index",
                "stages.jaccard"} <= set(info["timings"])


def test_cluster_epoch_reports_what_ran_in_each_stage():
    from hilcore.synthetic import reid_features as feats

    xr, _, _ = feats(12, 16, dim=64, seed=7, noise=0.4)
    xi, _, _ = feats(12, 9, dim=64, seed=7, noise=0.4, camera_bias=0.4)
    out = hilcore.cluster_epoch(xr, xi, hilcore.EpochConfig(k1=10, backend="torch"))
    assert out.backends == {"jaccard": "knn=torch, stages=torch", "dbscan": "torch", "centers": "torch",
                            "subcluster": "centers=torch, kmeans=torch", "match": "brst=torch, centers=torch"}
    for m in ("rgb", "ir"):
        t = out.timings
        assert 0 <= t[f"knn_{m}"] and 0 <= t[f"jaccard_stages_{m}"]
        assert t[f"knn_{m}"] + t[f"jaccard_stages_{m}"] <= t[f"jaccard_{m}"] + 1e-9
    auto = hilcore.cluster_epoch(xr, xi, hilcore.EpochConfig(k1=10))
    want = _dispatch.resolve("jaccard_distance", "auto", "cpu").label
    assert auto.backends["jaccard"] == want
    np.testing.assert_array_equal(np.asarray(auto.labels_rgb), np.asarray(out.labels_rgb))
