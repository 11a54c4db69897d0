"""Checkpoints: atomic writes survive interruption; a SIGKILLed training run resumes with nothing lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml

from hilcore.train import checkpoint as ckpt
from test_train import make_tiny_dataset, tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _state(v: float, n: int = 1000) -> dict:
    return {"model": {"w": torch.full((n,), float(v))}, "epoch": int(v), "history": [{"epoch": int(v)}]}


def test_atomic_save_interrupted_by_exception_keeps_old_last(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, _state(1))
    real_save = torch.save

    def half_then_fail(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 truncated checkpoint bytes")   # a partial zip, then the 'crash'
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, _state(2), is_best=True)
    monkeypatch.setattr(torch, "save", real_save)
    st = ckpt.load_checkpoint(tmp_path)
    assert st["epoch"] == 1 and torch.equal(st["model"]["w"], torch.full((1000,), 1.0))
    assert not (tmp_path / ckpt.BEST).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LAST]   # the temp file was removed


def test_sigkill_during_checkpoint_writes_never_corrupts_last(tmp_path):
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.getcwd()!r})
        from hilcore.train import checkpoint as ckpt
        i = 0
        while True:
            i += 1
            ckpt.save_checkpoint(sys.argv[1], {{"model": {{"w": torch.full((3_000_000,), float(i))}}, "epoch": i}},
                                 is_best=i % 2 == 0)
    """)
    seen = []
    for delay in (0.05, 0.23, 0.41):
        p = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=ENV)
        try:
            t0 = time.time()
            while not (tmp_path / ckpt.LAST).exists() and time.time() - t0 < 60:
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        assert p.returncode == -signal.SIGKILL
        for name in (ckpt.LAST, ckpt.BEST):
            if (tmp_path / name).exists():
                st = ckpt.load_checkpoint(tmp_path / name)    # complete: loads, one consistent value
                w = st["model"]["w"]
                assert w.shape == (3_000_000,) and torch.equal(w, torch.full_like(w, float(st["epoch"])))
        seen.append(ckpt.load_checkpoint(tmp_path)["epoch"])
    assert all(e >= 1 for e in seen)
    ckpt.save_checkpoint(tmp_path, _state(99))
    assert not list(tmp_path.glob(".tmp-ckpt-*"))                 # stale temps of killed writers are cleaned


def _write_config(tmp_path, root, out, epochs=3):
    cfg = tiny_config(root, out, optim={"epochs": epochs, "iters": 3})
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train_cmd(cfg_path):
    return [sys.executable, "-m", "hilcore.cli", "train", "--config", str(cfg_path)]


def test_killed_run_resumes_with_nothing_lost(tmp_path):
    root = make_tiny_dataset(tmp_path / "sysu")
    # reference: the same run, uninterrupted
    ref_out = tmp_path / "ref"
    r = subprocess.run(_train_cmd(_write_config(tmp_path, root, ref_out)), env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = ckpt.load_checkpoint(ref_out)

    out = tmp_path / "killed"
    cfg_path = _write_config(tmp_path, root, out)
    p = subprocess.Popen(_train_cmd(cfg_path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while not (out / ckpt.LAST).exists():
            assert p.poll() is None, "the run ended before its first checkpoint"
            assert time.time() - t0 < 240
            time.sleep(0.02)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL
    done = ckpt.load_checkpoint(out)["epoch"]
    assert 1 <= done < 3, "killed after the first checkpoint, before the end"

    r = subprocess.run(_train_cmd(cfg_path), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{done} epoch(s) done, continuing at epoch {done + 1}" in r.stdout
    assert f"epoch {done}/3" not in r.stdout                 # the finished epoch is not trained again
    st = ckpt.load_checkpoint(out)
    assert st["epoch"] == 3
    assert [h["epoch"] for h in st["history"]] == [1, 2, 3]  # every epoch exactly once
    # nothing lost: the resumed run ends where the uninterrupted one does
    for a, b in zip(st["history"], ref["history"]):
        for k in ("clusters_rgb", "clusters_ir", "loss", "mAP", "ari"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["epoch"], k)
    for k, v in ref["model"].items():
        assert torch.allclose(st["model"][k].float(), v.float(), rtol=1e-4, atol=1e-5), k
