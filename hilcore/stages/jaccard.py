"""The k-reciprocal Jaccard stages on torch tensors, written once for one process and for shards.

Stages (docs/design.md, section 1), each on the local rows of a ``rows``
object (:mod:`hilcore.stages.rows`; ``None``: :class:`~hilcore.stages.rows.LocalRows`,
every row local), chunked over rows, with global row ids everywhere:

  1. :func:`reciprocal_mask`: ``rank[i, a]`` is in R(i, k) iff i is among the
     first ``min(k + 1, k1)`` entries of ``rank[rank[i, a]]`` (rank rows of the
     neighbours fetched);
  2. :func:`expansion`: E(i) = R(i, k1) plus every R(c, kh) (c in R(i, k1))
     with ``3 |R(c, kh) & R(i, k1)| > 2 |R(c, kh)|``, unique, as CSR;
  3. :func:`weights`: ``V[i, E(i)] = softmax(-(2 - 2 x_i . x_j))`` (feature rows
     of the columns fetched, one owner per round);
  4. :func:`query_expansion`: ``V'[i] = mean(V[rank[i, :k2]])`` (k2 > 1; V rows fetched);
  5. :func:`upper_pairs`: ``m(i, j) = sum_t min(V'[i, t], V'[j, t])`` through an
     inverted index keyed by the owner of column t, only for j >= i, summed per
     row block in a dense ``[block, N]`` accumulator; ``d = max(0, 1 - m / (s_i +
     s_j - m))`` with the row masses ``s_i = sum_t V'[i, t]``;
  6. :func:`symmetric_rows`: the kept pairs mirrored to the rows j (on their
     owner), sorted CSR.

:func:`jaccard_rows` runs them in order. Memory per process is O(local rows x
support) plus one ``[block, N]`` accumulator, never N x N. The torch backend is
``jaccard_rows`` with :class:`~hilcore.stages.rows.LocalRows`,
``hilcore.distributed.jaccard_distance`` the same with its ``ShardedRows``.

Every float32 result follows the summation orders of docs/design.md
("Summation orders"), which the native C++ stages follow too, so on CPU tensors
all of them return bitwise the same CSR, for any sharding: the dot products in
:data:`DOT_LANES` fixed lanes (:func:`dot_rows`), the exponential from IEEE
float64 operations only (:func:`exp_f32`), every other sum sequential in index
order (``index_add_`` on a CPU adds in the order of its index).
"""
from __future__ import annotations

import torch

from .. import _progress
from .._core import half_k
from .rows import LocalRows

__all__ = ["DOT_LANES", "CHUNK_ELEMENTS", "PAIR_BUDGET", "jaccard_rows", "reciprocal_mask", "expansion", "weights",
           "query_expansion", "upper_pairs", "symmetric_rows", "dot_rows", "exp_f32", "softmax_numerators",
           "row_masses", "jaccard_from_min_sum", "mean_of_rows", "dedupe_rows", "segment_offsets", "row_ids",
           "rows_per_chunk"]

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

#: Upper bound on the elements of the temporaries of one chunk.
CHUNK_ELEMENTS = 1 << 24
#: Inverted-index entries (pairs) of the last stage fetched per super-block of local rows.
PAIR_BUDGET = 1 << 24


# ================================================================================ small shared pieces
def rows_per_chunk(n: int, per_row: int) -> int:
    """Rows per chunk so that a chunk's temporaries hold at most :data:`CHUNK_ELEMENTS` elements."""
    return max(1, min(n, CHUNK_ELEMENTS // max(per_row, 1)))


def dedupe_rows(cand: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded rows of candidates (``n`` = padding) -> (counts [b], sorted unique values, row-major)."""
    cand, _ = torch.sort(cand, dim=1)
    dup = torch.zeros_like(cand, dtype=torch.bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    valid = (cand < n) & ~dup
    return valid.sum(dim=1), cand[valid]


def segment_offsets(reps: torch.Tensor) -> torch.Tensor:
    """For segments of lengths ``reps`` laid end to end: each element's offset inside its segment."""
    total = torch.arange(int(reps.sum()), device=reps.device)
    return total - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)


def row_ids(indptr: torch.Tensor) -> torch.Tensor:
    """The row of every entry of a CSR with row pointers ``indptr``."""
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
    return torch.zeros(n, dtype=torch.float32, device=values.device).index_add_(0, row_ids(indptr), values)


def jaccard_from_min_sum(m: torch.Tensor, mass_i: torch.Tensor, mass_j: torch.Tensor) -> torch.Tensor:
    """``max(0, 1 - m / ((s_i + s_j) - m))`` in float32: two identical V' rows give exactly 0."""
    return torch.clamp(1.0 - m / ((mass_i + mass_j) - m), min=0.0)


def mean_of_rows(nbrs: torch.Tensor, n_cols: int, indptr: torch.Tensor, indices: torch.Tensor,
                 values: torch.Tensor, tick=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR (indptr, indices, float32 values) of row i = mean over the CSR rows ``nbrs[i, :]`` of
    ``(indptr, indices, values)``, whose columns lie in ``[0, n_cols)``; columns sorted per row.
    ``tick(rows)`` (optional) is called after each chunk with the rows done so far.

    The rows ``nbrs[i, :]`` are added in ascending order of their ids (from 0), so two rows with
    the same set of neighbours (exact duplicates) get bitwise the same mean, whatever their ranking order.
    """
    n, k2 = nbrs.shape
    dev = nbrs.device
    nbrs = torch.sort(nbrs, dim=1).values
    length = indptr[1:] - indptr[:-1]
    counts, cols, vals = [], [], []
    avg = int(length.float().mean().item()) + 1 if length.numel() else 1
    step = rows_per_chunk(n, k2 * avg)
    for s in range(0, n, step):
        e = min(n, s + step)
        nb = nbrs[s:e].reshape(-1)  # the V rows summed for rows s..e
        reps = length[nb]
        who = torch.repeat_interleave(torch.arange(s, e, device=dev).repeat_interleave(k2), reps)
        first = torch.repeat_interleave(indptr[nb], reps)
        pos = first + segment_offsets(reps)
        key = who * n_cols + indices[pos]
        uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
        acc = torch.zeros(uniq.shape[0], dtype=torch.float32, device=dev).index_add_(0, inv, values[pos])
        counts.append(torch.bincount(uniq // n_cols - s, minlength=e - s))
        cols.append(uniq % n_cols)
        vals.append(acc / k2)
        if tick is not None:
            tick(e)
    qptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    if n:
        qptr[1:] = torch.cumsum(torch.cat(counts), 0)
    if not cols:
        return qptr, torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=torch.float32, device=dev)
    return qptr, torch.cat(cols), torch.cat(vals)


def _cat(parts: list, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)


# ============================================================================================= stages
def reciprocal_mask(rank: torch.Tensor, cols: int, rows=None, fetched=None) -> torch.Tensor:
    """bool ``[n_local, cols]``: entry a of local row i is in R(i, k) (``cols = min(k + 1, k1)``).

    ``rank`` is the local rows' ``[n_local, k1]`` int64 ranking (global ids, self first);
    ``fetched`` the ``rows.fetch(rank, rank)`` of the caller (fetched here when ``None``).
    """
    rows = LocalRows(rank.shape[0]) if rows is None else rows
    tab, pos = rows.fetch(rank, rank) if fetched is None else fetched
    head = tab[:, :cols]
    n_l = rank.shape[0]
    mask = torch.empty((n_l, cols), dtype=torch.bool, device=rank.device)
    step = rows_per_chunk(n_l, cols * cols)
    for s in range(0, n_l, step):
        e = min(n_l, s + step)
        me = (torch.arange(s, e, device=rank.device) + rows.start).view(-1, 1, 1)
        mask[s:e] = (head[pos[s:e, :cols]] == me).any(dim=2)  # [b, cols, cols] -> [b, cols]
    return mask


def expansion(rank: torch.Tensor, mask1: torch.Tensor, mask_h: torch.Tensor, rows=None,
              fetched=None, tick=None) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR (indptr, global indices) of the expanded sets E(i) of the local rows, indices sorted per row.

    ``mask1`` / ``mask_h``: the local rows' :func:`reciprocal_mask` for k1 and ``half_k(k1)``;
    ``fetched``: ``rows.fetch(rank, rank)`` (fetched here when ``None``); ``tick(rows)`` (optional)
    is called after each chunk with the local rows done so far.
    """
    rows = LocalRows(rank.shape[0]) if rows is None else rows
    tab, pos = rows.fetch(rank, rank) if fetched is None else fetched
    mtab, mpos = rows.fetch(rank, mask_h)  # the neighbours' R(c, kh) masks
    n = rows.n
    n_l, k1 = rank.shape
    kk = mask_h.shape[1]
    dev = rank.device
    head = tab[:, :kk]
    counts, pieces = [], []
    step = rows_per_chunk(n_l, k1 * kk * k1)
    for s in range(0, n_l, step):
        e = min(n_l, s + step)
        b = e - s
        ri, ri_ok = rank[s:e], mask1[s:e]  # R(i, k1): [b, k1] with validity
        cand = head[pos[s:e]]  # R(c, kh) candidates for c = rank[i, a]: [b, k1, kk]
        cand_ok = mtab[mpos[s:e]]
        size = cand_ok.sum(dim=2)  # |R(c, kh)|
        in_ri = ((cand.unsqueeze(3) == ri.view(b, 1, 1, k1)) & ri_ok.view(b, 1, 1, k1)).any(dim=3)
        inter = (in_ri & cand_ok).sum(dim=2)  # |R(c, kh) & R(i, k1)|
        take = ri_ok & (3 * inter > 2 * size)
        added = torch.where(cand_ok & take.unsqueeze(2), cand, n).view(b, k1 * kk)
        base = torch.where(ri_ok, ri, n)
        c, v = dedupe_rows(torch.cat([base, added], dim=1), n)
        counts.append(c)
        pieces.append(v)
        if tick is not None:
            tick(e)
    indptr = torch.zeros(n_l + 1, dtype=torch.int64, device=dev)
    if n_l:
        indptr[1:] = torch.cumsum(torch.cat(counts), 0)
    return indptr, _cat(pieces, torch.int64, dev)


def weights(x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, rows=None, tick=None) -> torch.Tensor:
    """V values of the local rows: per row, softmax over E(i) of -(2 - 2 x_i . x_j), float32.

    ``x``: the local rows' normalised float32 features; ``(indptr, indices)``: E as CSR (global ids).
    The normaliser adds a row's weights in ascending column order, from 0. ``tick(rows)`` (optional) is
    called after a chunk of entries that completes rows, with the rows whose entries lie within the
    entries done (in one process the entries go in row order: the rows whose dot products are done).
    """
    rows = LocalRows(x.shape[0]) if rows is None else rows
    n_l, dim = x.shape
    r = row_ids(indptr)
    sims = torch.empty(indices.shape[0], dtype=torch.float32, device=x.device)
    step = max(1, CHUNK_ELEMENTS // max(dim, 1))
    done, reported = 0, 0
    for ent, tab, pos in rows.rounds(indices, x):  # the columns' features, one owner at a time
        for s in range(0, ent.shape[0], step):
            e = ent[s:s + step]
            sims[e] = dot_rows(x[r[e]], tab[pos[s:s + step]])
            done += e.shape[0]
            if tick is not None and (now := int(torch.searchsorted(indptr[1:], done, right=True))) > reported:
                reported = now
                tick(now)
    w = softmax_numerators(sims)
    total = torch.zeros(n_l, dtype=torch.float32, device=x.device).index_add_(0, r, w)
    return w / total[r]


def query_expansion(rank: torch.Tensor, k2: int, indptr: torch.Tensor, indices: torch.Tensor,
                    values: torch.Tensor, rows=None, tick=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR of ``V'[i]`` = mean over n in ``rank[i, :k2]`` of ``V[n]`` (V rows fetched), for the local rows
    (``tick``: :func:`mean_of_rows`)."""
    rows = LocalRows(rank.shape[0]) if rows is None else rows
    ptr, idx, val, pos = rows.fetch_csr(rank[:, :k2], indptr, indices, values)
    return mean_of_rows(pos, rows.n, ptr, idx, val, tick)


def upper_pairs(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, max_distance: float,
                rows=None, tick=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(local i, global j, d) for j >= i with supports meeting and ``d <= max_distance`` (diagonal d = 0).

    ``(indptr, indices, values)``: V' of the local rows. Every entry ``(t, i, v)`` goes to the owner of
    column t (the inverted index, rows ascending in a column); each super-block of local rows (at most
    :data:`PAIR_BUDGET` partner entries, a single heavy row excepted) fetches the columns its supports
    touch; ``m(i, j)`` adds over increasing t. ``tick(rows)`` (optional) is called after each block of
    local rows with the local rows done so far.
    """
    n_l = indptr.shape[0] - 1
    rows = LocalRows(n_l) if rows is None else rows
    n, me = rows.n, rows.start
    dev = values.device
    lrows = row_ids(indptr)
    mass = rows.gather(row_masses(indptr, values, n_l))  # s_j of every row
    ct, ci, cv = rows.to_owners(indices, indices, lrows + me, values)
    order = torch.argsort(ct * n + ci)  # by (column, row): rows ascend inside a column
    ct, ci, cv = ct[order], ci[order], cv[order]
    cptr = torch.zeros(n_l + 1, dtype=torch.int64, device=dev)
    if n_l:
        cptr[1:] = torch.cumsum(torch.bincount(ct - me, minlength=n_l), 0)
    tab, pos = rows.fetch(indices, cptr[1:] - cptr[:-1])
    partners = tab[pos]  # every row of column t(e) is a partner of entry e
    work = torch.zeros(n_l, dtype=torch.int64, device=dev).index_add_(0, lrows, partners)
    cum = torch.cumsum(work, 0)
    bounds, r0 = [], 0
    while r0 < n_l:
        done = int(cum[r0 - 1]) if r0 else 0
        r1 = int(torch.searchsorted(cum, done + PAIR_BUDGET, right=True))
        r1 = min(n_l, max(r1, r0 + 1))
        bounds.append((r0, r1))
        r0 = r1
    rounds = rows.agree_max(len(bounds))  # the shards run the same number of collective rounds
    out_i, out_j, out_d = [], [], []
    block = max(1, CHUNK_ELEMENTS // n)
    chunk = CHUNK_ELEMENTS // 4  # triples per piece (each holds several int64 temporaries)
    for b in range(rounds):
        sa, sb = bounds[b] if b < len(bounds) else (n_l, n_l)
        lo_e, hi_e = int(indptr[sa]), int(indptr[sb])
        lptr, lrow, lval, bpos = rows.fetch_csr(indices[lo_e:hi_e], cptr, ci, cv)
        # partners j >= i only (the rest is mirrored by symmetric_rows): in column t's list (rows
        # ascending) they start at the first row >= i
        lkey = row_ids(lptr) * n + lrow
        start = torch.searchsorted(lkey, bpos * n + lrows[lo_e:hi_e] + me)
        half = lptr[bpos + 1] - start
        for r0 in range(sa, sb, block):
            r1 = min(sb, r0 + block)
            lo, hi = int(indptr[r0]), int(indptr[r1])
            acc = torch.zeros((r1 - r0) * n, dtype=torch.float32, device=dev)  # m(i, j) for the block
            ends = torch.cumsum(half[lo - lo_e:hi - lo_e], 0)
            at = lo
            while at < hi:
                done = int(ends[at - lo - 1]) if at > lo else 0
                stop = int(torch.searchsorted(ends, done + chunk, right=True)) + lo
                stop = min(hi, max(stop, at + 1))
                ent = torch.arange(at, stop, device=dev)
                reps = half[ent - lo_e]
                e_of = torch.repeat_interleave(ent, reps)
                slot = start[e_of - lo_e] + segment_offsets(reps)
                contrib = torch.minimum(values[e_of], lval[slot])
                acc.index_add_(0, (lrows[e_of] - r0) * n + lrow[slot], contrib)
                at = stop
            flat = torch.nonzero(acc > 0).flatten()
            m = acc[flat]
            i, j = flat // n + r0, flat % n
            d = jaccard_from_min_sum(m, mass[i + me], mass[j])
            d = torch.where(i + me == j, torch.zeros_like(d), d)  # the diagonal is exactly 0
            keep = d <= max_distance
            out_i.append(i[keep])
            out_j.append(j[keep])
            out_d.append(d[keep])
            if tick is not None:
                tick(r1)
        del lptr, lrow, lval, lkey, start, half
    return _cat(out_i, torch.int64, dev), _cat(out_j, torch.int64, dev), _cat(out_d, torch.float32, dev)


def symmetric_rows(i: torch.Tensor, j: torch.Tensor, d: torch.Tensor, n_local: int,
                   rows=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted CSR (indptr [n_local + 1], global indices, float32 data) of the local rows from the
    :func:`upper_pairs` ``(i local, j global, d)``: each (i, j > i) is mirrored as (j, i) to the owner of j."""
    rows = LocalRows(n_local) if rows is None else rows
    n, me = rows.n, rows.start
    off = j != i + me
    got_r, got_c, got_d = rows.to_owners(j[off], j[off], i[off] + me, d[off])
    r = torch.cat([i, got_r - me])
    c = torch.cat([j, got_c])
    data = torch.cat([d, got_d.to(d.dtype)])
    order = torch.argsort(r * n + c)
    indptr = torch.zeros(n_local + 1, dtype=torch.int64, device=d.device)
    if n_local:
        indptr[1:] = torch.cumsum(torch.bincount(r, minlength=n_local), 0)
    return indptr, c[order], data[order].to(torch.float32)


def jaccard_rows(x: torch.Tensor, rank: torch.Tensor, k1: int, k2: int, max_distance: float,
                 rows=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The local rows of the k-reciprocal Jaccard distance: CSR (indptr int64, global indices int64, float32).

    ``x`` ``[n_local, D]`` normalised float32, ``rank`` ``[n_local, k1]`` int64 global ids (self
    at column 0), ``k2 <= k1 <= N``; keeps the pairs whose supports meet and ``d <= max_distance``
    (``math.inf`` keeps all). Rows sorted, diagonal stored as 0.0, symmetric over all rows.
    Under a :mod:`hilcore._progress` hook, its passes over the local rows (expansion, weights, query
    expansion when ``k2 > 1``, pairs) report ``("stages", done, passes * n_local)`` as their chunks finish
    (:func:`hilcore._progress.rows_pass`).

    Example:
        >>> import math, torch, hilcore
        >>> from hilcore.stages.jaccard import jaccard_rows
        >>> x = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=1)
        >>> rank, _ = hilcore.knn(x, 10, backend="torch")
        >>> indptr, indices, data = jaccard_rows(x, rank, 10, 3, math.inf)
        >>> indptr.shape, bool((data >= 0).all() and (data <= 1).all())
        (torch.Size([51]), True)
    """
    rows = LocalRows(x.shape[0]) if rows is None else rows
    rank = rank.to(torch.int64).contiguous()
    kk = min(half_k(k1) + 1, k1)
    n_l, passes = x.shape[0], 4 if k2 > 1 else 3

    def tick(k):  # the reporter of pass k (None without a hook)
        return _progress.rows_pass("stages", n_l, k, passes)

    fetched = rows.fetch(rank, rank)  # the neighbours' rank rows, once for stages 1 and 2
    mask1 = reciprocal_mask(rank, k1, rows, fetched)
    mask_h = reciprocal_mask(rank, kk, rows, fetched)
    eptr, eidx = expansion(rank, mask1, mask_h, rows, fetched, tick(0))
    vals = weights(x, eptr, eidx, rows, tick(1))
    if k2 > 1:
        eptr, eidx, vals = query_expansion(rank, k2, eptr, eidx, vals, rows, tick(2))
    i, j, d = upper_pairs(eptr, eidx, vals, max_distance, rows, tick(passes - 1))
    return symmetric_rows(i, j, d, x.shape[0], rows)
