"""benchmarks/device_check.sh and its summary, on a machine without a GPU (as CI runs them).

Without a CUDA device the script must end within 60 s with one clear line and still
write its archive with the environment report; the summary must stay within 60
lines and name each failing test with its first error line; the per-test time
limit of tests/conftest.py (HILCORE_TEST_TIMEOUT) must fail a test that overruns.
"""
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_summary  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run for real")
def test_without_gpu_one_line_and_the_archive_within_60_s(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    env.pop("TRITON_INTERPRET", None)
    t = time.monotonic()
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "quick"], capture_output=True,
                       text=True, env=env, timeout=90)
    took = time.monotonic() - t
    assert took < 60, f"took {took:.0f} s"
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], p.stdout
    archive = tmp_path / "device_check_quick.tar.gz"
    assert archive.exists() and str(archive) in lines[0]
    with tarfile.open(archive) as tf:
        names = {Path(n).name for n in tf.getnames()}
        assert {"env.txt", "steps.tsv", "summary.txt"} <= names
        env_txt = tf.extractfile("./env.txt").read().decode()
    for want in ("--- nvidia-smi", "--- python", f"torch {torch.__version__}", "triton ", "--- cpu"):
        assert want in env_txt, want


def test_unknown_mode_is_refused():
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "fast"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 64 and "quick|full" in p.stderr


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="{f}"
 skipped="1" tests="{t}"><testcase classname="tests.test_cuda" name="test_ok"/>
{cases}<testcase classname="tests.test_cuda" name="test_err"><error message="CUDA error: illegal address">
trace</error></testcase><testcase classname="tests.test_knn" name="test_skip"><skipped message="x"/></testcase>
</testsuite></testsuites>"""


def test_summary_names_failures_steps_and_timings_within_60_lines(tmp_path):
    n_fail = 40  # more failures than fit: the summary stays <= 60 lines and says how many it left out
    cases = "".join(f'<testcase classname="tests.test_cuda" name="test_f{i}"><failure message="AssertionError: '
                    f'row {i} differs&#10;second line">tb</failure></testcase>' for i in range(n_fail))
    (tmp_path / "tests_gpu.xml").write_text(JUNIT.format(f=n_fail, t=n_fail + 3, cases=cases))
    (tmp_path / "steps.tsv").write_text("env\t0\t3\nbuild\t0\t80\ntests_gpu\t1\t50\nbench_knn\ttimeout 60s\t60\n")
    (tmp_path / "env.txt").write_text("device NVIDIA H100 80GB HBM3, capability 9.0, 132 SMs\ntorch 2.11.0\n"
                                      "triton 3.6.0\ntorch cuda 13.0 available True\n")
    (tmp_path / "sanitizer_memcheck.log").write_text("... \n========= ERROR SUMMARY: 0 errors\n")
    (tmp_path / "knn_cuda.json").write_text(json.dumps({"rows": [{"n": 22258, "dim": 1536, "k": 30, "columns": {
        "triton": {"median_s": 0.0042}, "torch": {"skipped": "x"}}}]}))
    lines = device_summary.summary(tmp_path, "full", "300", "/out/a.tar.gz")
    text = "\n".join(lines)
    assert len(lines) <= 60
    assert lines[0].startswith("device_check full: 2 step(s) not passed")
    assert "NVIDIA H100" in lines[1] and "triton 3.6.0" in lines[1]
    assert "test_f0: AssertionError: row 0 differs" in text and "second line" not in text
    assert "test_f14:" in text and "test_f15:" not in text  # the first 15 are shown
    assert f"{n_fail + 1 - 15} more" in text
    assert "bench_knn" in text and "timeout 60s" in text
    assert "sanitizer_memcheck: ERROR SUMMARY: 0 errors" in text
    assert "knn N=22258 D=1536 k=30: triton 4.20 ms" in text
    assert lines[-1] == "archive: /out/a.tar.gz"


def test_summary_reads_a_cut_junit_file(tmp_path):
    (tmp_path / "tests_triton.xml").write_text("<testsuites><testsuite")  # the step was killed mid-write
    lines = device_summary.summary(tmp_path, "quick", "170", "a.tgz")
    assert any("tests_triton.xml: unreadable" in line for line in lines)


@pytest.mark.skipif(not os.environ.get("HILCORE_SLEEPER"), reason="run by test_per_test_time_limit only")
def test_sleeper():
    time.sleep(300)


def test_per_test_time_limit_fails_the_test_that_overruns():
    env = dict(os.environ, HILCORE_TEST_TIMEOUT="2", HILCORE_SLEEPER="1")
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                        f"{__file__}::test_sleeper"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=200)
    assert time.monotonic() - t < 150  # the sleeper sleeps 300 s: it was cut
    assert p.returncode == 1, p.stdout[-2000:]
    assert "ran over HILCORE_TEST_TIMEOUT=2 s" in p.stdout
