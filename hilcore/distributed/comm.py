"""Communication of the sharded ops: the process group, the collectives, and the stage core's rows interface.

- :class:`Comm`: the group, this rank, the world size and the device the
  collectives run on (NCCL: the current CUDA device; gloo: CPU); counts the
  payload bytes this rank sends (times the receivers). Without an initialised
  group it is a world of one and every collective is the identity.
- :class:`ShardedRows`: the fetch-rows / reduce interface of
  :mod:`hilcore.stages.rows` over a :class:`Comm` (contiguous shards in rank
  order): a fetch is an ``all_to_all`` of the requested ids and one of the
  replies, a reduction an ``all_reduce`` or ``all_gather``.
- the argument checks every sharded op shares (:func:`local_features`,
  :func:`global_rows`, :func:`same_on_all_ranks`) and its ``info`` report (:func:`start`, :func:`finish`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .. import _arrays
from .._info import Stopwatch, info_arg
from ..stages.jaccard import segment_offsets

__all__ = ["Comm", "ShardedRows", "shard_sizes", "offsets", "same_on_all_ranks", "start", "finish", "local_features",
           "global_rows", "gather_rows"]


class Comm:
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


def same_on_all_ranks(comm: Comm, **params) -> None:
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


def offsets(sizes: list[int]) -> list[int]:
    """Global id of every shard's first row, and the total: ``[0, s0, s0 + s1, ...]``."""
    return [0] + list(np.cumsum(sizes).tolist())


def shard_sizes(n_local: int, *, group=None) -> list[int]:
    """Rows held by every rank of ``group``, in rank order (``[n_local]`` without a process group)."""
    return Comm(group).all_gather_int(n_local)


def finish(op: str, comm: Comm, clock: Stopwatch, info: dict | None, **extra) -> None:
    """Fill ``info`` (when given) with what this call did on this rank; ``timings`` gets the seconds
    ``clock`` measured and its ``total`` (since the call started)."""
    if info is None:
        return
    clock.total("total")
    info.update(op=op, bytes_sent=int(comm.sent), world=comm.world, rank=comm.rank, timings=clock.times, **extra)


def start(info: dict | None, stats: dict | None, op: str) -> tuple[dict | None, Stopwatch]:
    """An op's diagnostics dict (``stats`` is the deprecated name of ``info``) and the stopwatch of its
    timings (measuring nothing without a dict)."""
    info = info_arg(info, stats, f"hilcore.distributed.{op}")
    return info, Stopwatch(None if info is None else {})


def local_features(x_local, name: str, comm: Comm):
    """(float32 normalised rows, family) of this rank's block (an empty ``[0, D]`` block is allowed)."""
    t, fam = _arrays.as_tensor(x_local, name)
    if t.dim() == 2 and t.shape[0] == 0:  # an empty shard is allowed
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"{name}: expected a floating dtype, got {t.dtype}")
        return t.detach().to(torch.float32).contiguous(), fam
    xt, fam = _arrays.features(x_local, name)
    return xt.detach(), fam  # the clustering step is not differentiated


def global_rows(comm: Comm, xl: torch.Tensor) -> tuple[list[int], int]:
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


def gather_rows(comm: Comm, t: torch.Tensor) -> torch.Tensor:
    """[n_r, D] of every rank concatenated in rank order (on t's device)."""
    d = t.shape[1]
    return comm.all_gather_var(t.reshape(-1)).view(-1, d)


def _unique_lookup(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted unique ids, position of every element of ``ids`` in it)."""
    u, inv = torch.unique(ids.reshape(-1), sorted=True, return_inverse=True)
    return u, inv.view(ids.shape)


class ShardedRows:
    """The rows interface of :mod:`hilcore.stages.rows` over ``comm``: rank r holds the global rows
    ``sum(sizes[:r]) ..`` (contiguous, in rank order). Every method is collective: all ranks call it."""

    def __init__(self, comm: Comm, sizes: list[int], device):
        self.comm = comm
        self.sizes = sizes
        self.off = offsets(sizes)
        self.n = self.off[-1]
        self.start = self.off[comm.rank]
        self.n_local = sizes[comm.rank]
        self.bounds = torch.tensor(self.off[1:], dtype=torch.int64, device=device)

    def owner(self, ids: torch.Tensor) -> torch.Tensor:
        """The rank owning each global row id."""
        return torch.searchsorted(self.bounds, ids, right=True)

    def _split(self, owner: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        return [t[owner == q] for q in range(self.comm.world)]

    def _ask(self, ids: torch.Tensor, owner: torch.Tensor) -> list[torch.Tensor]:
        """The local positions of the rows every rank asks this one for (by source)."""
        return [a - self.start for a in self.comm.all_to_all(self._split(owner, ids))]

    def _fetch_unique(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` (global, sorted unique) of the row-sharded ``table``."""
        dev = table.device
        owner = self.owner(ids)
        asked = self._ask(ids, owner)
        shape = tuple(table.shape[1:])
        width = int(np.prod(shape)) if shape else 1
        flat_tab = table.reshape(table.shape[0], width)
        got = self.comm.all_to_all([flat_tab[a].reshape(-1) for a in asked])
        out = torch.empty((ids.shape[0], width), dtype=table.dtype, device=dev)
        for q in range(self.comm.world):
            out[owner == q] = got[q].view(-1, width)
        return out.view((ids.shape[0],) + shape)

    def fetch(self, ids: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, pos = _unique_lookup(ids)
        if table.dtype == torch.bool:  # collectives carry bytes
            return self._fetch_unique(u, table.to(torch.uint8)).to(torch.bool), pos
        return self._fetch_unique(u, table), pos

    def fetch_csr(self, ids: torch.Tensor, indptr: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor | None):
        u, pos = _unique_lookup(ids)
        dev = indptr.device
        world = self.comm.world
        owner = self.owner(u)
        asked = self._ask(u, owner)
        length = indptr[1:] - indptr[:-1]
        r_len, r_col, r_val = [], [], []
        for loc in asked:
            ln = length[loc]
            at = torch.repeat_interleave(indptr[loc], ln) + segment_offsets(ln)
            r_len.append(ln)
            r_col.append(cols[at])
            if vals is not None:
                r_val.append(vals[at])
        g_len = self.comm.all_to_all(r_len)
        g_col = self.comm.all_to_all(r_col)
        g_val = self.comm.all_to_all(r_val) if vals is not None else None
        # reassemble in u order: rows from owner q come in the order requested (ascending ids)
        lens = torch.empty(u.shape[0], dtype=torch.int64, device=dev)
        for q in range(world):
            lens[owner == q] = g_len[q]
        ptr = torch.zeros(u.shape[0] + 1, dtype=torch.int64, device=dev)
        ptr[1:] = torch.cumsum(lens, 0)
        out_c = torch.empty(int(ptr[-1]), dtype=cols.dtype, device=dev)
        out_v = torch.empty(int(ptr[-1]), dtype=vals.dtype, device=dev) if vals is not None else None
        for q in range(world):
            rows_q = torch.nonzero(owner == q).flatten()
            if rows_q.numel() == 0:
                continue
            ln = lens[rows_q]
            at = torch.repeat_interleave(ptr[rows_q], ln) + segment_offsets(ln)
            out_c[at] = g_col[q]
            if vals is not None:
                out_v[at] = g_val[q]
        return ptr, out_c, out_v, pos

    def rounds(self, ids: torch.Tensor, table: torch.Tensor):
        """Round t asks rank (rank + t) % W only, so this rank holds the rows of one owner at a time."""
        u, upos = _unique_lookup(ids.reshape(-1))
        owner = self.owner(u)
        width = int(np.prod(tuple(table.shape[1:]))) if table.dim() > 1 else 1
        flat_tab = table.reshape(table.shape[0], width)
        slot = torch.full((u.shape[0],), -1, dtype=torch.int64, device=ids.device)
        world, rank = self.comm.world, self.comm.rank
        empty = u[:0]
        for t in range(world):
            q = (rank + t) % world
            sel = owner == q
            req = [empty] * world
            req[q] = u[sel]
            asked = self.comm.all_to_all(req)
            got = self.comm.all_to_all([flat_tab[a - self.start].reshape(-1) for a in asked])
            tab = got[q].view(-1, *table.shape[1:])
            slot[sel] = torch.arange(tab.shape[0], device=ids.device)
            ent = torch.nonzero(sel[upos]).flatten()  # entries whose row this owner holds
            yield ent, tab, slot[upos[ent]]
            slot[sel] = -1

    def to_owners(self, dest: torch.Tensor, *payloads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        owner = self.owner(dest)
        return tuple(torch.cat(self.comm.all_to_all(self._split(owner, p))) for p in payloads)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return self.comm.all_gather_var(t)

    def reduce_min(self, t: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce_min(t)

    def agree_max(self, v: int) -> int:
        return max(self.comm.all_gather_int(v))
