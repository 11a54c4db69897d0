"""Cluster centres and batched k-means through the C++ kernels (hilcore._native)."""
from __future__ import annotations

import torch

from ..._dispatch import native_module
from ..torch.centers import segments


def cluster_centers(x: torch.Tensor, lab: torch.Tensor, c: int) -> torch.Tensor:
    return torch.from_numpy(native_module().cluster_centers(x.contiguous().numpy(), lab.contiguous().numpy(), c))


def kmeans_subcenters(x: torch.Tensor, lab: torch.Tensor, c: int, k: int, iters: int, u: torch.Tensor, *,
                      bounded: bool = True, info: dict | None = None):
    """Same contract as :func:`hilcore.backend.torch.centers.kmeans_subcenters`.

    ``bounded``: the kernel skips the member-centre distances that rigorous bounds prove cannot change
    an assignment or a seeding minimum (Elkan's bounds widened by the float32 rounding bound of every
    score, ``kernels/cpu/subcluster_cpu.cpp``); ``False`` runs the plain Lloyd loop. Both give the same
    bits. ``info``: when given, ``info["distance_evals"]`` receives the number of member-centre
    distances evaluated (k-means++ seeding, Lloyd steps and the final inertia, all runs)."""
    n, d = x.shape
    sizes_all = torch.bincount(lab[lab >= 0], minlength=c)
    sub = torch.empty(c, k, d, dtype=torch.float32)
    sub[sizes_all <= k] = 0  # the kernel writes the other clusters' rows
    cnt = torch.zeros(c, k, dtype=torch.int64)
    first = torch.full((c, k), n, dtype=torch.int64)
    elig = torch.nonzero(sizes_all > k).flatten()
    if elig.numel() == 0:
        if info is not None:
            info.setdefault("distance_evals", 0)
        return sub, cnt, first
    mem, _, starts, sizes = segments(lab, elig)
    ue = u[elig].contiguous()
    # the members are read in place through their row ids (each segment gathered by the thread that runs it), the
    # centres written straight into their clusters' rows of sub
    _, cnt_e, first_e, evals = native_module().kmeans_segments(x.contiguous().numpy(), starts.numpy(), sizes.numpy(),
                                                               k, iters, ue.numpy(), bounded, mem.contiguous().numpy(),
                                                               sub.numpy(), elig.contiguous().numpy())
    if info is not None:
        info["distance_evals"] = info.get("distance_evals", 0) + int(evals.sum())
    cnt[elig] = torch.from_numpy(cnt_e)
    first[elig] = mem[torch.from_numpy(first_e).clamp(max=mem.numel() - 1)]
    return sub, cnt, first
