"""hilcore: kernels for the clustering step of unsupervised visible-infrared ReID.

Cluster ``[N, D]`` features into pseudo identities in three lines (here 1,200
ReID-like synthetic features of 40 identities):

>>> import hilcore
>>> from hilcore.synthetic import reid_features
>>> features, ids, cams = reid_features(40, 30, dim=128, n_cams=2, seed=0)
>>> d = hilcore.jaccard_distance(features, k1=30, k2=6, max_distance=0.6)
>>> labels = hilcore.dbscan(d, eps=0.6, min_samples=4)
>>> int(labels.max()) + 1, int((labels == -1).sum())    # clusters, noise
(40, 69)
"""
from ._dispatch import BackendUnavailable, backends, capabilities, has_cuda
from .brst import MatchResult, bidirectional_match, brst
from .centers import cluster_centers, subcluster
from .dbscan import dbscan
from .epoch import EpochClusters, EpochConfig, cluster_epoch
from .jaccard import jaccard_distance
from .knn import knn
from .mccl import mccl_loss
from .memory import ClusterMemory, InstanceMemory, MultiCenterMemory, cluster_contrast_loss

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "ClusterMemory", "EpochClusters", "EpochConfig", "InstanceMemory", "MatchResult",
    "MultiCenterMemory", "backends", "bidirectional_match", "brst", "capabilities", "cluster_centers",
    "cluster_contrast_loss", "cluster_epoch", "dbscan", "has_cuda", "jaccard_distance", "knn", "mccl_loss",
    "subcluster", "__version__",
]


# Submodules not imported above load on first attribute access (``hilcore.compat.DBSCAN`` after a plain
# ``import hilcore``), so ``import hilcore`` pays nothing for them.
_LAZY_SUBMODULES = ("backend", "cli", "compat", "compat_dbscan", "compat_jaccard", "distributed", "eval", "ref",
                    "splits", "stages", "synthetic", "train")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
