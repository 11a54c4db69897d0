"""Pure-PyTorch backend: every op, on any device (the reference the fast backends match).

Registered here (see :mod:`hilcore._dispatch`); the modules are imported when
an op first resolves to them.
"""
import torch

from .._dispatch import register

_ANY = ("cpu", "cuda")
_F32 = (torch.float32,)
_F32_64 = (torch.float32, torch.float64)

register("knn", "torch", devices=_ANY, impl="hilcore.torch_backend.knn:knn")
register("jaccard.stages", "torch", devices=_ANY, impl="hilcore.torch_backend.jaccard:jaccard")
register("jaccard_distance", "torch", devices=_ANY,
         parts={"knn": ("knn", ("torch",)), "stages": ("jaccard.stages", ("torch",))})
register("dbscan", "torch", devices=_ANY, impl="hilcore.torch_backend.dbscan:dbscan")
register("cluster_centers", "torch", devices=_ANY, impl="hilcore.torch_backend.centers:cluster_centers")
register("subcluster.kmeans", "torch", devices=_ANY, impl="hilcore.torch_backend.centers:kmeans_subcenters")
register("subcluster.dbscan", "torch", devices=_ANY, impl="hilcore.torch_backend.centers:dbscan_subcenters")
register("subcluster", "torch", devices=_ANY,
         parts={"centers": ("cluster_centers", ("torch",)), "kmeans": ("subcluster.kmeans", ("torch",)),
                "dbscan": ("subcluster.dbscan", ("torch",))})
register("brst", "torch", devices=_ANY, impl="hilcore.torch_backend.brst:row_argmax_col_max")
register("bidirectional_match", "torch", devices=_ANY,
         parts={"brst": ("brst", ("torch",)), "centers": ("cluster_centers", ("torch",))})
register("memory.update", "torch", devices=_ANY, dtypes=_F32_64, impl="hilcore.torch_backend.memory:update")
register("mccl_loss", "torch", devices=_ANY, dtypes=_F32_64, impl="hilcore.torch_backend.mccl:mccl")
