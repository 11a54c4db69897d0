"""Opening a checkpoint never runs code; checksums catch damage; auto-resume falls back to an intact one.

Issue 14 (safe format, every loading path refuses a malicious pickle) and
issue 11 point 5 (checksum + hilcore version, fallback to the newest intact
checkpoint, `hil eval` refuses a corrupt file).
"""
from __future__ import annotations

import ast
import random
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hilcore import cli
from hilcore.train import checkpoint as ckpt
from hilcore.train import config as C
from test_train import make_tiny_dataset, tiny_config

PKG = Path(__file__).resolve().parents[1] / "hilcore"


# ------------------------------------------------------------------------------------------- helpers
class _Payload:
    """Pickles as a call to ``exec`` that writes ``marker``: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def write_malicious(path, marker) -> Path:
    """A file that looks like a hilcore checkpoint (model, epoch, config) and runs code when unpickled."""
    torch.save({"model": {"w": torch.ones(3)}, "epoch": 1, "config": {}, "x": _Payload(marker)}, path)
    return Path(path)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    return write_malicious(tmp_path / "evil.pt", marker), marker


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("syn_safety") / "sysu")


@pytest.fixture(scope="module")
def ref_run(tiny_root, tmp_path_factory):
    """A finished 2-epoch tiny run: (folder, its last.pt state)."""
    from hilcore.train.loop import train

    out = tmp_path_factory.mktemp("ref_safety") / "run"
    train(C.from_dict(tiny_config(tiny_root, out)))
    return out, ckpt.load_checkpoint(out)


def copy_run(ref_folder, dst) -> Path:
    shutil.copytree(ref_folder, dst)
    return dst


def write_cfg(tmp_path, root, out, **sections) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(tiny_config(root, out, **sections)))
    return p


def flip_tensor_byte(path, offset_in_data: int = 7) -> None:
    """Flip one byte inside the largest tensor record of a torch zip file (its data, not the zip headers)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    b = bytearray(Path(path).read_bytes())
    name_len, extra_len = struct.unpack("<HH", b[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    b[start + min(offset_in_data, info.file_size - 1)] ^= 0x10
    Path(path).write_bytes(bytes(b))


def truncate(path, frac: float = 0.5) -> None:
    b = Path(path).read_bytes()
    Path(path).write_bytes(b[:int(len(b) * frac)])


def run_cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err: str, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("hil: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ------------------------------------------------------------------------------------------- malicious files
def test_the_malicious_file_really_runs_code_when_fully_unpickled(evil):
    path, marker = evil
    torch.load(path, weights_only=False)        # what the old loader did
    assert marker.read_text() == "code ran"


def test_load_state_file_and_load_checkpoint_refuse_malicious(evil):
    path, marker = evil
    for load in (ckpt.load_state_file, ckpt.load_checkpoint):
        with pytest.raises(ckpt.UnsafeCheckpointError, match=r"outside the safe checkpoint format.*exec.*"
                           r"hil convert-checkpoint --trust"):
            load(path)
    assert not marker.exists()


def test_hil_eval_refuses_malicious(evil, tmp_path, capsys):
    path, marker = evil
    rc, out, err = run_cli(["eval", path, "--dataset", "synthetic", "--data-root", tmp_path], capsys)
    assert rc == 2
    assert_one_error_line(err, "outside the safe checkpoint format", "convert-checkpoint --trust")
    assert not marker.exists()


def test_hil_train_resume_path_refuses_malicious(evil, tiny_root, tmp_path, capsys):
    path, marker = evil
    cfg = write_cfg(tmp_path, tiny_root, tmp_path / "run")
    rc, out, err = run_cli(["train", "--config", cfg, "--resume", path], capsys)
    assert rc == 2
    assert_one_error_line(err, "outside the safe checkpoint format")
    assert not marker.exists() and not (tmp_path / "run" / ckpt.LAST).exists()


def test_auto_resume_refuses_malicious_last_pt(evil, tiny_root, tmp_path, capsys):
    path, marker = evil
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(path, out / ckpt.LAST)
    cfg = write_cfg(tmp_path, tiny_root, out)
    rc, _, err = run_cli(["train", "--config", cfg], capsys)
    assert rc == 2
    assert_one_error_line(err, "outside the safe checkpoint format")
    assert not marker.exists()
    assert (out / ckpt.LAST).read_bytes() == path.read_bytes()      # left for a person to look at


def test_backbone_loader_refuses_malicious(evil):
    from hilcore.train.backbones import VisionTransformer, build_model, load_transreid_checkpoint

    path, marker = evil
    vit = VisionTransformer(img_size=(32, 16), embed_dim=64, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="outside the safe checkpoint format"):
        load_transreid_checkpoint(vit, path)
    with pytest.raises(ValueError, match="outside the safe checkpoint format"):
        build_model("vit_b16", pretrained=path, img_size=(32, 16), embed_dim=64, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="weights_only=False"):
        load_transreid_checkpoint(vit, path, weights_only=False)
    assert not marker.exists()


def test_convert_without_trust_refuses_malicious(evil, capsys):
    path, marker = evil
    before = path.read_bytes()
    rc, _, err = run_cli(["convert-checkpoint", path, path.with_name("out.pt")], capsys)
    assert rc == 2
    assert_one_error_line(err, "outside the safe checkpoint format", "--trust")
    assert not marker.exists() and not path.with_name("out.pt").exists() and path.read_bytes() == before


def test_hil_cluster_refuses_malicious(evil, capsys):
    path, marker = evil
    rc, _, err = run_cli(["cluster", path], capsys)
    assert rc == 2 and err.startswith("hil: error: ")
    assert not marker.exists()


def test_no_full_unpickling_in_the_package_outside_the_trust_path():
    """Every torch.load passes weights_only=True, except the one in convert_checkpoint; no pickle.load."""
    found = []

    class Scan(ast.NodeVisitor):
        def __init__(self, fname):
            self.fname, self.scope = fname, ["<module>"]

        def visit_FunctionDef(self, node):
            self.scope.append(node.name)
            self.generic_visit(node)
            self.scope.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Call(self, node):
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            if name.endswith(("pickle.load", "pickle.loads", "pickle.Unpickler")) or (
                    name.endswith("torch.load") and not safe):
                found.append((self.fname, self.scope[-1], ast.unparse(node)))
            self.generic_visit(node)

    for f in sorted(PKG.rglob("*.py")):
        Scan(f.name).visit(ast.parse(f.read_text(), str(f)))
    assert {(f, fn) for f, fn, _ in found} == {("checkpoint.py", "convert_checkpoint")}, found


# ------------------------------------------------------------------------------------------- format, checksum, version
def test_saved_checkpoint_is_safe_sealed_and_round_trips(ref_run):
    out, st = ref_run
    raw = torch.load(out / ckpt.LAST, weights_only=True)        # plain safe loading reads it
    assert raw["version"] == ckpt.FORMAT_VERSION
    import hilcore

    assert raw["hilcore_version"] == hilcore.__version__
    assert raw["checksum"]["sha256"] == ckpt.payload_digest(raw)
    assert ckpt.payload_digest(st) == raw["checksum"]["sha256"]
    assert isinstance(raw["rng"]["numpy"]["key"], torch.Tensor) and isinstance(raw["config"], dict)
    assert [h["epoch"] for h in raw["history"]] == [1, 2]
    prev = ckpt.load_checkpoint(out / ckpt.PREV)
    assert prev["epoch"] == 1 and [h["epoch"] for h in prev["history"]] == [1]


def test_digest_sees_every_change():
    base = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "history": [{"mAP": 0.5}],
            "opt": {0: {"step": torch.tensor(2.0)}}, "t": (1, None, "a")}
    d0 = ckpt.payload_digest(base)
    assert ckpt.payload_digest({**base, "checksum": {"sha256": "x"}}) == d0      # the checksum entry is excluded
    changed = [
        {**base, "epoch": 4},
        {**base, "history": [{"mAP": 0.5000000000000001}]},
        {**base, "model": {"w": torch.arange(6.0).reshape(3, 2)}},               # same bytes, other shape
        {**base, "model": {"w": torch.arange(6.0, dtype=torch.float64).reshape(2, 3)}},
        {**base, "model": {"w": torch.arange(6).reshape(2, 3).to(torch.int32).view(torch.float32)}},
        {**base, "opt": {"0": {"step": torch.tensor(2.0)}}},                     # int key vs str key
        {**base, "t": [1, None, "a"]},                                           # tuple vs list
        {**base, "t": (1, None, "b")},
        {**base, "t": (True, None, "a")},                                        # bool vs int
        {**base, "extra": None},
    ]
    digests = [ckpt.payload_digest(s) for s in changed]
    assert d0 not in digests and len(set(digests)) == len(digests)
    t = torch.arange(12.0).reshape(3, 4)
    assert ckpt.payload_digest({"w": t.T}) == ckpt.payload_digest({"w": t.T.contiguous()})   # layout-free
    with pytest.raises(TypeError, match=r"state\['bad'\] is a builtins.set"):
        ckpt.payload_digest({"bad": {1, 2}})


def test_save_refuses_unsafe_state_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"state\['history'\]\[0\]\['x'\] is a numpy.ndarray"):
        ckpt.save_checkpoint(tmp_path, {"model": {}, "epoch": 1, "history": [{"x": np.zeros(2)}]})
    assert not list(tmp_path.iterdir())
    st = ckpt.to_safe({"history": [{"x": np.zeros(2, dtype=">f4"), "n": np.int64(3), "p": Path("a/b")}]})
    assert torch.equal(st["history"][0]["x"], torch.zeros(2)) and st["history"][0]["n"] == 3
    assert st["history"][0]["p"] == "a/b" and type(st["history"][0]["n"]) is int


def test_rng_state_round_trips_exactly(tmp_path):
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    random.random(), np.random.standard_normal(), torch.rand(3)         # move off the seed; numpy caches a gauss
    ckpt.save_checkpoint(tmp_path, {"model": {}, "epoch": 1, "rng": ckpt.rng_state()})
    want = (random.random(), np.random.standard_normal(4).tolist(), torch.rand(4).tolist())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path)["rng"])
    assert (random.random(), np.random.standard_normal(4).tolist(), torch.rand(4).tolist()) == want


def test_flipped_byte_is_caught_by_the_checksum(ref_run, tmp_path):
    out, _ = ref_run
    f = tmp_path / "last.pt"
    shutil.copy(out / ckpt.LAST, f)
    flip_tensor_byte(f)
    torch.load(f, weights_only=True)          # torch itself reads the damaged file without a word
    with pytest.raises(ckpt.CorruptCheckpointError, match="does not match its SHA-256 checksum"):
        ckpt.load_checkpoint(f)


def test_no_single_flipped_byte_changes_content_silently(ref_run, tmp_path):
    """A bit flipped anywhere (pickle, headers, tensor data) is refused, or leaves the content unchanged."""
    out, st = ref_run
    src = (out / ckpt.LAST).read_bytes()
    want = ckpt.payload_digest(st)
    with zipfile.ZipFile(out / ckpt.LAST) as z:
        pkl = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    lo = pkl.header_offset
    positions = list(range(lo, lo + min(pkl.file_size + 80, 600), 3))           # the pickle: keys, numbers
    positions += np.linspace(0, len(src) - 1, 120).astype(int).tolist()          # everywhere else
    f = tmp_path / "x.pt"
    refused = 0
    for pos in positions:
        b = bytearray(src)
        b[pos] ^= 0x04
        f.write_bytes(bytes(b))
        try:
            got = ckpt.load_checkpoint(f)
        except ckpt.CheckpointError:
            refused += 1
            continue
        assert ckpt.payload_digest(got) == want and got["checksum"]["sha256"] == want, pos
    assert refused > len(positions) // 2


def test_older_format_and_versions(tmp_path, recwarn):
    # format 1 in the safe subset (no NumPy RNG state): loads unverified with a warning
    torch.save({"version": 1, "model": {"w": torch.ones(2)}, "epoch": 2, "rng": None}, tmp_path / "v1.pt")
    with pytest.warns(UserWarning, match="format 1 .no checksum"):
        assert ckpt.load_checkpoint(tmp_path / "v1.pt")["epoch"] == 2
    # written by a newer hilcore in the same format: loads with a warning
    st = ckpt.seal({"model": {}, "epoch": 1})
    st["hilcore_version"] = "99.0.0"
    st["checksum"] = {"sha256": ckpt.payload_digest(st)}
    torch.save(st, tmp_path / "newer.pt")
    with pytest.warns(UserWarning, match="newer than this"):
        ckpt.load_checkpoint(tmp_path / "newer.pt")
    # a newer format: refused
    st["version"] = ckpt.FORMAT_VERSION + 1
    st["checksum"] = {"sha256": ckpt.payload_digest(st)}
    torch.save(st, tmp_path / "future.pt")
    with pytest.raises(ckpt.CheckpointError, match="upgrade hilcore"):
        ckpt.load_checkpoint(tmp_path / "future.pt")
    # a sealed file whose checksum entry was dropped
    st = ckpt.seal({"model": {}, "epoch": 1})
    del st["checksum"]
    torch.save(st, tmp_path / "nosum.pt")
    with pytest.raises(ckpt.CorruptCheckpointError, match="no valid checksum"):
        ckpt.load_checkpoint(tmp_path / "nosum.pt")


def _format1_checkpoint(path, model_sd):
    """What hilcore wrote before the safe format: NumPy RNG tuple, no checksum."""
    random.seed(1)
    np.random.seed(2)
    np.random.standard_normal()
    torch.manual_seed(3)
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": None}
    torch.save({"version": 1, "model": model_sd, "optimizer": None, "scaler": None, "epoch": 1, "rng": rng,
                "config": {"run": {"seed": 0}}, "history": [{"epoch": 1, "mAP": np.float64(0.25)}],
                "best": {"mAP": np.float64(0.25), "epoch": 1}}, path)
    return np.random.standard_normal(3).tolist()


def test_convert_checkpoint_of_an_older_unsafe_file(tmp_path, capsys):
    old = tmp_path / "old.pt"
    sd = {"w": torch.randn(4, 3)}
    want_draws = _format1_checkpoint(old, sd)
    with pytest.raises(ckpt.UnsafeCheckpointError, match="numpy.*convert-checkpoint --trust"):
        ckpt.load_checkpoint(old)
    rc, _, err = run_cli(["convert-checkpoint", old], capsys)
    assert rc == 2 and "--trust" in err
    rc, out, err = run_cli(["convert-checkpoint", "--trust", old, tmp_path / "new.pt"], capsys)
    assert rc == 0, err
    assert "format 1" in out and "read in full because of --trust" in out and "format 2" in out
    st = ckpt.load_checkpoint(tmp_path / "new.pt")
    assert torch.equal(st["model"]["w"], sd["w"]) and st["history"][0]["mAP"] == 0.25
    assert type(st["best"]["mAP"]) is float
    np.random.seed(0)
    ckpt.set_rng_state(st["rng"])
    assert np.random.standard_normal(3).tolist() == want_draws
    # in place, and a safe file converted again without --trust is just re-sealed
    rc, out, _ = run_cli(["convert-checkpoint", "--trust", old], capsys)
    assert rc == 0 and ckpt.load_checkpoint(old)["epoch"] == 1
    rc, out, _ = run_cli(["convert-checkpoint", old, tmp_path / "again.pt"], capsys)
    assert rc == 0 and "read safely" in out
    assert ckpt.load_checkpoint(tmp_path / "again.pt")["checksum"] == st["checksum"]
    # a damaged sealed file is refused even with --trust
    flip_tensor_byte(tmp_path / "new.pt", 0)
    rc, _, err = run_cli(["convert-checkpoint", "--trust", tmp_path / "new.pt", tmp_path / "x.pt"], capsys)
    assert rc == 2 and "checksum" in err and not (tmp_path / "x.pt").exists()
    rc, _, err = run_cli(["convert-checkpoint", tmp_path / "missing.pt"], capsys)
    assert_one_error_line(err, "does not exist")


# ------------------------------------------------------------------------------------------- eval and resume
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_hil_eval_refuses_a_corrupt_checkpoint(ref_run, tiny_root, tmp_path, capsys, damage):
    out, _ = ref_run
    f = tmp_path / "last.pt"
    shutil.copy(out / ckpt.LAST, f)
    {"flip": flip_tensor_byte, "truncate": truncate, "empty": lambda p: p.write_bytes(b"")}[damage](f)
    rc, _, err = run_cli(["eval", f, "--dataset", "synthetic", "--data-root", tiny_root, "--trials", "1"], capsys)
    assert rc == 2
    assert_one_error_line(err, str(f))
    assert {"flip": "does not match its SHA-256 checksum", "truncate": "is truncated",
            "empty": "is empty (0 bytes)"}[damage] in err
    assert "weights_only" not in err


@pytest.mark.parametrize("damage", [flip_tensor_byte, truncate])
def test_auto_resume_falls_back_to_the_previous_checkpoint_bit_exactly(ref_run, tiny_root, tmp_path, capsys,
                                                                       damage):
    ref, ref_state = ref_run
    out = copy_run(ref, tmp_path / "run")
    (out / ckpt.BEST).unlink()                 # only last.pt (epoch 2, damaged) and last.prev.pt (epoch 1)
    damage(out / ckpt.LAST)
    broken = (out / ckpt.LAST).read_bytes()
    cfg = write_cfg(tmp_path, tiny_root, out)
    rc, stdout, err = run_cli(["train", "--config", cfg], capsys)
    assert rc == 0, err
    assert f"{out / ckpt.LAST} is unusable" in stdout and "falling back to last.prev.pt (epoch 1)" in stdout
    assert "1 epoch(s) done, continuing at epoch 2" in stdout
    assert (out / ckpt.BROKEN).read_bytes() == broken
    st = ckpt.load_checkpoint(out)
    assert st["epoch"] == 2 and [h["epoch"] for h in st["history"]] == [1, 2]
    for k, v in ref_state["model"].items():                  # epoch 2 trained again: the same bits
        assert torch.equal(st["model"][k], v), k
    assert st["history"][1]["loss"] == ref_state["history"][1]["loss"]
    assert ckpt.load_checkpoint(out / ckpt.PREV)["epoch"] == 1     # the intact epoch 1, not the broken file


def test_resume_picks_the_newest_intact_checkpoint(tmp_path):
    def st(e):
        return {"model": {"w": torch.full((4,), float(e))}, "epoch": e}

    for e, best in ((1, True), (2, False), (3, True)):       # last 3, prev 2, best 3
        ckpt.save_checkpoint(tmp_path, st(e), is_best=best)
    truncate(tmp_path / ckpt.LAST)
    path, state, notes = ckpt.load_resume(tmp_path, repair=False)
    assert path.name == ckpt.BEST and state["epoch"] == 3 and "falling back to best.pt (epoch 3)" in notes[0]
    ckpt.save_checkpoint(tmp_path / "b", st(1), is_best=True)
    ckpt.save_checkpoint(tmp_path / "b", st(2))
    flip_tensor_byte(tmp_path / "b" / ckpt.LAST)
    path, state, notes = ckpt.load_resume(tmp_path / "b", repair=False)
    assert path.name == ckpt.PREV and state["epoch"] == 1      # prev (1) ties best (1): prev preferred
    assert ckpt.load_resume(tmp_path / "none") is None
    assert ckpt.load_resume(tmp_path, repair=False)[1]["epoch"] == 3


def test_auto_resume_with_nothing_intact_is_an_error(ref_run, tiny_root, tmp_path, capsys):
    out = copy_run(ref_run[0], tmp_path / "run")
    for name in (ckpt.LAST, ckpt.PREV, ckpt.BEST):
        truncate(out / name)
    cfg = write_cfg(tmp_path, tiny_root, out)
    rc, _, err = run_cli(["train", "--config", cfg], capsys)
    assert rc == 2
    assert_one_error_line(err, "no intact checkpoint", "last.pt", "last.prev.pt", "best.pt", "--resume never")


def test_train_resume_path_refuses_a_corrupt_file_without_fallback(ref_run, tiny_root, tmp_path, capsys):
    out = copy_run(ref_run[0], tmp_path / "run")
    flip_tensor_byte(out / ckpt.LAST)
    cfg = write_cfg(tmp_path, tiny_root, tmp_path / "other")
    rc, _, err = run_cli(["train", "--config", cfg, "--resume", out / ckpt.LAST], capsys)
    assert rc == 2
    assert_one_error_line(err, "checksum")


def test_resume_of_a_current_checkpoint_is_bit_exact(ref_run, tiny_root, tmp_path):
    """1 epoch, stop, resume to 2 == 2 epochs at once, bit for bit (model, optimiser, history)."""
    from hilcore.train.loop import train

    _, ref = ref_run
    out = tmp_path / "run"
    train(C.from_dict(tiny_config(tiny_root, out, optim={"epochs": 1, "iters": 3})))
    train(C.from_dict(tiny_config(tiny_root, out)))
    st = ckpt.load_checkpoint(out)
    for k, v in ref["model"].items():
        assert torch.equal(st["model"][k], v), k
    for a, b in zip(st["optimizer"]["state"].values(), ref["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    drop = ("epochs", "t_extract", "t_cluster", "t_cluster_kernels", "t_train", "t_eval", "t_epoch")
    assert [{k: v for k, v in h.items() if k not in drop} for h in st["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in ref["history"]]
