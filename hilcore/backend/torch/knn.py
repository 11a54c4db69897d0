"""Exact blocked kNN in pure PyTorch (any device).

A tile of query rows is multiplied against every database row with
``torch.mm`` and reduced with ``torch.topk``; memory is O(block x M). The
order is the exact key (similarity descending, index ascending): rows whose
k-th value is tied with elements ``topk`` left out are re-selected with a
stable sort, and ties inside the k are put in index order.
"""
from __future__ import annotations

import torch

from ... import _progress
from ..._precision import ieee_fp32

# Elements of one [block, M] similarity tile (float32): 2^24 = 64 MiB.
TILE_ELEMENTS = 1 << 24


def _order_by_key(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (value descending, index ascending)."""
    by_index = torch.argsort(idx, dim=1)
    vals, idx = vals.gather(1, by_index), idx.gather(1, by_index)
    by_value = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, by_value), idx.gather(1, by_value)


def _select(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best entries of each row of ``s`` [b, M] under the exact key."""
    vals, idx = torch.topk(s, k, dim=1, largest=True, sorted=True)
    kth = vals[:, -1:]
    # more elements reach the k-th value than topk kept: the boundary is tied,
    # and topk may have kept any of the tied indices. Redo those rows exactly.
    tied = (s >= kth).sum(dim=1) > k
    if bool(tied.any()):
        rows = torch.nonzero(tied).flatten()
        order = torch.sort(s[rows], dim=1, descending=True, stable=True).indices[:, :k]
        idx[rows] = order
        vals[rows] = s[rows].gather(1, order)
    return _order_by_key(vals, idx)


@ieee_fp32()  # exact products whatever allow_tf32 / matmul precision the caller set
def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN of the rows of ``x`` [N, D] among the rows of ``y`` [M, D] (``x`` when None).

    Inputs are L2-normalised contiguous float32 on one device; returns
    ``(idx int64 [N, k], sim float32 [N, k])`` on that device. In self-search
    row i is its own first neighbour, reported with its computed similarity.
    """
    self_search = y is None
    db = x if self_search else y
    n, m = x.shape[0], db.shape[0]
    idx_out = torch.empty((n, k), dtype=torch.int64, device=x.device)
    sim_out = torch.empty((n, k), dtype=torch.float32, device=x.device)
    block = max(1, min(n, TILE_ELEMENTS // max(m, 1)))
    db_t = db.t()
    for start in range(0, n, block):
        stop = min(n, start + block)
        s = torch.mm(x[start:stop], db_t)  # [b, M] cosine similarities
        if self_search:
            rows = torch.arange(stop - start, device=x.device)
            own = s[rows, rows + start].clone()
            s[rows, rows + start] = float("inf")  # self always ranks first
        vals, idx = _select(s, k)
        if self_search:
            vals[:, 0] = own  # idx[:, 0] is the row itself (the only +inf)
        idx_out[start:stop] = idx
        sim_out[start:stop] = vals
        _progress.report("knn", stop, n)      # (hil cluster's progress display, per block of rows)
    return idx_out, sim_out
