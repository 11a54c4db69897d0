"""The "fetch rows / reduce" interface the stage core runs on, and its one-process implementation.

Every stage of :mod:`hilcore.stages` works on the *local* rows of a row-sharded
problem: rows ``start .. start + n_local`` of ``n`` global rows, addressed by
their global ids. Whatever a stage needs from other rows (their rank lists,
features, weight rows, inverted-index columns) it asks its ``rows`` object for,
and whatever it must agree on with the other shards it reduces through it.
:class:`LocalRows` is that object in one process (every row is local: a fetch
is an index, a reduction the identity); ``hilcore.distributed.comm.ShardedRows``
is the same interface over torch.distributed (``all_to_all`` of requests and
replies, ``all_reduce``, ``all_gather``). A new driver (another collective
library, an out-of-core store) is one more class with these methods.

The methods (``table`` is the caller's ``[n_local, ...]`` slice of a row-sharded
table; ``ids`` global row ids of any shape):

- ``fetch(ids, table) -> (tab, pos)``: ``tab[pos]`` are the rows ``ids`` of the
  global table (``pos`` has ``ids``' shape). Callers index ``tab[pos[chunk]]``
  chunk by chunk, so nothing of size ``ids.numel() x row`` need exist.
- ``fetch_csr(ids, indptr, indices, values) -> (ptr, idx, val, pos)``: the
  same for variable-length rows of a row-sharded CSR (``values`` may be
  ``None``; then ``val`` is ``None``): row ``pos[a]`` of the returned CSR is
  global row ``ids[a]``.
- ``rounds(ids, table)``: yields ``(ent, tab, pos)``, the entries ``ent`` (into
  ``ids.reshape(-1)``) whose rows arrive in this round and ``tab[pos]`` their
  rows; a round holds one owner's rows at most.
- ``to_owners(dest, *payloads) -> tuple``: entry ``e`` of every 1-D payload goes
  to the owner of row ``dest[e]``; returns what arrived here, per payload,
  concatenated by source in rank order (each source's entries in their order).
- ``gather(t) -> t_all``: 1-D per-row values of the local rows -> those of all
  ``n`` rows (rank order).
- ``reduce_min(t) -> t``: element-wise minimum over the shards (every shard
  gets the same tensor).
- ``agree_max(v: int) -> int``: the largest ``v`` over the shards (so the
  shards run the same number of collective rounds).

Attributes ``n`` (global rows), ``n_local``, ``start`` (global id of local row 0).
"""
from __future__ import annotations

import torch


class LocalRows:
    """The one-process rows interface: all ``n`` rows are local (module docstring).

    Example:
        >>> import torch
        >>> from hilcore.stages.rows import LocalRows
        >>> rows = LocalRows(3)
        >>> tab, pos = rows.fetch(torch.tensor([[2, 0]]), torch.tensor([10, 11, 12]))
        >>> tab[pos].tolist(), rows.reduce_min(torch.tensor([4])).tolist(), rows.agree_max(5)
        ([[12, 10]], [4], 5)
    """

    def __init__(self, n: int):
        self.n = int(n)
        self.n_local = int(n)
        self.start = 0

    def fetch(self, ids: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return table, ids

    def fetch_csr(self, ids: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
                  values: torch.Tensor | None):
        return indptr, indices, values, ids

    def rounds(self, ids: torch.Tensor, table: torch.Tensor):
        flat = ids.reshape(-1)
        yield torch.arange(flat.shape[0], device=flat.device), table, flat

    def to_owners(self, dest: torch.Tensor, *payloads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return payloads

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def reduce_min(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def agree_max(self, v: int) -> int:
        return int(v)
