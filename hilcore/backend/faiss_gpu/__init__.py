"""Optional kNN backend on faiss's flat GPU index (``backend="faiss_gpu"``), for comparisons.

Its candidates are rescored in fp32 and certified by hilcore (exact); the
function lives beside the CPU one (``hilcore.backend.faiss.knn.knn_gpu``).
``auto`` never picks it. Described here (see :mod:`hilcore._dispatch`).
"""
import importlib

from ..._dispatch import Backend, gpu_library_problem


def _probe():
    faiss = importlib.import_module("faiss")
    if not (hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "GpuIndexFlatIP")):
        return "this faiss has no GPU support (no faiss.GpuIndexFlatIP: install faiss-gpu)"
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() < 1:
        return "faiss sees no GPU"
    return None


BACKEND = Backend(__name__, why_not=lambda device: gpu_library_problem("faiss_gpu", device, "faiss", "faiss-gpu", _probe),
                  devices=("cuda",), order=60, doc="faiss.GpuIndexFlatIP candidates, rescored exactly; for comparisons")
BACKEND.op("knn", impl="..faiss.knn:knn_gpu",
           note="faiss.GpuIndexFlatIP candidates, rescored in fp32 and certified (exact); for comparisons")
