"""k-reciprocal Jaccard stages on the GPU (kernels/cuda/jaccard_cuda.cu).

The kernels run count and fill passes; this module allocates every buffer
with torch on the input's device, does the exclusive scans between passes
(``torch.cumsum``), builds the postings (transpose of V') with a stable sort,
and cuts the last stage into row chunks whose hash tables fit a workspace
budget. Memory is O(N * support): no N x N buffer anywhere.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import _dispatch
from .._core import half_k

# Upper bound on the hash-table workspace of one chunk of rows (bytes); the
# default also keeps it under a quarter of the free device memory.
DEFAULT_WORKSPACE_BYTES = 2 << 30
_SLOT_BYTES = 8  # int32 key + float32 value


def _native():
    mod = _dispatch.native_module()
    if mod is None or not mod.has_cuda():
        raise _dispatch.BackendUnavailable("the cuda backend needs hilcore._native built with CUDA support")
    return mod


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
    order = torch.sort(q_idx, stable=True).indices  # stable: rows stay ascending within a column
    p_row = rows[order].contiguous()
    p_val = q_val[order].contiguous()
    p_ptr = _exclusive(torch.bincount(q_idx, minlength=n).to(torch.int64))
    return p_ptr, p_row, p_val


def default_workspace(dev: torch.device) -> int:
    """Hash-table budget: a quarter of the memory a new allocation can get, capped at
    DEFAULT_WORKSPACE_BYTES, at least 64 MiB. That memory is the driver's free memory plus
    what torch's caching allocator holds reserved but unused (mem_get_info does not see it)."""
    free, _ = torch.cuda.mem_get_info(dev)
    cached = max(0, torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    return max(64 << 20, min(DEFAULT_WORKSPACE_BYTES, (free + cached) // 4))


def _chunks(slots_cum: np.ndarray, budget_slots: int):
    """Row ranges [a, b) whose summed slots stay <= budget_slots (at least one row each)."""
    n = slots_cum.size - 1
    a = 0
    while a < n:
        b = int(np.searchsorted(slots_cum, slots_cum[a] + budget_slots, side="right")) - 1
        b = min(max(b, a + 1), n)
        yield a, b
        a = b


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
    if not (isinstance(x, torch.Tensor) and x.is_cuda):
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
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        x = x.to(torch.float32).contiguous()
        rank = rank[:, :k1].to(torch.int64).contiguous()
        if bool(((rank < 0) | (rank >= n)).any()):
            raise ValueError(f"rank: entries must lie in [0, {n})")
        kh1 = min(half_k(k1) + 1, k1)
        i64 = dict(dtype=torch.int64, device=dev)

        # 1. reciprocity flags
        f1 = torch.empty((n, k1), dtype=torch.uint8, device=dev)
        fh = torch.empty((n, kh1), dtype=torch.uint8, device=dev)
        nat.cuda_krecip_flags(rank.data_ptr(), n, k1, k1, kh1, f1.data_ptr(), fh.data_ptr(), stream)

        # 2. expansion with repeats, then distinct sorted E(i) and softmax weights
        raw_count = torch.empty(n, **i64)
        nat.cuda_expand(rank.data_ptr(), n, k1, k1, kh1, f1.data_ptr(), fh.data_ptr(), raw_count.data_ptr(), 0, 0,
                        stream)
        raw_ptr = _exclusive(raw_count)
        n_raw = int(raw_ptr[-1])
        raw = torch.empty(n_raw, dtype=torch.int32, device=dev)
        nat.cuda_expand(rank.data_ptr(), n, k1, k1, kh1, f1.data_ptr(), fh.data_ptr(), 0, raw_ptr.data_ptr(),
                        raw.data_ptr(), stream)
        del f1, fh
        first = torch.empty(n_raw, dtype=torch.uint8, device=dev)
        e_count = torch.empty(n, **i64)
        nat.cuda_unique_count(raw_ptr.data_ptr(), raw.data_ptr(), n, first.data_ptr(), e_count.data_ptr(), stream)
        e_ptr = _exclusive(e_count)
        n_e = int(e_ptr[-1])
        e_idx = torch.empty(n_e, dtype=torch.int32, device=dev)
        e_val = torch.empty(n_e, dtype=torch.float32, device=dev)
        nat.cuda_unique_weights(x.data_ptr(), n, d, raw_ptr.data_ptr(), raw.data_ptr(), first.data_ptr(),
                                e_ptr.data_ptr(), e_idx.data_ptr(), e_val.data_ptr(), stream)
        del raw, first, raw_ptr

        # 3. local query expansion
        if k2 > 1:
            q_count = torch.empty(n, **i64)
            nat.cuda_query_expansion(e_ptr.data_ptr(), e_idx.data_ptr(), e_val.data_ptr(), rank.data_ptr(), n, k1, k2,
                                     q_count.data_ptr(), 0, 0, 0, stream)
            q_ptr = _exclusive(q_count)
            n_q = int(q_ptr[-1])
            q_idx = torch.empty(n_q, dtype=torch.int32, device=dev)
            q_val = torch.empty(n_q, dtype=torch.float32, device=dev)
            nat.cuda_query_expansion(e_ptr.data_ptr(), e_idx.data_ptr(), e_val.data_ptr(), rank.data_ptr(), n, k1, k2,
                                     0, q_ptr.data_ptr(), q_idx.data_ptr(), q_val.data_ptr(), stream)
            del e_ptr, e_idx, e_val
        else:
            q_ptr, q_idx, q_val = e_ptr, e_idx, e_val

        # 4. postings and per-row hash tables, by chunks of rows
        p_ptr, p_row, p_val = _postings(q_ptr, q_idx, q_val, n)
        slots = torch.empty(n, **i64)
        nat.cuda_jaccard_slots(q_ptr.data_ptr(), q_idx.data_ptr(), p_ptr.data_ptr(), n, slots.data_ptr(), stream)
        slots_ptr = _exclusive(slots)
        slots_cum = slots_ptr.cpu().numpy()
        if workspace_bytes is None:
            workspace_bytes = default_workspace(dev)
        budget = max(1, int(workspace_bytes) // _SLOT_BYTES)
        ranges = list(_chunks(slots_cum, budget))
        most = max(int(slots_cum[b] - slots_cum[a]) for a, b in ranges)
        keys = torch.empty(most, dtype=torch.int32, device=dev)
        vals = torch.empty(most, dtype=torch.float32, device=dev)
        kept = torch.empty(n, **i64)
        out_idx, out_val = [], []
        for a, b in ranges:
            rows = b - a
            w_off = slots_ptr[a:b + 1] - slots_ptr[a]
            used = int(slots_cum[b] - slots_cum[a])
            keys[:used].fill_(-1)
            vals[:used].zero_()
            nat.cuda_jaccard_build(q_ptr.data_ptr(), q_idx.data_ptr(), q_val.data_ptr(), p_ptr.data_ptr(),
                                   p_row.data_ptr(), p_val.data_ptr(), a, rows, w_off.data_ptr(), keys.data_ptr(),
                                   vals.data_ptr(), stream)
            kc = kept[a:b]
            nat.cuda_jaccard_count(a, rows, w_off.data_ptr(), keys.data_ptr(), vals.data_ptr(), md, kc.data_ptr(),
                                   stream)
            k_off = _exclusive(kc)
            total = int(k_off[-1])
            idx = torch.empty(total, **i64)
            val = torch.empty(total, dtype=torch.float32, device=dev)
            nat.cuda_jaccard_fill(a, rows, w_off.data_ptr(), keys.data_ptr(), vals.data_ptr(), md, k_off.data_ptr(),
                                  idx.data_ptr(), val.data_ptr(), stream)
            # sort within rows: keys (local row, column) are distinct, so the order is deterministic
            local = torch.repeat_interleave(torch.arange(rows, **i64), kc, output_size=total)
            order = torch.argsort(local * n + idx)
            out_idx.append(idx[order])
            out_val.append(val[order])
        del keys, vals
        indptr = _exclusive(kept)
        indices = torch.cat(out_idx) if len(out_idx) > 1 else out_idx[0]
        data = torch.cat(out_val) if len(out_val) > 1 else out_val[0]
    return indptr, indices, data
