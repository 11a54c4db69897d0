"""CUDA backend: the kernels of kernels/cuda (in ``hilcore._native`` when built with CUDA) on CUDA tensors.

There is no CUDA kNN kernel: ``backend="cuda"`` for the kNN (alone or in the
Jaccard pipeline) runs the Triton kernel (or torch when Triton is absent), and
its label says so (``knn=triton``). Described here (see :mod:`hilcore._dispatch`).
"""
from ... import _dispatch
from ..._dispatch import Backend


def _why_not(device):
    if not _dispatch.has_cuda():
        return "hilcore was not compiled with CUDA support (no CUDA compiler at build time)"
    if device.type != "cuda":
        return f"the cuda backend needs CUDA tensors, got device {device}"
    return _dispatch.cuda_driver_problem()


BACKEND = Backend(__name__, why_not=_why_not, devices=("cuda",), order=20, auto={"cuda": 0},
                  doc="CUDA kernels (kernels/cuda, compiled into hilcore._native) on CUDA tensors")
BACKEND.op("knn", parts={"knn": ("knn", ("triton", "torch"))})
BACKEND.op("jaccard.stages", impl=".jaccard:jaccard")
BACKEND.op("jaccard_distance", parts={"knn": ("knn", ("triton", "torch")), "stages": ("jaccard.stages", ("cuda",))})
BACKEND.op("dbscan", impl=".dbscan:dbscan")
