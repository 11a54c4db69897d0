"""Root pytest setup for the docstring examples (``--doctest-modules`` over ``hilcore/``, see pyproject.toml).

The examples run exactly as a user would type them; this file only decides
where they can run:

* Triton kernels run in the interpreter when no GPU is present (as in
  ``tests/conftest.py``; this must happen before anything imports triton).
* An example line carrying one of the comments below is skipped, with the
  reason, when its requirement is missing here:
  ``# needs a CUDA GPU``, ``# needs CUDA or TRITON_INTERPRET=1``, ``# needs faiss``,
  ``# needs faiss-gpu``, ``# needs cuvs``.
* ``hilcore/train`` (the training driver; its module examples run whole
  trainings or read files) is not collected, and the Triton modules only when
  triton is importable.
"""
import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

collect_ignore = ["hilcore/train"]
if importlib.util.find_spec("triton") is None:
    collect_ignore.append("hilcore/backend/triton")

# comment in an example line -> (is the requirement met here?, skip reason)
_REQUIREMENTS = {
    "# needs a CUDA GPU": (torch.cuda.is_available, "needs a CUDA GPU (torch.cuda.is_available() is False)"),
    "# needs CUDA or TRITON_INTERPRET=1": (lambda: torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                            "needs a CUDA GPU or TRITON_INTERPRET=1 set before triton is imported"),
    "# needs faiss": (lambda: importlib.util.find_spec("faiss") is not None,
                      "needs faiss (pip install faiss-cpu); not installed here"),
    "# needs faiss-gpu": (lambda: _gpu_backend_ok("faiss_gpu"), "needs faiss with GPU support and a CUDA GPU"),
    "# needs cuvs": (lambda: _gpu_backend_ok("cuvs"), "needs cuVS and a CUDA GPU"),
}


def _gpu_backend_ok(backend):
    from hilcore import _dispatch

    return _dispatch._why_not(backend, torch.device("cuda")) is None


def pytest_collection_modifyitems(config, items):
    for item in items:
        dtest = getattr(item, "dtest", None)  # set on pytest's doctest items only
        if dtest is None:
            continue
        source = "\n".join(ex.source for ex in dtest.examples)
        for tag, (available, reason) in _REQUIREMENTS.items():
            if tag in source and not available():
                item.add_marker(pytest.mark.skip(reason=f"{dtest.name}: {reason}"))
                break
