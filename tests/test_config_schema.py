"""The training config's typed schema (hilcore.train.config.RULES, checked with pydantic) -- issue 21 point 4.

Every key of the dataclasses has a rule; every value a rule accepts loads (and keeps its value), every
value of a wrong type or out of range is refused with one line naming the key, the value and what was
expected; all of it before any data is read. Sizes the machine or the data cannot fill are refused before
the images are read.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hilcore import cli
from hilcore.train import config as C

ROOT = Path(__file__).resolve().parents[1]
PROPS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("hil: error: "), err
    return lines[0][len("hil: error: "):]


def test_every_key_has_a_rule_and_every_shipped_config_loads():
    sch = C.schema()
    for f in dataclasses.fields(C.TrainConfig):
        keys = {g.name for g in dataclasses.fields(f.default_factory())}
        assert set(sch[f.name][1]) == keys
    for p in sorted((ROOT / "configs").glob("*.yaml")):
        C.load_config(p)


# ------------------------------------------------------------------------------------------- the cases
@pytest.mark.parametrize("override, line", [
    ("optim.grad_clip=-1", "config.optim.grad_clip: expected a number > 0, or null, got -1"),
    ("optim.momentum=abc", "config.optim.momentum: expected a number in [0, 1], got 'abc'"),
    ("run.amp=maybe", "config.run.amp: expected true or false, got 'maybe'"),
    ("optim.nesterov=maybe", "config.optim.nesterov: expected true or false, got 'maybe'"),
    ("optim.milestones=[10,-5]", "config.optim.milestones: expected a list of integers >= 0, got [10, -5]"),
    ("optim.gamma=abc", "config.optim.gamma: expected a number > 0, got 'abc'"),
    ("run.threads=-2", "config.run.threads: expected an integer >= 1, or null, got -2"),
    ("cluster.k1=0", "config.cluster.k1: expected an integer >= 1, got 0"),
    ("optim.epochs=2.0", "config.optim.epochs: expected an integer >= 1, got 2.0"),
    ("optim.lr=.nan", "config.optim.lr: expected a number > 0, got nan"),
    ("cluster.backend=gpu", "config.cluster.backend: expected one of"),
    ("optim.momentun=0.5", "config.optim: unknown key 'momentun' (did you mean 'momentum'?)"),
    ("optm.lr=1", "config: unknown section 'optm' (did you mean 'optim'?)"),
])
def test_hil_train_refuses_bad_values_in_one_line_before_reading_data(tmp_path, capsys, override, line):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: synthetic, root: {tmp_path / 'no-such-data'}}}\n"
                   f"run: {{output: {tmp_path / 'run'}, device: cpu}}\n")
    rc = cli.main(["train", "--config", str(cfg), override])
    msg = one_error_line(capsys.readouterr().err)
    assert rc == 2 and msg.startswith(line), msg
    assert not (tmp_path / "run").exists()                  # nothing written, no data read


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match=r"config\.optim\.nesterov: Nesterov momentum needs optim\.momentum > 0"):
        C.load_config(None, ["optim.name=sgd", "optim.momentum=0"])
    assert C.load_config(None, ["optim.name=sgd", "optim.momentum=0", "optim.nesterov=false"]).optim.momentum == 0


def test_a_batch_that_cannot_fit_in_memory_is_refused_up_front():
    cfg = C.load_config(None, ["sampler.P=1000", "sampler.K=10", "data.size=[256,128]"])
    need = C.step_input_bytes(cfg)
    assert need == 1000 * 10 * 2 * 3 * 256 * 128 * 4
    C.check_memory(cfg, available=need)
    with pytest.raises(ValueError, match=r"config\.sampler\.P: a step of P x K = 1000 x 10 images .* got P=1000"):
        C.check_memory(cfg, available=need - 1)
    with pytest.raises(ValueError, match=r"config\.sampler\.P"):
        C.load_config(None, ["sampler.P=100000000"])


def test_sampler_p_beyond_the_data_is_refused_before_any_image_is_read(tmp_path, capsys, monkeypatch):
    from hilcore.train import data as train_data
    from hilcore.train.synthetic_people import make_synthetic_sysu

    root = make_synthetic_sysu(tmp_path / "d", n_ids=4, imgs_per_cam=1, size=(32, 16), seed=0)
    read = []
    monkeypatch.setattr(train_data, "load_image", lambda *a, **k: read.append(a) or (_ for _ in ()).throw(AssertionError))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: synthetic, root: {root}, size: [32, 16], workers: 0, cache: true}}\n"
                   f"model: {{backbone: tiny, allow_random_init: true}}\nrun: {{output: {tmp_path / 'run'}, device: cpu}}\n")
    rc = cli.main(["train", "--config", str(cfg), "sampler.P=1000"])
    msg = one_error_line(capsys.readouterr().err)
    assert rc == 2 and msg.startswith("config.sampler.P: expected at most ") and msg.endswith("got 1000"), msg
    assert read == []


# ------------------------------------------------------------------------------------------- properties
def _valid(rule) -> st.SearchStrategy:
    null = rule[-1] == "null"
    kind, args = rule[0], rule[1:len(rule) - null]
    if kind == "int":
        lo, hi = args
        s = st.integers(lo if lo is not None else -10 ** 6, hi if hi is not None else (lo or 0) + 10 ** 6)
    elif kind == "num":
        lo, hi, open_lo = (tuple(args) + (False,))[:3]
        s = st.floats(lo if lo is not None else -1e6, hi if hi is not None else 1e6, exclude_min=open_lo,
                      allow_nan=False, allow_infinity=False)
    elif kind == "bool":
        s = st.booleans()
    elif kind in ("choice", "choices"):
        s = st.sampled_from(args[0])
        if kind == "choices":
            s = st.lists(s, min_size=1, max_size=3)
    elif kind in ("str",):
        s = st.text(min_size=1, max_size=8)
    elif kind == "pair":
        s = st.lists(st.floats(0, 10, allow_nan=False), min_size=2, max_size=2)
    elif kind == "size":
        s = st.lists(st.integers(8, 512), min_size=2, max_size=2)
    elif kind == "ints":
        s = st.lists(st.integers(args[0], 1000), max_size=4)
    else:
        s = st.nothing()
    return s | st.none() if null else s


def _invalid(rule) -> st.SearchStrategy:
    """Values the rule must refuse: another type, or a number just outside its range."""
    null = rule[-1] == "null"
    kind, args = rule[0], rule[1:len(rule) - null]
    wrong = st.sampled_from(["abc", "1", "true", [1, "x"], {"a": 1}])
    if kind == "int":
        lo, hi = args
        outside = [v for v in (lo - 1 if lo is not None else None, hi + 1 if hi is not None else None) if v is not None]
        return wrong | st.sampled_from([1.5, 2.0, True] + outside)
    if kind == "num":
        lo, hi, open_lo = (tuple(args) + (False,))[:3]
        outside = [lo if open_lo else lo - 0.5 if lo is not None else None, hi + 0.5 if hi is not None else None]
        return wrong | st.sampled_from([True, math.nan, math.inf] + [v for v in outside if v is not None])
    if kind == "bool":
        return st.sampled_from(["maybe", "yes", 1, 0, 1.0])
    if kind in ("choice", "choices"):
        bad = st.sampled_from(["nonsense", 3, True])
        return bad | st.lists(bad, min_size=1, max_size=2) if kind == "choices" else bad
    if kind == "pair":
        return st.sampled_from([[1.0], [1.0, -1.0], [1, 2, 3], "ab", [math.nan, 1.0]])
    if kind == "size":
        return st.sampled_from([[64], [64, 4], [64.0, 32], "64x32", [64, 32, 3]])
    if kind == "ints":
        return st.sampled_from([[-1], [1.5], "1,2", [True]])
    if kind == "str":
        return st.sampled_from([1, 2.5, True, [1]])
    return st.nothing()


KEYS = [(s, k) for s, rules in C.RULES.items() for k in rules
        if k in {f.name for f in dataclasses.fields(C._section_types()[s]())}
        and C.RULES[s][k][0] not in ("mapping", "resume", "pattern")
        and (s, k) not in {("cluster", "backend"), ("eval", "best_by")}]    # (checked by their own functions)


@settings(max_examples=120, **PROPS)
@given(data=st.data())
def test_property_values_in_the_rule_load_and_keep_their_value(data):
    sec, key = data.draw(st.sampled_from(KEYS))
    value = data.draw(_valid(C.RULES[sec][key]))
    vals = C.check_dict({sec: {key: value}})
    got = vals[sec][key]
    assert got == value or (isinstance(value, int) and got == float(value))


@settings(max_examples=120, **PROPS)
@given(data=st.data())
def test_property_values_outside_the_rule_are_refused_naming_key_value_and_expectation(data):
    sec, key = data.draw(st.sampled_from(KEYS))
    value = data.draw(_invalid(C.RULES[sec][key]))
    with pytest.raises(ValueError) as ei:
        C.check_dict({sec: {key: value}})
    msg = str(ei.value)
    assert msg.startswith(f"config.{sec}.{key}: expected ") and msg.endswith(f"got {value!r}"), msg
    assert "\n" not in msg


@settings(max_examples=40, **PROPS)
@given(sec=st.sampled_from(sorted(C.RULES)), key=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_property_unknown_keys_are_refused(sec, key):
    if key in C.schema()[sec][1]:
        return
    with pytest.raises(ValueError, match=rf"^config\.{sec}: unknown key {key!r}"):
        C.check_dict({sec: {key: 1}})
