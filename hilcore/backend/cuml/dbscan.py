"""Optional DBSCAN backend on cuML (``backend="cuml"``), for comparisons.

cuML's DBSCAN takes a dense precomputed matrix, so this backend builds the
``[N, N]`` matrix on the GPU (entries not stored get a distance above eps):
use it for comparisons at moderate N, not at scale. cuML's cluster numbering
and its border assignment are not scikit-learn's, so only its partition of
the core points is kept; clusters are then renumbered by their smallest core
index and border points take the smallest label among their core neighbours
(docs/design.md), which makes the result equal to scikit-learn's.
"""
from __future__ import annotations

import torch

from ..._core import dbscan_labels
from ..._dispatch import BackendUnavailable


def _import_cuml():
    try:
        from cuml.cluster import DBSCAN  # noqa: WPS433 - optional dependency
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise BackendUnavailable(f"the cuml backend needs the cuml package ({e})") from None
    return DBSCAN


def check_no_repeats(indptr: torch.Tensor, indices: torch.Tensor, n: int) -> None:
    """Refuse a CSR with a repeated (row, column) entry: scikit-learn counts each stored entry (hilcore's
    other backends do too), cuML's dense matrix can hold it once, so the core points could differ."""
    rows = torch.repeat_interleave(torch.arange(n, device=indices.device), indptr.diff(), output_size=indices.numel())
    key = rows * max(n, 1) + indices
    if torch.unique(key).numel() != key.numel():
        raise ValueError("dist: the cuml backend cannot count a repeated (row, column) entry twice as "
                         "scikit-learn does (its input is a dense matrix); sum or drop the repeats first, or "
                         "use another backend (auto, torch, cuda, native)")


def dbscan(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n: int, eps: float,
           min_samples: int) -> torch.Tensor:
    """Labels int64 ``[n]`` (-1 noise) from cuML's DBSCAN on the CSR distances (CUDA tensors); a CSR with a
    repeated entry is refused (:func:`check_no_repeats`)."""
    if not (isinstance(data, torch.Tensor) and data.is_cuda):
        raise ValueError("dist: the cuml backend needs CUDA input (a CUDA torch tensor or CuPy array)")
    dev = data.device
    n = int(n)
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=dev)
    check_no_repeats(indptr.to(device=dev, dtype=torch.int64), indices.to(device=dev, dtype=torch.int64), n)
    DBSCAN = _import_cuml()
    import cupy

    eps32 = torch.tensor(eps, dtype=torch.float32, device=dev)
    indptr = indptr.to(device=dev, dtype=torch.int64)
    indices = indices.to(device=dev, dtype=torch.int64)
    data = data.to(torch.float32)
    rows = torch.repeat_interleave(torch.arange(n, device=dev), indptr.diff(), output_size=indices.numel())
    # neighbour edges as sklearn sees them on the dense matrix: stored j != i with d <= eps
    nb = (data <= eps32) & (rows != indices)
    far = 4.0 * (float(eps32) + 1.0) ** 2  # above eps whether cuML compares d or d^2 with eps
    dense = torch.full((n, n), far, dtype=torch.float32, device=dev)
    dense[rows[nb], indices[nb]] = 0.0  # neighbours at 0: cuML only has to test <= eps, ties cannot differ
    # a point is its own neighbour only when its diagonal entry is stored within eps (scikit-learn's count;
    # hilcore.dbscan stores the diagonal as scikit-learn reads it). Repeated entries were refused above: a dense
    # matrix cannot hold one twice.
    own = rows[(data <= eps32) & (rows == indices)]
    diag = torch.full((n,), far, dtype=torch.float32, device=dev)
    diag[own] = 0.0
    dense.diagonal().copy_(diag)
    with cupy.cuda.Device(dev.index):
        model = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed",
                       calc_core_sample_indices=True, output_type="cupy")
        cl = torch.from_dlpack(model.fit_predict(cupy.from_dlpack(dense))).to(torch.int64)
        core_idx = torch.from_dlpack(model.core_sample_indices_).to(device=dev, dtype=torch.int64)
    del dense
    core = torch.zeros(n, dtype=torch.bool, device=dev)
    core[core_idx] = True
    # cuML's numbering and border assignment are not scikit-learn's: keep only its partition of the
    # core points (each core point's root = the smallest core index of its cluster), then the shared rule
    ar = torch.arange(n, device=dev)
    big = torch.full((int(cl.max()) + 2 if n else 1,), n, dtype=torch.int64, device=dev)
    cidx = cl[core] + 1
    big.scatter_reduce_(0, cidx, ar[core], reduce="amin")
    root = ar.clone()
    root[core] = big[cidx]
    return dbscan_labels(core, root, rows[nb], indices[nb])
