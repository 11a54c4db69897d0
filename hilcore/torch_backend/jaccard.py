"""Sparse k-reciprocal Jaccard distance in pure PyTorch (any device).

Stages (docs/design.md), all on padded or CSR tensors, chunked over rows:
  1. reciprocal masks: ``rank[i, a]`` is in R(i, k) iff i is in the first
     ``min(k + 1, k1)`` entries of ``rank[rank[i, a]]``;
  2. expansion E(i): R(i, k1) plus every R(c, kh) (c in R(i, k1)) with
     ``3 |R(c, kh) & R(i, k1)| > 2 |R(c, kh)|``, unique, as CSR;
  3. weights ``V[i, E(i)] = softmax(-(2 - 2 x_i . x_j))``;
  4. query expansion ``V'[i] = mean(V[rank[i, :k2]])`` (k2 > 1);
  5. ``m(i, j) = sum_t min(V'[i, t], V'[j, t])`` through an inverted index
     (the entries of V' sorted by column), only for j >= i, reduced per row
     block in a dense [block, N] accumulator; ``d = max(0, 1 - m / (2 - m))``;
     the kept pairs are mirrored to j < i so the result is exactly symmetric.
Memory is O(N * support) plus one [block, N] accumulator, never N x N.
"""
from __future__ import annotations

import torch

from .._core import half_k

# Upper bounds on the elements of the temporaries of one chunk.
CHUNK_ELEMENTS = 1 << 24


def _rows_per_chunk(n: int, per_row: int) -> int:
    return max(1, min(n, CHUNK_ELEMENTS // max(per_row, 1)))


def _reciprocal_mask(rank: torch.Tensor, cols: int) -> torch.Tensor:
    """bool [N, cols]: entry a of row i is in R(i, k) (cols = min(k + 1, k1) leading columns)."""
    n = rank.shape[0]
    head = rank[:, :cols]
    mask = torch.empty((n, cols), dtype=torch.bool, device=rank.device)
    step = _rows_per_chunk(n, cols * cols)
    for s in range(0, n, step):
        e = min(n, s + step)
        me = torch.arange(s, e, device=rank.device).view(-1, 1, 1)
        mask[s:e] = (head[head[s:e]] == me).any(dim=2)  # [b, cols, cols] -> [b, cols]
    return mask


def _dedupe_rows(cand: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded rows of candidates (``n`` = padding) -> (counts [b], sorted unique values, row-major)."""
    cand, _ = torch.sort(cand, dim=1)
    dup = torch.zeros_like(cand, dtype=torch.bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    valid = (cand < n) & ~dup
    return valid.sum(dim=1), cand[valid]


def _expansion(rank: torch.Tensor, mask1: torch.Tensor, mask_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR (indptr, indices) of the expanded sets E(i), indices sorted per row."""
    n, k1 = rank.shape
    kk = mask_h.shape[1]
    dev = rank.device
    counts, pieces = [], []
    step = _rows_per_chunk(n, k1 * kk * k1)
    for s in range(0, n, step):
        e = min(n, s + step)
        ri, ri_ok = rank[s:e], mask1[s:e]  # R(i, k1): [b, k1] with validity
        cand = rank[ri, :kk]  # R(c, kh) candidates for c = rank[i, a]: [b, k1, kk]
        cand_ok = mask_h[ri]
        size = cand_ok.sum(dim=2)  # |R(c, kh)|
        in_ri = ((cand.unsqueeze(3) == ri.view(e - s, 1, 1, k1)) & ri_ok.view(e - s, 1, 1, k1)).any(dim=3)
        inter = (in_ri & cand_ok).sum(dim=2)  # |R(c, kh) & R(i, k1)|
        take = ri_ok & (3 * inter > 2 * size)
        added = torch.where(cand_ok & take.unsqueeze(2), cand, n).view(e - s, k1 * kk)
        base = torch.where(ri_ok, ri, n)
        c, v = _dedupe_rows(torch.cat([base, added], dim=1), n)
        counts.append(c)
        pieces.append(v)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    indptr[1:] = torch.cumsum(torch.cat(counts), 0)
    return indptr, torch.cat(pieces)


def _segment_offsets(reps: torch.Tensor) -> torch.Tensor:
    """For segments of lengths ``reps`` laid end to end: each element's offset inside its segment."""
    total = torch.arange(int(reps.sum()), device=reps.device)
    return total - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)


def _row_ids(indptr: torch.Tensor) -> torch.Tensor:
    n = indptr.shape[0] - 1
    return torch.repeat_interleave(torch.arange(n, device=indptr.device), indptr[1:] - indptr[:-1])


def _weights(x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """V values: per row, softmax over E(i) of -(2 - 2 x_i . x_j), float32."""
    n, dim = x.shape
    rows = _row_ids(indptr)
    sims = torch.empty(indices.shape[0], dtype=torch.float32, device=x.device)
    step = max(1, CHUNK_ELEMENTS // dim)
    for s in range(0, indices.shape[0], step):
        e = min(indices.shape[0], s + step)
        sims[s:e] = (x[rows[s:e]] * x[indices[s:e]]).sum(dim=1)
    w = torch.exp(-(2.0 - 2.0 * sims))  # logits lie in [-4, 0]: no overflow, no max shift needed
    total = torch.zeros(n, dtype=torch.float32, device=x.device).index_add_(0, rows, w)
    return w / total[rows]


def _query_expansion(rank: torch.Tensor, k2: int, indptr: torch.Tensor, indices: torch.Tensor,
                     values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR of V'[i] = mean over n in rank[i, :k2] of V[n]."""
    return _mean_of_rows(rank[:, :k2], rank.shape[0], indptr, indices, values)


def _mean_of_rows(nbrs: torch.Tensor, n_cols: int, indptr: torch.Tensor, indices: torch.Tensor,
                  values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR (indptr, indices, float32 values) of row i = mean over the CSR rows ``nbrs[i, :]`` of
    ``(indptr, indices, values)``, whose columns lie in ``[0, n_cols)``; columns sorted per row. Also the
    query expansion of :func:`hilcore.distributed.jaccard_distance` (local rows, fetched V rows)."""
    n, k2 = nbrs.shape
    dev = nbrs.device
    length = indptr[1:] - indptr[:-1]
    counts, cols, vals = [], [], []
    avg = int(length.float().mean().item()) + 1 if length.numel() else 1
    step = _rows_per_chunk(n, k2 * avg)
    for s in range(0, n, step):
        e = min(n, s + step)
        nb = nbrs[s:e].reshape(-1)  # the V rows summed for rows s..e
        reps = length[nb]
        who = torch.repeat_interleave(torch.arange(s, e, device=dev).repeat_interleave(k2), reps)
        first = torch.repeat_interleave(indptr[nb], reps)
        pos = first + _segment_offsets(reps)
        key = who * n_cols + indices[pos]
        uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
        acc = torch.zeros(uniq.shape[0], dtype=torch.float32, device=dev).index_add_(0, inv, values[pos])
        counts.append(torch.bincount(uniq // n_cols - s, minlength=e - s))
        cols.append(uniq % n_cols)
        vals.append(acc / k2)
    qptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    if n:
        qptr[1:] = torch.cumsum(torch.cat(counts), 0)
    if not cols:
        return qptr, torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=torch.float32, device=dev)
    return qptr, torch.cat(cols), torch.cat(vals)


def _upper_pairs(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, n: int,
                 max_distance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i, j, d) for j >= i with supports meeting and d <= max_distance (diagonal d = 0)."""
    dev = values.device
    rows = _row_ids(indptr)
    # inverted index: entries ordered by (column, row); `where[e]` is entry e's slot there
    by_col = torch.sort(indices, stable=True).indices
    inv_rows, inv_vals = rows[by_col], values[by_col]
    col_end = torch.cumsum(torch.bincount(indices, minlength=n), 0)
    where = torch.empty_like(by_col)
    where[by_col] = torch.arange(by_col.shape[0], device=dev)
    # partners j >= i of entry e: slots where[e] .. col_end[col(e)] - 1 (rows ascend in a column)
    partners = col_end[indices] - where
    out_i, out_j, out_d = [], [], []
    block = max(1, min(n, CHUNK_ELEMENTS // n))
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        lo, hi = int(indptr[r0]), int(indptr[r1])
        acc = torch.zeros((r1 - r0) * n, dtype=torch.float32, device=dev)  # m(i, j) for the block
        # triples in pieces of at most CHUNK_ELEMENTS / 4 (each triple holds several int64 temporaries)
        ends = torch.cumsum(partners[lo:hi], 0)
        starts_at = lo
        while starts_at < hi:
            done = int(ends[starts_at - lo - 1]) if starts_at > lo else 0
            stop = int(torch.searchsorted(ends, done + CHUNK_ELEMENTS // 4, right=True)) + lo
            stop = min(hi, max(stop, starts_at + 1))
            ent = torch.arange(starts_at, stop, device=dev)
            reps = partners[ent]
            e_of = torch.repeat_interleave(ent, reps)
            slot = where[e_of] + _segment_offsets(reps)
            contrib = torch.minimum(values[e_of], inv_vals[slot])
            acc.index_add_(0, (rows[e_of] - r0) * n + inv_rows[slot], contrib)
            starts_at = stop
        flat = torch.nonzero(acc > 0).flatten()
        m = acc[flat]
        d = torch.clamp(1.0 - m / (2.0 - m), min=0.0)
        i, j = flat // n + r0, flat % n
        d = torch.where(i == j, torch.zeros_like(d), d)  # the diagonal is exactly 0
        keep = d <= max_distance
        out_i.append(i[keep])
        out_j.append(j[keep])
        out_d.append(d[keep])
    return torch.cat(out_i), torch.cat(out_j), torch.cat(out_d)


def jaccard(x: torch.Tensor, rank: torch.Tensor, k1: int, k2: int, max_distance: float, *,
            timings: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-reciprocal Jaccard distance as CSR (indptr int64 [N+1], indices int64, data float32).

    ``x`` [N, D] normalised float32, ``rank`` [N, k1] int64 (self at column 0),
    ``k2 <= k1 <= N``; keeps pairs whose supports meet and ``d <= max_distance``
    (``math.inf`` keeps all). Rows sorted, diagonal stored as 0.0, symmetric.
    ``timings`` is accepted for the common stage interface; this backend does not
    time its sub-stages (the caller times the whole).
    """
    n = x.shape[0]
    dev = x.device
    rank = rank.to(torch.int64).contiguous()
    kk = min(half_k(k1) + 1, k1)
    mask1 = _reciprocal_mask(rank, k1)
    mask_h = _reciprocal_mask(rank, kk)
    eptr, eidx = _expansion(rank, mask1, mask_h)
    vals = _weights(x, eptr, eidx)
    if k2 > 1:
        eptr, eidx, vals = _query_expansion(rank, k2, eptr, eidx, vals)
    i, j, d = _upper_pairs(eptr, eidx, vals, n, max_distance)
    off = i != j
    rows = torch.cat([i, j[off]])
    cols = torch.cat([j, i[off]])
    data = torch.cat([d, d[off]])
    order = torch.argsort(rows * n + cols)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return indptr, cols[order], data[order].to(torch.float32)
