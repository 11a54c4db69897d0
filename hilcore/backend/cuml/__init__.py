"""Optional DBSCAN backend on cuML (``backend="cuml"``), for comparisons; ``auto`` never picks it.

Described here (see :mod:`hilcore._dispatch`); cuML is imported only by the op.
"""
import importlib.util

from ..._dispatch import Backend


def _why_not(device):
    if importlib.util.find_spec("cuml") is None:
        return "cuml is not installed"
    if device.type != "cuda":
        return f"the cuml backend needs CUDA input, got device {device}"
    return None


BACKEND = Backend(__name__, why_not=_why_not, devices=("cuda",), order=40, doc="cuML's DBSCAN, for comparisons")
BACKEND.op("dbscan", impl=".dbscan:dbscan", note="dense [N, N] matrix on the GPU; for comparisons at moderate N")
