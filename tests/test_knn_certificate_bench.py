"""benchmarks/bench_knn_certificate.py: the CPU emulation of the Triton kNN's certificate, on small inputs.

Rows whose k-th neighbour ties with a column outside the candidates cannot be
certified (the GPU sends them to the fp32 kernel); well-separated random rows
all are; the emulated merge rounds and rescored-candidate counts stay within
what the kernels can do.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytest.importorskip("triton")
import bench_knn_certificate as bkc  # noqa: E402


def _unit(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))


def test_random_rows_all_certified():
    r = bkc.emulate(_unit(700, 48, 0), 5, block=256, round_sample=1)
    assert r["uncertified_rows"] == 0 and r["candidates"] == 16
    assert 5 <= r["rescored_candidates_mean"] <= 16 and r["rescored_candidates_max"] <= 16
    curve = r["merge_rounds_curve"]
    assert len(curve) == -(-700 // r["block_n"])
    assert curve[0] == 16  # the first tile fills every row's list: KC rounds
    assert all(0 <= v <= 16 for v in curve) and curve[-1] < curve[0]


def test_rows_tied_beyond_the_candidates_are_not_certified():
    x = _unit(300, 32, 1)
    x[:40] = x[3]  # 40 copies: rows 0..39 have 39 columns tied at similarity 1, more than KC = 16
    r = bkc.emulate(x, 5, block=256, round_sample=1)
    assert r["uncertified_rows"] >= 40
    assert r["uncertified_rows"] <= 40 + 300 // 50  # the others stay certified
