"""DBSCAN on CSR distances on the GPU (kernels/cuda/dbscan_cuda.cu).

Core counts, union-find over core-core edges (larger root hooked under the
smaller, so a component's root is its smallest core index), roots numbered
in ascending order with a scan, then the border rule: the smallest label
among core neighbours, else -1. Equal to scikit-learn's
``DBSCAN(metric="precomputed")`` on the dense matrix (distances compared in
float32, as scikit-learn does for float32 input).
"""
from __future__ import annotations

import numpy as np
import torch

from . import jaccard as _cj


def _check_csr(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n: int) -> None:
    if indptr.dim() != 1 or indptr.numel() != n + 1:
        raise ValueError(f"indptr: expected {n + 1} entries, got shape {tuple(indptr.shape)}")
    if indices.dim() != 1 or data.dim() != 1 or indices.numel() != data.numel():
        raise ValueError(f"indices, data: expected two 1-D arrays of the same length, got {tuple(indices.shape)} "
                         f"and {tuple(data.shape)}")
    nnz = indices.numel()
    # one host read for the four checks
    first, last, decreasing, outside = torch.stack([
        indptr[0], indptr[-1], (indptr.diff() < 0).any().to(torch.int64),
        ((indices < 0) | (indices >= n)).any().to(torch.int64)]).tolist()
    if first != 0 or last != nnz:
        raise ValueError(f"indptr: expected to start at 0 and end at nnz = {nnz}")
    if decreasing:
        raise ValueError("indptr: expected non-decreasing offsets")
    if outside:
        raise ValueError(f"indices: entries must lie in [0, {n})")


def dbscan(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n: int, eps: float,
           min_samples: int) -> torch.Tensor:
    """Labels int64 ``[n]`` (-1 noise) on the CSR's CUDA device.

    Args:
        indptr, indices, data: CSR of the symmetric distance matrix (int64, int64,
            float32), CUDA tensors; entries not stored are not neighbours.
        n: number of points.
        eps: neighbourhood radius; ``data <= eps`` in float32.
        min_samples: stored entries within eps (the diagonal when stored so, a repeated entry each time;
            scikit-learn's count) of a core point's row.
    """
    nat = _cj._native()
    if not _cj._cuda(data):
        raise ValueError("dist: the cuda backend needs CUDA input")
    dev = data.device
    n = int(n)
    if n >= 2**31 - 1:
        raise ValueError(f"dist: the CUDA kernels index points with int32, got N = {n}")
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=dev)
    if min_samples < 1:
        raise ValueError(f"min_samples: expected >= 1, got {min_samples}")
    with _cj._on_device(dev) as stream:
        indptr = indptr.to(device=dev, dtype=torch.int64).contiguous()
        indices = indices.to(device=dev, dtype=torch.int64).contiguous()
        data = data.to(torch.float32).contiguous()
        _check_csr(indptr, indices, data, n)
        eps32 = float(np.float32(eps))  # the float32 threshold (on the host: no device read)
        dist = nat.CudaDistances(indptr.data_ptr(), indices.data_ptr(), data.data_ptr(), n, eps32)
        core = torch.empty(n, dtype=torch.uint8, device=dev)
        nat.cuda_dbscan_core(dist, int(min_samples), core.data_ptr(), stream)
        parent = torch.empty(n, dtype=torch.int32, device=dev)
        root = torch.empty(n, dtype=torch.int32, device=dev)
        nat.cuda_dbscan_components(dist, core.data_ptr(), parent.data_ptr(), root.data_ptr(), stream)
        is_root = root == torch.arange(n, dtype=torch.int32, device=dev)
        root_cum = torch.cumsum(is_root, 0, dtype=torch.int64)
        labels = torch.empty(n, dtype=torch.int64, device=dev)
        nat.cuda_dbscan_labels(dist, core.data_ptr(), root.data_ptr(), root_cum.data_ptr(), labels.data_ptr(), stream)
    return labels
