"""CUDA backend: the kernels of kernels/cuda (in ``hilcore._native`` when built with CUDA) on CUDA tensors.

There is no CUDA kNN kernel: ``backend="cuda"`` for the kNN (alone or in the
Jaccard pipeline) runs the Triton kernel (or torch when Triton is absent), and
its label says so (``knn=triton``). Registered here (see :mod:`hilcore._dispatch`).
"""
from .._dispatch import register

_CUDA = ("cuda",)

register("knn", "cuda", devices=_CUDA, parts={"knn": ("knn", ("triton", "torch"))})
register("jaccard.stages", "cuda", devices=_CUDA, impl="hilcore.cuda_backend.jaccard:jaccard")
register("jaccard_distance", "cuda", devices=_CUDA,
         parts={"knn": ("knn", ("triton", "torch")), "stages": ("jaccard.stages", ("cuda",))})
register("dbscan", "cuda", devices=_CUDA, impl="hilcore.cuda_backend.dbscan:dbscan")
