"""Native backend: the C++/OpenMP kernels of ``hilcore._native`` on CPU tensors (zero-copy).

Registered here (see :mod:`hilcore._dispatch`); every entry needs the compiled extension.
"""
from .._dispatch import register

_CPU = ("cpu",)

register("knn", "native", devices=_CPU, impl="hilcore.native_backend.knn:knn",
         note="int8 candidates + exact float32 rescoring at N >= 4096, float32 tiles below")
register("jaccard.stages", "native", devices=_CPU, impl="hilcore.native_backend.jaccard:jaccard")
register("jaccard_distance", "native", devices=_CPU,
         parts={"knn": ("knn", ("native",)), "stages": ("jaccard.stages", ("native",))})
register("dbscan", "native", devices=_CPU, impl="hilcore.native_backend.dbscan:dbscan")
register("cluster_centers", "native", devices=_CPU, impl="hilcore.native_backend.centers:cluster_centers")
register("subcluster.kmeans", "native", devices=_CPU, impl="hilcore.native_backend.centers:kmeans_subcenters")
register("subcluster", "native", devices=_CPU,
         parts={"centers": ("cluster_centers", ("native",)), "kmeans": ("subcluster.kmeans", ("native",)),
                "dbscan": ("subcluster.dbscan", ("torch",))})
register("brst", "native", devices=_CPU, impl="hilcore.native_backend.brst:row_argmax_col_max")
register("bidirectional_match", "native", devices=_CPU,
         parts={"brst": ("brst", ("native",)), "centers": ("cluster_centers", ("native",))})
register("memory.update", "native", devices=_CPU, impl="hilcore.native_backend.memory:update")
register("mccl_loss", "native", devices=_CPU, impl="hilcore.native_backend.mccl:mccl")
