"""``import hilcore`` then ``hilcore.<submodule>``: every public submodule is reachable, none of the lazy ones is
imported before it is accessed (checked in fresh interpreters)."""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import hilcore

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_hilcore_does_not_import_compat_or_train():
    out = _run("import sys, hilcore\n"
               "print(sorted(m for m in ('hilcore.compat', 'hilcore.train', 'hilcore.cli', 'hilcore.eval', "
               "'hilcore.ref', 'hilcore.backend.triton', 'sklearn') if m in sys.modules))\n"
               "est = hilcore.compat.DBSCAN(eps=0.5, min_samples=2)\n"
               "print('hilcore.compat' in sys.modules, 'hilcore.train' in sys.modules, type(est).__name__)\n"
               "hilcore.train\n"
               "print('hilcore.train' in sys.modules)\n")
    assert out.splitlines() == ["[]", "True False DBSCAN", "True"]


def test_every_public_submodule_is_an_attribute():
    names = [m.name for m in pkgutil.iter_modules(hilcore.__path__) if not m.name.startswith("_")]
    assert "compat" in names and "train" in names
    eager = set(_run("import sys, hilcore\nprint(' '.join(m for m in sys.modules if m.startswith('hilcore.')))")
                .split())
    for name in names:
        # a new submodule must be imported by hilcore/__init__.py or listed as lazy there
        assert f"hilcore.{name}" in eager or name in hilcore._LAZY_SUBMODULES, name
        if name in hilcore._LAZY_SUBMODULES:
            assert getattr(hilcore, name) is importlib.import_module(f"hilcore.{name}"), name
        else:
            assert getattr(hilcore, name) is not None  # an op module shadowed by its function (hilcore.knn)
    assert "compat" in dir(hilcore)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hilcore.nope  # noqa: B018
