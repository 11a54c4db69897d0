"""Native backend: the C++/OpenMP kernels of ``hilcore._native`` on CPU tensors (zero-copy).

Described here (see :mod:`hilcore._dispatch`); every op needs the compiled extension.
"""
from ... import _dispatch
from ..._dispatch import Backend


def _why_not(device):
    if not _dispatch.has_native():
        return "the hilcore._native extension is not built (pip install -e . compiles it)"
    if device.type != "cpu":
        return f"the native backend runs on CPU tensors, got device {device}"
    return None


BACKEND = Backend(__name__, why_not=_why_not, devices=("cpu",), order=10, auto={"cpu": 0},
                  doc="C++/OpenMP kernels (hilcore._native) on CPU tensors")
BACKEND.op("knn", impl=".knn:knn",
           note="int8 candidates + exact float32 rescoring at N >= 4096, float32 tiles below")
BACKEND.op("jaccard.stages", impl=".jaccard:jaccard")
BACKEND.op("jaccard_distance", parts={"knn": ("knn", ("native",)), "stages": ("jaccard.stages", ("native",))})
BACKEND.op("dbscan", impl=".dbscan:dbscan")
BACKEND.op("cluster_centers", impl=".centers:cluster_centers")
BACKEND.op("subcluster.kmeans", impl=".centers:kmeans_subcenters")
BACKEND.op("subcluster", parts={"centers": ("cluster_centers", ("native",)), "kmeans": ("subcluster.kmeans", ("native",)),
                                "dbscan": ("subcluster.dbscan", ("torch",))})
BACKEND.op("brst", impl=".brst:row_argmax_col_max")
BACKEND.op("bidirectional_match", parts={"brst": ("brst", ("native",)), "centers": ("cluster_centers", ("native",))})
BACKEND.op("memory.update", impl=".memory:update")
BACKEND.op("mccl_loss", impl=".mccl:mccl")
