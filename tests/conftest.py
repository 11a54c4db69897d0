"""Test setup: Triton kernels run in the interpreter when no GPU is present; every test is seeded."""
import os

import torch

if not torch.cuda.is_available():
    # must happen before anything imports triton
    os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds (NumPy's global RNG and torch)."""
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ------------------------------------------------------------------------------------------- the slow marker
SLOW_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")


def _slow_entries() -> dict:
    """``{file name: {function or node name}}`` of tests/slow_tests.txt (see its header)."""
    out: dict = {}
    with open(SLOW_LIST) as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                file, _, name = line.partition("::")
                out.setdefault(file, set()).add(name)
    return out


def pytest_collection_modifyitems(config, items):
    """Mark the tests of tests/slow_tests.txt ``slow`` (``pytest -m "not slow"`` is the fast subset). An entry
    names a whole file, a test function (all its parameter sets), one parameter set (``name[id]``) or a docstring
    example (``doctest::hilcore.module.name``); an entry whose
    function no longer exists in its (collected) file is an error, so the list cannot silently go stale."""
    entries = _slow_entries()
    stale = set()
    doctests = entries.get("doctest", set())
    for item in items:
        if not isinstance(item, pytest.Function) and item.name in doctests:   # a docstring example
            item.add_marker(pytest.mark.slow)
            continue
        file = os.path.basename(str(getattr(item, "fspath", "")))
        names = entries.get(file)
        if not names or not isinstance(item, pytest.Function):
            continue
        key = item.nodeid.split("::", 1)[1]            # [Class::]name[id]
        if "" in names or key in names or key.split("[")[0] in names:   # ("": the whole file)
            item.add_marker(pytest.mark.slow)
        stale |= {f"{file}::{n}" for n in names if n and not hasattr(item.module, n.split("[")[0].split("::")[0])}
    if stale:
        raise pytest.UsageError(f"tests/slow_tests.txt names tests that do not exist: {sorted(stale)}")
