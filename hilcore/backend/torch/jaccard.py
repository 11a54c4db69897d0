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
     block in a dense [block, N] accumulator; ``d = max(0, 1 - m / (s_i + s_j - m))``
     with the row masses ``s_i = sum_t V'[i, t]`` (1 up to rounding); the kept
     pairs are mirrored to j < i so the result is exactly symmetric.
Memory is O(N * support) plus one [block, N] accumulator, never N x N.

Every float32 result follows the summation orders of docs/design.md
("Summation orders"), which the native C++ stages follow too, so both return
bitwise the same CSR: the dot products in :data:`DOT_LANES` fixed lanes
(:func:`dot_rows`), the exponential from IEEE float64 operations only
(:func:`exp_f32`), every other sum sequential in index order (``index_add_``
on a CPU adds in the order of its index, one element after the other).
"""
from __future__ import annotations

import torch

from ..._core import half_k

#: Lanes of the dot products of the weights (docs/design.md, "Summation orders").
DOT_LANES = 16
# exp_f32: Cody-Waite reduction by ln 2 (hi part with trailing zero bits), Taylor terms 1/k!, k <= 11;
# the same bits are in kernels/cpu/jaccard_cpu.cpp
_INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
_EXP_TAYLOR = tuple(float.fromhex(h) for h in (
    "0x1.0000000000000p+0", "0x1.0000000000000p+0", "0x1.0000000000000p-1", "0x1.5555555555555p-3",
    "0x1.5555555555555p-5", "0x1.1111111111111p-7", "0x1.6c16c16c16c17p-10", "0x1.a01a01a01a01ap-13",
    "0x1.a01a01a01a01ap-16", "0x1.71de3a556c734p-19", "0x1.27e4fb7789f5cp-22", "0x1.ae64567f544e4p-26"))

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


def dot_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float32 ``[m]``: ``a[r] . b[r]`` of float32 ``[m, D]`` rows in the fixed order of docs/design.md.

    Lane ``l`` of :data:`DOT_LANES` adds the float32 products ``a[r, t] * b[r, t]``
    of the columns ``t = q * DOT_LANES + l`` for q ascending (from 0); then the
    lanes fold in halves, lane ``l`` += lane ``l + w`` for w = 8, 4, 2, 1. No
    reduction of torch's is used (their order depends on the vector width).
    """
    p = a * b
    m, dim = p.shape
    acc = torch.zeros((m, DOT_LANES), dtype=torch.float32, device=p.device)
    full = dim // DOT_LANES
    for q in range(full):
        acc += p[:, q * DOT_LANES:(q + 1) * DOT_LANES]
    if dim > full * DOT_LANES:
        acc[:, :dim - full * DOT_LANES] += p[:, full * DOT_LANES:]
    w = DOT_LANES
    while w > 1:
        w //= 2
        acc = acc[:, :w] + acc[:, w:2 * w]
    return acc[:, 0]


def exp_f32(z: torch.Tensor) -> torch.Tensor:
    """float32 ``exp(z)`` from IEEE float64 operations only (so every device and the C++ agree bitwise).

    ``z`` (float32, clamped to [-200, 100], where float32's exp is already 0 / inf)
    is reduced as ``z = k ln2 + r`` (k = round-half-even(z / ln2), ln 2 in a
    hi + lo pair), ``exp(r)`` is the Taylor polynomial of degree 11 in Horner
    form (|r| <= 0.35: error below 1e-14), scaled by the exact ``2^k``, then
    rounded once to float32 (within 0.5 ulp + 1e-14 of the true value).
    """
    zd = z.to(torch.float64).clamp(-200.0, 100.0)
    k = torch.round(zd * _INV_LN2)
    r = (zd - k * _LN2_HI) - k * _LN2_LO
    p = r * _EXP_TAYLOR[11] + _EXP_TAYLOR[10]
    for c in reversed(_EXP_TAYLOR[:10]):
        p = p * r + c
    pow2 = ((k.to(torch.int64) + 1023) << 52).view(torch.float64)  # exactly 2^k
    return (p * pow2).to(torch.float32)


def softmax_numerators(sims: torch.Tensor) -> torch.Tensor:
    """The unnormalised weights ``exp(-(2 - 2 s))`` of float32 similarities (no max shift: logits in [-4, 0])."""
    return exp_f32(-(2.0 - 2.0 * sims))


def row_masses(indptr: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """float32 ``[n]``: ``s_i`` = the values of CSR row i added in ascending column order, from 0."""
    return torch.zeros(n, dtype=torch.float32, device=values.device).index_add_(0, _row_ids(indptr), values)


def jaccard_from_min_sum(m: torch.Tensor, mass_i: torch.Tensor, mass_j: torch.Tensor) -> torch.Tensor:
    """``max(0, 1 - m / ((s_i + s_j) - m))`` in float32: two identical V' rows give exactly 0."""
    return torch.clamp(1.0 - m / ((mass_i + mass_j) - m), min=0.0)


def _weights(x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """V values: per row, softmax over E(i) of -(2 - 2 x_i . x_j), float32."""
    n, dim = x.shape
    rows = _row_ids(indptr)
    sims = torch.empty(indices.shape[0], dtype=torch.float32, device=x.device)
    step = max(1, CHUNK_ELEMENTS // dim)
    for s in range(0, indices.shape[0], step):
        e = min(indices.shape[0], s + step)
        sims[s:e] = dot_rows(x[rows[s:e]], x[indices[s:e]])
    w = softmax_numerators(sims)
    # the normaliser adds a row's weights in ascending column order, from 0
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
    query expansion of :func:`hilcore.distributed.jaccard_distance` (local rows, fetched V rows).

    The rows ``nbrs[i, :]`` are added in ascending order of their ids (from 0), so two rows with
    the same set of neighbours (exact duplicates) get bitwise the same mean, whatever their ranking order.
    """
    n, k2 = nbrs.shape
    dev = nbrs.device
    nbrs = torch.sort(nbrs, dim=1).values
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
    mass = row_masses(indptr, values, n)
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
        i, j = flat // n + r0, flat % n
        d = jaccard_from_min_sum(m, mass[i], mass[j])
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
