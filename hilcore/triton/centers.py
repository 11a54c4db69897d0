"""Cluster centres and the k-means assignment step of sub-clustering in Triton.

``cluster_centers``: rows are sorted by label once in torch (stable, so every
cluster's members stay in sample-index order); one program per (cluster,
D-block) sums its members' rows in float64, block of rows by block of rows in
that order, and divides by the count. No float atomics: the same input gives
the same bits on every run.

``kmeans_subcenters``: the torch backend's batched k-means++ / Lloyd code
(:func:`hilcore.torch_backend.centers.kmeans_subcenters`: seeding with the
shared uniforms, Lloyd updates, n_init selection) with the assignment step
replaced by :func:`_assign_kernel`. On CPU the kernels run under the Triton
interpreter (``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._core import interpreting
from .._device import on_device
from ..torch_backend import centers as _torch_centers


# _segment_mean_kernel
# Layout: x [N, D] float32 contiguous; order [M] int64 sample indices of the
#   non-noise rows sorted by (label, sample index); starts/sizes [C] int64 (the
#   members of cluster c are order[starts[c] : starts[c] + sizes[c]], sizes >= 1).
#   Output out [C, D] float32 contiguous.
# Program (c, j) owns columns [j*BLOCK_D, (j+1)*BLOCK_D) of cluster c: it walks
#   the cluster's members in BLOCK_R-row blocks (index order), adds each block's
#   column sums (float64) to the accumulator, and stores acc / size.
@triton.jit
def _segment_mean_kernel(x_ptr, order_ptr, starts_ptr, sizes_ptr, out_ptr, D,
                         BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    c = tl.program_id(0)
    j = tl.program_id(1)
    start = tl.load(starts_ptr + c)
    size = tl.load(sizes_ptr + c)
    cols = j * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    offs_r = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_D], dtype=tl.float64)
    for r0 in range(0, size, BLOCK_R):
        r = r0 + offs_r
        r_ok = r < size
        rows = tl.load(order_ptr + start + r, mask=r_ok, other=0)
        v = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=r_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.sum(v.to(tl.float64), axis=0)
    mean = acc / size.to(tl.float64)
    tl.store(out_ptr + c.to(tl.int64) * D + cols, mean.to(tl.float32), mask=col_ok)


# _assign_kernel
# Layout: xm [M, D] float32 contiguous (member rows, grouped by segment); seg [M]
#   int64 segment of each row; cen [E, K, D] float32 contiguous. Output a [M] int64.
# Program pid owns member rows [pid*BLOCK_M, (pid+1)*BLOCK_M); each row reads the
#   K sub-centres of its own segment. score[i, s] = |c_s|^2 - 2 x_i . c_s (the
#   torch backend's formula; |x_i|^2 is common to the row and dropped), summed
#   over BLOCK_D chunks of D in fp32. a[i] = the lowest s with the minimum score
#   (ties to the lower sub-centre). Padded slots (s >= K) score +inf.
# Preconditions: M, K >= 1, no NaN inputs.
@triton.jit
def _assign_kernel(x_ptr, seg_ptr, cen_ptr, a_ptr, s_ptr, M, K, D, MX,
                   BLOCK_M: tl.constexpr, K_P: tl.constexpr, BLOCK_D: tl.constexpr, SCORE: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows64 = rows.to(tl.int64)
    seg = tl.load(seg_ptr + rows64, mask=row_ok, other=0)
    xrow = rows64 % MX  # virtual row r * MX + p of run r reads member row p
    slots = tl.arange(0, K_P)
    slot_ok = slots < K
    crow = (seg[:, None] * K + slots[None, :]) * D  # [BLOCK_M, K_P] element offsets of the sub-centres
    ok2 = row_ok[:, None] & slot_ok[None, :]
    offs_d = tl.arange(0, BLOCK_D)
    dot = tl.zeros([BLOCK_M, K_P], dtype=tl.float32)
    cc = tl.zeros([BLOCK_M, K_P], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        kk = d0 + offs_d
        k_ok = kk < D
        xv = tl.load(x_ptr + xrow[:, None] * D + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        cv = tl.load(cen_ptr + crow[:, :, None] + kk[None, None, :], mask=ok2[:, :, None] & k_ok[None, None, :],
                     other=0.0)
        dot += tl.sum(xv[:, None, :] * cv, axis=2)
        cc += tl.sum(cv * cv, axis=2)
    score = tl.where(slot_ok[None, :], cc - 2.0 * dot, float("inf"))
    best = tl.min(score, axis=1)
    idx = tl.min(tl.where(score == best[:, None], slots[None, :], K_P), axis=1)
    tl.store(a_ptr + rows64, idx.to(tl.int64), mask=row_ok)
    if SCORE:  # the minimum score itself: |x|^2 + score is the squared distance to the chosen centre
        tl.store(s_ptr + rows64, best, mask=row_ok)


def cluster_centers(x: torch.Tensor, lab: torch.Tensor, c: int) -> torch.Tensor:
    """[C, D] float32 mean of the rows of each cluster (float64 sums); ``lab`` validated, ids 0..C-1 all used."""
    x = x.contiguous()
    n, d = x.shape
    lab_c = torch.where(lab >= 0, lab, c)  # noise sorts last and is never read: no host sync
    order = torch.argsort(lab_c, stable=True).contiguous()
    sizes = torch.zeros(c + 1, dtype=torch.int64, device=x.device).scatter_add_(0, lab_c, torch.ones_like(lab_c))[:c]
    starts = (torch.cumsum(sizes, 0) - sizes).contiguous()
    out = torch.empty(c, d, dtype=torch.float32, device=x.device)
    if interpreting():
        br, bd, warps = 64, max(16, min(128, triton.next_power_of_2(d))), 1
    else:
        br, bd, warps = 32, 128, 4
    with on_device(x):
        _segment_mean_kernel[(c, triton.cdiv(d, bd))](x, order, starts, sizes, out, d,
                                                      BLOCK_R=br, BLOCK_D=bd, num_warps=warps)
    return out


def assign(xm: torch.Tensor, seg: torch.Tensor, cen: torch.Tensor, runs: int = 1, score: bool = False):
    """[runs * M] int64: for every member row, the nearest sub-centre of its own segment (ties: lower index).

    ``runs > 1``: ``runs`` k-means runs in one launch; virtual row ``r * M + p`` is member row ``p``
    of run ``r``, ``seg`` ``[runs * M]`` gives its segment among ``cen``'s ``[E_total, K, D]``.
    ``score``: also return the [runs * M] float32 minimum ``|c|^2 - 2 x.c`` (same launch)."""
    xm = xm.contiguous()
    seg = seg.contiguous()
    cen = cen.contiguous()
    mx, d = xm.shape
    m = mx * runs
    k = cen.shape[1]
    out = torch.empty(m, dtype=torch.int64, device=xm.device)
    sc = torch.empty(m, dtype=torch.float32, device=xm.device) if score else out  # not written unless score
    if m == 0:
        return (out, sc) if score else out
    k_p = max(2, triton.next_power_of_2(k))
    if interpreting():
        # few, large programs: the interpreter's cost is per program and op, not per element
        bm, bd, warps = max(16, min(1024, triton.next_power_of_2(m))), max(16, min(64, triton.next_power_of_2(d))), 1
    else:
        bm = max(8, min(64, 4096 // (k_p * 32)))
        bd, warps = 32, 4
    with on_device(xm):
        _assign_kernel[(triton.cdiv(m, bm),)](xm, seg, cen, out, sc, m, k, d, max(mx, 1),
                                              BLOCK_M=bm, K_P=k_p, BLOCK_D=bd, SCORE=score, num_warps=warps)
    return (out, sc) if score else out


def segment_mean(xm: torch.Tensor, order: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """[S, D] float32: mean (float64 sums in ``order``) of the rows ``xm[order[starts[s] : starts[s] + sizes[s]]]``;
    rows of empty segments are undefined (NaN). One launch, no float atomics."""
    s_n = starts.numel()
    d = xm.shape[1]
    out = torch.empty(s_n, d, dtype=torch.float32, device=xm.device)
    if s_n == 0:
        return out
    if interpreting():
        br, bd, warps = 64, max(16, min(128, triton.next_power_of_2(d))), 1
    else:
        br, bd, warps = 32, 128, 4
    with on_device(xm):
        _segment_mean_kernel[(s_n, triton.cdiv(d, bd))](xm.contiguous(), order.contiguous(), starts.contiguous(),
                                                        sizes.contiguous(), out, d,
                                                        BLOCK_R=br, BLOCK_D=bd, num_warps=warps)
    return out


def kmeans_subcenters(x: torch.Tensor, lab: torch.Tensor, c: int, k: int, iters: int, u: torch.Tensor):
    """The torch backend's batched k-means (same seeding, updates and run selection) with the
    assignment step and the sorted segment means of the Lloyd update in Triton; all runs of all
    clusters advance together; returns ``(sub [C, k, D], cnt [C, k], first [C, k])``."""
    return _torch_centers.kmeans_subcenters(x, lab, c, k, iters, u, assign=assign, seg_mean=segment_mean)
