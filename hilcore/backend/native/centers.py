"""Cluster centres and batched k-means through the C++ kernels (hilcore._native)."""
from __future__ import annotations

import torch

from ..._dispatch import native_module
from ..torch.centers import segments


def cluster_centers(x: torch.Tensor, lab: torch.Tensor, c: int) -> torch.Tensor:
    return torch.from_numpy(native_module().cluster_centers(x.contiguous().numpy(), lab.contiguous().numpy(), c))


def kmeans_subcenters(x: torch.Tensor, lab: torch.Tensor, c: int, k: int, iters: int, u: torch.Tensor):
    """Same contract as :func:`hilcore.backend.torch.centers.kmeans_subcenters`."""
    n, d = x.shape
    sub = torch.zeros(c, k, d, dtype=torch.float32)
    cnt = torch.zeros(c, k, dtype=torch.int64)
    first = torch.full((c, k), n, dtype=torch.int64)
    sizes_all = torch.bincount(lab[lab >= 0], minlength=c)
    elig = torch.nonzero(sizes_all > k).flatten()
    if elig.numel() == 0:
        return sub, cnt, first
    mem, _, starts, sizes = segments(lab, elig)
    xm = x[mem].contiguous()
    ue = u[elig].contiguous()
    cen_e, cnt_e, first_e = native_module().kmeans_segments(xm.numpy(), starts.numpy(), sizes.numpy(), k, iters,
                                                            ue.numpy())
    sub[elig] = torch.from_numpy(cen_e)
    cnt[elig] = torch.from_numpy(cnt_e)
    first[elig] = mem[torch.from_numpy(first_e).clamp(max=mem.numel() - 1)]
    return sub, cnt, first
