"""Triton backend: fused kernels on CUDA tensors (or on CPU tensors under ``TRITON_INTERPRET=1``).

The Triton Jaccard pipeline brings only the kNN; its k-reciprocal stages are
the CUDA ones when built (else torch), as its label says. A float64 memory
update runs the torch path (the kernel is float32). Described here (see
:mod:`hilcore._dispatch`); importing this package does not import triton.
"""
from ... import _dispatch
from ..._dispatch import Backend


def _why_not(device):
    if not _dispatch.has_triton():
        return "triton is not installed (pip install triton)"
    if device.type == "cuda" or (device.type == "cpu" and _dispatch.triton_interpret()):
        return None
    return f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 on CPU), got device {device}"


# cpu: only under TRITON_INTERPRET=1 (the check above)
BACKEND = Backend(__name__, why_not=_why_not, devices=("cuda", "cpu"), order=30, auto={"cuda": 10},
                  doc="Triton kernels on CUDA tensors (CPU tensors under TRITON_INTERPRET=1)")
BACKEND.op("knn", impl=".knn:knn")
BACKEND.op("jaccard_distance", parts={"knn": ("knn", ("triton",)), "stages": ("jaccard.stages", ("cuda", "torch"))})
BACKEND.op("cluster_centers", impl=".centers:cluster_centers")
BACKEND.op("subcluster.kmeans", impl=".centers:kmeans_subcenters")
BACKEND.op("subcluster", parts={"centers": ("cluster_centers", ("triton",)), "kmeans": ("subcluster.kmeans", ("triton",)),
                                "dbscan": ("subcluster.dbscan", ("torch",))})
BACKEND.op("brst", impl=".brst:row_argmax_col_max")
BACKEND.op("bidirectional_match", parts={"brst": ("brst", ("triton",)), "centers": ("cluster_centers", ("triton",))})
BACKEND.op("memory.update", impl=".memory:update", note="float64 memories are updated by the torch path")
BACKEND.op("mccl_loss", impl=".mccl:mccl")
