"""Smoke test of benchmarks/bench_compat.py: tiny sizes, the check passes and the JSON has the conventions'
layout (machine named, medians, loop baseline in the same run)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hilcore

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_compat  # noqa: E402


def test_bench_compat_quick(tmp_path, capsys):
    out = tmp_path / "compat.json"
    assert bench_compat.main(["--quick", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["benchmark"] == "compat" and res["quick"] is True and res["machine"]["device_name"]
    rows = res["results"]
    want = {b for b in ("torch", "native") if b in hilcore.backends("cpu")}
    assert {r["backend"] for r in rows} == want
    assert {r["op"] for r in rows} == {"cluster_memory", "cluster_memory_hard"}
    for r in rows:
        assert r["ok"] and r["max_abs_diff"] <= 1e-5 and r["loop_s"] > 0 and r["hilcore_s"] > 0
    assert "cluster_memory_hard" in capsys.readouterr().out
