"""Exact blocked kNN in pure PyTorch (any device).

A tile of query rows is multiplied against every database row with
``torch.mm``; every database row whose GEMM similarity lies within twice the
GEMM's rounding bound of the k-th largest is a candidate, and the candidates
are rescored by :func:`hilcore.stages.jaccard.dot_rows` (one fixed
summation order, so two identical database rows get bitwise the same value,
which a GEMM does not guarantee). The k best candidates under (rescored
similarity descending, index ascending) are returned with their rescored
values: exact ties, such as duplicate database rows, go to the lower index,
as in the other backends. Memory is O(block x M).
"""
from __future__ import annotations

import torch

from ... import _progress
from ..._precision import ieee_fp32
from .jaccard import dot_rows

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


def _gemm_bound(d: int) -> float:
    """gamma_d = d u / (1 - d u), u = 2^-24: |fl(x . y) - x . y| <= gamma_d ||x|| ||y|| for any order of the sum."""
    u = 2.0 ** -24
    return d * u / (1.0 - d * u)


def _rescored_topk(xb: torch.Tensor, db: torch.Tensor, s: torch.Tensor, k: int, start: int,
                   self_search: bool, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of each row of the GEMM tile ``s`` [b, M] under rescored values (see the module docstring)."""
    b, dim = xb.shape
    kth = torch.topk(s, k, dim=1, largest=True, sorted=True).values[:, -1:]
    # |gemm - rescored| <= bound each (unit rows): a row outside kth - 2 bound cannot reach the rescored k best
    r, c = torch.nonzero(s >= kth - 2.0 * bound, as_tuple=True)  # row-major: c ascending within each row
    vals = torch.empty(r.shape[0], dtype=torch.float32, device=s.device)
    step = max(1, TILE_ELEMENTS // max(dim, 1))
    for p in range(0, r.shape[0], step):
        q = min(r.shape[0], p + step)
        vals[p:q] = dot_rows(xb[r[p:q]], db[c[p:q]])
    key = vals.clone()
    if self_search:
        key[c == r + start] = float("inf")  # the row itself first
    order = torch.sort(key, descending=True, stable=True).indices  # value desc; c asc kept on ties
    order = order[torch.sort(r[order], stable=True).indices]  # grouped by row, the order above kept inside
    counts = torch.bincount(r, minlength=b)
    first = torch.cumsum(counts, 0) - counts
    pick = order[(first.unsqueeze(1) + torch.arange(k, device=s.device)).reshape(-1)]
    return c[pick].view(b, k), vals[pick].view(b, k)


@ieee_fp32()  # exact products whatever allow_tf32 / matmul precision the caller set
def knn(x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN of the rows of ``x`` [N, D] among the rows of ``y`` [M, D] (``x`` when None).

    Inputs are L2-normalised contiguous float32 on one device; returns
    ``(idx int64 [N, k], sim float32 [N, k])`` on that device. In self-search
    row i is its own first neighbour, reported with its computed similarity.
    Similarities are :func:`~hilcore.stages.jaccard.dot_rows` values;
    ties (equal values) go to the lower index.
    """
    self_search = y is None
    db = x if self_search else y
    n, m = x.shape[0], db.shape[0]
    idx_out = torch.empty((n, k), dtype=torch.int64, device=x.device)
    sim_out = torch.empty((n, k), dtype=torch.float32, device=x.device)
    block = max(1, min(n, TILE_ELEMENTS // max(m, 1)))
    db_t = db.t()
    # rows are unit up to rounding: the bound with a little room for their norms
    bound = _gemm_bound(x.shape[1]) * 1.01 + 2.0 ** -22
    for start in range(0, n, block):
        stop = min(n, start + block)
        s = torch.mm(x[start:stop], db_t)  # [b, M] cosine similarities
        if self_search:
            rows = torch.arange(stop - start, device=x.device)
            s[rows, rows + start] = float("inf")  # self always a candidate
        idx, vals = _rescored_topk(x[start:stop], db, s, k, start, self_search, bound)
        idx_out[start:stop] = idx
        sim_out[start:stop] = vals
        _progress.report("knn", stop, n)      # (hil cluster's progress display, per block of rows)
    return idx_out, sim_out
