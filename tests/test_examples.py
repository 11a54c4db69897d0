"""The examples run (CI): examples/switch_cluster_contrast.py trains with the compat drop-ins and checks every
step against the plain-PyTorch cluster-contrast pipeline written in it; it exits non-zero on a difference."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [[], ["--use-hard", "--backend", "torch"]], ids=["cm", "cm_hard-torch"])
def test_switch_cluster_contrast_example(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "switch_cluster_contrast.py"), *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK: same labels, losses, gradients and memory" in out.stdout
    assert out.stdout.count("labels identical") == 2
