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
- :func:`jaccard_distance`: the torch backend's stages on the local rows; the
  rank rows, reciprocal masks, features and weight rows of referenced
  neighbours are fetched from their owners (``all_to_all`` of requests), the
  inverted index is keyed by column owner (each rank fetches the columns its
  rows' supports touch); as in the torch backend only the pairs j >= i are
  summed, and the kept ones are mirrored to the owner of j. Every sum runs in
  the documented orders of the torch and native stages (docs/design.md,
  "Summation orders": normaliser in entry order, query expansion in ascending
  row id, ``m(i, j)`` over increasing t), so on CPU the rows are bitwise those
  of the single-process torch and native stages given the same kNN.
- :func:`dbscan`: core flags locally, core flags all-gathered, min-label
  hooking of the core-core edges with an ``all_reduce(MIN)`` of the parent
  array per round and pointer jumping, to a fixpoint; sklearn numbering and the
  border rule; every rank returns the global labels (O(N) per rank).

Every op takes an optional ``stats`` dict that receives, for that call on this
rank, ``bytes_sent`` (payload bytes this rank put into collectives, times the
receivers), the wall time and what the op did (no module-level state: calls on
several threads or groups do not mix their reports).
"""
from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from . import _arrays
from ._core import half_k
from .backend.torch.jaccard import _dedupe_rows, _mean_of_rows, _rows_per_chunk, _segment_offsets, dot_rows, \
    jaccard_from_min_sum, row_masses, softmax_numerators

__all__ = ["knn", "jaccard_distance", "dbscan", "cluster_epoch", "canonical_similarity", "shard_sizes"]


# Rows of one streamed chunk are capped so that chunk x D float32 stays under this many elements.
CHUNK_ELEMENTS = 1 << 22
# Elements of one float64 similarity tile / one rescoring temporary.
TILE_ELEMENTS = 1 << 22
_U64 = 2.0**-53
_U32 = 2.0**-24
# Inverted-index entries (pairs) fetched per super-block of local rows in the Jaccard's last stage.
PAIR_BUDGET = 1 << 24


# ============================================================================================ comm helpers
class _Comm:
    """The group, this rank, the world size and the device collectives run on; counts bytes sent."""

    def __init__(self, group):
        self.group = group
        self.on = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size(group) if self.on else 1
        self.rank = dist.get_rank(group) if self.on else 0
        nccl = self.on and dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.sent = 0
        self.uncertified = 0  # kNN: rows x chunks rescored against a whole chunk in this call

    def global_rank(self, r: int) -> int:
        return r if self.group is None else dist.get_global_rank(self.group, r)

    def all_gather_int(self, v: int) -> list[int]:
        if not self.on:
            return [int(v)]
        t = torch.tensor([int(v)], dtype=torch.int64, device=self.device)
        out = [torch.zeros_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.group)
        self.sent += 8 * (self.world - 1)
        return [int(o) for o in out]

    def broadcast(self, t: torch.Tensor, src: int) -> torch.Tensor:
        """``t`` of rank ``src`` (other ranks pass a buffer of the right shape); on t's device."""
        if not self.on:
            return t
        c = t.to(self.device).contiguous()
        dist.broadcast(c, src=self.global_rank(src), group=self.group)
        if src == self.rank:
            self.sent += c.numel() * c.element_size() * (self.world - 1)
        return c.to(t.device)

    def all_reduce_min(self, t: torch.Tensor) -> torch.Tensor:
        if not self.on:
            return t
        c = t.to(self.device).contiguous()
        dist.all_reduce(c, op=dist.ReduceOp.MIN, group=self.group)
        self.sent += c.numel() * c.element_size() * (self.world - 1)
        return c.to(t.device)

    def all_gather_var(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks (rank order) of 1-D ``t`` of varying lengths."""
        if not self.on:
            return t
        sizes = self.all_gather_int(t.shape[0])
        m = max(sizes)
        pad = torch.zeros(m, dtype=t.dtype, device=self.device)
        pad[:t.shape[0]] = t.to(self.device)
        parts = [torch.empty_like(pad) for _ in sizes]
        dist.all_gather(parts, pad, group=self.group)
        self.sent += pad.numel() * pad.element_size() * (self.world - 1)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(t.device)

    def all_to_all(self, send: list[torch.Tensor]) -> list[torch.Tensor]:
        """``send[q]`` (1-D, one dtype) goes to rank q; returns what every rank sent here, by source."""
        if not self.on:
            return [send[0]]
        dev = send[0].device
        counts = torch.tensor([s.shape[0] for s in send], dtype=torch.int64, device=self.device)
        recv_counts = torch.empty_like(counts)
        dist.all_to_all_single(recv_counts, counts, group=self.group)
        rc = recv_counts.tolist()
        flat = torch.cat(send).to(self.device)
        out = torch.empty(sum(rc), dtype=flat.dtype, device=self.device)
        sc = counts.tolist()
        dist.all_to_all_single(out, flat, output_split_sizes=rc, input_split_sizes=sc, group=self.group)
        self.sent += 8 * (self.world - 1) + (flat.numel() - sc[self.rank]) * flat.element_size()
        return list(torch.split(out.to(dev), rc))


def _same_on_all_ranks(comm: _Comm, **params) -> None:
    """Raise ValueError (on every rank) unless every rank passed the same values of ``params``."""
    if not comm.on or comm.world == 1:
        return
    names = list(params)
    mine = torch.tensor([float(params[k]) for k in names], dtype=torch.float64)
    every = comm.all_gather_var(mine).view(comm.world, len(names))
    same = (every == every[0]) | (torch.isnan(every) & torch.isnan(every[0]))
    if not bool(same.all()):
        bad = [k for c, k in enumerate(names) if not bool(same[:, c].all())]
        got = {k: every[:, names.index(k)].tolist() for k in bad}
        raise ValueError(f"{', '.join(bad)}: every rank must pass the same value, got per rank {got}")


def _offsets(sizes: list[int]) -> list[int]:
    return [0] + list(np.cumsum(sizes).tolist())


def shard_sizes(n_local: int, *, group=None) -> list[int]:
    """Rows held by every rank of ``group``, in rank order (``[n_local]`` without a process group)."""
    return _Comm(group).all_gather_int(n_local)


def _finish(op: str, comm: _Comm, t0: float, stats: dict | None, **extra) -> None:
    if stats is None:
        return
    stats.update(op=op, bytes_sent=int(comm.sent), time_s=time.perf_counter() - t0, world=comm.world,
                      rank=comm.rank, **extra)


class _Owners:
    """Which rank owns global row ``g`` (contiguous shards in rank order)."""

    def __init__(self, sizes: list[int], device):
        self.sizes = sizes
        self.off = _offsets(sizes)
        self.bounds = torch.tensor(self.off[1:], dtype=torch.int64, device=device)

    def of(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.bounds, ids, right=True)


def _fetch_rows(comm: _Comm, own: _Owners, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` (global, sorted unique) of the row-sharded ``table`` ([n_local, ...] here)."""
    dev = table.device
    owner = own.of(ids)
    req = [ids[owner == q] for q in range(comm.world)]
    asked = comm.all_to_all(req)  # ids the rank q wants from me
    me = own.off[comm.rank]
    shape = tuple(table.shape[1:])
    width = int(np.prod(shape)) if shape else 1
    flat_tab = table.reshape(table.shape[0], width)
    reply = [flat_tab[a - me].reshape(-1) for a in asked]
    got = comm.all_to_all(reply)
    out = torch.empty((ids.shape[0], width), dtype=table.dtype, device=dev)
    for q in range(comm.world):
        out[owner == q] = got[q].view(-1, width)
    return out.view((ids.shape[0],) + shape)


def _fetch_rounds(comm: _Comm, own: _Owners, ids: torch.Tensor, table: torch.Tensor):
    """Rows ``ids`` (global, sorted unique) of ``table`` one owner at a time: yields (mask of ids, rows).

    Round t asks rank (rank + t) % W only, so a rank holds the rows of one owner at a time.
    """
    owner = own.of(ids)
    me = own.off[comm.rank]
    width = int(np.prod(tuple(table.shape[1:]))) if table.dim() > 1 else 1
    flat_tab = table.reshape(table.shape[0], width)
    empty = ids[:0]
    for t in range(comm.world):
        q = (comm.rank + t) % comm.world
        sel = owner == q
        req = [empty] * comm.world
        req[q] = ids[sel]
        asked = comm.all_to_all(req)
        reply = [flat_tab[a - me].reshape(-1) for a in asked]
        got = comm.all_to_all(reply)
        yield sel, got[q].view(-1, *table.shape[1:])


def _fetch_csr(comm: _Comm, own: _Owners, ids: torch.Tensor, indptr: torch.Tensor,
               cols: torch.Tensor, vals: torch.Tensor | None):
    """Variable-length rows ``ids`` (global, sorted unique) of a row-sharded CSR: (ptr, cols, vals) in ids order."""
    dev = indptr.device
    owner = own.of(ids)
    req = [ids[owner == q] for q in range(comm.world)]
    asked = comm.all_to_all(req)
    me = own.off[comm.rank]
    length = indptr[1:] - indptr[:-1]
    r_len, r_col, r_val = [], [], []
    for a in asked:
        loc = a - me
        ln = length[loc]
        pos = torch.repeat_interleave(indptr[loc], ln) + _segment_offsets(ln)
        r_len.append(ln)
        r_col.append(cols[pos])
        if vals is not None:
            r_val.append(vals[pos])
    g_len = comm.all_to_all(r_len)
    g_col = comm.all_to_all(r_col)
    g_val = comm.all_to_all(r_val) if vals is not None else None
    # reassemble in ids order: rows from owner q come in the order requested (ascending ids)
    lens = torch.empty(ids.shape[0], dtype=torch.int64, device=dev)
    for q in range(comm.world):
        lens[owner == q] = g_len[q]
    ptr = torch.zeros(ids.shape[0] + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(lens, 0)
    out_c = torch.empty(int(ptr[-1]), dtype=cols.dtype, device=dev)
    out_v = torch.empty(int(ptr[-1]), dtype=vals.dtype, device=dev) if vals is not None else None
    for q in range(comm.world):
        rows_q = torch.nonzero(owner == q).flatten()
        if rows_q.numel() == 0:
            continue
        ln = lens[rows_q]
        pos = torch.repeat_interleave(ptr[rows_q], ln) + _segment_offsets(ln)
        out_c[pos] = g_col[q]
        if vals is not None:
            out_v[pos] = g_val[q]
    return ptr, out_c, out_v


# ================================================================================================== kNN
def canonical_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float32(sum_t float64(a[..., t]) * float64(b[..., t])) along the last dim (broadcasting)."""
    return (a.double() * b.double()).sum(dim=-1).to(torch.float32)


def _order_by_key(key: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Permutation of each row sorting by (key desc, idx asc)."""
    by_idx = torch.argsort(idx, dim=1)
    by_key = torch.sort(key.gather(1, by_idx), dim=1, descending=True, stable=True).indices
    return by_idx.gather(1, by_key)


def _prev_f32(v: torch.Tensor) -> torch.Tensor:
    """The float32 just below each float32 value, as float64."""
    return torch.nextafter(v, torch.full_like(v, -math.inf)).double()


def _input_rounding(dev: torch.device) -> float:
    """Relative error the float32 GEMM may add by rounding its inputs (TF32 / bfloat16 modes), per product.

    With ``torch.set_float32_matmul_precision("high")`` (or ``allow_tf32`` on CUDA) the inputs are
    rounded to TF32 (10-bit mantissa, unit roundoff 2^-11), with ``"medium"`` possibly to bfloat16
    (2^-8): each product then carries up to twice that relative error. The certification widens its
    margin accordingly, so the result stays exact (more rows are rescored).
    """
    mode = torch.get_float32_matmul_precision()
    tf32 = dev.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)
    if mode == "medium":
        return 2.0 * 2.0**-8 * (1.0 + 2.0**-8)
    if mode == "high" or tf32:
        return 2.0 * 2.0**-11 * (1.0 + 2.0**-11)
    return 0.0


def _chunk_topk(xl: torch.Tensor, yb: torch.Tensor, j0: int, k: int, self_off: int | None,
                extra: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact top-min(k, m) of the local rows against chunk ``yb`` (global rows j0..j0+m).

    Returns (key float32 [n, kk] with +inf for the row itself, canonical sim float32, global idx int64).
    """
    n, d = xl.shape
    m = yb.shape[0]
    kk = min(k, m)
    kc = min(m, kk + extra)
    dev = xl.device
    keys = torch.empty((n, kk), dtype=torch.float32, device=dev)
    sims = torch.empty((n, kk), dtype=torch.float32, device=dev)
    idxs = torch.empty((n, kk), dtype=torch.int64, device=dev)
    ny = float(yb.double().norm(dim=1).max()) if m else 0.0
    # |float32 GEMM - exact| <= g32 |x| |y| (any order); |canonical float64 sum - exact| <= g64 |x| |y|
    g32 = d * _U32 / (1.0 - d * _U32) + _input_rounding(dev)
    g64 = d * _U64 / (1.0 - d * _U64)
    block = max(1, min(n, TILE_ELEMENTS // max(m, kc * d, 1)))
    yt = yb.t()
    uncert = 0
    for s in range(0, n, block):
        e = min(n, s + block)
        xq = xl[s:e]
        t = torch.mm(xq, yt)  # [b, m] float32 candidates
        own = None
        if self_off is not None:
            g = torch.arange(s, e, device=dev) + self_off  # global ids of these rows
            inside = (g >= j0) & (g < j0 + m)
            own = torch.full((e - s,), -1, dtype=torch.int64, device=dev)
            own[inside] = g[inside] - j0
            r_in = torch.nonzero(inside).flatten()
            t[r_in, own[r_in]] = math.inf
        tv, tc = torch.topk(t, kc, dim=1, largest=True, sorted=True)
        # canonical and float32 values differ by at most `margin` (+ float32 rounding): only the
        # candidates within 2 margins (+ 2 ulps) of the kk-th float32 value can enter the top kk
        margin = (g32 + g64) * xq.double().norm(dim=1) * ny * (1.0 + 2.0**-6) + 1e-300  # + cross terms
        tv64 = tv.double()
        thr = _prev_f32(_prev_f32(tv[:, kk - 1]).float()) - 2.0 * margin
        need = int((tv64 >= thr.unsqueeze(1)).sum(dim=1).max())
        ke = min(kc, max(kk, need))
        tce = tc[:, :ke]
        cs = canonical_similarity(xq.unsqueeze(1), yb[tce])  # [b, ke]
        key = cs.clone()
        if own is not None:
            key = torch.where(tce == own.unsqueeze(1), torch.full_like(key, math.inf), key)
        order = _order_by_key(key, tce)[:, :kk]
        kkey, ksim, kidx = key.gather(1, order), cs.gather(1, order), tce.gather(1, order)
        if ke < m:
            # certified iff no column outside the ke rescored candidates can reach the kk-th key
            low = tv64[:, ke] if ke < kc else tv64[:, -1]
            bad = ~((low + margin) < _prev_f32(kkey[:, -1]))
            rows = torch.nonzero(bad).flatten()
            uncert += rows.numel()
            for b0 in range(0, rows.numel(), max(1, TILE_ELEMENTS // max(m * d, 1))):
                rr = rows[b0:b0 + max(1, TILE_ELEMENTS // max(m * d, 1))]
                full = canonical_similarity(xq[rr].unsqueeze(1), yb.unsqueeze(0))  # [r, m]
                fkey = full.clone()
                if own is not None:
                    o = own[rr]
                    hit = torch.nonzero(o >= 0).flatten()
                    fkey[hit, o[hit]] = math.inf
                top = torch.sort(fkey, dim=1, descending=True, stable=True).indices[:, :kk]
                kkey[rr], ksim[rr], kidx[rr] = fkey.gather(1, top), full.gather(1, top), top
        keys[s:e], sims[s:e], idxs[s:e] = kkey, ksim, kidx + j0
    return keys, sims, idxs, uncert


def _native_rows(dev: torch.device):
    """The native kNN's gathered-rows entry when ``hilcore.knn``'s default on ``dev`` is the native backend."""
    if dev.type != "cpu":
        return None
    from . import _dispatch

    try:
        impl = _dispatch.resolve("knn", "auto", dev)
    except Exception:  # noqa: BLE001 - no default kNN here: the canonical path
        return None
    if impl.backend != "native":
        return None
    from .backend.native.knn import exact_rows

    return exact_rows


def _chunk_native(exact_rows, xl: torch.Tensor, yb: torch.Tensor, j0: int, k: int, self_off: int | None):
    """Top-min(k, m) of the local rows against chunk ``yb`` (global rows j0..) by the native kNN's values.

    Returns (key float32 [n, kk] with +inf for the row itself, sim float32, global idx int64, rows
    the native certificate left over).
    """
    n = xl.shape[0]
    m = yb.shape[0]
    kk = min(k, m)
    self_ids = None
    if self_off is not None:
        self_ids = torch.arange(n, dtype=torch.int64) + (self_off - j0)  # outside [0, m): not in this chunk
    st: dict = {}
    idx, sim = exact_rows(xl, kk, yb, self_ids, stats=st)
    key = sim.clone()
    if self_ids is not None:
        key = torch.where(idx == self_ids.unsqueeze(1), torch.full_like(key, math.inf), key)
    return key, sim, idx + j0, st["uncertified_rows"]


def knn(x_local, k: int, *, group=None, chunk_rows: int | None = None, stats: dict | None = None):
    """Exact cosine kNN of the rows sharded over ``group``; global indices.

    Args:
        x_local: ``[n_r, D]`` this rank's rows (NumPy or torch, any float
            dtype; normalised inside as ``hilcore.knn`` does); ranks hold
            consecutive blocks of the global rows in rank order.
        k: neighbours per row, ``1 <= k <= N`` (N: rows over all ranks).
        group: a torch.distributed process group (``None``: the default one,
            or a world of one when none is initialised).
        chunk_rows: rows per streamed chunk (default: ``2^22 / D``).
        stats: optional dict that receives what this call did on this rank
            (``op``, ``bytes_sent``, ``time_s``, ``world``, ``rank``, ``uncertified``).

    Returns:
        ``(idx, sim)``: ``[n_r, k]`` int64 global indices, best first (the row
        itself first, ties to the lower index), and float32 similarities, in
        ``x_local``'s family. On CPU these are bitwise this rank's rows of
        ``hilcore.knn`` (default backend, native) on the concatenated rows; on
        CUDA the similarities are canonical (:func:`canonical_similarity`).

    Example:
        >>> import numpy as np, hilcore.distributed as HD
        >>> x = np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32)
        >>> idx, sim = HD.knn(x, 5)  # under torchrun each rank passes its block of rows
        >>> idx.shape, bool((idx[:, 0] == np.arange(100)).all())
        ((100, 5), True)
    """
    t0 = time.perf_counter()
    comm = _Comm(group)
    xl, fam = _local_features(x_local, "x_local", comm)
    k = _arrays.positive_int(k, "k")
    _same_on_all_ranks(comm, k=k)
    sizes, n_all = _global_rows(comm, xl)
    if k > n_all:
        raise ValueError(f"k: expected k <= {n_all} (the number of rows over all ranks), got {k}")
    idx, sim = _knn_tensors(comm, xl, k, sizes, chunk_rows)
    _finish("knn", comm, t0, stats, n=n_all, k=k, uncertified=comm.uncertified)
    return _arrays.to_family(idx, fam), _arrays.to_family(sim, fam)


def _global_rows(comm: _Comm, xl: torch.Tensor) -> tuple[list[int], int]:
    """(rows of every rank, their sum) of the ``x_local`` blocks; ValueError unless every rank has the same
    number of columns and some rank has a row."""
    sizes = comm.all_gather_int(xl.shape[0])
    dims = comm.all_gather_int(xl.shape[1])
    if len(set(dims)) != 1:
        raise ValueError(f"x_local: every rank must pass the same number of columns D, got {dims}")
    n_all = sum(sizes)
    if n_all == 0:
        raise ValueError("x_local: expected at least one row over all ranks, got none")
    return sizes, n_all


def _local_features(x_local, name: str, comm: _Comm):
    t, fam = _arrays.as_tensor(x_local, name)
    if t.dim() == 2 and t.shape[0] == 0:  # an empty shard is allowed
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"{name}: expected a floating dtype, got {t.dtype}")
        return t.detach().to(torch.float32).contiguous(), fam
    xt, fam = _arrays.features(x_local, name)
    return xt.detach(), fam  # the clustering step is not differentiated


def _knn_tensors(comm: _Comm, xl: torch.Tensor, k: int, sizes: list[int], chunk_rows: int | None):
    n, d = xl.shape
    dev = xl.device
    off = _offsets(sizes)
    me = off[comm.rank]
    step = chunk_rows if chunk_rows is not None else max(1, CHUNK_ELEMENTS // max(d, 1))
    step = _arrays.positive_int(step, "chunk_rows")
    best_key = torch.full((n, k), -math.inf, dtype=torch.float32, device=dev)
    best_sim = torch.full((n, k), -math.inf, dtype=torch.float32, device=dev)
    best_idx = torch.full((n, k), sum(sizes), dtype=torch.int64, device=dev)
    extra = k + 8
    native_rows = _native_rows(dev)
    for src in range(comm.world):
        for c0 in range(0, sizes[src], step):
            c1 = min(sizes[src], c0 + step)
            if src == comm.rank:
                buf = xl[c0:c1].contiguous()
            else:
                buf = torch.empty((c1 - c0, d), dtype=torch.float32, device=dev)
            buf = comm.broadcast(buf, src)
            if n == 0:
                continue
            if native_rows is not None:
                key, sim, idx, uncert = _chunk_native(native_rows, xl, buf, off[src] + c0, k,
                                                      me if src == comm.rank else None)
            else:
                key, sim, idx, uncert = _chunk_topk(xl, buf, off[src] + c0, k, me if src == comm.rank else None,
                                                    extra)
            comm.uncertified += uncert
            ak = torch.cat([best_key, key], 1)
            asim = torch.cat([best_sim, sim], 1)
            aidx = torch.cat([best_idx, idx], 1)
            order = _order_by_key(ak, aidx)[:, :k]
            best_key, best_sim, best_idx = ak.gather(1, order), asim.gather(1, order), aidx.gather(1, order)
    return best_idx, best_sim


# =============================================================================================== DBSCAN
def _local_csr(d_local, eps: float, name: str = "d_local"):
    """(indptr, indices, data float32 with entries > eps set to +inf, n_rows, n_cols, family) of any input."""
    if sp.issparse(d_local):
        if len(d_local.shape) != 2:
            raise ValueError(f"{name}: expected a 2-D [n_r, N] matrix, got shape {d_local.shape}")
        csr = sp.csr_matrix(d_local)
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
        data = torch.from_numpy(np.asarray(csr.data))
        ip = torch.from_numpy(csr.indptr.astype(np.int64))
        ix = torch.from_numpy(csr.indices.astype(np.int64))
        fam = _arrays.Family("numpy", torch.device("cpu"))
        shape = csr.shape
    elif isinstance(d_local, torch.Tensor) and d_local.layout in (torch.sparse_csr, torch.sparse_coo):
        t = d_local.coalesce().to_sparse_csr() if d_local.layout == torch.sparse_coo else d_local
        ip, ix, data = t.crow_indices().to(torch.int64), t.col_indices().to(torch.int64), t.values()
        fam = _arrays.Family("torch", d_local.device)
        shape = tuple(d_local.shape)
    else:
        t, fam = _arrays.as_tensor(d_local, name)
        t = t.detach()
        if t.dim() != 2:
            raise ValueError(f"{name}: expected a 2-D [n_r, N] matrix, got shape {tuple(t.shape)}")
        if not torch.is_floating_point(t):
            raise TypeError(f"{name}: expected floating-point distances, got {t.dtype}")
        keep = t <= eps
        r, c = torch.nonzero(keep, as_tuple=True)
        data = t[r, c]
        ip = torch.zeros(t.shape[0] + 1, dtype=torch.int64, device=t.device)
        ip[1:] = torch.cumsum(torch.bincount(r, minlength=t.shape[0]), 0)
        ix = c.to(torch.int64)
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name}: contains NaN distances")
        if t.numel() and bool((t < 0).any()):
            raise ValueError(f"{name}: contains negative distances (min {float(t.min())})")
        shape = tuple(t.shape)
    if not torch.is_floating_point(data):
        raise TypeError(f"{name}: expected floating-point distances, got {data.dtype}")
    if data.numel() and bool(torch.isnan(data).any()):
        raise ValueError(f"{name}: contains NaN distances")
    if data.numel() and bool((data < 0).any()):
        raise ValueError(f"{name}: contains negative distances (min {float(data.min())})")
    cut = torch.where(data <= eps, data.to(torch.float32), torch.full_like(data, math.inf, dtype=torch.float32))
    return ip, ix, cut, int(shape[0]), int(shape[1]), fam


def dbscan(d_local, eps: float, min_samples: int, *, group=None, stats: dict | None = None):
    """DBSCAN over distance rows sharded by rank; every rank returns all N labels.

    Semantics are :func:`hilcore.dbscan`'s (scikit-learn's precomputed DBSCAN):
    neighbours of i are i and every stored j with ``d(i, j) <= eps``; core iff
    at least ``min_samples`` neighbours; clusters numbered by their smallest
    core index; a border point takes the smallest label among its core
    neighbours; the rest -1. The matrix must be symmetric (the Jaccard one is).

    Args:
        d_local: this rank's rows ``[n_r, N]`` with global column indices:
            ``scipy.sparse`` (e.g. :func:`jaccard_distance`'s output), torch
            sparse CSR/COO, or dense NumPy/torch.
        eps: neighbourhood radius (>= 0).
        min_samples: neighbours (self included) that make a core point (>= 1).
        group: torch.distributed process group (``None``: default / a world of one).
        stats: optional dict that receives what this call did on this rank
            (``op``, ``bytes_sent``, ``time_s``, ``rounds``, ...).

    Returns:
        ``[N]`` int64 global labels, the same on every rank (NumPy for NumPy /
        SciPy input, torch otherwise).

    Example:
        >>> import numpy as np, hilcore.distributed as HD
        >>> d = np.array([[0, .1, .9], [.1, 0, .9], [.9, .9, 0]], dtype=np.float32)
        >>> HD.dbscan(d, eps=0.5, min_samples=2).tolist()  # a world of one: all the rows
        [0, 0, -1]
    """
    t0 = time.perf_counter()
    comm = _Comm(group)
    eps = _arrays.nonneg_float(eps, "eps")
    min_samples = _arrays.positive_int(min_samples, "min_samples")
    _same_on_all_ranks(comm, eps=eps, min_samples=min_samples)
    ip, ix, data, n_l, n_all, fam = _local_csr(d_local, eps)
    dev = data.device
    ip, ix = ip.to(dev), ix.to(dev)
    sizes = comm.all_gather_int(n_l)
    widths = comm.all_gather_int(n_all)
    if len(set(widths)) != 1 or widths[0] != sum(sizes):
        raise ValueError(f"d_local: expected [n_r, N] rows with N = {sum(sizes)} (the rows over all ranks) "
                         f"columns on every rank, got N = {widths}")
    if ix.numel() and (int(ix.min()) < 0 or int(ix.max()) >= n_all):
        raise ValueError(f"d_local: column indices must lie in [0, {n_all}), got [{int(ix.min())}, {int(ix.max())}]")
    me = _offsets(sizes)[comm.rank]
    rows = me + torch.repeat_interleave(torch.arange(n_l, device=dev), ip[1:] - ip[:-1])
    near = (data <= eps) & (ix != rows)
    key = torch.unique(rows[near] * n_all + ix[near])  # neighbourhoods are sets
    u, v = key // n_all, key % n_all
    count = 1 + torch.bincount(u - me, minlength=n_l)
    core_l = count >= min_samples
    core = comm.all_gather_var(core_l.to(torch.uint8)).to(torch.bool)
    both = core[u] & core[v]
    cu, cv = u[both], v[both]
    parent = torch.arange(n_all, device=dev)
    rounds = 0
    while True:
        rounds += 1
        pu, pv = parent[cu], parent[cv]
        low = torch.minimum(pu, pv)
        hooked = parent.scatter_reduce(0, pu, low, reduce="amin").scatter_reduce(0, pv, low, reduce="amin")
        hooked = comm.all_reduce_min(hooked)  # every rank now holds the same array
        while True:
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            break
        parent = hooked
    ar = torch.arange(n_all, device=dev)
    is_root = core & (parent == ar)
    number = torch.cumsum(is_root.to(torch.int64), 0) - 1
    labels = torch.where(core, number[parent], torch.full_like(parent, -1))
    edge = ~core[u] & core[v]
    big = torch.iinfo(torch.int64).max
    border = torch.full((n_all,), big, dtype=torch.int64, device=dev)
    border = border.scatter_reduce(0, u[edge], labels[v[edge]], reduce="amin")
    border = comm.all_reduce_min(border)
    out = torch.where(~core & (border != big), border, labels)
    _finish("dbscan", comm, t0, stats, n=n_all, rounds=rounds)
    return _arrays.to_family(out, fam)


# ============================================================================================== Jaccard
def _unique_lookup(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted unique ids, position of every element of ``ids`` in it)."""
    u, inv = torch.unique(ids.reshape(-1), sorted=True, return_inverse=True)
    return u, inv.view(ids.shape)


def jaccard_distance(x_local, k1: int = 30, k2: int = 6, *, max_distance: float | None = None, group=None,
                     chunk_rows: int | None = None, stats: dict | None = None):
    """This rank's rows of the k-reciprocal Jaccard distance of the rows sharded over ``group``.

    The semantics are :func:`hilcore.jaccard_distance`'s (DESIGN.md); the
    ranking is :func:`knn` (on CPU bitwise ``hilcore.knn``'s). Only the sparse
    rows the local rows reference cross the network: rank rows and reciprocal
    masks of the kNN neighbours, feature rows of the expanded sets, weight rows
    of the first k2 neighbours, and the inverted-index columns (keyed by the
    rank owning the column) of the local supports, and the row masses. Sums run
    in the orders of docs/design.md ("Summation orders"), so the rows are bitwise
    those of ``hilcore.backend.torch.jaccard.jaccard`` (and of the native stages)
    on the concatenated rows with the same ranking: on CPU that is
    ``hilcore.knn``'s default (native) ranking, so the result is bitwise
    ``hilcore.jaccard_distance`` with the default backend (and with
    ``backend="torch"`` whenever the torch kNN ranks the rows the same, i.e.
    without float32 near-ties).

    Args:
        x_local: ``[n_r, D]`` this rank's rows (consecutive blocks in rank order).
        k1, k2: ranking and query-expansion lengths (clamped to N and k1).
        max_distance: keep pairs with ``d <= max_distance`` (``None``: every pair whose supports meet).
        group: torch.distributed process group (``None``: default / a world of one).
        chunk_rows: rows per streamed kNN chunk.
        stats: optional dict that receives what this call did on this rank
            (``op``, ``bytes_sent``, ``time_s``, ``knn_s``, ``nnz``, ...).

    Returns:
        ``[n_r, N]`` float32 CSR with global column indices, sorted, the
        diagonal stored as 0: ``scipy.sparse.csr_matrix`` for CPU input, a
        torch sparse CSR tensor for CUDA input. :func:`dbscan` takes it as is.

    Example:
        >>> import numpy as np, hilcore, hilcore.distributed as HD
        >>> x = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
        >>> d = HD.jaccard_distance(x, 20, 6, max_distance=0.6)  # this rank's rows (here: all)
        >>> d.shape, float(d.diagonal().max())
        ((200, 200), 0.0)
        >>> ref = hilcore.jaccard_distance(x, 20, 6, max_distance=0.6, backend="torch")
        >>> bool((d != ref).nnz == 0)
        True
    """
    t0 = time.perf_counter()
    comm = _Comm(group)
    xl, fam = _local_features(x_local, "x_local", comm)
    sizes, n_all = _global_rows(comm, xl)
    k1 = min(_arrays.positive_int(k1, "k1"), n_all)
    k2 = min(_arrays.positive_int(k2, "k2"), k1)
    md = math.inf if max_distance is None else _arrays.nonneg_float(max_distance, "max_distance")
    _same_on_all_ranks(comm, k1=k1, k2=k2, max_distance=md)
    rank_l, _ = _knn_tensors(comm, xl, k1, sizes, chunk_rows)
    t_knn = time.perf_counter() - t0
    indptr, cols, data = _jaccard_rows(comm, xl, rank_l, sizes, k1, k2, md)
    _finish("jaccard_distance", comm, t0, stats, n=n_all, knn_s=t_knn, nnz=int(cols.numel()))
    n_l = xl.shape[0]
    if fam.kind == "numpy" or not fam.is_cuda:
        return sp.csr_matrix((data.cpu().numpy(), cols.cpu().numpy(), indptr.cpu().numpy()), shape=(n_l, n_all))
    return torch.sparse_csr_tensor(indptr, cols, data, size=(n_l, n_all))


def _jaccard_rows(comm: _Comm, xl: torch.Tensor, rank_l: torch.Tensor, sizes: list[int], k1: int, k2: int,
                  max_distance: float):
    dev = xl.device
    n_l = xl.shape[0]
    n = sum(sizes)
    own = _Owners(sizes, dev)
    me = own.off[comm.rank]
    g = torch.arange(n_l, device=dev) + me  # global ids of the local rows
    kk = min(half_k(k1) + 1, k1)
    rank_l = rank_l.to(torch.int64).contiguous()

    # 1. reciprocal masks of the local rows, from the rank rows of their neighbours
    nb1, pos1 = _unique_lookup(rank_l)
    r1 = _fetch_rows(comm, own, nb1, rank_l)  # [|nb1|, k1]
    mask1 = torch.empty((n_l, k1), dtype=torch.bool, device=dev)
    mask_h = torch.empty((n_l, kk), dtype=torch.bool, device=dev)
    step = _rows_per_chunk(n_l, k1 * k1)
    for s in range(0, n_l, step):
        e = min(n_l, s + step)
        me_ = g[s:e].view(-1, 1, 1)
        mask1[s:e] = (r1[pos1[s:e]] == me_).any(dim=2)
        mask_h[s:e] = (r1[pos1[s:e, :kk]][:, :, :kk] == me_).any(dim=2)

    # 2. expansion E(i), with the neighbours' R(c, kh) masks
    mh1 = _fetch_rows(comm, own, nb1, mask_h.to(torch.uint8)).to(torch.bool)  # [|nb1|, kk]
    counts, pieces = [], []
    step = _rows_per_chunk(n_l, k1 * kk * k1)
    for s in range(0, n_l, step):
        e = min(n_l, s + step)
        b = e - s
        ri, ri_ok = rank_l[s:e], mask1[s:e]
        pr = pos1[s:e]
        cand = r1[pr][:, :, :kk]  # [b, k1, kk]
        cand_ok = mh1[pr]
        size = cand_ok.sum(dim=2)
        in_ri = ((cand.unsqueeze(3) == ri.view(b, 1, 1, k1)) & ri_ok.view(b, 1, 1, k1)).any(dim=3)
        inter = (in_ri & cand_ok).sum(dim=2)
        take = ri_ok & (3 * inter > 2 * size)
        added = torch.where(cand_ok & take.unsqueeze(2), cand, n).view(b, k1 * kk)
        base = torch.where(ri_ok, ri, n)
        c, v = _dedupe_rows(torch.cat([base, added], dim=1), n)
        counts.append(c)
        pieces.append(v)
    eptr = torch.zeros(n_l + 1, dtype=torch.int64, device=dev)
    if n_l:
        eptr[1:] = torch.cumsum(torch.cat(counts), 0)
    eidx = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64, device=dev)

    # 3. weights: softmax over E(i) of -(2 - 2 x_i . x_j), with the features of the columns
    # the features of the columns stream past one owner at a time (one shard's worth at most)
    ecol, epos = _unique_lookup(eidx)
    rows = torch.repeat_interleave(torch.arange(n_l, device=dev), eptr[1:] - eptr[:-1])
    sims = torch.empty(eidx.shape[0], dtype=torch.float32, device=dev)
    dim = xl.shape[1]
    step = max(1, (1 << 24) // dim)
    col_slot = torch.full((ecol.shape[0],), -1, dtype=torch.int64, device=dev)
    for sel, xf in _fetch_rounds(comm, own, ecol, xl):
        col_slot[sel] = torch.arange(xf.shape[0], device=dev)
        ent = torch.nonzero(sel[epos]).flatten()  # entries whose column this owner holds
        for s in range(0, ent.shape[0], step):
            e = ent[s:s + step]
            sims[e] = dot_rows(xl[rows[e]], xf[col_slot[epos[e]]])
        col_slot[sel] = -1
    w = softmax_numerators(sims)
    total = torch.zeros(n_l, dtype=torch.float32, device=dev).index_add_(0, rows, w)
    vals = w / total[rows]

    # 4. local query expansion: V'[i] = mean of V over rank[i, :k2]
    if k2 > 1:
        nb2, pos2 = _unique_lookup(rank_l[:, :k2])
        vptr, vcol, vval = _fetch_csr(comm, own, nb2, eptr, eidx, vals)
        eptr, eidx, vals = _mean_of_rows(pos2, n, vptr, vcol, vval)

    # the row masses s_j of every row (one float each), for d = 1 - m / (s_i + s_j - m)
    mass = comm.all_gather_var(row_masses(eptr, vals, n_l))
    # 5. inverted index keyed by column owner: every entry (t, i, v) goes to the owner of t
    rows_g = me + torch.repeat_interleave(torch.arange(n_l, device=dev), eptr[1:] - eptr[:-1])
    owner = own.of(eidx)
    sent_t = comm.all_to_all([eidx[owner == q] for q in range(comm.world)])
    sent_i = comm.all_to_all([rows_g[owner == q] for q in range(comm.world)])
    sent_v = comm.all_to_all([vals[owner == q] for q in range(comm.world)])
    ct, ci, cv = torch.cat(sent_t), torch.cat(sent_i), torch.cat(sent_v)
    order = torch.argsort(ct * n + ci)  # by (column, row): rows ascend inside a column
    ct, ci, cv = ct[order], ci[order], cv[order]
    cptr = torch.zeros(n_l + 1, dtype=torch.int64, device=dev)
    if n_l:
        cptr[1:] = torch.cumsum(torch.bincount(ct - me, minlength=n_l), 0)
    # the column lists the local supports touch come from their owners in super-blocks of local rows
    # (each fetches at most PAIR_BUDGET list entries, a single heavy row excepted); the number of
    # rounds is agreed over the ranks so the collectives line up
    tcol, tpos = _unique_lookup(eidx)
    tlen = _fetch_rows(comm, own, tcol, cptr[1:] - cptr[:-1])
    partners = tlen[tpos]  # every row of column t(e) is a partner of entry e
    lrows = torch.repeat_interleave(torch.arange(n_l, device=dev), eptr[1:] - eptr[:-1])
    work = torch.zeros(n_l, dtype=torch.int64, device=dev).index_add_(0, lrows, partners)
    cum = torch.cumsum(work, 0)
    bounds, r0 = [], 0
    while r0 < n_l:
        done = int(cum[r0 - 1]) if r0 else 0
        r1_ = int(torch.searchsorted(cum, done + PAIR_BUDGET, right=True))
        r1_ = min(n_l, max(r1_, r0 + 1))
        bounds.append((r0, r1_))
        r0 = r1_
    rounds = max(comm.all_gather_int(len(bounds)))
    out_r, out_c, out_d = [], [], []
    block = max(1, (1 << 24) // n)
    chunk = (1 << 24) // 4
    for b in range(rounds):
        sa, sb = bounds[b] if b < len(bounds) else (n_l, n_l)
        lo_e, hi_e = int(eptr[sa]), int(eptr[sb])
        bcol, bpos = _unique_lookup(eidx[lo_e:hi_e])
        lptr, lrow, lval = _fetch_csr(comm, own, bcol, cptr, ci, cv)
        # partners j >= i only (as the torch backend; the rest is mirrored below): in column t's
        # list (rows ascending) they start at the first row >= i
        seg = torch.repeat_interleave(torch.arange(bcol.shape[0], device=dev), lptr[1:] - lptr[:-1])
        lkey = seg * n + lrow
        start = torch.searchsorted(lkey, bpos * n + lrows[lo_e:hi_e] + me)
        half = lptr[bpos + 1] - start
        for r0 in range(sa, sb, block):
            r1_ = min(sb, r0 + block)
            lo, hi = int(eptr[r0]), int(eptr[r1_])
            acc = torch.zeros((r1_ - r0) * n, dtype=torch.float32, device=dev)
            ends = torch.cumsum(half[lo - lo_e:hi - lo_e], 0)
            at = lo
            while at < hi:
                done = int(ends[at - lo - 1]) if at > lo else 0
                stop = int(torch.searchsorted(ends, done + chunk, right=True)) + lo
                stop = min(hi, max(stop, at + 1))
                ent = torch.arange(at, stop, device=dev)
                reps = half[ent - lo_e]
                e_of = torch.repeat_interleave(ent, reps)
                slot = start[e_of - lo_e] + _segment_offsets(reps)
                contrib = torch.minimum(vals[e_of], lval[slot])
                acc.index_add_(0, (lrows[e_of] - r0) * n + lrow[slot], contrib)
                at = stop
            flat = torch.nonzero(acc > 0).flatten()
            m = acc[flat]
            i, j = flat // n + r0, flat % n
            d = jaccard_from_min_sum(m, mass[i + me], mass[j])
            d = torch.where(i + me == j, torch.zeros_like(d), d)
            keep = d <= max_distance
            out_r.append(i[keep])
            out_c.append(j[keep])
            out_d.append(d[keep])
        del lptr, lrow, lval, lkey, seg, start, half
    r_ = torch.cat(out_r) if out_r else torch.zeros(0, dtype=torch.int64, device=dev)
    c_ = torch.cat(out_c) if out_c else torch.zeros(0, dtype=torch.int64, device=dev)
    d_ = torch.cat(out_d) if out_d else torch.zeros(0, dtype=torch.float32, device=dev)
    # mirror: the kept (i, j > i) become (j, i) on the owner of j
    off = c_ != r_ + me
    mj, mi, md_ = c_[off], r_[off] + me, d_[off]
    to = own.of(mj)
    got_r = torch.cat(comm.all_to_all([mj[to == q] for q in range(comm.world)])) - me
    got_c = torch.cat(comm.all_to_all([mi[to == q] for q in range(comm.world)]))
    got_d = torch.cat(comm.all_to_all([md_[to == q] for q in range(comm.world)]))
    rows = torch.cat([r_, got_r])
    cols = torch.cat([c_, got_c])
    data = torch.cat([d_, got_d.to(d_.dtype)])
    order = torch.argsort(rows * n + cols)
    indptr = torch.zeros(n_l + 1, dtype=torch.int64, device=dev)
    if n_l:
        indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_l), 0)
    return indptr, cols[order], data[order].to(torch.float32)


# ========================================================================================= epoch step
def _gather_rows(comm: _Comm, t: torch.Tensor) -> torch.Tensor:
    """[n_r, D] of every rank concatenated in rank order (on t's device)."""
    d = t.shape[1]
    return comm.all_gather_var(t.reshape(-1)).view(-1, d)


def cluster_epoch(feats_rgb_local, feats_ir_local, config=None, *, memory_feats_rgb_local=None,
                  memory_feats_ir_local=None, group=None):
    """:func:`hilcore.cluster_epoch` with the Jaccard distance and DBSCAN sharded over ``group``.

    Per modality: :func:`jaccard_distance` (``max_distance=eps``) on this
    rank's rows and :func:`dbscan` -> the global labels on every rank. The
    per-cluster stages (centres, sub-clusters, BRST matching, shared memories)
    need every row of a cluster; they run on the gathered features
    (``O(N D)`` per rank, what a driver holds after its sharded extraction
    anyway), identically on every rank, with the stages and backends that
    :func:`hilcore.cluster_epoch` uses. On CPU the ranking is bitwise the
    default (native) kNN's and the Jaccard sums run in the order the torch and
    native stages share, so the result equals
    ``hilcore.cluster_epoch(all_rgb, all_ir, config)`` with the default
    backend, and with ``config.backend="torch"`` when the torch kNN ranks the
    rows the same (no float32 near-ties). On CUDA the single-process default
    (Triton kNN, CUDA stages) differs by float32 rounding, so labels can
    differ only where a distance lies within that rounding of ``eps``.

    Args:
        feats_rgb_local, feats_ir_local: this rank's ``[n_r, D]`` rows of each modality (rank order).
        config: :class:`hilcore.EpochConfig` (``None``: the defaults).
        memory_feats_rgb_local, memory_feats_ir_local: both or neither; this rank's rows of the
            features the centres and multi-centre memories are built from (as
            ``hilcore.cluster_epoch``'s ``memory_feats_*``; default: the clustered features).
        group: torch.distributed process group (``None``: default / a world of one).

    Returns:
        :class:`hilcore.EpochClusters` over all rows (every rank the same), torch
        tensors on the input's device (NumPy for NumPy input); ``timings`` adds
        ``bytes_sent`` of this rank.

    Raises:
        ValueError: when a modality ends all-noise (on every rank).

    Example:
        >>> import hilcore, hilcore.distributed as HD
        >>> from hilcore.synthetic import reid_features
        >>> xr, _, _ = reid_features(20, 6, dim=64, seed=1)
        >>> xi, _, _ = reid_features(20, 6, dim=64, seed=2)
        >>> out = HD.cluster_epoch(xr, xi, hilcore.EpochConfig(k1=10, k2=4, backend="torch"))
        >>> ref = hilcore.cluster_epoch(xr, xi, hilcore.EpochConfig(k1=10, k2=4, backend="torch"))
        >>> out.counts == ref.counts, bool((out.labels_rgb == ref.labels_rgb).all())
        (True, True)
    """
    from .brst import bidirectional_match
    from .centers import cluster_centers, subcluster
    from .epoch import EpochConfig, _backend_for, _check_not_all_noise, _epoch_result

    cfg = EpochConfig() if config is None else config
    if not isinstance(cfg, EpochConfig):
        raise TypeError(f"config: expected an EpochConfig or None, got {type(cfg).__name__}")
    t_start = time.perf_counter()
    comm = _Comm(group)
    xr_l, fam = _local_features(feats_rgb_local, "feats_rgb_local", comm)
    xi_l, _ = _local_features(feats_ir_local, "feats_ir_local", comm)
    if xr_l.shape[1] != xi_l.shape[1]:
        raise ValueError(f"feats_ir_local: expected D = {xr_l.shape[1]} columns like feats_rgb_local, "
                         f"got {xi_l.shape[1]}")
    if (memory_feats_rgb_local is None) != (memory_feats_ir_local is None):
        raise ValueError("memory_feats_rgb_local, memory_feats_ir_local: pass both or neither")
    mem_l = {}
    if memory_feats_rgb_local is not None:
        for name, a, ref in (("rgb", memory_feats_rgb_local, xr_l), ("ir", memory_feats_ir_local, xi_l)):
            t_, _ = _arrays.as_tensor(a, f"memory_feats_{name}_local")
            if t_.dim() != 2 or t_.shape[0] != ref.shape[0] or not torch.is_floating_point(t_):
                raise ValueError(f"memory_feats_{name}_local: expected float [{ref.shape[0]}, D'] rows (one per "
                                 f"clustered row), got {t_.dtype} shape {tuple(t_.shape)}")
            mem_l[name] = t_.detach().to(torch.float32).contiguous().to(ref.device)
    be = cfg.backend
    cb, b_sub = _backend_for(be, "cluster_centers"), _backend_for(be, "subcluster")
    b_match = _backend_for(be, "bidirectional_match")
    times: dict[str, float] = {}
    sent = 0
    per = {}
    full, mem = {}, {}
    for name, xl in (("rgb", xr_l), ("ir", xi_l)):
        t = time.perf_counter()
        st: dict = {}
        d = jaccard_distance(xl, cfg.k1, cfg.k2, max_distance=cfg.eps, group=group, stats=st)
        sent += st["bytes_sent"]
        times[f"jaccard_{name}"] = time.perf_counter() - t
        t = time.perf_counter()
        lab = torch.as_tensor(dbscan(d, cfg.eps, cfg.min_samples, group=group, stats=st)).to(xl.device)
        sent += st["bytes_sent"]
        times[f"dbscan_{name}"] = time.perf_counter() - t
        del d
        x = _gather_rows(comm, xl)
        full[name] = x
        mx = _gather_rows(comm, mem_l[name]) if mem_l else x
        mem[name] = mx
        _check_not_all_noise(lab, name, x.shape[0], cfg)
        t = time.perf_counter()
        cen = cluster_centers(mx, lab, backend=cb)
        times[f"centers_{name}"] = time.perf_counter() - t
        t = time.perf_counter()
        multi = subcluster(mx, lab, cfg.n_sub, cfg.weight, cfg.sub_method, seed=cfg.seed, backend=b_sub)
        times[f"subcluster_{name}"] = time.perf_counter() - t
        per[name] = (lab, cen, multi)
    xr, xi = full["rgb"], full["ir"]
    lr, li = per["rgb"][0], per["ir"][0]
    t = time.perf_counter()
    m = bidirectional_match(xr, lr, xi, li, cfg.ratio, cfg.match_mode, backend=b_match)
    times["match"] = time.perf_counter() - t
    sr, si = torch.as_tensor(m.labels_rgb).to(xr.device), torch.as_tensor(m.labels_ir).to(xr.device)
    t = time.perf_counter()
    xs, ls = torch.cat([mem["rgb"], mem["ir"]]), torch.cat([sr, si])
    s_cen = cluster_centers(xs, ls, backend=cb)
    s_multi = subcluster(xs, ls, cfg.n_sub, cfg.weight, cfg.sub_method, seed=cfg.seed, backend=b_sub)
    times["shared"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t_start
    sent += comm.sent
    times["bytes_sent"] = float(sent)
    return _epoch_result(per, m, sr, si, s_cen, s_multi, xr.device, fam, times, {})
