"""Optional dependencies: which pip extra brings each, and the error that names it.

``pip install hilcore`` brings what ``import hilcore`` and the ops need (numpy,
scipy, torch). The training driver (:mod:`hilcore.train`, ``hil train``,
``hil eval``, ``hil make-synthetic``) needs the ``train`` extra, the benchmark
scripts the ``bench`` extra. A missing one raises :class:`MissingExtra` (a
``ModuleNotFoundError``) whose message names the extra and the command that
installs it. This module imports nothing from hilcore.
"""
from __future__ import annotations

import importlib

#: top-level module -> (the extra that installs it, its name on PyPI)
EXTRA_OF = {
    "yaml": ("train", "pyyaml"),
    "PIL": ("train", "pillow"),
    "matplotlib": ("train", "matplotlib"),
    "tqdm": ("train", "tqdm"),
    "sklearn": ("train", "scikit-learn"),
    "pydantic": ("train", "pydantic"),
    "psutil": ("bench", "psutil"),
}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (or its top-level package), or None."""
    if not module:
        return None
    hit = EXTRA_OF.get(module.split(".")[0])
    return hit[0] if hit else None


def missing_message(module: str, what: str, extra: str | None = None) -> str:
    """"``what`` needs the 'train' extra (pyyaml is not installed): pip install 'hilcore[train]'"."""
    top = module.split(".")[0]
    extra = extra or extra_for(top) or "train"
    package = EXTRA_OF.get(top, (extra, top))[1]
    return f"{what} needs the '{extra}' extra ({package} is not installed): pip install 'hilcore[{extra}]'"


def require(module: str, what: str, extra: str | None = None):
    """Import ``module``, or raise :class:`MissingExtra` naming the extra ``what`` needs."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module != e.name and not module.startswith(e.name + "."):
            raise  # the module exists but something it imports is missing: not ours to rename
        raise MissingExtra(missing_message(module, what, extra), name=module.split(".")[0]) from None
