"""Cluster centres and batched sub-clustering in pure PyTorch (any device).

Ragged clusters are handled as segments: the members of the clusters being
sub-clustered are gathered in cluster order (ascending sample index inside a
cluster), so cluster ``e`` is the contiguous range ``[start_e, start_e + n_e)``.
Every step runs on all clusters (and all k-means runs) at once.
"""
from __future__ import annotations

import torch

from ...stages.dbscan import labels as dbscan_labels_of
from ..._precision import ieee_fp32

_CHUNK = 8192  # member rows per gathered block (bounds the [rows, K, D] temporaries)


def cluster_centers(x: torch.Tensor, lab: torch.Tensor, c: int) -> torch.Tensor:
    """[C, D] float32 mean of the rows of each cluster; float64 sums."""
    keep = lab >= 0
    sums = torch.zeros(c, x.shape[1], dtype=torch.float64, device=x.device)
    sums.index_add_(0, lab[keep], x[keep].to(torch.float64))
    cnt = torch.bincount(lab[keep], minlength=c).to(torch.float64)
    return (sums / cnt.unsqueeze(1)).to(torch.float32)


def segments(lab: torch.Tensor, clusters: torch.Tensor):
    """Members of ``clusters`` (sorted cluster ids) as segments.

    Returns ``(mem, seg, starts, sizes)``: ``mem`` [M] sample indices in
    (segment, sample index) order, ``seg`` [M] segment of each, ``starts`` and
    ``sizes`` [E] int64.
    """
    c_max = int(lab.max()) + 1 if lab.numel() else 0
    emap = torch.full((max(c_max, 1),), -1, dtype=torch.int64, device=lab.device)
    emap[clusters] = torch.arange(clusters.numel(), device=lab.device)
    e_of = torch.where(lab >= 0, emap[lab.clamp(min=0)], torch.full_like(lab, -1))
    idx = torch.nonzero(e_of >= 0).flatten()
    order = torch.sort(e_of[idx], stable=True).indices
    mem = idx[order]
    seg = e_of[mem]
    sizes = torch.bincount(seg, minlength=clusters.numel())
    starts = torch.cumsum(sizes, 0) - sizes
    return mem, seg, starts, sizes


def _eligible_segments(lab: torch.Tensor, c: int, k: int):
    """:func:`segments` of the clusters with more than ``k`` members, with one host sync (E and M).

    Returns ``(mem, seg, starts, sizes, elig)``; ``elig`` the eligible cluster ids, ascending."""
    dev = lab.device
    lab_c = torch.where(lab >= 0, lab, c)  # noise -> the extra bin c
    sizes_all = torch.zeros(c + 1, dtype=torch.int64, device=dev).scatter_add_(0, lab_c, torch.ones_like(lab_c))[:c]
    ok = sizes_all > k
    e_n, m = torch.stack([ok.sum(), torch.where(ok, sizes_all, 0).sum()]).tolist()  # the one sync
    elig = torch.argsort((~ok).to(torch.int8), stable=True)[:e_n]  # eligible ids first, ascending
    okx = torch.cat([ok, ok.new_zeros(1)])
    key = torch.where(okx[lab_c], lab_c, c)  # members of eligible clusters by cluster, the rest last
    mem = torch.argsort(key, stable=True)[:m]  # stable: sample index order within a cluster
    e_of = torch.cumsum(ok.to(torch.int64), 0) - 1
    seg = e_of[lab_c[mem]]
    sizes = sizes_all[elig]
    starts = torch.cumsum(sizes, 0) - sizes
    return mem, seg, starts, sizes, elig


class _Buckets:
    """Segments padded to the next power of two of their size and stacked per padded size, so
    that member-vs-own-centres products are batched matmuls ([E_b, cap, D] x [E_b, D, K]).
    Padding wastes at most 2x; the loop is over the few distinct sizes, not over clusters."""

    def __init__(self, xm: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor):
        m, d = xm.shape
        self.m = m
        xpad = torch.cat([xm, torch.zeros(1, d, dtype=xm.dtype, device=xm.device)])
        caps = torch.pow(2, torch.ceil(torch.log2(sizes.to(torch.float64))).to(torch.int64))
        self.parts = []
        for cap in torch.unique(caps).tolist():
            segs = torch.nonzero(caps == cap).flatten()
            ar = torch.arange(cap, device=xm.device)
            pos = starts[segs].unsqueeze(1) + ar.unsqueeze(0)
            pos = torch.where(ar.unsqueeze(0) < sizes[segs].unsqueeze(1), pos, torch.full_like(pos, m))
            self.parts.append((segs, pos.flatten(), xpad[pos]))

    @ieee_fp32()  # IEEE float32 whatever TF32 setting the caller chose
    def dots(self, cen: torch.Tensor) -> torch.Tensor:
        """[M, K] dot of every member with the K centres of its segment (cen [E, K, D])."""
        k = cen.shape[1]
        out = torch.empty(self.m + 1, k, dtype=torch.float32, device=cen.device)
        for segs, pos, xb in self.parts:
            out[pos] = torch.bmm(xb, cen[segs].transpose(1, 2)).reshape(-1, k)  # padding lands in row m
        return out[: self.m]


def kmeans_subcenters(x: torch.Tensor, lab: torch.Tensor, c: int, k: int, iters: int, u: torch.Tensor,
                      *, assign=None, seg_mean=None, lloyd=None, check_every: int = 4):
    """Batched k-means++ / Lloyd k-means with ``k`` clusters inside every cluster of ``lab``.

    ``u``: float64 [C, R, k] seeding uniforms (R runs). All R runs of all
    eligible clusters advance together: run r of segment e is virtual segment
    ``r * E + e``, no Python loop over clusters or runs (the loops are over the
    k seeding steps and the Lloyd steps). ``assign``: optional batched
    assignment step ``assign(xm [M, D], seg [R*M], cen [R*E, k, D], runs=R) ->
    [R*M] int64`` (virtual row ``r * M + p`` is member ``p`` of run ``r``; index
    of the sub-centre of its own segment minimising ``|c|^2 - 2 x.c``, ties to
    the lower one). ``seg_mean``: optional ``seg_mean(xm, order, starts, sizes)
    -> [S, D]`` float32 means (float64 sums) of sorted segments, the Lloyd
    update without float atomics; without it the update is a float64
    ``index_add_`` per run. Convergence (no assignment changed in any run) is
    checked every ``check_every`` Lloyd steps (one host sync each): a converged
    run is a fixed point, so the steps run past it change nothing and the
    result is the same as checking every step. ``lloyd``: optional
    ``lloyd(xm, segv [R*M], starts [E], sizes [E], cen [R, E, k, D], iters) ->
    cen`` that runs the whole Lloyd loop instead (same steps, same stopping
    rule: a run stops once its assignment no longer changes). Returns ``(sub [C, k, D]
    float32, cnt [C, k] int64, first [C, k] int64)``: the winning run's
    sub-centres, member counts and smallest member sample index; ``cnt`` is all
    zero for clusters with ``<= k`` members or whose every run leaves an empty
    sub-cluster. The algorithm is spelled out in :func:`hilcore.subcluster`.
    """
    dev = x.device
    n, d = x.shape
    r_runs = u.shape[1]
    sub = torch.zeros(c, k, d, dtype=torch.float32, device=dev)
    cnt_out = torch.zeros(c, k, dtype=torch.int64, device=dev)
    first_out = torch.full((c, k), n, dtype=torch.int64, device=dev)
    mem, seg, starts, sizes, elig = _eligible_segments(lab, c, k)
    e_n, m = elig.numel(), mem.numel()
    if e_n == 0:
        return sub, cnt_out, first_out
    xm = x[mem]
    xx = (xm * xm).sum(1)
    buckets = _Buckets(xm, starts, sizes) if assign is None else None
    ue = u.to(dev)[elig].permute(2, 1, 0).contiguous()  # [k, R, E]: step t's draws are ue[t]
    sizes_f = sizes.to(torch.float64)
    ends = starts + sizes - 1
    runs = torch.arange(r_runs, device=dev)
    segv = (runs.unsqueeze(1) * e_n + seg.unsqueeze(0))  # [R, M] virtual segment of every (run, member)
    segv_flat = segv.reshape(-1)
    segvk = segv * k
    ones = torch.ones_like(segv_flat)
    n_v = r_runs * e_n
    # member position floor(u * n) clamped into the segment, for every draw: [k, R, E]
    pick = starts + torch.minimum(torch.floor(ue * sizes_f).to(torch.int64), sizes - 1)
    b_idx = (starts - 1).clamp(min=0)
    b_mask = (starts > 0).to(torch.float64)

    def assign_step(cen, want_score=False):  # cen [R, E, kk, D] -> a [R, M] (and its score |c|^2 - 2 x.c)
        kk = cen.shape[2]
        if assign is not None:
            out = assign(xm, segv_flat, cen.reshape(n_v, kk, d), runs=r_runs, score=want_score)
            return (out[0].view(r_runs, m), out[1].view(r_runs, m)) if want_score else out.view(r_runs, m)
        cc = (cen * cen).sum(3)  # [R, E, kk]
        dots = buckets.dots(cen.permute(1, 0, 2, 3).reshape(e_n, r_runs * kk, d)).view(m, r_runs, kk)
        score = cc[:, seg].permute(1, 0, 2) - 2 * dots  # [M, R, kk]
        a = torch.argmin(score, dim=2).t()  # first minimum: ties go to the lower sub-cluster
        if want_score:
            return a, torch.gather(score, 2, a.t().unsqueeze(2)).squeeze(2).t()
        return a

    # k-means++ seeding, all runs at once; seeds[t] [R, E, D] is step t's seed of every (run, segment)
    seeds = torch.empty(k, r_runs, e_n, d, dtype=torch.float32, device=dev)
    torch.index_select(xm, 0, pick[0].reshape(-1), out=seeds[0].view(n_v, d))
    mind2 = torch.full((r_runs, m), float("inf"), dtype=torch.float32, device=dev)
    for t in range(1, k):
        # squared distance to the newest seed: |x|^2 + (|c|^2 - 2 x.c), one centre per segment
        _, sc = assign_step(seeds[t - 1].unsqueeze(2), want_score=True)  # [R, M]
        torch.minimum(mind2, (sc + xx).clamp_(min=0), out=mind2)
        cs = torch.cumsum(mind2, 1, dtype=torch.float64)  # [R, M]
        before = cs[:, b_idx] * b_mask
        total = cs[:, ends] - before
        pos = torch.searchsorted(cs, before + ue[t] * total, right=True)  # first member with cumsum > target
        pos = torch.where(total > 0, torch.clamp(pos, min=starts, max=ends), pick[t])
        torch.index_select(xm, 0, pos.reshape(-1), out=seeds[t].view(n_v, d))
    cen = seeds.permute(1, 2, 0, 3).contiguous()  # [R, E, k, D]

    def update(a, cen):
        key = segvk + a  # [R, M] in [0, R*E*k)
        cnt = torch.zeros(n_v * k, dtype=torch.int64, device=dev).scatter_add_(0, key.view(-1), ones)
        if seg_mean is not None:
            order = torch.argsort(key.view(-1), stable=True) % m  # members in index order within a key
            new = seg_mean(xm, order, torch.cumsum(cnt, 0) - cnt, cnt)
        else:
            sums = torch.zeros(r_runs, e_n * k, d, dtype=torch.float64, device=dev)
            x64 = xm.to(torch.float64)
            for r in range(r_runs):  # CPU / torch fallback: no R-fold copy of the members
                sums[r].index_add_(0, key[r] - r * e_n * k, x64)
            new = (sums.view(n_v * k, d) / cnt.clamp(min=1).unsqueeze(1).to(torch.float64)).to(torch.float32)
        return torch.where((cnt > 0).view(r_runs, e_n, k, 1), new.view(r_runs, e_n, k, d), cen)

    # Lloyd steps of all runs together; a converged run is a fixed point
    if lloyd is not None:
        cen = lloyd(xm, segv_flat, starts, sizes, cen, iters)
    prev = None
    for it in range(iters if lloyd is None else 0):
        a = assign_step(cen)
        if prev is not None and (it % check_every == 0) and torch.equal(a, prev):
            break
        cen = update(a, cen)
        prev = a
    a, sc = assign_step(cen, want_score=True)
    key = segvk + a
    d2 = torch.clamp(xx.unsqueeze(0) + sc, min=0).to(torch.float64)
    inertia = torch.zeros(n_v, dtype=torch.float64, device=dev).index_add_(0, segv.reshape(-1), d2.reshape(-1))
    cnt = torch.zeros(n_v * k, dtype=torch.int64, device=dev).scatter_add_(0, key.reshape(-1),
                                                                         torch.ones_like(key).reshape(-1))
    cnt = cnt.view(r_runs, e_n, k)
    inertia = inertia.view(r_runs, e_n)
    inertia = torch.where((cnt > 0).all(2), inertia, torch.full_like(inertia, float("inf")))
    first = torch.full((n_v * k,), n, dtype=torch.int64, device=dev)
    first.scatter_reduce_(0, key.reshape(-1), mem.repeat(r_runs), reduce="amin")
    first = first.view(r_runs, e_n, k)
    best = torch.argmin(inertia, dim=0)  # first minimum: ties keep the earlier run
    ok = torch.isfinite(inertia.min(dim=0).values)
    col = torch.arange(e_n, device=dev)
    sub[elig] = torch.where(ok.view(-1, 1, 1), cen[best, col], torch.zeros_like(cen[0]))
    cnt_out[elig] = torch.where(ok.view(-1, 1), cnt[best, col], torch.zeros_like(cnt[0]))
    first_out[elig] = torch.where(ok.view(-1, 1), first[best, col], torch.full_like(first[0], n))
    return sub, cnt_out, first_out


def dbscan_subcenters(x: torch.Tensor, lab: torch.Tensor, c: int, k: int, eps: float, min_samples: int):
    """Density sub-clusters inside every cluster (docs/design.md DBSCAN on ``1 - cos``), batched.

    All within-cluster pairs are enumerated segment by segment (sum of n_c^2
    pairs, in chunks); the ones with distance <= eps (self always) are the
    neighbourhoods. Core components come from min-label propagation with
    pointer jumping; a border point joins the component with the smallest root
    among its core neighbours (roots are member positions, i.e. sample order).
    Returns ``(sub [C, k, D], cnt [C, k], first [C, k])`` for the largest ``k``
    components of each cluster (ties: smallest member index), unsorted slots
    beyond them with ``cnt == 0``.
    """
    dev = x.device
    n, d = x.shape
    clusters = torch.arange(c, device=dev)
    mem, seg, starts, sizes = segments(lab, clusters)
    m = mem.numel()
    xm = x[mem]
    # pairs (p, q) of member positions within one segment
    per_row = sizes[seg]
    row_off = torch.cumsum(per_row, 0) - per_row
    total = int(per_row.sum())
    src_l, dst_l = [], []
    chunk = 1 << 22
    for s in range(0, total, chunk):
        e = min(s + chunk, total)
        j = torch.arange(s, e, device=dev)
        p = torch.searchsorted(row_off, j, right=True) - 1
        q = starts[seg[p]] + (j - row_off[p])
        keep = p == q
        sims = torch.zeros(e - s, dtype=torch.float32, device=dev)
        for s2 in range(0, e - s, _CHUNK * 8):
            e2 = min(s2 + _CHUNK * 8, e - s)
            sims[s2:e2] = (xm[p[s2:e2]] * xm[q[s2:e2]]).sum(1)
        keep = keep | (1 - sims <= eps)
        src_l.append(p[keep])
        dst_l.append(q[keep])
    src = torch.cat(src_l)
    dst = torch.cat(dst_l)
    deg = torch.bincount(src, minlength=m)
    core = deg >= min_samples
    # components of the core points (stage core's union-find), numbered in root order = sample order; border
    # points join the component of their smallest-root core neighbour (the shared DBSCAN rule)
    comp = dbscan_labels_of(core, src, dst)
    valid = comp >= 0
    vm = torch.nonzero(valid).flatten()
    g = comp[vm]
    gsize = torch.bincount(g, minlength=m)
    gfirst = torch.full((m,), n, dtype=torch.int64, device=dev).scatter_reduce_(0, g, mem[vm], reduce="amin")
    gsum = torch.zeros(m, d, dtype=torch.float64, device=dev).index_add_(0, g, xm[vm].to(torch.float64))
    gseg = torch.zeros(m, dtype=torch.int64, device=dev).scatter_(0, g, seg[vm])  # a group lies in one cluster
    groups = torch.nonzero(gsize > 0).flatten()
    gc = gseg[groups]
    # order groups by (cluster asc, size desc, first asc)
    o = torch.sort(gfirst[groups], stable=True).indices
    o = o[torch.sort(gsize[groups][o], descending=True, stable=True).indices]
    o = o[torch.sort(gc[o], stable=True).indices]
    groups, gc = groups[o], gc[o]
    cstart = torch.searchsorted(gc, gc, right=False)
    rank = torch.arange(groups.numel(), device=dev) - cstart
    top = rank < k
    groups, gc, rank = groups[top], gc[top], rank[top]
    sub = torch.zeros(c, k, d, dtype=torch.float32, device=dev)
    cnt = torch.zeros(c, k, dtype=torch.int64, device=dev)
    first = torch.full((c, k), n, dtype=torch.int64, device=dev)
    sub[gc, rank] = (gsum[groups] / gsize[groups].unsqueeze(1).to(torch.float64)).to(torch.float32)
    cnt[gc, rank] = gsize[groups]
    first[gc, rank] = gfirst[groups]
    return sub, cnt, first
