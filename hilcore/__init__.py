"""hilcore: kernels for the clustering step of unsupervised visible-infrared ReID.

>>> import hilcore
>>> d = hilcore.jaccard_distance(features, k1=30, k2=6, max_distance=0.6)
>>> labels = hilcore.dbscan(d, eps=0.6, min_samples=4)
"""
from ._dispatch import BackendUnavailable, backends, has_cuda
from .dbscan import dbscan
from .jaccard import jaccard_distance
from .knn import knn

__version__ = "0.1.0"

__all__ = ["BackendUnavailable", "backends", "dbscan", "has_cuda", "jaccard_distance", "knn", "__version__"]
