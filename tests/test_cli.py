"""The ``hil`` command: cluster / make-features, output consistent with the saved labels, clear errors."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from hilcore import cli
from hilcore.synthetic import reid_features


def _clusters_printed(out: str) -> int:
    m = re.search(r"^clusters\s+(\d+)$", out, flags=re.M)
    assert m, out
    return int(m.group(1))


def _noise_printed(out: str) -> int:
    m = re.search(r"^noise\s+(\d+) ", out, flags=re.M)
    assert m, out
    return int(m.group(1))


@pytest.fixture(scope="module")
def feats():
    x, ids, _ = reid_features(24, 12, dim=128, seed=3)
    return x, ids


def _run(*args):
    """``python -m hilcore.cli ARGS`` in a fresh interpreter (what the console script runs)."""
    return subprocess.run([sys.executable, "-m", "hilcore.cli", *map(str, args)], capture_output=True, text=True)


def test_cluster_npy_subprocess(tmp_path, feats):
    x, _ = feats
    f, out = tmp_path / "f.npy", tmp_path / "sub" / "labels.npy"
    np.save(f, x)
    r = _run("cluster", f, "--k1", 30, "--k2", 6, "--eps", 0.6, "--min-samples", 4, "--out", out)
    assert r.returncode == 0, r.stderr
    labels = np.load(out)
    assert labels.shape == (len(x),) and labels.dtype == np.int64
    assert _clusters_printed(r.stdout) == len(set(labels.tolist()) - {-1}) > 0
    assert _noise_printed(r.stdout) == int((labels == -1).sum())
    assert f"N={len(x)} D={x.shape[1]}" in r.stdout
    for stage in ("knn+jaccard", "dbscan"):
        assert stage in r.stdout
    import hilcore

    want = hilcore.dbscan(hilcore.jaccard_distance(x, 30, 6, max_distance=0.6), 0.6, 4)
    np.testing.assert_array_equal(labels, want)


@pytest.mark.parametrize("layout", ["tensor", "features", "feats"])
def test_cluster_pt(tmp_path, feats, capsys, layout):
    x, _ = feats
    t = torch.from_numpy(x).double()
    f, out = tmp_path / "f.pt", tmp_path / "labels.npy"
    torch.save(t if layout == "tensor" else {layout: t, "ids": torch.arange(len(x))}, f)
    assert cli.main(["cluster", str(f), "--k1", "20", "--backend", "torch", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    labels = np.load(out)
    assert _clusters_printed(stdout) == len(set(labels.tolist()) - {-1})
    assert "backend    torch" in stdout


def test_make_features_then_cluster(tmp_path, capsys):
    out = tmp_path / "data" / "features.npy"
    assert cli.main(["make-features", str(out), "--ids", "20", "--per-id", "10", "--dim", "64", "--seed", "1"]) == 0
    x, ids = np.load(out), np.load(tmp_path / "data" / "features_ids.npy")
    assert x.shape == (200, 64) and x.dtype == np.float32 and ids.shape == (200,)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.bincount(ids).tolist() == [10] * 20
    assert cli.main(["cluster", str(out)]) == 0
    assert _clusters_printed(capsys.readouterr().out) > 0


def _error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hil: error: "), err
    return lines[0]


def test_errors(tmp_path, capsys):
    assert "no such file" in _error(capsys, ["cluster", str(tmp_path / "missing.npy")])
    np.save(tmp_path / "one.npy", np.ones(10, dtype=np.float32))
    assert "2-D" in _error(capsys, ["cluster", str(tmp_path / "one.npy")])
    x = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    x[[4, 9]] = np.nan
    np.save(tmp_path / "nan.npy", x)
    msg = _error(capsys, ["cluster", str(tmp_path / "nan.npy")])
    assert "NaN" in msg and "[4, 9]" in msg
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    assert "not a .npy file" in _error(capsys, ["cluster", str(tmp_path / "junk.npy")])
    (tmp_path / "f.csv").write_text("1,2\n")
    assert "unsupported file type" in _error(capsys, ["cluster", str(tmp_path / "f.csv")])
    torch.save({"other": torch.ones(3, 3)}, tmp_path / "nokey.pt")
    assert "'features'" in _error(capsys, ["cluster", str(tmp_path / "nokey.pt")])
    np.save(tmp_path / "int.npy", np.ones((5, 3), dtype=np.int64))
    assert "floating" in _error(capsys, ["cluster", str(tmp_path / "int.npy")])
    np.save(tmp_path / "ok.npy", np.ones((5, 3), dtype=np.float32))
    assert "backend" in _error(capsys, ["cluster", str(tmp_path / "ok.npy"), "--backend", "nonsense"])
    assert "k1" in _error(capsys, ["cluster", str(tmp_path / "ok.npy"), "--k1", "0"])


def test_errors_subprocess(tmp_path):
    r = _run("cluster", tmp_path / "missing.npy")
    assert r.returncode == 2
    assert r.stderr.strip() == f"hil: error: FEATURES: no such file: {tmp_path / 'missing.npy'}"
    assert r.stdout == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    import hilcore

    assert hilcore.__version__ in capsys.readouterr().out
