"""The stage core: the torch stages of the Jaccard distance and DBSCAN, written once.

Every driver runs these functions: the torch backend in one process
(:class:`~hilcore.stages.rows.LocalRows`), ``hilcore.distributed`` over the
ranks of a torch.distributed group (``hilcore.distributed.comm.ShardedRows``),
``hilcore.compat`` for scikit-learn's weighted DBSCAN. What differs between
drivers is only how rows of other shards are fetched and how per-row results
are reduced: the small interface of :mod:`hilcore.stages.rows`.

- :mod:`hilcore.stages.rows`: the fetch-rows / reduce interface and its one-process implementation;
- :mod:`hilcore.stages.jaccard`: reciprocal masks, expansion, weights, query expansion, pair sums;
- :mod:`hilcore.stages.dbscan`: neighbour pairs, union-find, labels (numbering rule: ``hilcore._core``).

This package imports only :mod:`hilcore._core` (its layer in ``pyproject.toml`` sits just above the leaf).
"""
