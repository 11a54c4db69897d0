"""torch.distributed helpers of the driver: process groups, sharding, padded gathers, broadcasts.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) :func:`setup`
joins the default process group (NCCL on CUDA devices, gloo on CPU); without
them everything here is a single-process no-op, so the loop is written once.

Feature extraction is sharded in contiguous blocks (:func:`shard_range`) and
gathered with :func:`all_gather_rows`, which pads every shard to the longest
one (all_gather needs equal shapes) and trims, so the result equals the
single-process extraction row for row.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def setup(device: str = "auto", timeout_s: float = 1800.0) -> torch.device:
    """Join the process group when launched by torchrun and return this process's device.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``
    or ``"cuda:N"``. Under torchrun a CUDA run uses ``cuda:LOCAL_RANK``.
    """
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for CUDA but no CUDA device is available")
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if launched and not is_dist():
        backend = "nccl" if want_cuda else "gloo"
        if want_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    if want_cuda:
        if is_dist():
            return torch.device("cuda", torch.cuda.current_device())
        dev = torch.device(device if device.startswith("cuda") else "cuda")
        torch.cuda.set_device(dev)  # kernels, caches and NCCL all on this GPU, not on cuda:0
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def shard_range(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """The contiguous block ``[start, stop)`` of ``n`` rows that rank ``r`` of ``w`` handles
    (the first ``n % w`` ranks take one row more)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def _comm_device(t: torch.Tensor) -> torch.device:
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``[n_r, ...]`` tensor along dim 0 in rank order (n_r may differ).

    Each shard is padded to ``max n_r`` rows for ``all_gather`` and trimmed
    after; the result is on ``t``'s device. Single process: ``t`` itself.
    """
    if not is_dist():
        return t
    dev = _comm_device(t)
    x = t.detach().to(dev).contiguous()
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    m = max(sizes)
    pad = torch.zeros((m,) + tuple(x.shape[1:]), dtype=x.dtype, device=dev)
    pad[:x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in sizes]
    dist.all_gather(parts, pad)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(t.device)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled; keep it on the CPU)."""
    if not is_dist():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device(torch.empty(0)))
    return box[0]


def all_reduce_mean(values: dict) -> dict:
    """Mean over ranks of a dict of floats (for the logged losses)."""
    if not is_dist() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device(torch.empty(0)))
    dist.all_reduce(t)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.cpu().tolist())}


def sync_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last
    training step every rank holds its own running statistics; the sharded
    extraction of the next epoch needs one model on all ranks.
    """
    if not is_dist():
        return
    dev = _comm_device(torch.empty(0))
    for b in model.buffers():
        t = b.detach().to(dev)
        dist.broadcast(t, src=src)
        b.copy_(t.to(b.device))


def sharded_clustering(cfg) -> bool:
    """Whether the loop clusters on every rank with :mod:`hilcore.distributed` (``cluster.distributed``).

    ``auto``: when more than one rank runs and the step is hilcore's own (``cluster.transfer: match``,
    ``cluster.memory_features: clustering``; the release's step runs on rank 0); ``on``: always (a
    world of one without torchrun), and the release's step is refused.
    """
    c = cfg.cluster
    own_step = c.transfer == "match" and c.memory_features == "clustering"
    if c.distributed == "on":
        if not own_step:
            raise ValueError("cluster.distributed=on: the sharded step implements cluster.transfer=match with "
                             f"cluster.memory_features=clustering, got transfer={c.transfer!r}, "
                             f"memory_features={c.memory_features!r} (use auto or off)")
        return True
    return c.distributed == "auto" and own_step and world_size() > 1


def cluster_all_ranks(feats: dict, cams: dict, cfg, centre=None):
    """:func:`hilcore.distributed.cluster_epoch` on this rank's block of every modality's rows.

    ``feats``: the gathered ``{"rgb", "ir"}`` features (every rank holds them
    after the sharded extraction); ``cams``: their camera ids, used when
    ``cluster.cam_center`` with ``centre(x, cams)`` (the loop's camera
    centring): the labels then come from the centred features, the memories
    from ``feats`` (``memory_feats_*``), as in the loop's rank-0 path. Every
    rank returns the same :class:`hilcore.EpochClusters` on the CPU; a
    modality that ends all-noise raises ``RuntimeError`` on every rank.
    """
    import hilcore.distributed as HD

    ec = cfg.epoch_config()
    x = feats
    if cfg.cluster.cam_center:
        if centre is None:
            raise ValueError("cluster_all_ranks: cluster.cam_center needs the centre function")
        x = {m: centre(feats[m], cams[m]) for m in feats}
    parts, mem = {}, {}
    for m in ("rgb", "ir"):
        lo, hi = shard_range(x[m].shape[0])
        parts[m] = x[m][lo:hi]
        mem[m] = feats[m][lo:hi]
    extra = dict(memory_feats_rgb_local=mem["rgb"], memory_feats_ir_local=mem["ir"]) if cfg.cluster.cam_center else {}
    try:
        cl = HD.cluster_epoch(parts["rgb"], parts["ir"], ec, **extra)
    except ValueError as e:
        raise RuntimeError(f"clustering failed: {e}") from e
    for k, v in vars(cl).items():
        if isinstance(v, torch.Tensor):
            setattr(cl, k, v.cpu())
    return cl


# ------------------------------------------------------------------------------ one global batch over the ranks
class _GatherRows(torch.autograd.Function):
    """:func:`all_gather_rows` whose backward hands each rank the gradient of its own rows.

    Every rank computes the same loss on the gathered batch, so the gradient of
    a rank's own rows there is already the single-process one (no sum over ranks).
    """

    @staticmethod
    def forward(ctx, t):
        n = torch.tensor([t.shape[0]], dtype=torch.int64, device=_comm_device(t))
        sizes = [torch.zeros_like(n) for _ in range(world_size())]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        ctx.lo = sum(sizes[:rank()])
        ctx.n = t.shape[0]
        return all_gather_rows(t)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.lo:ctx.lo + ctx.n]


def gather_rows_grad(t: torch.Tensor) -> torch.Tensor:
    """The rank-ordered concatenation of every rank's ``t`` (autograd flows to this rank's rows only).
    Single process: ``t`` itself."""
    return _GatherRows.apply(t) if is_dist() else t


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)       # every rank's part of the loss depends on the global sums
        return g


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the batch of all ranks together (``run.sync_bn``).

    torch's ``SyncBatchNorm`` runs on CUDA only; this one all-reduces the
    per-channel count, sum and sum of squares with any backend (gloo on the CPU
    too) and differentiates through them. Same parameters, buffers and
    state_dict keys as the BatchNorm it replaces; eval mode and a single
    process are plain BatchNorm.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected an input of at least 2 dims, got shape {tuple(x.shape)}")

    def forward(self, x):
        if not (self.training and is_dist()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        c, dtype, x = x.shape[1], x.dtype, x.float()
        n_local = torch.tensor([float(x.numel() // c)], dtype=x.dtype, device=x.device)
        stats = torch.cat([n_local, x.sum(dims), (x * x).sum(dims)])
        stats = _AllReduceSum.apply(stats.to(_comm_device(x))).to(x.device)
        n, s, ss = stats[0], stats[1:1 + c], stats[1 + c:]
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(f * mean.detach())
                self.running_var.mul_(1 - f).add_(f * var.detach() * (n / (n - 1)).clamp_min(0))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(dtype)


def convert_global_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Turn every BatchNorm of ``module`` into a :class:`GlobalBatchNorm` in place (same tensors)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            child.__class__ = GlobalBatchNorm
        else:
            convert_global_bn(child)
    return module
