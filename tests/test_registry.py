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
        order = [b for b in _dispatch.AUTO_ORDER["cpu"] if b in hilcore.capabilities("cpu")[op]]
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


# ------------------------------------------------------------------ backends are discovered from their folders
_TOY_INIT = '''
from ... import _dispatch
from ..._dispatch import Backend

def _why_not(device):
    if not _dispatch.importable("math"):
        return "math is missing"
    return None if device.type == "cpu" else f"the toy backend runs on CPU tensors, got device {device}"

BACKEND = Backend(__name__, why_not=_why_not, devices=("cpu",), order=5, auto={"cpu": 50})
BACKEND.op("knn", impl=".knn:knn", note="the first k columns, to be told apart from a real kNN")
'''
_TOY_KNN = '''
import torch

def knn(x, k, y=None):
    n = x.shape[0]
    idx = torch.arange(k, dtype=torch.int64).repeat(n, 1)
    return idx, torch.full((n, k), 0.25, dtype=torch.float32)
'''


@pytest.fixture
def backend_folder(tmp_path, monkeypatch):
    """A function that writes a backend folder ``<name>/`` (files: {file name: text}) beside hilcore/backend's
    folders (its ``__path__`` extended to tmp_path) and rediscovers; the real table is rediscovered afterwards."""
    import sys

    import hilcore.backend as pkg

    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(tmp_path)])

    def write(name: str, files: dict[str, str]):
        (tmp_path / name).mkdir()
        for fname, text in files.items():
            (tmp_path / name / fname).write_text(text)
        return _dispatch.discover()

    yield write
    monkeypatch.undo()
    for m in [m for m in sys.modules if m.startswith("hilcore.backend.") and m.split(".")[2] not in
              {i.name for i in __import__("pkgutil").iter_modules(pkg.__path__)}]:
        del sys.modules[m]
    _dispatch.discover()


def test_a_new_backend_folder_is_discovered_without_editing_the_registry(backend_folder):
    before = _dispatch.ALL_BACKENDS
    names = backend_folder("toy", {"__init__.py": _TOY_INIT, "knn.py": _TOY_KNN})
    assert names == _dispatch.ALL_BACKENDS and set(names) == set(before) | {"toy"}
    assert names.index("toy") == 1  # order=5: after torch (0), before native (10)
    assert "toy" in hilcore.backends("cpu") and "toy" not in hilcore.backends("cuda")
    assert hilcore.capabilities()["knn"]["toy"].impl == "hilcore.backend.toy.knn:knn"
    x = np.eye(6, dtype=np.float32)
    idx, sim = hilcore.knn(x, 3, backend="toy")
    assert idx.tolist() == [[0, 1, 2]] * 6 and sim.tolist() == [[0.25] * 3] * 6
    assert _dispatch.implemented("knn")[:2] == ("torch", "toy")
    assert _dispatch._why_not("toy", torch.device("cuda")) == "the toy backend runs on CPU tensors, got device cuda"
    with pytest.raises(hilcore.BackendUnavailable, match="knn: backend 'toy' cannot run: .*runs on cpu tensors"):
        _dispatch.resolve("knn", "toy", "cuda")
    with pytest.raises(hilcore.BackendUnavailable, match="dbscan: backend 'toy' is not implemented"):
        _dispatch.resolve("dbscan", "toy", "cpu")
    # auto ranks it 50 on CPU: after native (0) where native is built, before torch (100)
    assert _dispatch.AUTO_ORDER["cpu"] == ("native", "toy", "torch")
    want = "native" if "native" in hilcore.backends("cpu") else "toy"
    assert _dispatch.resolve("knn", "auto", "cpu").backend == want


def test_the_table_is_back_to_the_shipped_backends_after_the_fake_one():
    import pkgutil

    import hilcore.backend as pkg

    folders = {i.name for i in pkgutil.iter_modules(pkg.__path__) if i.ispkg}
    assert "toy" not in folders and set(_dispatch.ALL_BACKENDS) == folders
    assert "toy" not in hilcore.capabilities()["knn"] and "toy" not in _dispatch.AUTO_ORDER["cpu"]


def test_every_shipped_backend_folder_describes_itself():
    import pkgutil

    import hilcore.backend as pkg

    folders = sorted(i.name for i in pkgutil.iter_modules(pkg.__path__) if i.ispkg)
    assert folders == sorted(_dispatch.ALL_BACKENDS)
    for name, desc in _dispatch.BACKENDS.items():
        assert desc.name == name and desc.ops, name
        assert all(cap.backend == name for cap in desc.ops)
        assert all(cap.impl is None or cap.impl.startswith("hilcore.backend.") for cap in desc.ops)
        # its own availability check answers for every device type, with a reason when it cannot run
        for dev in ("cpu", "cuda"):
            why = desc.why_not(torch.device(dev))
            assert why is None or (isinstance(why, str) and why), (name, dev)


def test_a_folder_without_a_description_or_with_the_wrong_name_is_refused(backend_folder):
    with pytest.raises(TypeError, match=r"hilcore.backend.nodesc: .*must define BACKEND = .*got NoneType"):
        backend_folder("nodesc", {"__init__.py": "x = 1\n"})


def test_a_description_named_unlike_its_folder_is_refused(backend_folder):
    text = _TOY_INIT.replace("Backend(__name__,", "Backend('hilcore.backend.other',")
    with pytest.raises(ValueError, match=r"BACKEND is named 'other', expected the folder's name 'misnamed'"):
        backend_folder("misnamed", {"__init__.py": text, "knn.py": _TOY_KNN})
