"""CPU models of the CUDA kernels' contracts (kernels/cuda/launchers.h, bindings/cuda*.cpp).

:class:`KernelModel` models the last Jaccard stage's kernels on torch tensors (the
interface of ``hilcore.backend.cuda.jaccard._Kernels``); tests/test_jaccard_table.py runs
``pairs()`` against it. :class:`NativeModel` models the ``cuda_*`` entry points of
``hilcore._native`` themselves, pointer arguments included: CPU tensors stand in for CUDA
tensors, their ``data_ptr()`` is host memory, and each entry point reads and writes it
through views (:func:`_view`) with the sizes the contract gives. The census of the GPU
code path (tests/census.py) runs the CUDA backend's Python glue for real on it.

Outputs follow the contracts from the formulas (the torch backend's stages, the float32
reference of tests/jaccard_rows_ref.py, DBSCAN's definition), not the kernels' code. Where
a contract leaves a choice (the order of the staged pairs, the repeats of the raw
expansion) the model takes an unhelpful one: staged pairs in reverse column order, the raw
expansion with no repeats and each row's entries in descending order.
"""
from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import torch

from jaccard_rows_ref import capacity, reference


class KernelModel:
    """CPU model of the contract of jaccard_slots / jaccard_rows_count / jaccard_rows_fill (launchers.h),
    from the formulas, checking what the kernels and launchers check: a table larger than its
    region, a region that is not a power of two >= 32 or (shared) past the pass's limit, a global
    launch whose regions are not a positive multiple of 8 or exceed the scratch, staging without
    room. The kept pairs are written in reverse column order (tables give no order)."""

    def __init__(self, smem_slots=(128, 64)):
        self.smem_slots = smem_slots
        self.launches = []

    @staticmethod
    def _supp_partners(q_ptr, q_idx, p_ptr, p_row, i):
        js = [p_row[p_ptr[t]:p_ptr[t + 1]] for t in q_idx[q_ptr[i]:q_ptr[i + 1]].tolist()]
        return np.unique(np.concatenate(js)) if js else np.zeros(0, np.int64)

    def slots(self, q_ptr, q_idx, p_ptr, n, out):
        sizes = (p_ptr[1:] - p_ptr[:-1])[q_idx.long()]
        rows = torch.repeat_interleave(torch.arange(n), q_ptr.diff())
        summed = torch.zeros(n, dtype=torch.int64).index_add_(0, rows, sizes)
        out.copy_(torch.tensor([capacity(min(int(s), n)) for s in summed]))

    @staticmethod
    def _check_region(shared, region_slots, max_shared):
        assert region_slots >= 32 and region_slots & (region_slots - 1) == 0, region_slots
        if shared:
            assert region_slots <= max_shared, (region_slots, max_shared)

    @staticmethod
    def _check_launch(shared, regions, region_slots, *scratch):
        if not shared:
            assert regions > 0 and regions % 8 == 0, regions
            assert all(s.numel() >= regions * region_slots for s in scratch)

    def partners(self, q_ptr, q_idx, p_ptr, p_row, ids, bound, shared, regions, region_slots, scratch, partners,
                 slots, err):
        self._check_launch(shared, regions, region_slots, scratch)
        self._check_region(shared, region_slots, self.smem_slots[0])
        region = region_slots
        self.launches.append(("partners", shared, ids.numel(), region_slots))
        qp, qi, pp, pr = q_ptr.numpy(), q_idx.numpy(), p_ptr.numpy(), p_row.numpy()
        for i in ids.tolist():
            if bound[i] > region:
                err |= 1
                continue
            c = self._supp_partners(qp, qi, pp, pr, i).size
            partners[i], slots[i] = c, capacity(c)

    def rows(self, q_ptr, q_idx, q_val, p_ptr, p_row, p_val, ids, slots, shared, regions, region_slots, keys, vals,
             max_distance, row0, st_off, kept, st_idx, st_val, err):
        self._check_launch(shared, regions, region_slots, keys, vals)
        self._check_region(shared, region_slots, self.smem_slots[1])
        region = region_slots
        self.launches.append(("rows", shared, ids.numel(), region_slots))
        for i in ids.tolist():
            if slots[i] > region:
                err |= 4
                continue
            js, d = self._row(q_ptr, q_idx, q_val, int(i), max_distance)
            lo, hi = int(st_off[i - row0]), int(st_off[i - row0 + 1])
            if js.size > hi - lo:
                err |= 8
                continue
            st_idx[lo:lo + js.size] = torch.from_numpy(js[::-1].astype(np.int32).copy())
            st_val[lo:lo + js.size] = torch.from_numpy(d[::-1].copy())
            kept[i] = js.size

    def _row(self, q_ptr, q_idx, q_val, i, max_distance):
        key = (id(q_ptr), max_distance)
        if getattr(self, "_key", None) != key:
            self._key, self._held = key, q_ptr  # held: its id is not reused while cached
            self._ref = reference(q_ptr.numpy(), q_idx.numpy(), q_val.numpy(), max_distance)
        return self._ref[i][0], self._ref[i][1]


def _view(ptr: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    """The `count` elements of `dtype` at host address `ptr`, as a tensor sharing that memory."""
    count = int(count)
    if count == 0:
        return torch.empty(0, dtype=dtype)
    assert ptr, "a null pointer where the contract needs a buffer"
    nbytes = count * torch.empty(0, dtype=dtype).element_size()
    return torch.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype=dtype, count=count)


I32, I64, U8, F32 = torch.int32, torch.int64, torch.uint8, torch.float32


# The argument structs of the CUDA entry points (bindings/cuda_common.h), with the same fields.
@dataclasses.dataclass(frozen=True)
class CudaRows:
    ptr: int
    idx: int
    val: int = 0


@dataclasses.dataclass(frozen=True)
class CudaRanking:
    rank: int
    n: int
    ld_rank: int
    k1: int
    kh1: int


@dataclasses.dataclass(frozen=True)
class CudaTableLaunch:
    ids: int
    m: int
    shared: bool
    region_slots: int
    regions: int = 0
    scratch_keys: int = 0
    scratch_vals: int = 0


@dataclasses.dataclass(frozen=True)
class CudaPairStaging:
    row0: int
    offsets: int
    kept: int
    idx: int
    val: int


@dataclasses.dataclass(frozen=True)
class CudaDistances:
    indptr: int
    indices: int
    data: int
    n: int
    eps: float


class NativeModel(KernelModel):
    """The ``cuda_*`` entry points of ``hilcore._native`` (bindings/cuda*.cpp) on host memory, with its
    argument structs (``CudaRows``, ...).

    ``calls`` counts the kernel entry points called (the launchers; each may enqueue
    one or a few kernels on a GPU)."""

    CudaRows, CudaRanking, CudaTableLaunch = CudaRows, CudaRanking, CudaTableLaunch
    CudaPairStaging, CudaDistances = CudaPairStaging, CudaDistances

    def __init__(self, smem_slots=(128, 64)):
        super().__init__(smem_slots)
        self.calls = []
        self._n = {}  # q_ptr address -> n (the partners and rows passes are not given n)
        self._refs = {}

    @staticmethod
    def has_cuda():
        return True

    def cuda_jaccard_smem_slots(self):
        return self.smem_slots

    # ---- Jaccard stages 1-3
    @staticmethod
    def _rank(rank, n, ld, cols):
        return _view(rank, n * ld, I64).view(n, ld)[:, :cols]

    def cuda_krecip_flags(self, ranking, f1, fh, stream):
        from hilcore.stages import jaccard as SJ
        rank, n, ld, k1, kh1 = ranking.rank, ranking.n, ranking.ld_rank, ranking.k1, ranking.kh1
        self.calls.append("krecip_flags")
        r = self._rank(rank, n, ld, k1)
        _view(f1, n * k1, U8).copy_(SJ.reciprocal_mask(r, k1).reshape(-1))
        _view(fh, n * kh1, U8).copy_(SJ.reciprocal_mask(r, kh1).reshape(-1))

    def _expansion(self, rank, n, ld, k1, kh1, f1, fh):
        from hilcore.stages import jaccard as SJ
        r = self._rank(rank, n, ld, k1).contiguous()
        m1 = _view(f1, n * k1, U8).view(n, k1).bool()
        mh = _view(fh, n * kh1, U8).view(n, kh1).bool()
        return SJ.expansion(r, m1, mh)

    def cuda_expand_count(self, ranking, f1, fh, raw_count, stream):
        self.calls.append("expand_count")
        r = ranking
        e_ptr, _ = self._expansion(r.rank, r.n, r.ld_rank, r.k1, r.kh1, f1, fh)
        _view(raw_count, r.n, I64).copy_(e_ptr.diff())

    def cuda_expand_fill(self, ranking, f1, fh, raw, stream):
        self.calls.append("expand_fill")
        r, n, raw_ptr, raw = ranking, ranking.n, raw.ptr, raw.idx
        e_ptr, e_idx = self._expansion(r.rank, r.n, r.ld_rank, r.k1, r.kh1, f1, fh)
        ptr = _view(raw_ptr, n + 1, I64)
        assert torch.equal(ptr, e_ptr), "raw_ptr: not the exclusive scan of the count pass"
        rows = torch.repeat_interleave(torch.arange(n), e_ptr.diff())
        dst = e_ptr[rows + 1] - 1 - (torch.arange(e_idx.numel()) - e_ptr[rows])  # each row reversed
        out = _view(raw, int(ptr[-1]), I32)
        out[dst] = e_idx.to(I32)

    def cuda_unique_count(self, raw, n, first, e_count, stream):
        self.calls.append("unique_count")
        raw_ptr, raw = raw.ptr, raw.idx
        ptr = _view(raw_ptr, n + 1, I64).numpy()
        vals = _view(raw, int(ptr[-1]), I32).numpy()
        fst = _view(first, int(ptr[-1]), U8).numpy()
        cnt = _view(e_count, n, I64).numpy()
        for i in range(n):
            row = vals[ptr[i]:ptr[i + 1]]
            _, at = np.unique(row, return_index=True)
            fst[ptr[i]:ptr[i + 1]] = 0
            fst[ptr[i] + at] = 1
            cnt[i] = at.size

    def cuda_unique_weights(self, x, n, d, raw, first, e, stream):
        from hilcore.stages import jaccard as SJ
        self.calls.append("unique_weights")
        raw_ptr, raw, e_ptr, e_idx, e_val = raw.ptr, raw.idx, e.ptr, e.idx, e.val
        ptr = _view(raw_ptr, n + 1, I64)
        vals = _view(raw, int(ptr[-1]), I32)
        fst = _view(first, int(ptr[-1]), U8).bool()
        rows = torch.repeat_interleave(torch.arange(n), ptr.diff())
        keep_rows, keep = rows[fst], vals[fst].to(I64)
        order = torch.argsort(keep_rows * n + keep)  # per row ascending
        eptr = _view(e_ptr, n + 1, I64)
        assert torch.equal(eptr.diff(), torch.bincount(keep_rows, minlength=n)), "e_ptr: not the scan of e_count"
        idx = keep[order]
        _view(e_idx, idx.numel(), I32).copy_(idx.to(I32))
        xv = _view(x, n * d, F32).view(n, d)
        _view(e_val, idx.numel(), F32).copy_(SJ.weights(xv, eptr.clone(), idx))

    def cuda_query_expansion_count(self, e, ranking, k2, q_count, stream):
        self._query_expansion(e, ranking, k2, q_count, None)

    def cuda_query_expansion_fill(self, e, ranking, k2, q, stream):
        self._query_expansion(e, ranking, k2, 0, q)

    def _query_expansion(self, e, ranking, k2, q_count, q):
        from hilcore.stages import jaccard as SJ
        self.calls.append("query_expansion_count" if q_count else "query_expansion_fill")
        e_ptr, e_idx, e_val, rank, n, ld = e.ptr, e.idx, e.val, ranking.rank, ranking.n, ranking.ld_rank
        assert 1 <= k2 <= ld, (k2, ld)
        q_ptr, q_idx, q_val = (q.ptr, q.idx, q.val) if q is not None else (0, 0, 0)
        eptr = _view(e_ptr, n + 1, I64).clone()
        nnz = int(eptr[-1])
        eidx = _view(e_idx, nnz, I32).to(I64)
        evals = _view(e_val, nnz, F32).clone()
        r = self._rank(rank, n, ld, ld).contiguous()
        qp, qi, qv = SJ.query_expansion(r, k2, eptr, eidx, evals)
        if q_count:
            _view(q_count, n, I64).copy_(qp.diff())
            return
        assert torch.equal(_view(q_ptr, n + 1, I64), qp), "q_ptr: not the scan of q_count"
        _view(q_idx, qi.numel(), I32).copy_(qi.to(I32))
        _view(q_val, qv.numel(), F32).copy_(qv)

    # ---- Jaccard stage 4 (the tensor model above, on views)
    def _q(self, q_ptr, q_idx, p_ptr, p_row):
        n = self._n[q_ptr]
        qp = _view(q_ptr, n + 1, I64)
        nnz = int(qp[-1])
        pr = _view(p_row, nnz, I32) if p_row else None  # the slots pass is not given p_row
        return n, nnz, qp, _view(q_idx, nnz, I32), _view(p_ptr, n + 1, I64), pr

    def cuda_jaccard_slots(self, q, p, n, slots, stream):
        self.calls.append("jaccard_slots")
        q_ptr, q_idx, p_ptr = q.ptr, q.idx, p.ptr
        self._n[q_ptr] = n
        self._refs.clear()  # a new V': the rows pass recomputes its reference
        _, _, qp, qi, pp, _ = self._q(q_ptr, q_idx, p_ptr, 0)
        KernelModel.slots(self, qp, qi, pp, n, _view(slots, n, I64))

    def cuda_jaccard_rows_count(self, q, p, launch, bound_slots, partners, slots, err, stream):
        self.calls.append("jaccard_rows_count")
        q_ptr, q_idx, p_ptr, p_row = q.ptr, q.idx, p.ptr, p.idx
        ids, m, shared, regions, region_slots = launch.ids, launch.m, launch.shared, launch.regions, launch.region_slots
        scratch = launch.scratch_keys
        n, _, qp, qi, pp, pr = self._q(q_ptr, q_idx, p_ptr, p_row)
        scr = None if shared else _view(scratch, regions * region_slots, I32)
        KernelModel.partners(self, qp, qi, pp, pr, _view(ids, m, I64), _view(bound_slots, n, I64), shared, regions,
                             region_slots, scr, _view(partners, n, I64), _view(slots, n, I64), _view(err, 1, I32))

    def cuda_jaccard_rows_fill(self, q, p, launch, slots, max_distance, staging, err, stream):
        self.calls.append("jaccard_rows_fill")
        q_ptr, q_idx, q_val, p_ptr, p_row, p_val = q.ptr, q.idx, q.val, p.ptr, p.idx, p.val
        ids, m, shared, regions, region_slots = launch.ids, launch.m, launch.shared, launch.regions, launch.region_slots
        keys, vals = launch.scratch_keys, launch.scratch_vals
        row0, st_off, kept, st_idx, st_val = staging.row0, staging.offsets, staging.kept, staging.idx, staging.val
        n, nnz, qp, qi, pp, pr = self._q(q_ptr, q_idx, p_ptr, p_row)
        idv = _view(ids, m, I64)
        span = int(idv.max()) - row0 + 2 if m else 1  # st_off entries this launch may read
        off = _view(st_off, span, I64)
        staged = int(off[-1])
        k, v = (None, None) if shared else (_view(keys, regions * region_slots, I32),
                                             _view(vals, regions * region_slots, F32))
        self._md = max_distance
        KernelModel.rows(self, qp, qi, _view(q_val, nnz, F32), pp, pr, _view(p_val, nnz, F32), idv,
                         _view(slots, n, I64), shared, regions, region_slots, k, v, max_distance, row0, off,
                         _view(kept, n, I64), _view(st_idx, staged, I32), _view(st_val, staged, F32),
                         _view(err, 1, I32))

    def _row(self, q_ptr, q_idx, q_val, i, max_distance):
        key = float(max_distance)
        if key not in self._refs:
            self._refs[key] = reference(q_ptr.numpy(), q_idx.numpy(), q_val.numpy(), max_distance)
        r = self._refs[key][i]
        return r[0], r[1]

    # ---- DBSCAN
    @staticmethod
    def _csr(indptr, indices, data, n, eps):
        ptr = _view(indptr, n + 1, I64).numpy()
        nnz = int(ptr[-1])
        idx, d = _view(indices, nnz, I64).numpy(), _view(data, nnz, F32).numpy()
        rows = np.repeat(np.arange(n), np.diff(ptr))
        near = (d <= np.float32(eps)) & (idx != rows)  # stored j != i within eps
        return rows[near], idx[near]

    def cuda_dbscan_core(self, dist, min_samples, core, stream):
        self.calls.append("dbscan_core")
        indptr, data, n, eps = dist.indptr, dist.data, dist.n, dist.eps
        ptr = _view(indptr, n + 1, I64).numpy()
        d = _view(data, int(ptr[-1]), F32).numpy()
        within = np.repeat(np.arange(n), np.diff(ptr))[d <= np.float32(eps)]  # every stored entry, diagonal too
        nb = np.bincount(within, minlength=n)
        _view(core, n, U8).numpy()[:] = nb >= min_samples

    def cuda_dbscan_components(self, dist, core, parent, root, stream):
        import scipy.sparse as sp
        from scipy.sparse.csgraph import connected_components
        self.calls.append("dbscan_components")
        indptr, indices, data, n, eps = dist.indptr, dist.indices, dist.data, dist.n, dist.eps
        rows, cols = self._csr(indptr, indices, data, n, eps)
        c = _view(core, n, U8).numpy().astype(bool)
        both = c[rows] & c[cols]
        g = sp.coo_matrix((np.ones(both.sum()), (rows[both], cols[both])), shape=(n, n))
        _, comp = connected_components(g, directed=False)
        smallest = np.full(comp.max() + 1 if n else 0, n, np.int64)
        np.minimum.at(smallest, comp[c], np.flatnonzero(c))
        _view(root, n, I32).numpy()[:] = np.where(c, smallest[comp], -1)

    def cuda_dbscan_labels(self, dist, core, root, root_cum, labels, stream):
        self.calls.append("dbscan_labels")
        indptr, indices, data, n, eps = dist.indptr, dist.indices, dist.data, dist.n, dist.eps
        rows, cols = self._csr(indptr, indices, data, n, eps)
        c = _view(core, n, U8).numpy().astype(bool)
        rt = _view(root, n, I32).numpy().astype(np.int64)
        cum = _view(root_cum, n, I64).numpy()
        lab = np.full(n, -1, np.int64)
        lab[c] = cum[rt[c]] - 1
        border = np.full(n, np.iinfo(np.int64).max)
        sel = ~c[rows] & c[cols]
        np.minimum.at(border, rows[sel], lab[cols[sel]])
        out = np.where(c, lab, np.where(border < np.iinfo(np.int64).max, border, -1))
        _view(labels, n, I64).numpy()[:] = out
