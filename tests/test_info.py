"""Diagnostics: one name (``info``) and one timing helper (``hilcore._info.Stopwatch``) across the ops."""
from __future__ import annotations

import importlib.util
import os
import warnings

import pytest
import torch

import hilcore
from hilcore._info import Stopwatch, info_arg
from testing import reid_features


def test_a_stopwatch_without_a_dict_measures_nothing_and_never_synchronises(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    sw = Stopwatch(None, "cuda")
    with sw("knn"):
        pass
    assert sw.run("sum", sum, [1, 2]) == 3
    sw.total()
    assert calls == [] and sw.times is None


def test_a_cuda_stage_is_synchronised_at_both_ends_and_stored_under_its_name(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(str(device)))
    times: dict = {}
    sw = Stopwatch(times, "cuda:0")
    with sw("knn"):
        calls.append("work")
    assert calls == ["cuda:0", "work", "cuda:0"]
    sw.run("knn", lambda: None)  # measured again: overwritten, not added
    sw.total("total")
    assert list(times) == ["knn", "total"] and times["total"] >= times["knn"] >= 0
    cpu: dict = {}
    calls.clear()
    Stopwatch(cpu, "cpu").run("x", int)
    assert calls == [] and list(cpu) == ["x"]


def test_splits_time_consecutive_stages_and_restart_skips_what_is_not_a_stage(monkeypatch):
    clock = iter([10.0, 11.5, 20.0, 23.0, 30.0])  # made, split a, restart, split b, split c
    monkeypatch.setattr("hilcore._info.time.perf_counter", lambda: next(clock))
    times: dict = {}
    sw = Stopwatch(times)
    sw.split("a")
    sw.restart()
    sw.split("b")
    sw.split("c")
    assert times == {"a": 1.5, "b": 3.0, "c": 7.0}
    off = Stopwatch(None)
    off.restart()
    off.split("a")  # measures nothing, reads no clock (the iterator is exhausted)


def test_a_failing_stage_records_no_time():
    times: dict = {}
    with pytest.raises(ZeroDivisionError):
        with Stopwatch(times)("bad"):
            1 / 0
    assert times == {}


def test_the_deprecated_stats_name_warns_and_is_the_same_dict():
    d: dict = {}
    assert info_arg(None, None, "f") is None and info_arg(d, None, "f") is d
    with pytest.warns(DeprecationWarning, match=r"f: stats= is deprecated, pass the same dict as info="):
        assert info_arg(None, d, "f") is d
    with pytest.raises(TypeError, match=r"f: give info= \(stats= is its deprecated name\), not both"):
        info_arg({}, d, "f")


def test_jaccard_info_timings_cover_each_stage_and_the_total():
    info: dict = {}
    hilcore.jaccard_distance(reid_features(60), 8, 3, max_distance=0.6, backend="torch", info=info)
    t = info["timings"]
    assert {"knn", "stages", "output", "total"} <= set(t) and all(v >= 0 for v in t.values())
    assert t["total"] >= t["knn"] + t["stages"] + t["output"] - 1e-6  # the parts lie inside the total
    assert info["backend"] == "knn=torch, stages=torch"


@pytest.mark.skipif(not hilcore._dispatch.has_native(), reason="the native extension is not built")
def test_native_knn_reports_through_info_with_its_stage_timings():
    from hilcore.backend.native import knn as nk

    x = torch.nn.functional.normalize(torch.from_numpy(reid_features(80)), dim=1)
    info: dict = {}
    idx, _ = nk.knn(x, 5, precision="fp32", info=info)
    assert info["precision"] == "fp32" and info["rows"] == 80 and idx.shape == (80, 5)
    assert {"candidates", "rescore", "refine"} <= set(info["timings"])
    with pytest.raises(TypeError, match="stats"):
        nk.knn(x, 5, stats={})  # never documented: no deprecated name


@pytest.mark.skipif(importlib.util.find_spec("triton") is None or
                    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
                    reason="needs triton and a GPU or TRITON_INTERPRET=1")
def test_documented_backend_entry_points_keep_stats_as_a_deprecated_name():
    from hilcore.backend.triton import knn as tknn

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.nn.functional.normalize(torch.from_numpy(reid_features(40)), dim=1).to(dev)
    new: dict = {}
    want = tknn.knn(x, 4, info=new)
    old: dict = {}
    with pytest.warns(DeprecationWarning, match="hilcore.backend.triton.knn.knn: stats= is deprecated"):
        got = tknn.knn(x, 4, stats=old)
    assert old == new and old["precision"] in ("fp16", "fp32")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name does not warn
        tknn.knn(x, 4, info={})
    ci, cv = tknn.knn(x, min(40, tknn.candidates(3)))  # exact candidates: every row certified
    old = {}
    with pytest.warns(DeprecationWarning, match="rescore_candidates: stats= is deprecated"):
        idx, _ = tknn.rescore_candidates(x, x, 3, ci, cv, True, stats=old)
    assert old["rows"] == 40 and torch.equal(idx, ci[:, :3])


def test_the_epoch_clock_is_the_stopwatch_and_its_result_reports_through_info():
    from hilcore.epoch import Clock

    assert issubclass(Clock, Stopwatch)
    x = reid_features(90)
    out = hilcore.cluster_epoch(x, x.copy(), hilcore.EpochConfig(k1=8, k2=3, eps=0.6, min_samples=3, backend="torch"))
    assert out.info == {"backends": out.backends, "timings": out.timings}
    assert out.info["timings"]["total"] >= out.info["timings"]["jaccard_rgb"] >= 0


def test_the_sharded_ops_report_through_info_and_keep_stats_as_a_deprecated_name():
    import hilcore.distributed as HD

    x = reid_features(50)
    info: dict = {}
    d = HD.jaccard_distance(x, 8, 3, max_distance=0.6, info=info)
    assert info["op"] == "jaccard_distance" and info["world"] == 1 and info["nnz"] == d.nnz
    assert set(info["timings"]) == {"knn", "total"} and info["timings"]["total"] >= info["timings"]["knn"] >= 0
    old: dict = {}
    with pytest.warns(DeprecationWarning, match="hilcore.distributed.knn: stats= is deprecated"):
        HD.knn(x, 4, stats=old)
    assert old["op"] == "knn" and "total" in old["timings"]
    with pytest.raises(TypeError, match="not both"):
        HD.dbscan(d, 0.6, 3, info={}, stats={})
