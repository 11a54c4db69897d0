"""Triton backend: fused kernels on CUDA tensors (or on CPU tensors under ``TRITON_INTERPRET=1``).

The Triton Jaccard pipeline brings only the kNN; its k-reciprocal stages are
the CUDA ones when built (else torch), as its label says. A float64 memory
update runs the torch path (the kernel is float32). Registered here (see
:mod:`hilcore._dispatch`); importing this package does not import triton.
"""
from .._dispatch import register

_DEV = ("cuda", "cpu")  # cpu: only under TRITON_INTERPRET=1 (checked by the registry)

register("knn", "triton", devices=_DEV, impl="hilcore.triton.knn:knn")
register("jaccard_distance", "triton", devices=_DEV,
         parts={"knn": ("knn", ("triton",)), "stages": ("jaccard.stages", ("cuda", "torch"))})
register("cluster_centers", "triton", devices=_DEV, impl="hilcore.triton.centers:cluster_centers")
register("subcluster.kmeans", "triton", devices=_DEV, impl="hilcore.triton.centers:kmeans_subcenters")
register("subcluster", "triton", devices=_DEV,
         parts={"centers": ("cluster_centers", ("triton",)), "kmeans": ("subcluster.kmeans", ("triton",)),
                "dbscan": ("subcluster.dbscan", ("torch",))})
register("brst", "triton", devices=_DEV, impl="hilcore.triton.brst:row_argmax_col_max")
register("bidirectional_match", "triton", devices=_DEV,
         parts={"brst": ("brst", ("triton",)), "centers": ("cluster_centers", ("triton",))})
register("memory.update", "triton", devices=_DEV, impl="hilcore.triton.memory:update",
         note="float64 memories are updated by the torch path")
register("mccl_loss", "triton", devices=_DEV, impl="hilcore.triton.mccl:mccl")
