"""Smoke tests of the benchmark scripts: they run on tiny sizes and write the JSON the plots read.

The scale sweep (benchmarks/bench_scale.py) runs once as a script in a
subprocess on the CPU; its rows are checked against hilcore run here on the
same features. The out-of-memory and budget paths run in-process with the
measurement replaced.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hilcore
from hilcore.synthetic import reid_features

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_scale.py"
SIZES = (200, 400)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--sizes", *map(str, SIZES), "--repeats", "2",
           "--budget-s", "120", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, out


def test_scale_json_layout(scale_run):
    res, stdout, _ = scale_run
    assert res["benchmark"] == "scale" and res["complete"] is True
    m = res["machine"]
    assert m["device"] == "cpu" and m["device_name"] and m["torch"] == torch.__version__
    assert "triton" in m
    assert res["params"]["dim"] == 768 and res["params"]["sizes"] == list(SIZES)
    assert res["params"]["backend"] in hilcore.backends("cpu")
    floor = res["floor"]
    assert floor["n"] == SIZES[0] and set(floor["s"]) == {"fp32"} and floor["s"]["fp32"] > 0
    assert [r["n"] for r in res["rows"]] == list(SIZES)
    # one table row per N, after the header
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["N", "reps"])
    assert [int(line.split()[0]) for line in lines[head + 1: head + 1 + len(SIZES)]] == list(SIZES)


def test_scale_rows_measured(scale_run):
    res, _, _ = scale_run
    floor = res["floor"]
    for r in res["rows"]:
        assert r["status"] == "ok" and r["repeats"] == 2
        assert len(r["total_s_all"]) == len(r["knn_s_all"]) == 2
        for tot, jac, db in zip(r["total_s_all"], r["jaccard_s_all"], r["dbscan_s_all"]):
            assert tot == pytest.approx(jac + db, rel=1e-6, abs=1e-6)
        assert r["total_s"] == pytest.approx(float(np.median(r["total_s_all"])))
        st = r["stages_s"]
        assert st["knn"] == pytest.approx(float(np.median(r["knn_s_all"])))
        assert min(st.values()) >= 0 and r["knn_share"] == pytest.approx(st["knn"] / r["total_s"])
        assert r["peak_rss_mb"] > 0 and r["input_mb"] == pytest.approx(r["n"] * 768 * 4 / 2**20)
        assert r["floor_s"]["fp32"] == pytest.approx(floor["s"]["fp32"] * (r["n"] / floor["n"]) ** 2)
        assert r["floor_share"]["fp32"] == pytest.approx(r["floor_s"]["fp32"] / r["total_s"])


@pytest.mark.parametrize("i", range(len(SIZES)))
def test_scale_rows_match_hilcore(scale_run, i):
    """Pairs, clusters and noise are those of the pipeline on the same features."""
    from benchmarks.bench_cluster import n_ids_for

    res, _, _ = scale_run
    r = res["rows"][i]
    p = res["params"]
    x, ids, _ = reid_features(n_ids_for(r["n"]), n=r["n"], dim=p["dim"], seed=p["seed"])
    d = hilcore.jaccard_distance(x, p["k1"], p["k2"], max_distance=p["eps"], backend=p["backend"])
    labels = hilcore.dbscan(d, p["eps"], p["min_samples"], backend=p["dbscan_backend"])
    assert r["nnz"] == d.nnz and r["pairs_per_row"] == pytest.approx(d.nnz / r["n"])
    assert r["pairs_per_row"] >= 1  # the diagonal is stored
    assert r["clusters"] == int(labels.max()) + 1 and r["noise"] == int((labels < 0).sum())
    assert r["clusters"] >= 1


def test_scale_plot(scale_run, tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.plot import main as plot_main

    _, _, out = scale_run
    png = tmp_path / "scale.png"
    assert plot_main([str(out), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def _bench_scale():
    from benchmarks import bench_scale

    return bench_scale


def test_scale_oom_is_inf_and_sweep_continues(tmp_path, monkeypatch):
    bs = _bench_scale()
    real = bs.measure

    def measure(n, reps, args, row):
        if n == 300:
            row["stage"] = "jaccard+dbscan"
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(n, reps, args, row)

    monkeypatch.setattr(bs, "measure", measure)
    out = tmp_path / "oom.json"
    assert bs.main(["--device", "cpu", "--sizes", "400", "300", "200", "--repeats", "1", "--no-floor",
                    "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["n"] for r in rows] == [200, 300, 400]
    assert [r["status"] for r in rows] == ["ok", "oom", "ok"]
    oom = rows[1]
    assert math.isinf(oom["total_s"]) and "OutOfMemoryError" in oom["reason"]
    assert "jaccard+dbscan" in oom["reason"]


def test_scale_error_is_recorded_and_fails(tmp_path, monkeypatch):
    bs = _bench_scale()

    def measure(n, reps, args, row):
        raise ValueError("boom")

    monkeypatch.setattr(bs, "measure", measure)
    out = tmp_path / "err.json"
    assert bs.main(["--device", "cpu", "--sizes", "200", "--no-floor", "--out", str(out)]) == 1
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "error" and "boom" in row["reason"] and row["total_s"] is None


def test_scale_budget_skips(tmp_path):
    bs = _bench_scale()
    out = tmp_path / "skip.json"
    assert bs.main(["--device", "cpu", "--sizes", "200", "400", "--budget-s", "0", "--no-floor",
                    "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert all("budget" in r["reason"] for r in rows)


def test_scale_prediction():
    bs = _bench_scale()
    prev = {"n": 1000, "status": "ok", "gen_s": 0.1, "total_s": 1.0, "stages_s": {"knn": 0.5}}
    # generation ~ N, each repeat (pipeline + kNN) ~ N^2
    assert bs.predict_s(prev, 2000, 3) == pytest.approx(0.2 + 3 * 1.5 * 4)
    assert bs.predict_s(None, 2000, 3) is None
    assert bs.predict_s({"n": 1000, "status": "oom"}, 2000, 1) is None
