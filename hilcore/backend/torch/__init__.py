"""Pure-PyTorch backend: every op, on any device (the reference the fast backends match).

Described here (see :mod:`hilcore._dispatch`); the modules are imported when
an op first resolves to them. ``backend="auto"`` falls back to it last.
"""
import torch

from ..._dispatch import Backend

_F32_64 = (torch.float32, torch.float64)

BACKEND = Backend(__name__, why_not=lambda device: None, devices=("cpu", "cuda"), order=0,
                  auto={"cpu": 100, "cuda": 100}, doc="pure PyTorch, every op on any device")
BACKEND.op("knn", impl=".knn:knn")
BACKEND.op("jaccard.stages", impl=".jaccard:jaccard")
BACKEND.op("jaccard_distance", parts={"knn": ("knn", ("torch",)), "stages": ("jaccard.stages", ("torch",))})
BACKEND.op("dbscan", impl=".dbscan:dbscan")
BACKEND.op("cluster_centers", impl=".centers:cluster_centers")
BACKEND.op("subcluster.kmeans", impl=".centers:kmeans_subcenters")
BACKEND.op("subcluster.dbscan", impl=".centers:dbscan_subcenters")
BACKEND.op("subcluster", parts={"centers": ("cluster_centers", ("torch",)), "kmeans": ("subcluster.kmeans", ("torch",)),
                                "dbscan": ("subcluster.dbscan", ("torch",))})
BACKEND.op("brst", impl=".brst:row_argmax_col_max")
BACKEND.op("bidirectional_match", parts={"brst": ("brst", ("torch",)), "centers": ("cluster_centers", ("torch",))})
BACKEND.op("memory.update", dtypes=_F32_64, impl=".memory:update")
BACKEND.op("mccl_loss", dtypes=_F32_64, impl=".mccl:mccl")
