"""Optional kNN backend on faiss's flat CPU index (``backend="faiss"``), for comparisons; ``auto`` never picks it.

Described here (see :mod:`hilcore._dispatch`); faiss is imported only by the op.
"""
from ... import _dispatch
from ..._dispatch import Backend


def _why_not(device):
    return None if _dispatch.importable("faiss") else "faiss is not installed"


BACKEND = Backend(__name__, why_not=_why_not, devices=("cpu", "cuda"), order=50,
                  doc="faiss.IndexFlatIP on the CPU, for comparisons")
BACKEND.op("knn", impl=".knn:knn", note="faiss.IndexFlatIP on the CPU; for comparisons")
