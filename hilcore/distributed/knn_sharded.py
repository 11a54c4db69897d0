"""Sharded kNN: every rank's rows against the others', streamed one chunk at a time (``hilcore.distributed.knn``).

The other shards are streamed past each rank one chunk at a time (a broadcast
per chunk), so a rank holds its shard, one streamed chunk and its ``[n_r, k]``
lists. On CPU (where ``hilcore.knn``'s default is the native backend) each chunk
goes through the native kNN's :func:`hilcore.backend.native.knn.exact_rows`
(bitwise ``hilcore.knn``); elsewhere float32 GEMM candidates are certified by
the float32 and float64 error bounds and the similarities are canonical
(:func:`canonical_similarity`). The certificate code here is unchanged from the
single-module ``hilcore.distributed`` (its move to one leaf module shared by every
kNN is separate work).
"""
from __future__ import annotations

import math

import torch

from .. import _arrays
from .comm import Comm, finish, global_rows, local_features, offsets, same_on_all_ranks, start

__all__ = ["knn", "knn_tensors", "canonical_similarity"]

# Rows of one streamed chunk are capped so that chunk x D float32 stays under this many elements.
CHUNK_ELEMENTS = 1 << 22
# Elements of one float64 similarity tile / one rescoring temporary.
TILE_ELEMENTS = 1 << 22
_U64 = 2.0**-53
_U32 = 2.0**-24


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
    from .. import _dispatch

    try:
        impl = _dispatch.resolve("knn", "auto", dev)
    except Exception:  # noqa: BLE001 - no default kNN here: the canonical path
        return None
    if impl.backend != "native":
        return None
    from ..backend.native.knn import exact_rows

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
    idx, sim = exact_rows(xl, kk, yb, self_ids, info=st)
    key = sim.clone()
    if self_ids is not None:
        key = torch.where(idx == self_ids.unsqueeze(1), torch.full_like(key, math.inf), key)
    return key, sim, idx + j0, st["uncertified_rows"]


def knn(x_local, k: int, *, group=None, chunk_rows: int | None = None, info: dict | None = None,
        stats: dict | None = None):
    """Exact cosine kNN of the rows sharded over ``group``; global indices.

    Args:
        x_local: ``[n_r, D]`` this rank's rows (NumPy or torch, any float
            dtype; normalised inside as ``hilcore.knn`` does); ranks hold
            consecutive blocks of the global rows in rank order.
        k: neighbours per row, ``1 <= k <= N`` (N: rows over all ranks).
        group: a torch.distributed process group (``None``: the default one,
            or a world of one when none is initialised).
        chunk_rows: rows per streamed chunk (default: ``2^22 / D``).
        info: optional dict that receives what this call did on this rank
            (``op``, ``bytes_sent``, ``timings`` (``total``), ``world``, ``rank``, ``uncertified``).
        stats: deprecated name of ``info`` (DeprecationWarning).

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
    info, clock = start(info, stats, "knn")
    comm = Comm(group)
    xl, fam = local_features(x_local, "x_local", comm)
    k = _arrays.positive_int(k, "k")
    same_on_all_ranks(comm, k=k)
    sizes, n_all = global_rows(comm, xl)
    if k > n_all:
        raise ValueError(f"k: expected k <= {n_all} (the number of rows over all ranks), got {k}")
    idx, sim = knn_tensors(comm, xl, k, sizes, chunk_rows)
    finish("knn", comm, clock, info, n=n_all, k=k, uncertified=comm.uncertified)
    return _arrays.to_family(idx, fam), _arrays.to_family(sim, fam)



def knn_tensors(comm: Comm, xl: torch.Tensor, k: int, sizes: list[int], chunk_rows: int | None):
    """(global idx int64, sim float32) ``[n_r, k]`` of this rank's validated rows ``xl`` (collective)."""
    n, d = xl.shape
    dev = xl.device
    off = offsets(sizes)
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

