"""Clustering past one device: sharded kNN, Jaccard distance and DBSCAN over torch.distributed.

Every rank passes its shard of the rows, in rank order (any sizes, a rank may
hold a single row or none); the global row index of local row ``a`` on rank
``r`` is ``sum(sizes[:r]) + a``. The process group is torch.distributed's
(NCCL on GPUs, gloo on CPUs, launched by ``torchrun``); without an initialised
group every function runs as a world of one, which is the single-process call
the sharded results equal.

- :func:`knn`: the other shards are streamed past each rank one chunk at a
  time (a broadcast per chunk), so a rank holds its shard, one streamed chunk
  and its ``[n_r, k]`` lists. On CPU (where ``hilcore.knn``'s default is the
  native backend) each chunk goes through the native kNN's
  :func:`hilcore.backend.native.knn.exact_rows`: the exact top-k of the local
  rows against the chunk under (``dot_f32`` desc, index asc), own column first,
  with ``dot_f32`` the native kNN's fixed-order float32 dot product (a pure
  function of the two rows, on every CPU path). The per-chunk lists merge under
  the same key, so the result is bitwise ``hilcore.knn`` on the concatenated
  rows (default backend: indices and similarities, with ties, duplicates and
  near-ties, for any sharding, chunk size, tile or thread count). On CUDA (and
  on a CPU without the native extension) the similarities are *canonical*
  instead: the float64 sum of the exact float32 products, rounded once to
  float32 (:func:`canonical_similarity`), with float32 GEMM candidates
  certified by the float32 and float64 error bounds (``gamma_D |x| |y|``
  each) and the rest rescored against the whole chunk: exact under
  (similarity desc, index asc), self first, the same on any number of ranks,
  but not the bits of the single-process CUDA call (the Triton kNN's
  values come from its tile kernels' reduction order and certificate; its
  indices agree wherever no two columns lie within float32 rounding).
- :func:`jaccard_distance`: the stage core (:mod:`hilcore.stages.jaccard`,
  the torch backend's stages) on the local rows; the
  rank rows, reciprocal masks, features and weight rows of referenced
  neighbours are fetched from their owners (``all_to_all`` of requests), the
  inverted index is keyed by column owner (each rank fetches the columns its
  rows' supports touch); as in the torch backend only the pairs j >= i are
  summed, and the kept ones are mirrored to the owner of j. Every sum runs in
  the documented orders of the torch and native stages (docs/design.md,
  "Summation orders": normaliser in entry order, query expansion in ascending
  row id, ``m(i, j)`` over increasing t), so on CPU the rows are bitwise those
  of the single-process torch and native stages given the same kNN.
- :func:`dbscan`: core flags locally, core flags all-gathered, the stage
  core's union-find (:mod:`hilcore.stages.dbscan`): min-label hooking of the core-core edges with an ``all_reduce(MIN)`` of the parent
  array per round and pointer jumping, to a fixpoint; sklearn numbering and the
  border rule; every rank returns the global labels (O(N) per rank).

The package is a set of thin adapters over the single-process stage core
(docs/design.md, "Layers"): :mod:`~hilcore.distributed.comm` (the process
group, collectives, and ``ShardedRows``, the fetch-rows / reduce interface of
:mod:`hilcore.stages.rows`), :mod:`~hilcore.distributed.knn_sharded`,
:mod:`~hilcore.distributed.jaccard_sharded` (:func:`hilcore.stages.jaccard.jaccard_rows`
on ``ShardedRows``), :mod:`~hilcore.distributed.dbscan_sharded`
(:func:`hilcore.stages.dbscan.labels` on ``ShardedRows``) and
:mod:`~hilcore.distributed.epoch_sharded` (:func:`hilcore.epoch.run_epoch`).

Every op takes an optional ``info`` dict that receives, for that call on this
rank, ``bytes_sent`` (payload bytes this rank put into collectives, times the
receivers), ``timings`` (seconds: ``total``, and ``knn`` for the Jaccard
distance, measured by :class:`hilcore._info.Stopwatch`) and what the op did
(no module-level state: calls on several threads or groups do not mix their
reports). ``stats``, its earlier documented name, still works with a
DeprecationWarning.
"""
from __future__ import annotations

from .comm import shard_sizes
from .dbscan_sharded import dbscan
from .epoch_sharded import cluster_epoch
from .jaccard_sharded import jaccard_distance
from .knn_sharded import canonical_similarity, knn

__all__ = ["knn", "jaccard_distance", "dbscan", "cluster_epoch", "canonical_similarity", "shard_sizes"]
