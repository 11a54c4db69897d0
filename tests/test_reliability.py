"""Reliability rules of the CLI and the driver (issue 21, points 3, 5, 6, 7).

* every file is written atomically (hilcore._files): on a full disk (a small tmpfs, mounted when this
  process may mount; the tests skip otherwise) the earlier file survives byte for byte, no temporary file
  is left, and the CLI says ``hil: error: no space left on device writing PATH`` (exit status 2);
* ``hil train`` holds a lock on its output folder: a second run into it is refused before it reads data;
* checkpoint errors say what is wrong (unsafe objects named, truncated, empty, not a torch file) and never
  pass on torch's advice to load with ``weights_only=False``;
* CLI messages name their flag once; ``hil bench`` writes outside the source tree and calls itself so.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hilcore import _files, cli
from hilcore._files import FolderLock, FolderLockedError, WriteError
from hilcore.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
PROPS = dict(deadline=None, derandomize=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("hil: error: "), err
    return lines[0][len("hil: error: "):]


# ------------------------------------------------------------------------------------------- a full disk
@pytest.fixture(scope="module")
def small_fs():
    """A 256 KiB tmpfs (root only); the tests that need it skip where mounting is not permitted."""
    d = Path(tempfile.mkdtemp(prefix="hil-fullfs-"))
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here ({e})")
    if proc.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    yield d
    subprocess.run(["umount", str(d)], timeout=30)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def disk(small_fs):
    """The tmpfs, empty; ``disk.fill(leave)`` fills it until at most ``leave`` bytes are free, ``disk.reset()``
    empties it again (between the examples of a property test)."""

    class Disk:
        root = small_fs

        @staticmethod
        def reset() -> None:
            for p in small_fs.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()

        @staticmethod
        def fill(leave: int = 0) -> None:
            with open(small_fs / "filler", "ab") as fh:
                while True:
                    st = os.statvfs(small_fs)
                    free = st.f_bavail * st.f_frsize
                    if free <= leave:
                        return
                    try:
                        fh.write(b"\0" * min(4096, free - leave))
                        fh.flush()
                    except OSError:
                        return

    Disk.reset()
    return Disk


@settings(max_examples=20, **PROPS)
@given(old=st.binary(min_size=0, max_size=20_000), new_size=st.integers(0, 600_000),
       leave=st.integers(0, 40_000), text=st.booleans())
def test_atomic_write_on_a_small_disk_gives_the_old_or_the_new_file_never_a_mix(disk, old, new_size, leave, text):
    disk.reset()
    p = disk.root / "sub" / "out.bin"
    _files.write_bytes(p, old)
    disk.fill(leave)
    new = bytes(range(256)) * (new_size // 256) + b"x" * (new_size % 256)
    try:
        if text:
            _files.write_text(p, new.decode("latin-1"), encoding="latin-1")
        else:
            _files.write_bytes(p, new)
    except WriteError as e:
        assert str(e) == f"no space left on device writing {p}" and e.disk_full
        assert p.read_bytes() == old                          # the earlier file, intact
    else:
        assert p.read_bytes() == new
    assert sorted(x.name for x in p.parent.iterdir()) == ["out.bin"]   # no temporary file left behind


def test_cli_outputs_on_a_full_disk_keep_the_earlier_file(disk, tmp_path, capsys):
    feats = tmp_path / "f.npy"
    assert cli.main(["make-features", str(feats), "--ids", "30", "--per-id", "8", "--dim", "32"]) == 0
    labels = disk.root / "labels.npy"
    assert cli.main(["cluster", str(feats), "--k1", "8", "--k2", "3", "--out", str(labels)]) == 0
    good = labels.read_bytes()
    capsys.readouterr()
    disk.fill(0)
    for argv, path in ((["cluster", feats, "--k1", "8", "--k2", "3", "--out", labels], labels),
                       (["make-features", disk.root / "g.npy", "--ids", "30", "--per-id", "8"], disk.root / "g.npy")):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2
        assert one_error_line(err) == f"no space left on device writing {path}"
    assert labels.read_bytes() == good
    assert not (disk.root / "g.npy").exists()                 # no 0-byte file either
    assert sorted(x.name for x in disk.root.iterdir()) == ["filler", "labels.npy"]


def test_make_features_replaces_its_three_files_together_or_not_at_all(disk, capsys):
    out = disk.root / "f.npy"
    assert cli.main(["make-features", str(out), "--ids", "4", "--per-id", "2", "--dim", "8"]) == 0
    before = {p.name: p.read_bytes() for p in disk.root.iterdir()}
    disk.fill(12_000)            # room for the small ids/cams files, not for the features
    rc, _, err = run_cli(["make-features", out, "--ids", "30", "--per-id", "8", "--dim", "64", "--seed", "1"],
                         capsys)
    assert rc == 2 and one_error_line(err).startswith("no space left on device writing ")
    assert {p.name: p.read_bytes() for p in disk.root.iterdir() if p.name != "filler"} == before


def test_checkpoint_save_on_a_full_disk_keeps_last_pt(disk):
    run = disk.root / "run"
    ckpt.save_checkpoint(run, {"model": {"w": torch.full((100,), 1.0)}, "epoch": 1})
    disk.fill(0)
    with pytest.raises(WriteError, match=f"no space left on device writing {run / ckpt.LAST}"):
        ckpt.save_checkpoint(run, {"model": {"w": torch.full((20_000,), 2.0)}, "epoch": 2}, is_best=True)
    st_ = ckpt.load_checkpoint(run)
    assert st_["epoch"] == 1 and torch.equal(st_["model"]["w"], torch.full((100,), 1.0))
    assert sorted(p.name for p in run.iterdir()) == [ckpt.LAST]


# ------------------------------------------------------------------------------------------- the writer
def test_atomic_open_keeps_the_old_file_when_the_writer_fails(tmp_path):
    p = tmp_path / "a.txt"
    _files.write_text(p, "old")
    with pytest.raises(ZeroDivisionError):
        with _files.atomic_open(p, "w") as fh:
            fh.write("half")
            1 / 0
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_torch_save_error_is_reported_as_the_write_error(tmp_path, monkeypatch):
    """torch.save turns a failed write into an unrelated RuntimeError; the writer reports the OSError."""
    import errno

    real_fdopen = os.fdopen

    class Failing:     # a file whose writes of more than 100 bytes fail as on a full device
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            if len(data) > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(_files.os, "fdopen", lambda *a, **k: Failing(real_fdopen(*a, **k)))
    with pytest.raises(WriteError, match="no space left on device writing .*x.pt"):
        ckpt.atomic_save({"w": torch.zeros(1000)}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_new_files_get_the_umask_permissions_and_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o027)
    try:
        p = _files.write_bytes(tmp_path / "n.bin", b"1")
        assert p.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    os.chmod(p, 0o604)
    _files.write_bytes(p, b"2")
    assert p.stat().st_mode & 0o777 == 0o604 and p.read_bytes() == b"2"


def test_write_error_survives_a_process_pool():
    e = pickle.loads(pickle.dumps(WriteError("/x/y", OSError(28, "No space left on device"))))
    assert str(e) == "no space left on device writing /x/y" and e.disk_full


# ------------------------------------------------------------------------------------------- the lock
_HOLD = textwrap.dedent("""
    import sys, time
    from hilcore._files import FolderLock
    lock = FolderLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def test_lock_is_exclusive_across_processes_and_freed_when_the_holder_is_killed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, env=ENV, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=rf"{tmp_path} is in use by another hil train \(pid {p.pid} "):
            FolderLock(tmp_path).acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with FolderLock(tmp_path) as lock:        # a killed holder leaves no stale lock
        assert lock.held


@settings(max_examples=30, **PROPS)
@given(ops=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=12))
def test_lock_property_at_most_one_holder(tmp_path, ops):
    """Any sequence of acquire/release calls on three locks of one folder: an acquire succeeds exactly when
    no other lock holds the folder."""
    folder = tmp_path / f"f{abs(hash(tuple(ops)))}"
    locks = [FolderLock(folder) for _ in range(3)]
    holder = None
    for i, acquire in ops:
        if acquire:
            try:
                locks[i].acquire()
                ok = True
            except FolderLockedError:
                ok = False
            assert ok == (holder in (None, i))
            if ok:
                holder = i
        else:
            locks[i].release()
            if holder == i:
                holder = None
        assert [lk.held for lk in locks] == [holder == j for j in range(3)]
    for lk in locks:
        lk.release()


def test_hil_train_refuses_a_locked_output_before_reading_data(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: synthetic, root: {tmp_path / 'no-such-data'}}}\n"
                   f"model: {{backbone: tiny, allow_random_init: true}}\nrun: {{output: {out}, device: cpu}}\n")
    with FolderLock(out):
        rc, _, err = run_cli(["train", "--config", cfg], capsys)
    assert rc == 2
    msg = one_error_line(err)
    assert f"{out} is in use by another hil train (pid {os.getpid()}" in msg and "--output" in msg
    assert not (out / "train.log").exists() and not (out / "config.yaml").exists()
    # free again: the same command gets past the lock (and stops at the missing data)
    rc, _, err = run_cli(["train", "--config", cfg], capsys)
    assert rc == 2 and "in use" not in err and "no-such-data" in err


# ------------------------------------------------------------------------------------------- checkpoint errors
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["zip", "legacy", "pickle"])
def test_unsafe_files_name_the_first_object_and_never_advise_weights_only_false(tmp_path, how):
    f = tmp_path / "evil.pt"
    obj = {"model": {}, "epoch": 1, "x": _Evil()}
    if how == "pickle":
        f.write_bytes(pickle.dumps(obj, protocol=4))
    else:
        torch.save(obj, f, _use_new_zipfile_serialization=how == "zip")
    with pytest.raises(ckpt.UnsafeCheckpointError) as ei:
        ckpt.load_checkpoint(f)
    msg = str(ei.value)
    assert f"{f} holds Python objects outside the safe checkpoint format (the first is posix.system)" in msg \
        or f"(the first is {os.system.__module__}.system)" in msg
    assert "weights_only" not in msg and "convert-checkpoint --trust" in msg


@settings(max_examples=15, **PROPS)
@given(frac=st.floats(0.0, 0.999))
def test_truncated_checkpoints_say_truncated_or_empty(tmp_path, frac):
    good = tmp_path / "good.pt"
    if not good.exists():
        ckpt.save_checkpoint(tmp_path / "run", {"model": {"w": torch.arange(3000.0)}, "epoch": 3})
        shutil.copy(tmp_path / "run" / ckpt.LAST, good)
    data = good.read_bytes()
    f = tmp_path / "cut.pt"
    f.write_bytes(data[:int(frac * len(data))])
    with pytest.raises(ckpt.CorruptCheckpointError) as ei:
        ckpt.load_checkpoint(f)
    msg = str(ei.value)
    assert "weights_only" not in msg
    assert ("is empty (0 bytes)" in msg) if frac * len(data) < 1 else ("truncated" in msg)


def test_not_a_torch_file(tmp_path):
    f = tmp_path / "notes.pt"
    f.write_text("hello")
    with pytest.raises(ckpt.CorruptCheckpointError, match="is not a torch file"):
        ckpt.load_checkpoint(f)


# ------------------------------------------------------------------------------------------- messages
@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    p = tmp_path_factory.mktemp("f") / "f.npy"
    assert cli.main(["make-features", str(p), "--ids", "20", "--per-id", "6", "--dim", "16"]) == 0
    return p


@pytest.mark.parametrize("argv, flag", [
    (["--backend", "nonsense"], "--backend"),
    (["--eps", "nan"], "--eps"),
    (["--eps", "-1"], "--eps"),
    (["--k1", "0"], "--k1"),
    (["--min-samples", "0"], "--min-samples"),
])
def test_cluster_messages_name_the_flag_once(feats, capsys, argv, flag):
    rc, _, err = run_cli(["cluster", feats] + argv, capsys)
    msg = one_error_line(err)
    assert rc == 2 and msg.startswith(f"{flag}: ") and msg.count(flag) == 1, msg
    assert "max_distance" not in msg and "backend: backend" not in msg


@pytest.mark.parametrize("cmd", [["make-features", "{tmp}/o.npy"], ["make-synthetic", "{tmp}/d"]])
@pytest.mark.parametrize("seed", ["-1", str(2 ** 32)])
def test_seed_messages_name_the_flag(tmp_path, capsys, cmd, seed):
    rc, _, err = run_cli([c.format(tmp=tmp_path) for c in cmd] + ["--seed", seed], capsys)
    assert rc == 2 and one_error_line(err).startswith(f"--seed: expected a number in [0, {2 ** 32 - 1}], got {seed}")


def test_make_synthetic_names_overwrite_as_a_flag(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cam1").mkdir()
    rc, _, err = run_cli(["make-synthetic", tmp_path / "d", "--ids", "3", "--imgs-per-cam", "1"], capsys)
    msg = one_error_line(err)
    assert rc == 2 and "--overwrite" in msg and "overwrite=True" not in msg


def test_cluster_progress_steps_on_request_and_not_into_a_redirected_log(feats, capsys):
    pytest.importorskip("tqdm")
    rc, _, err = run_cli(["cluster", feats, "--k1", "8", "--k2", "3", "--progress", "on"], capsys)
    assert rc == 0 and "hil cluster: 3/3 steps" in err and "kNN rows" in err and "Jaccard pass" in err
    rc, _, err = run_cli(["cluster", feats, "--k1", "8", "--k2", "3"], capsys)   # auto, stderr not a terminal
    assert rc == 0 and err == ""


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_jaccard_reports_its_parts_and_the_knn_rows_in_order(feats, backend, monkeypatch):
    import hilcore
    from hilcore import _progress
    from hilcore.backend.native import knn as native_knn
    from hilcore.backend.torch import knn as torch_knn

    if backend not in hilcore.backends("cpu"):
        pytest.skip(f"{backend} is not built here")
    x = np.load(feats)                                            # 120 rows
    monkeypatch.setattr(torch_knn, "TILE_ELEMENTS", 120 * 16)    # blocks of 16 rows
    inner = getattr(native_knn.knn, "__wrapped__", native_knn.knn)   # (the registry holds the function itself)
    monkeypatch.setitem(inner.__kwdefaults__, "tile", 16)
    seen = []
    with _progress.reporting(lambda *r: seen.append(r)):
        want = hilcore.jaccard_distance(x, 8, 3, backend=backend)
    got = hilcore.jaccard_distance(x, 8, 3, backend=backend)      # the reports change nothing
    assert (want != got).nnz == 0
    assert seen[0] == ("knn", 0, 0) and ("stages", 0, 0) in seen    # (tests/test_progress.py: the stages' rows)
    tiles = seen[1:seen.index(("stages", 0, 0))]
    assert len(tiles) == 8 and all(s == "knn" for s, _, _ in tiles)   # one report per block of 16 rows
    done = [d for _, d, _ in tiles]
    assert done == sorted(done) and done[-1] == tiles[-1][2]          # increasing, to the total


# ------------------------------------------------------------------------------------------- hil bench
def test_bench_help_names_itself_and_results_go_outside_the_source_tree(monkeypatch, capsys, tmp_path):
    import runpy

    seen = {}
    monkeypatch.setattr(runpy, "run_path", lambda path, run_name: seen.update(argv=list(sys.argv), path=path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HIL_BENCH_DIR", raising=False)
    assert cli.main(["bench", "--quick"]) == 0
    assert seen["argv"] == ["hil bench", "--quick", "--out-dir", str(tmp_path / "cache" / "hilcore" / "bench")]
    assert Path(seen["path"]) == ROOT / "benchmarks" / "bench_cluster.py"
    assert cli.main(["bench", "--quick", "--out", "x.json"]) == 0
    assert seen["argv"] == ["hil bench", "--quick", "--out", "x.json"]
    monkeypatch.undo()
    with pytest.raises(SystemExit):
        sys.argv, saved = ["hil bench"], sys.argv
        try:
            from benchmarks.bench_cluster import main as bench_main

            bench_main(["--help"])
        finally:
            sys.argv = saved
    assert capsys.readouterr().out.startswith("usage: hil bench")


def test_bench_outside_a_clone_says_where_the_scripts_are(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "hilcore" / "cli.py"))
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(["bench", "--quick"], capsys)
    msg = one_error_line(err)
    assert rc == 2 and "inside a clone" in msg and "run from a clone" not in msg


def test_docs_show_only_committed_results(tmp_path):
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import hilcore_docs
    finally:
        sys.path.pop(0)
    res = tmp_path / "repo" / "results"
    res.mkdir(parents=True)
    (res / "committed.json").write_text('{"a": 1}')
    assert [p.name for p in hilcore_docs._committed(res, "*.json")] == ["committed.json"]   # not a git checkout
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(res)]
    subprocess.run(git[:5] + ["init", "-q", str(tmp_path / "repo")], check=True)
    subprocess.run(git + ["add", "committed.json"], check=True)
    subprocess.run(git + ["commit", "-qm", "r"], check=True)
    (res / "local_run.json").write_text('{"a": 2}')
    assert [p.name for p in hilcore_docs._committed(res, "*.json")] == ["committed.json"]


def test_hil_eval_shows_extraction_progress_on_request_and_not_into_a_redirected_log(tmp_path, capsys):
    pytest.importorskip("tqdm")
    from hilcore.train import config as C
    from hilcore.train.loop import build_reid_model
    from hilcore.train.synthetic_people import make_synthetic_sysu

    root = make_synthetic_sysu(tmp_path / "d", n_ids=6, imgs_per_cam=1, size=(32, 16), seed=0)
    cfg = C.from_dict({"data": {"dataset": "synthetic", "root": str(root), "size": [32, 16], "workers": 0},
                       "model": {"backbone": "tiny", "kwargs": {"width": 8}, "allow_random_init": True}, "run": {"device": "cpu"}})
    model = build_reid_model(cfg)
    ckpt.save_checkpoint(tmp_path / "run", ckpt.training_state(model, None, None, 1, cfg.to_dict(), [], {}))
    base = ["eval", tmp_path / "run", "--dataset", "synthetic", "--data-root", root, "--trials", "1"]
    rc, out, err = run_cli(base + ["--progress", "on"], capsys)
    assert rc == 0 and "eval query (IR)" in err and "eval gallery (RGB)" in err and "mAP" in out
    rc, out, err = run_cli(base, capsys)       # auto: stderr is not a terminal here
    assert rc == 0 and err == ""


def test_train_and_extract_name_their_flags_once(tmp_path, capsys):
    rc, _, err = run_cli(["train", "--config", tmp_path / "missing.yaml"], capsys)
    assert rc == 2 and one_error_line(err) == f"--config: file {tmp_path / 'missing.yaml'} does not exist"
    (tmp_path / "img").mkdir()
    from PIL import Image

    Image.new("RGB", (16, 32)).save(tmp_path / "img" / "a.jpg")
    rc, _, err = run_cli(["extract", "--checkpoint", tmp_path / "none.pt", "--images", tmp_path / "img",
                          "--modality", "rgb", "--out", tmp_path / "o.npy"], capsys)
    assert rc == 2 and one_error_line(err) == f"--checkpoint: {tmp_path / 'none.pt'} does not exist"
