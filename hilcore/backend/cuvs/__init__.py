"""Optional kNN backend on cuVS brute force (``backend="cuvs"``), for comparisons; ``auto`` never picks it.

Its candidates are rescored in fp32 and certified by hilcore (exact).
Described here (see :mod:`hilcore._dispatch`).
"""
import importlib

from ..._dispatch import Backend, gpu_library_problem


def _probe():
    importlib.import_module("cuvs.neighbors.brute_force")
    return None


BACKEND = Backend(__name__, why_not=lambda device: gpu_library_problem("cuvs", device, "cuvs", "cuvs-cu12", _probe),
                  devices=("cuda",), order=70, doc="cuvs.neighbors.brute_force candidates, rescored exactly; for comparisons")
BACKEND.op("knn", impl=".knn:knn",
           note="cuvs.neighbors.brute_force candidates, rescored in fp32 and certified (exact); for comparisons")
