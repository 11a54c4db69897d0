"""Native DBSCAN (union-find in C++) on CSR distances."""
from __future__ import annotations

import torch

from ..._dispatch import native_module


def dbscan(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n: int, eps: float,
           min_samples: int) -> torch.Tensor:
    """Labels int64 ``[n]`` (-1 noise) for CSR distances on the CPU; see ``hilcore.dbscan``."""
    nat = native_module()
    ip = indptr.to(torch.int64).contiguous().numpy()
    ix = indices.to(torch.int64).contiguous().numpy()
    dt = data.to(torch.float32).contiguous().numpy()
    return torch.from_numpy(nat.dbscan(ip, ix, dt, int(n), float(eps), int(min_samples)))
