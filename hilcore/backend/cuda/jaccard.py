"""k-reciprocal Jaccard stages on the GPU (kernels/cuda/jaccard_cuda.cu).

The kernels run count and fill passes; this module allocates every buffer
with torch on the input's device, does the exclusive scans between passes
(``torch.cumsum``), builds the postings (transpose of V') with a stable sort,
and runs the last stage (:func:`pairs`): per-row hash tables sized by each
row's exact distinct partners (shared memory when they fit, else a
global-memory region per warp), the staged pairs cut into row chunks that fit
a workspace budget. Memory is O(N * support): no N x N buffer anywhere.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from ... import _dispatch
from ..._core import half_k

# Workspace of the last stage (bytes): the global-memory hash tables of one launch
# (rows too big for shared memory) and the staging of one chunk of rows each stay
# within it (beyond it only for the minimum of 8 regions, or a single row's pairs);
# the default also keeps it under a quarter of the memory free for torch.
DEFAULT_WORKSPACE_BYTES = 2 << 30
_KEY_BYTES = 4  # int32 key (partners pass)
_SLOT_BYTES = 8  # int32 key + float32 value (rows pass)
_STAGE_BYTES = 8  # int32 column + float32 distance per staged pair
_WARPS_PER_BLOCK = 8
_MAX_REGIONS = 16384  # more warps than an H100/H200 keeps resident: more regions would only cost memory
_TABLE_EXPONENTS = range(5, 63)  # table sizes: 2^5 (the 32-slot minimum) .. 2^62 slots


def _native():
    mod = _dispatch.native_module()
    if mod is None or not mod.has_cuda():
        raise _dispatch.BackendUnavailable("the cuda backend needs hilcore._native built with CUDA support")
    return mod


def _cuda(t) -> bool:
    """Is t a CUDA tensor? (The one test of it here and in dbscan.py; tests/census.py lets CPU
    tensors stand in for CUDA ones, with a CPU model of the kernels, to count this glue's work.)"""
    return isinstance(t, torch.Tensor) and t.is_cuda


@contextlib.contextmanager
def _on_device(dev: torch.device):
    """Within dev's context: the handle of its current stream (the kernels' stream argument)."""
    with torch.cuda.device(dev):
        yield torch.cuda.current_stream(dev).cuda_stream


def _exclusive(counts: torch.Tensor) -> torch.Tensor:
    """[n] int64 counts -> [n+1] int64 offsets starting at 0."""
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr


def _postings(q_ptr: torch.Tensor, q_idx: torch.Tensor, q_val: torch.Tensor, n: int):
    """Transpose of V' (CSR): for each column t the rows holding t, ascending, with their values."""
    dev = q_idx.device
    nnz = q_idx.numel()
    rows = torch.repeat_interleave(torch.arange(n, dtype=torch.int32, device=dev), q_ptr.diff(), output_size=nnz)
    cols, order = torch.sort(q_idx, stable=True)  # stable: rows stay ascending within a column
    p_row = rows[order].contiguous()
    p_val = q_val[order].contiguous()
    # p_ptr[t] = entries with column < t (no bincount: it reads its input's maximum on the host)
    p_ptr = torch.searchsorted(cols, torch.arange(n + 1, dtype=cols.dtype, device=dev))
    return p_ptr, p_row, p_val


def default_workspace(dev: torch.device) -> int:
    """Hash-table budget: a quarter of the memory a new allocation can get, capped at
    DEFAULT_WORKSPACE_BYTES, at least 64 MiB. That memory is the driver's free memory plus
    what torch's caching allocator holds reserved but unused (mem_get_info does not see it)."""
    free, _ = torch.cuda.mem_get_info(dev)
    cached = max(0, torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    return max(64 << 20, min(DEFAULT_WORKSPACE_BYTES, (free + cached) // 4))


def _chunks(cum: np.ndarray, budget: int):
    """Row ranges [a, b) whose summed sizes (cum: their [n+1] offsets) stay <= budget (at least one row each)."""
    n = cum.size - 1
    a = 0
    while a < n:
        b = int(np.searchsorted(cum, cum[a] + budget, side="right")) - 1
        b = min(max(b, a + 1), n)
        yield a, b
        a = b


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _rows(nat, ptr, idx, val=None):
    """The CudaRows struct (bindings/cuda_common.h) of sparse rows held in tensors."""
    return nat.CudaRows(_ptr(ptr), _ptr(idx), _ptr(val))


# The bits of the last stage's device error word (kernels/cuda/launchers.h, kErr*), in words.
_ERROR_BITS = {
    1: "count pass: a row's table was larger than its launch's region",
    2: "count pass: a row's keys-only table filled up",
    4: "fill pass: a row's table was larger than its launch's region",
    8: "fill pass: a row kept more pairs than its staging room",
}


def _table_error(bits: int) -> RuntimeError:
    words = "; ".join(w for b, w in _ERROR_BITS.items() if bits & b) or "unknown bits"
    return RuntimeError(f"cuda jaccard: a per-row hash table overflowed (error bits {bits:#x}: {words}); "
                        "this is a bug")


class _Kernels:
    """The last stage's kernels (kernels/cuda/launchers.h) on torch tensors, on one stream.

    :func:`pairs` talks to the kernels only through this object, so a CPU model
    of the same contract can stand in for it (tests/test_jaccard_table.py).
    """

    def __init__(self, nat, stream: int):
        self.nat, self.stream = nat, stream
        self.smem_slots = tuple(int(v) for v in nat.cuda_jaccard_smem_slots())  # (count pass, fill pass)

    def _launch(self, ids, shared, regions, region_slots, keys=None, vals=None):
        return self.nat.CudaTableLaunch(_ptr(ids), ids.numel(), shared, region_slots, regions, _ptr(keys), _ptr(vals))

    def slots(self, q_ptr, q_idx, p_ptr, n, out):
        self.nat.cuda_jaccard_slots(_rows(self.nat, q_ptr, q_idx), _rows(self.nat, p_ptr, None), n, _ptr(out),
                                    self.stream)

    def partners(self, q_ptr, q_idx, p_ptr, p_row, ids, bound, shared, regions, region_slots, scratch, partners,
                 slots, err):
        self.nat.cuda_jaccard_rows_count(_rows(self.nat, q_ptr, q_idx), _rows(self.nat, p_ptr, p_row),
                                         self._launch(ids, shared, regions, region_slots, scratch), _ptr(bound),
                                         _ptr(partners), _ptr(slots), _ptr(err), self.stream)

    def rows(self, q_ptr, q_idx, q_val, p_ptr, p_row, p_val, ids, slots, shared, regions, region_slots, keys, vals,
             max_distance, row0, st_off, kept, st_idx, st_val, err):
        staging = self.nat.CudaPairStaging(row0, _ptr(st_off), _ptr(kept), _ptr(st_idx), _ptr(st_val))
        self.nat.cuda_jaccard_rows_fill(_rows(self.nat, q_ptr, q_idx, q_val), _rows(self.nat, p_ptr, p_row, p_val),
                                        self._launch(ids, shared, regions, region_slots, keys, vals), _ptr(slots),
                                        max_distance, staging, _ptr(err), self.stream)


def _regions(rows: int, region_slots: int, slot_bytes: int, budget: int) -> int:
    """Warps of a global-memory launch (one table region each): a multiple of 8, at most one per
    row and _MAX_REGIONS, and within `budget` bytes (at least 8 regions)."""
    r = max(1, min(rows, budget // (region_slots * slot_bytes), _MAX_REGIONS))
    return -(-r // _WARPS_PER_BLOCK) * _WARPS_PER_BLOCK


def _classes(slots: torch.Tensor) -> torch.Tensor:
    """uint8 [m]: the table class of each size in `slots`, the index in _TABLE_EXPONENTS of the
    smallest power of two >= it (the sizes are powers of two: their exponent - 5)."""
    pow2 = torch.tensor([1 << e for e in _TABLE_EXPONENTS], dtype=torch.int64, device=slots.device)
    return torch.searchsorted(pow2, slots).to(torch.uint8)


def _split(ids: torch.Tensor, bounds, max_shared: int):
    """(shared, region_slots, ids[lo:hi]) for each non-empty class [bounds[c], bounds[c + 1])."""
    for e, lo, hi in zip(_TABLE_EXPONENTS, bounds[:-1], bounds[1:]):
        if hi > lo:
            yield (1 << e) <= max_shared, 1 << e, ids[lo:hi]


def _groups(slots: torch.Tensor, rows: torch.Tensor, max_shared: int, classes: np.ndarray | None = None):
    """(shared, region_slots, ids): one launch per table size (a power of two) among `rows`, the
    region being that size: in shared memory up to max_shared slots, so small tables take little
    of it; in global memory past it, so a few huge rows do not shrink the regions (and the warps)
    of the many smaller ones. Sizes ascending, ids ascending within a size (`rows` is). The rows
    are sorted by class on the device; the class boundaries come from `classes` (the classes of
    `rows` already on the host) or else from one host read of them."""
    cls, order = torch.sort(_classes(slots[rows]), stable=True)
    if classes is None:
        marks = torch.arange(len(_TABLE_EXPONENTS) + 1, dtype=cls.dtype, device=rows.device)
        bounds = torch.searchsorted(cls, marks).tolist()
    else:
        bounds = np.concatenate([[0], np.cumsum(np.bincount(classes, minlength=len(_TABLE_EXPONENTS)))]).tolist()
    yield from _split(rows[order], bounds, max_shared)


def pairs(k, q_ptr, q_idx, q_val, p_ptr, p_row, p_val, n: int, max_distance: float, workspace_bytes: int):
    """The kept pairs of V' (CSR q_*, postings p_*) as CSR (indptr, int64 indices, float32 data),
    columns sorted per row.

    1. ``bound[i]``: table size for the summed postings sizes of supp(i) (at most n keys);
    2. partners pass: the exact distinct partners of each row in a keys-only table of that
       size, and ``slots[i]``, the table size of the rows pass (load factor 1/4 .. 1/2);
    3. rows pass, by chunks of rows whose staged pairs (<= their partners) fit the workspace:
       build, count and fill in one kernel, then each row's pairs sorted by column.
    One launch per table size (the region of each warp): in shared memory (8 regions per
    block) when it fits, else in global memory (a region per warp, at most ``workspace_bytes``
    of them).
    """
    dev = q_ptr.device
    i64 = dict(dtype=torch.int64, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    smem_partners, smem_rows = k.smem_slots
    every = torch.arange(n, **i64)

    bound = torch.empty(n, **i64)
    k.slots(q_ptr, q_idx, p_ptr, n, bound)
    partners = torch.empty(n, **i64)
    slots = torch.empty(n, **i64)
    for shared, region, ids in _groups(bound, every, smem_partners):
        if shared:
            k.partners(q_ptr, q_idx, p_ptr, p_row, ids, bound, True, 0, region, None, partners, slots, err)
        else:
            regions = _regions(ids.numel(), region, _KEY_BYTES, workspace_bytes)
            scratch = torch.empty(regions * region, dtype=torch.int32, device=dev)
            k.partners(q_ptr, q_idx, p_ptr, p_row, ids, bound, False, regions, region, scratch, partners, slots,
                       err)
            del scratch

    st_cum = _exclusive(partners)
    # one host read after the partners pass: the staging offsets, every row's table class (bytes) and the
    # error word (an overflowed partners table would make the offsets garbage: refuse before allocating)
    cls = _classes(slots)
    cls = torch.cat([cls, cls.new_zeros(-n % 8)]).view(torch.int64)
    host = torch.cat([st_cum, cls, err.to(torch.int64)]).cpu().numpy()
    cum, row_classes = host[:n + 1], host[n + 1:-1].view(np.uint8)[:n]
    if host[-1]:
        raise _table_error(int(host[-1]))
    kept = torch.empty(n, **i64)
    out_idx, out_val = [], []
    for a, b in _chunks(cum, max(1, workspace_bytes // _STAGE_BYTES)):
        st_off = st_cum[a:b + 1] - st_cum[a]
        staged = int(cum[b] - cum[a])
        st_idx = torch.empty(staged, dtype=torch.int32, device=dev)
        st_val = torch.empty(staged, dtype=torch.float32, device=dev)
        for shared, region, ids in _groups(slots, every[a:b], smem_rows, row_classes[a:b]):
            if shared:
                k.rows(q_ptr, q_idx, q_val, p_ptr, p_row, p_val, ids, slots, True, 0, region, None, None,
                       max_distance, a, st_off, kept, st_idx, st_val, err)
            else:
                regions = _regions(ids.numel(), region, _SLOT_BYTES, workspace_bytes)
                keys = torch.empty(regions * region, dtype=torch.int32, device=dev)
                vals = torch.empty(regions * region, dtype=torch.float32, device=dev)
                k.rows(q_ptr, q_idx, q_val, p_ptr, p_row, p_val, ids, slots, False, regions, region, keys, vals,
                       max_distance, a, st_off, kept, st_idx, st_val, err)
                del keys, vals
        # row r's pairs are the first kept[r] staged at st_off[r]; sort each row by column
        kc = kept[a:b]
        # one host read: the chunk's kept pairs and the error word of every launch so far
        total, flag = torch.stack([kc.sum(), err[0].to(torch.int64)]).tolist()
        if flag:
            raise _table_error(flag)
        local = torch.repeat_interleave(torch.arange(b - a, **i64), kc, output_size=total)
        src = st_off[local] + (torch.arange(total, **i64) - _exclusive(kc)[local])
        idx = st_idx[src].to(torch.int64)
        val = st_val[src]
        order = torch.argsort(local * n + idx)  # (row, column) keys are distinct: a deterministic order
        out_idx.append(idx[order])
        out_val.append(val[order])
        del st_idx, st_val
    indptr = _exclusive(kept)
    indices = torch.cat(out_idx) if len(out_idx) > 1 else out_idx[0]
    data = torch.cat(out_val) if len(out_val) > 1 else out_val[0]
    return indptr, indices, data


def jaccard(x: torch.Tensor, rank: torch.Tensor, k1: int, k2: int, max_distance: float,
            *, workspace_bytes: int | None = None, timings: dict | None = None):
    """Sparse Jaccard rows on CUDA tensors.

    Args:
        x: ``[N, D]`` float32, L2-normalised rows, on a CUDA device.
        rank: ``[N, >= k1]`` int64 kNN ranking (self at column 0), same device.
        k1, k2: ranking and query-expansion lengths (``1 <= k2 <= k1 <= N``).
        max_distance: keep pairs with ``d <= max_distance`` (``math.inf`` keeps all).
        timings: accepted for the common stage interface; not filled (the caller
            times the whole, synchronised).

    Returns:
        ``(indptr int64 [N+1], indices int64 [nnz], data float32 [nnz])`` on x's
        device, indices sorted per row, the diagonal stored as 0.
    """
    nat = _native()
    if not _cuda(x):
        raise ValueError("x: the cuda backend needs a CUDA torch tensor")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x: expected a non-empty [N, D] tensor, got shape {tuple(x.shape)}")
    n, d = x.shape
    if n >= 2**31 - 1:
        raise ValueError(f"x: the CUDA kernels index rows with int32, got N = {n}")
    if not (1 <= k2 <= k1 <= n):
        raise ValueError(f"k1, k2: expected 1 <= k2 <= k1 <= N = {n}, got k1={k1}, k2={k2}")
    if rank.device != x.device or rank.dim() != 2 or rank.shape[0] != n or rank.shape[1] < k1:
        raise ValueError(f"rank: expected [N, >= k1] = [{n}, >= {k1}] on {x.device}, got {tuple(rank.shape)} "
                         f"on {rank.device}")
    md = float(max_distance)
    if math.isnan(md):
        raise ValueError("max_distance: expected a number, got NaN")
    dev = x.device
    with _on_device(dev) as stream:
        x = x.to(torch.float32).contiguous()
        rank = rank[:, :k1].to(torch.int64).contiguous()
        if bool(((rank < 0) | (rank >= n)).any()):
            raise ValueError(f"rank: entries must lie in [0, {n})")
        kh1 = min(half_k(k1) + 1, k1)
        i64 = dict(dtype=torch.int64, device=dev)

        ranking = nat.CudaRanking(rank.data_ptr(), n, k1, k1, kh1)  # rank holds its first k1 columns

        # 1. reciprocity flags
        f1 = torch.empty((n, k1), dtype=torch.uint8, device=dev)
        fh = torch.empty((n, kh1), dtype=torch.uint8, device=dev)
        nat.cuda_krecip_flags(ranking, f1.data_ptr(), fh.data_ptr(), stream)

        # 2. expansion with repeats, then distinct sorted E(i) and softmax weights
        raw_count = torch.empty(n, **i64)
        nat.cuda_expand_count(ranking, f1.data_ptr(), fh.data_ptr(), raw_count.data_ptr(), stream)
        raw_ptr = _exclusive(raw_count)
        n_raw = int(raw_ptr[-1])
        raw = torch.empty(n_raw, dtype=torch.int32, device=dev)
        raw_rows = _rows(nat, raw_ptr, raw)
        nat.cuda_expand_fill(ranking, f1.data_ptr(), fh.data_ptr(), raw_rows, stream)
        del f1, fh
        first = torch.empty(n_raw, dtype=torch.uint8, device=dev)
        e_count = torch.empty(n, **i64)
        nat.cuda_unique_count(raw_rows, n, first.data_ptr(), e_count.data_ptr(), stream)
        e_ptr = _exclusive(e_count)
        n_e = int(e_ptr[-1])
        e_idx = torch.empty(n_e, dtype=torch.int32, device=dev)
        e_val = torch.empty(n_e, dtype=torch.float32, device=dev)
        nat.cuda_unique_weights(x.data_ptr(), n, d, raw_rows, first.data_ptr(), _rows(nat, e_ptr, e_idx, e_val),
                                stream)
        del raw, first, raw_ptr, raw_rows

        # 3. local query expansion
        if k2 > 1:
            e_rows = _rows(nat, e_ptr, e_idx, e_val)
            q_count = torch.empty(n, **i64)
            nat.cuda_query_expansion_count(e_rows, ranking, k2, q_count.data_ptr(), stream)
            q_ptr = _exclusive(q_count)
            n_q = int(q_ptr[-1])
            q_idx = torch.empty(n_q, dtype=torch.int32, device=dev)
            q_val = torch.empty(n_q, dtype=torch.float32, device=dev)
            nat.cuda_query_expansion_fill(e_rows, ranking, k2, _rows(nat, q_ptr, q_idx, q_val), stream)
            del e_ptr, e_idx, e_val, e_rows
        else:
            q_ptr, q_idx, q_val = e_ptr, e_idx, e_val

        # 4. postings, per-row hash tables, kept pairs
        p_ptr, p_row, p_val = _postings(q_ptr, q_idx, q_val, n)
        if workspace_bytes is None:
            workspace_bytes = default_workspace(dev)
        indptr, indices, data = pairs(_Kernels(nat, stream), q_ptr, q_idx, q_val, p_ptr, p_row, p_val, n, md,
                                      int(workspace_bytes))
    return indptr, indices, data
