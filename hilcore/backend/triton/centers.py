"""Cluster centres and the k-means assignment step of sub-clustering in Triton.

``cluster_centers``: rows are sorted by label once in torch (stable, so every
cluster's members stay in sample-index order); one program per (cluster,
D-block) sums its members' rows in float64, block of rows by block of rows in
that order, and divides by the count. No float atomics: the same input gives
the same bits on every run.

``kmeans_subcenters``: the torch backend's batched k-means++ code
(:func:`hilcore.backend.torch.centers.kmeans_subcenters`: seeding with the
shared uniforms, n_init selection) with the assignment step in
:func:`_assign_kernel` and the whole Lloyd loop in :func:`lloyd`: two launches
per step (assignment, then :func:`_lloyd_update_kernel`, the deterministic
update that also flags converged runs on the device), no ATen op, the host
reading the flags only after a few steps (docs/design.md, section 6). On CPU
the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._core import interpreting
from ..._device import on_device
from ..torch import centers as _torch_centers


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


# _centre_scores: the member-to-sub-centre scores of both assignment kernels, one arithmetic:
#   score[i, s] = |c_s|^2 - 2 x_i . c_s summed over BLOCK_D chunks of the first n_d columns in fp32 (only
#   rows with rows_ok load anything; padded slots score +inf), best = the row's minimum score, idx = the
#   lowest slot reaching it.
@triton.jit
def _centre_scores(x_ptr, cen_ptr, xrow, seg, rows_ok, slots, slot_ok, K, D, n_d,
                   BLOCK_M: tl.constexpr, K_P: tl.constexpr, BLOCK_D: tl.constexpr):
    crow = (seg[:, None] * K + slots[None, :]) * D  # [BLOCK_M, K_P] element offsets of the sub-centres
    ok2 = rows_ok[:, None] & slot_ok[None, :]
    offs_d = tl.arange(0, BLOCK_D)
    dot = tl.zeros([BLOCK_M, K_P], dtype=tl.float32)
    cc = tl.zeros([BLOCK_M, K_P], dtype=tl.float32)
    for d0 in range(0, n_d, BLOCK_D):
        kk = d0 + offs_d
        k_ok = kk < D
        xv = tl.load(x_ptr + xrow[:, None] * D + kk[None, :], mask=rows_ok[:, None] & k_ok[None, :], other=0.0)
        cv = tl.load(cen_ptr + crow[:, :, None] + kk[None, None, :], mask=ok2[:, :, None] & k_ok[None, None, :],
                     other=0.0)
        dot += tl.sum(xv[:, None, :] * cv, axis=2)
        cc += tl.sum(cv * cv, axis=2)
    score = tl.where(slot_ok[None, :], cc - 2.0 * dot, float("inf"))
    best = tl.min(score, axis=1)
    idx = tl.min(tl.where(score == best[:, None], slots[None, :], K_P), axis=1)
    return score, best, idx


# _assign_kernel
# Layout: xm [M, D] float32 contiguous (member rows, grouped by segment); seg [M]
#   int64 segment of each row; cen [E, K, D] float32 contiguous. Output a [M] int64.
# Program pid owns member rows [pid*BLOCK_M, (pid+1)*BLOCK_M); each row reads the
#   K sub-centres of its own segment. score[i, s] = |c_s|^2 - 2 x_i . c_s (the
#   torch backend's formula; |x_i|^2 is common to the row and dropped), summed
#   over BLOCK_D chunks of D in fp32. a[i] = the lowest s with the minimum score
#   (ties to the lower sub-centre). Padded slots (s >= K) score +inf.
#   SKIP_DONE: done [E] int32; rows whose segment has done[seg] != 0 are skipped
#   (a is left as it was).
# Preconditions: M, K >= 1, no NaN inputs.
@triton.jit
def _assign_kernel(x_ptr, seg_ptr, cen_ptr, a_ptr, s_ptr, done_ptr, M, K, D, MX,
                   BLOCK_M: tl.constexpr, K_P: tl.constexpr, BLOCK_D: tl.constexpr, SCORE: tl.constexpr,
                   SKIP_DONE: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows64 = rows.to(tl.int64)
    seg = tl.load(seg_ptr + rows64, mask=row_ok, other=0)
    if SKIP_DONE:  # rows of a converged segment keep their assignment: nothing loaded, nothing stored
        row_ok = row_ok & (tl.load(done_ptr + seg, mask=row_ok, other=1) == 0)
    xrow = rows64 % MX  # virtual row r * MX + p of run r reads member row p
    slots = tl.arange(0, K_P)
    slot_ok = slots < K
    score, best, idx = _centre_scores(x_ptr, cen_ptr, xrow, seg, row_ok, slots, slot_ok, K, D, D,
                                      BLOCK_M, K_P, BLOCK_D)
    tl.store(a_ptr + rows64, idx.to(tl.int64), mask=row_ok)
    if SCORE:  # the minimum score itself: |x|^2 + score is the squared distance to the chosen centre
        tl.store(s_ptr + rows64, best, mask=row_ok)


# _assign_lloyd_kernel: the assignment step of the Lloyd loop with Hamerly's bounds.
# Layout: as _assign_kernel (xm [MX, D], seg [M] virtual segments, cen [E, K, D], a [M] int64 output),
#   plus prev [M] int64 the previous step's assignment, ub / lb [M] float64 an upper bound of the true
#   distance of the row to its assigned centre and a lower bound of its distance to every other centre,
#   mv [E * K, NBLK] float32 the squared moves of every centre in the last update, one partial sum per
#   D-block of _lloyd_update_kernel (0 when the centre did not move), xx [MX] float32 |x|^2 (as
#   (x * x).sum(1)), par [2] float64: ncm, an upper bound of every centre's norm, and g, the rounding bound
#   of a score (see below), cnt [M] int32 (COUNT: +1 for every row whose distances are computed).
# A row of a live run first moves its bounds with the centres (ub += move of its centre, lb -= the
#   largest move of another centre); when lb^2 - ub^2 > 2E + tiny, E = g (ncm^2 + 2 |x| ncm) the
#   rounding bound of a computed score |c|^2 - 2 x.c (any summation order: g = gamma_D + 4u), every
#   other centre's computed score is strictly above its centre's: the row keeps prev (nothing loaded
#   but its bounds) and is exactly what the full step would give. Every other row computes its K
#   scores with _assign_kernel's arithmetic (same BLOCK_D chunks, same sums), takes the first minimum
#   and resets ub (from its score) and lb (from the second smallest score). INIT: the first step
#   (every row computed, bounds written). Programs whose rows are all skipped read no row.
@triton.jit
def _assign_lloyd_kernel(x_ptr, seg_ptr, cen_ptr, a_ptr, done_ptr, prev_ptr, ub_ptr, lb_ptr, mv_ptr, xx_ptr,
                         par_ptr, cnt_ptr, M, K, D, MX, NBLK,
                         BLOCK_M: tl.constexpr, K_P: tl.constexpr, BLOCK_D: tl.constexpr, INIT: tl.constexpr,
                         COUNT: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows64 = rows.to(tl.int64)
    seg = tl.load(seg_ptr + rows64, mask=row_ok, other=0)
    row_ok = row_ok & (tl.load(done_ptr + seg, mask=row_ok, other=1) == 0)  # converged runs: untouched
    xrow = rows64 % MX
    slots = tl.arange(0, K_P)
    slot_ok = slots < K
    ok2 = row_ok[:, None] & slot_ok[None, :]
    ncm = tl.load(par_ptr)
    g = tl.load(par_ptr + 1)
    xx = tl.load(xx_ptr + xrow, mask=row_ok, other=0.0).to(tl.float64)
    nx = tl.sqrt(xx * (1.0 + 2.0 * g))  # >= |x|
    err = g * (ncm * ncm + 2.0 * nx * ncm)
    tiny = 1e-9 * (1.0 + xx + ncm * ncm)
    if INIT:
        todo = row_ok
        ap = tl.zeros([BLOCK_M], dtype=tl.int64)
        ub = tl.zeros([BLOCK_M], dtype=tl.float64)
        lb = tl.zeros([BLOCK_M], dtype=tl.float64)
    else:
        ap = tl.load(prev_ptr + rows64, mask=row_ok, other=0)
        ub = tl.load(ub_ptr + rows64, mask=row_ok, other=0.0)
        lb = tl.load(lb_ptr + rows64, mask=row_ok, other=0.0)
        part = tl.zeros([BLOCK_M, K_P], dtype=tl.float32)
        mrow = (seg[:, None] * K + slots[None, :]) * NBLK
        for b in range(0, NBLK):
            part += tl.load(mv_ptr + mrow + b, mask=ok2, other=0.0)
        p64 = part.to(tl.float64)
        mv = tl.where(p64 > 0, tl.sqrt(p64 * (1.0 + 2.0 * g) + 1e-30) * (1.0 + 1e-9) + 1e-12, 0.0)
        mine = slots[None, :] == ap[:, None]
        ub = ub + tl.sum(tl.where(mine, mv, 0.0), axis=1)
        lb = tl.maximum(lb - tl.max(tl.where(mine, 0.0, mv), axis=1), 0.0)
        keep = (lb > 0) & (lb * lb - ub * ub > 2.0 * err + tiny)
        todo = row_ok & ~keep
    n_d = tl.where(tl.sum(todo.to(tl.int32), axis=0) > 0, D, 0)  # a program with no row to compute reads none
    score, best, idx = _centre_scores(x_ptr, cen_ptr, xrow, seg, todo, slots, slot_ok, K, D, n_d,
                                      BLOCK_M, K_P, BLOCK_D)
    second = tl.min(tl.where(slots[None, :] == idx[:, None], float("inf"), score), axis=1)
    up_new = tl.sqrt(tl.maximum(best.to(tl.float64) + xx * (1.0 + g) + err + tiny, 0.0)) * (1.0 + 1e-9) + 1e-12
    lo_new = tl.sqrt(tl.maximum(second.to(tl.float64) + xx * (1.0 - g) - err - tiny, 0.0)) * (1.0 - 1e-9) - 1e-12
    a_out = tl.where(todo, idx.to(tl.int64), ap)
    tl.store(a_ptr + rows64, a_out, mask=row_ok)
    tl.store(ub_ptr + rows64, tl.where(todo, up_new, ub), mask=row_ok)
    tl.store(lb_ptr + rows64, tl.where(todo, lo_new, lb), mask=row_ok)
    if COUNT:
        c0 = tl.load(cnt_ptr + rows64, mask=row_ok, other=0)
        tl.store(cnt_ptr + rows64, c0 + todo.to(tl.int32), mask=row_ok)


# _lloyd_update_kernel: the Lloyd update of every (run, segment), with its convergence flag.
# Layout: xm [M, D] float32 contiguous (member rows grouped by segment: segment e is rows
#   starts[e] .. starts[e] + sizes[e] - 1, in sample-index order); a, prev [R * M] int64 the
#   assignment of this step and of the previous one (row r * M + p: member p in run r;
#   prev = -1 before the first step); cen [R * E, K, D] float32 contiguous, updated in place
#   (virtual segment v = r * E + e); done [R * E] int32 (1: converged, the run of that segment
#   is a fixed point). Program (e, rb, j) owns segment e, runs rb * RUNS .. rb * RUNS + RUNS - 1
#   (lane q of the RUNS * K_P lanes is run rb * RUNS + q // K_P, slot q % K_P) and columns
#   [j * BLOCK_D, (j + 1) * BLOCK_D). It walks the segment's members in BLOCK_R-row blocks in index
#   order and adds, per lane, the float64 column sums of the members assigned to that slot (one-hot,
#   no atomics: the same input gives the same bits), their count, and the number of members whose
#   assignment changed. A live run (done == 0) whose assignment changed gets the mean of every
#   non-empty slot (an empty slot keeps its centre); a run whose assignment did not change is
#   converged: program j == 0 sets its done flag and nothing else is written (its centres are
#   already those means). Programs whose runs are all done read no member.
@triton.jit
def _lloyd_update_kernel(x_ptr, a_ptr, prev_ptr, cen_ptr, done_ptr, starts_ptr, sizes_ptr, mv_ptr, M, E, R, K, D,
                         NBLK, RUNS: tl.constexpr, K_P: tl.constexpr, BLOCK_R: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    e = tl.program_id(0)
    rb = tl.program_id(1)
    j = tl.program_id(2)
    start = tl.load(starts_ptr + e)
    size = tl.load(sizes_ptr + e)
    q = tl.arange(0, RUNS * K_P)
    run = rb * RUNS + q // K_P
    slot = q % K_P
    run_ok = run < R
    v = run.to(tl.int64) * E + e
    live = run_ok & (tl.load(done_ptr + v, mask=run_ok, other=1) == 0)
    n_rows = tl.where(tl.sum(live.to(tl.int32), axis=0) > 0, size, 0)
    cols = j * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    offs_r = tl.arange(0, BLOCK_R)
    acc = tl.zeros([RUNS * K_P, BLOCK_D], dtype=tl.float64)
    cnt = tl.zeros([RUNS * K_P], dtype=tl.int32)
    chg = tl.zeros([RUNS * K_P], dtype=tl.int32)
    for r0 in range(0, n_rows, BLOCK_R):
        p = r0 + offs_r
        p_ok = p < size
        rows = (start + p).to(tl.int64)
        xv = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=p_ok[:, None] & col_ok[None, :], other=0.0)
        m2 = p_ok[:, None] & live[None, :]
        addr = run.to(tl.int64)[None, :] * M + rows[:, None]  # [BLOCK_R, RUNS * K_P]
        an = tl.load(a_ptr + addr, mask=m2, other=-1)
        ap = tl.load(prev_ptr + addr, mask=m2, other=-1)
        hit = m2 & (an == slot[None, :])
        chg += tl.sum((an != ap).to(tl.int32), axis=0)
        cnt += tl.sum(hit.to(tl.int32), axis=0)
        acc += tl.sum(tl.where(hit[:, :, None], xv.to(tl.float64)[:, None, :], 0.0), axis=0)
    mean = acc / tl.maximum(cnt, 1).to(tl.float64)[:, None]
    write = live & (chg > 0) & (cnt > 0) & (slot < K)
    crow = (v * K + slot) * D
    new = mean.to(tl.float32)
    wmask = write[:, None] & col_ok[None, :]
    old = tl.load(cen_ptr + crow[:, None] + cols[None, :], mask=wmask, other=0.0)
    tl.store(cen_ptr + crow[:, None] + cols[None, :], new, mask=wmask)
    # this D-block's part of the squared move of every centre (0 when it was not rewritten), for the bounds
    # of _assign_lloyd_kernel (stored for every run: the lanes of a run flagged done meanwhile by program
    # j == 0 store 0, as they must)
    step = tl.where(wmask, new - old, 0.0)
    tl.store(mv_ptr + (v * K + slot) * NBLK + j, tl.sum(step * step, axis=1), mask=run_ok & (slot < K))
    first = live & (slot + j == 0)  # slot 0 lanes of program j == 0
    tl.store(done_ptr + v, (chg == 0).to(tl.int32), mask=first)


# after these Lloyd steps the host asks whether every run has converged (one sync each); the
# flags on the device already stop a converged run, the checks only save the launches after it
_CHECK_AFTER = (4, 8, 12, 16, 24)


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


def _assign_config(m: int, k: int, d: int):
    """``(K_P, BLOCK_M, BLOCK_D, num_warps)`` of :func:`_assign_kernel` for ``m`` rows, ``k`` slots, width ``d``."""
    k_p = max(2, triton.next_power_of_2(k))
    if interpreting():
        # few, large programs: the interpreter's cost is per program and op, not per element
        bd = max(2, min(64, triton.next_power_of_2(d)))  # the [BLOCK_M, K_P, BLOCK_D] block stays <= 2^20 elements
        return k_p, max(16, min((1 << 20) // (k_p * bd), triton.next_power_of_2(m))), bd, 1
    return k_p, max(8, min(64, 4096 // (k_p * 32))), 32, 4


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
    k_p, bm, bd, warps = _assign_config(m, k, d)
    with on_device(xm):
        _assign_kernel[(triton.cdiv(m, bm),)](xm, seg, cen, out, sc, out, m, k, d, max(mx, 1),
                                              BLOCK_M=bm, K_P=k_p, BLOCK_D=bd, SCORE=score, SKIP_DONE=False,
                                              num_warps=warps)
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


def _update_config(r_runs: int, k: int, d: int):
    """``(RUNS, K_P, BLOCK_R, BLOCK_D, num_warps)`` of :func:`_lloyd_update_kernel`."""
    k_p = max(2, triton.next_power_of_2(k))
    if interpreting():  # all runs of a segment in one program, D in one block: few, large programs
        runs = triton.next_power_of_2(r_runs)
        bd = max(2, min(128, triton.next_power_of_2(d)))
        lanes = runs * k_p * bd  # a power of two; the [BLOCK_R, lanes] temporary stays <= 2^20 elements
        return runs, k_p, 1 << max(0, min(8, 20 - (lanes.bit_length() - 1))), bd, 1
    return _UPDATE_GPU["RUNS"], k_p, _UPDATE_GPU["BLOCK_R"], _UPDATE_GPU["BLOCK_D"], _UPDATE_GPU["num_warps"]


# the GPU configuration of _lloyd_update_kernel (also compiled by benchmarks/gpu_static.py)
_UPDATE_GPU = dict(RUNS=1, BLOCK_R=8, BLOCK_D=32, num_warps=4)


def _G(d: int) -> float:
    """g = gamma_d + 4u (u = 2^-24), slightly rounded up: the relative rounding bound of a float32 score of
    width ``d`` in any summation order (kernels/cpu/subcluster_cpu.cpp has the derivation)."""
    u = 2.0 ** -24
    return (d * u / (1 - d * u) + 4 * u) * 1.001


def lloyd(xm: torch.Tensor, segv: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, cen: torch.Tensor,
          iters: int, counts: torch.Tensor | None = None) -> torch.Tensor:
    """At most ``iters`` Lloyd steps of every run of every segment, two launches per step.

    ``xm`` [M, D] member rows grouped by segment (``starts``/``sizes`` [E]); ``segv`` [R * M] the
    virtual segment ``r * E + e`` of row ``r * M + p``; ``cen`` [R, E, k, D] the seeds. A step is
    :func:`_assign_lloyd_kernel` (rows of converged runs skipped, and rows whose Hamerly bounds prove their
    assignment unchanged: the same assignments as computing them) then :func:`_lloyd_update_kernel`; a
    run whose assignment did not change is marked converged on the device and left alone from then
    on, exactly where checking it every step would stop it (a converged run is a fixed point). The
    host reads the flags only after the steps in ``_CHECK_AFTER`` (one sync each). ``counts``: an int32
    [R * M] tensor that receives, per (run, row), the number of steps whose distances were computed.
    Returns the final ``cen`` [R, E, k, D]."""
    r_runs, e_n, k, d = cen.shape
    m = xm.shape[0]
    n_v = r_runs * e_n
    cen = cen.reshape(n_v, k, d).contiguous()
    xm = xm.contiguous()
    segv = segv.contiguous()
    starts = starts.contiguous()
    sizes = sizes.contiguous()
    dev = xm.device
    bufs = torch.full((2, r_runs * m), -1, dtype=torch.int64, device=dev).unbind(0)  # a: this / last step
    done = torch.zeros(n_v, dtype=torch.int32, device=dev)
    k_p, bm, bd, warps = _assign_config(r_runs * m, k, d)
    runs, k_p2, br, bd2, warps2 = _update_config(r_runs, k, d)
    grid_a = (triton.cdiv(r_runs * m, bm),)
    nblk = triton.cdiv(d, bd2)
    grid_u = (e_n, triton.cdiv(r_runs, runs), nblk)
    # Hamerly's bounds (_assign_lloyd_kernel): one upper and one lower bound per (run, row), the centres'
    # squared moves per D-block, |x|^2, an upper bound of every centre's norm (a centre is a mean of rows
    # or a row: never longer than the longest row, up to rounding) and the rounding bound g
    bnd = torch.empty(2, r_runs * m, dtype=torch.float64, device=dev).unbind(0)
    mv = torch.zeros(n_v * k, nblk, dtype=torch.float32, device=dev)
    xx = (xm * xm).sum(1)
    par = torch.stack([(xx.max().double() * (1.0 + 4.0 * _G(d))).sqrt(), xx.new_tensor(_G(d), dtype=torch.float64)])
    cnt = counts if counts is not None else done
    with on_device(xm):
        for it in range(iters):
            a, prev = bufs[it % 2], bufs[(it + 1) % 2]
            _assign_lloyd_kernel[grid_a](xm, segv, cen, a, done, prev, bnd[0], bnd[1], mv, xx, par, cnt,
                                         r_runs * m, k, d, m, nblk, BLOCK_M=bm, K_P=k_p, BLOCK_D=bd,
                                         INIT=it == 0, COUNT=counts is not None, num_warps=warps)
            _lloyd_update_kernel[grid_u](xm, a, prev, cen, done, starts, sizes, mv, m, e_n, r_runs, k, d, nblk,
                                         RUNS=runs, K_P=k_p2, BLOCK_R=br, BLOCK_D=bd2, num_warps=warps2)
            if it + 1 in _CHECK_AFTER and it + 1 < iters and bool(done.all()):
                break
    return cen.view(r_runs, e_n, k, d)


def kmeans_subcenters(x: torch.Tensor, lab: torch.Tensor, c: int, k: int, iters: int, u: torch.Tensor):
    """The torch backend's batched k-means (same seeding, stopping rule and run selection) with the
    assignment steps in Triton and the Lloyd loop in :func:`lloyd`; all runs of all clusters advance
    together; returns ``(sub [C, k, D], cnt [C, k], first [C, k])``."""
    return _torch_centers.kmeans_subcenters(x, lab, c, k, iters, u, assign=assign, seg_mean=segment_mean,
                                            lloyd=lloyd)
