"""BRST cross-modal label transfer and bidirectional cluster matching (docs/design.md step 5)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import _arrays, _dispatch
from .centers import checked_clusters, cluster_labels


def brst_tensors(xb: torch.Tensor, lab: torch.Tensor, protos: torch.Tensor, ratio: float, impl: _dispatch.Impl):
    """Internal entry on validated, normalised float32 tensors; ``impl`` the resolved ``brst``;
    returns torch int64 [N_b]."""
    out = torch.full_like(lab, -1)
    rows = torch.nonzero(lab >= 0).flatten()
    if rows.numel() == 0:
        return out
    best, best_sim, col_max = impl(xb, protos, rows)  # the scan of xb[rows] (the native kernel reads them in place)
    accept = best_sim >= ratio * col_max[best]
    out[rows] = torch.where(accept, best, -1)  # positions, not a mask: no host sync
    return out


def brst(x_b, labels_b, protos_a, ratio: float = 0.5, *, backend: str = "auto"):
    """Reverse-selection transfer of B's samples into A's cluster space (one direction of BRST).

    Rows of ``x_b`` and ``protos_a`` are L2-normalised. For every B sample
    ``i`` with ``labels_b[i] != -1``: ``p = argmax_c cos(x_i, protos_a[c])``
    (ties: lower ``c``); it takes label ``p`` iff ``cos(x_i, p) >= ratio *
    max_{i'} cos(x_i', p)``, the max over the labelled B samples ``i'``, else
    -1. Unlabelled samples stay -1. The row arg-max and the column max come from
    one pass over tiles of the similarity matrix; it is never formed whole.

    Args:
        x_b: ``[N_b, D]`` features of modality B (any family, any float dtype).
        labels_b: ``[N_b]`` integer labels of B, -1 for noise (only ``!= -1`` matters).
        protos_a: ``[C_a, D]`` prototypes (cluster centres) of modality A.
        ratio: r >= 0 (docs/design.md: 0.5).
        backend: ``"auto"``, ``"torch"``, ``"native"`` or ``"triton"``.

    Returns:
        ``[N_b]`` int64 labels in ``0..C_a-1`` or -1, in the family of ``x_b``.

    Raises:
        ValueError: features not 2-D, of different widths or devices, NaN/Inf
            rows; ``labels_b`` of the wrong length or below -1; ``ratio`` < 0.
        TypeError: non-integer ``labels_b``.
        hilcore.BackendUnavailable: ``backend`` named explicitly cannot run here (the message says why).

    Example:
        >>> import numpy as np, hilcore
        >>> xb = np.array([[1, 0], [0.9, 0.1], [0, 1], [1, 1]], dtype=np.float32)
        >>> protos = np.array([[1, 0], [0, 1]], dtype=np.float32)
        >>> hilcore.brst(xb, np.array([0, 0, 1, -1]), protos).tolist()
        [0, 0, 1, -1]
    """
    xb, fam = _arrays.features(x_b, "x_b")
    pa = _arrays.features_like(protos_a, xb, "protos_a", "x_b")
    lab = cluster_labels(labels_b, xb.shape[0], xb.device, "labels_b")
    ratio = _arrays.nonneg_float(ratio, "ratio")
    impl = _dispatch.resolve("brst", backend, xb.device)
    return _arrays.to_family(brst_tensors(xb, lab, pa, ratio, impl), fam)


@dataclass
class MatchResult:
    """Outcome of :func:`bidirectional_match` (arrays in the family of ``x_rgb``).

    Attributes:
        labels_rgb: ``[N_rgb]`` int64 labels in the shared space, -1 for noise/rejected.
        labels_ir: ``[N_ir]`` int64 labels in the shared space.
        pairs: ``[P, 2]`` int64 ``(rgb cluster, ir cluster)`` correspondences (original ids).
        unmatched_rgb: int64 RGB cluster ids (original) in no pair.
        unmatched_ir: int64 IR cluster ids (original) in no pair.
        n_shared: number of shared labels (``max(label) + 1`` of the shared space).
    """

    labels_rgb: Any
    labels_ir: Any
    pairs: Any
    unmatched_rgb: Any
    unmatched_ir: Any
    n_shared: int


def _majority(src: torch.Tensor, new: torch.Tensor, n_src: int, n_dst: int) -> torch.Tensor:
    """f [n_src] int64: for each source cluster the destination label most of its accepted
    samples took (ties: lower id), -1 when none was accepted."""
    dev = src.device
    f = torch.full((n_src,), -1, dtype=torch.int64, device=dev)
    n = src.numel()
    if n == 0 or n_src == 0 or n_dst == 0:
        return f
    # fixed-size tensors only (no host sync): sort the (a, b) keys of the accepted samples, count each run
    # of equal keys, and keep per a the run with the largest count, ties to the lower b
    big = n_src * n_dst  # sorts after every real key
    key = torch.sort(torch.where((src >= 0) & (new >= 0), src * n_dst + new, big)).values
    start = torch.ones(n, dtype=torch.bool, device=dev)
    start[1:] = key[1:] != key[:-1]
    run = torch.cumsum(start, 0) - 1
    counts = torch.zeros(n, dtype=torch.int64, device=dev).scatter_add_(0, run, torch.ones_like(run))
    run_key = torch.full((n,), big, dtype=torch.int64, device=dev).scatter_(0, run, key)  # a run's keys are equal
    valid = run_key < big
    b = run_key % n_dst
    score = torch.where(valid, counts * n_dst + (n_dst - 1 - b), -1)  # count first, then the lower b
    best = torch.full((n_src,), -1, dtype=torch.int64, device=dev)
    best.scatter_reduce_(0, torch.where(valid, run_key // n_dst, 0), score, reduce="amax")
    return torch.where(best >= 0, n_dst - 1 - best % n_dst, f)


def _received(new: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(new[new >= 0], minlength=n) > 0


def bidirectional_match(x_rgb, labels_rgb, x_ir, labels_ir, ratio: float = 0.5, mode: str = "rgb_to_ir", *,
                        backend: str = "auto") -> MatchResult:
    """Cross-modal matching with BRST: one shared label space over RGB and IR.

    Prototypes are :func:`hilcore.cluster_centers` of each modality. For a
    source cluster ``a``, ``f(a)`` is the destination cluster most of its
    accepted samples went to (ties: lower id; undefined when none was accepted).

    - ``"rgb_to_ir"``: shared space = IR cluster ids. IR labels unchanged; RGB
      labels = ``brst(x_rgb, labels_rgb, centres_ir)``. ``pairs`` = ``(a,
      f(a))`` for every RGB cluster with an accepted sample; ``unmatched_rgb``
      = RGB clusters with none; ``unmatched_ir`` = IR clusters that received no
      RGB sample; ``n_shared`` = C_ir.
    - ``"ir_to_rgb"``: the mirror image (shared space = RGB ids; ``pairs`` =
      ``(g(b), b)`` sorted by RGB id).
    - ``"both"``: ``f`` from RGB->IR, ``g`` from IR->RGB; ``pairs`` = ``{(a, b):
      f(a) = b and g(b) = a}`` ordered by ``a``. Shared ids: pair ``k`` gets
      ``k``; then every unmatched RGB cluster (ascending id) its own new id; then
      every unmatched IR cluster. Each sample keeps its own cluster's shared id
      (noise stays -1); every cluster is matched or listed as unmatched.

    Args:
        x_rgb, x_ir: ``[N_rgb, D]``, ``[N_ir, D]`` features (same D, same device).
        labels_rgb, labels_ir: int labels ``0..C-1`` (contiguous), -1 for noise;
            each modality needs at least one cluster.
        ratio: BRST ratio r >= 0.
        mode: ``"rgb_to_ir"``, ``"ir_to_rgb"`` or ``"both"``.
        backend: as :func:`brst`; the prototypes are the same backend's cluster centres.

    Returns:
        :class:`MatchResult`.

    Raises:
        ValueError: as :func:`brst`; a modality whose labels are all noise or
            not contiguous; an unknown ``mode``.
        hilcore.BackendUnavailable: ``backend`` named explicitly cannot run here (the message says why).

    Example:
        >>> import numpy as np, hilcore
        >>> x = np.array([[1, 0], [1, .1], [0, 1], [.1, 1]], dtype=np.float32)
        >>> r = hilcore.bidirectional_match(x, np.array([0, 0, 1, 1]), x[::-1].copy(),
        ...                                 np.array([0, 0, 1, 1]), mode="both")
        >>> r.pairs.tolist(), r.labels_rgb.tolist(), r.labels_ir.tolist()
        ([[0, 1], [1, 0]], [0, 0, 1, 1], [1, 1, 0, 0])
    """
    xr, fam = _arrays.features(x_rgb, "x_rgb")
    xi = _arrays.features_like(x_ir, xr, "x_ir", "x_rgb")
    lr, c_rgb = checked_clusters(labels_rgb, xr.shape[0], xr.device, "labels_rgb")  # one sync each
    li, c_ir = checked_clusters(labels_ir, xi.shape[0], xi.device, "labels_ir")
    ratio = _arrays.nonneg_float(ratio, "ratio")
    if mode not in ("rgb_to_ir", "ir_to_rgb", "both"):
        raise ValueError(f"mode: expected 'rgb_to_ir', 'ir_to_rgb' or 'both', got {mode!r}")
    impl = _dispatch.resolve("bidirectional_match", backend, xr.device)
    out = match_tensors(xr, lr, c_rgb, xi, li, c_ir, ratio, mode, impl)
    t = [_arrays.to_family(a, fam) for a in out[:5]]
    return MatchResult(*t, n_shared=int(out[5]))


def match_tensors(xr: torch.Tensor, lr: torch.Tensor, c_rgb: int, xi: torch.Tensor, li: torch.Tensor, c_ir: int,
                  ratio: float, mode: str, impl: _dispatch.Impl, centres: dict | None = None):
    """Internal entry of :func:`bidirectional_match` on validated input (normalised float32 features, contiguous
    int64 labels with ``c_rgb`` / ``c_ir`` clusters, ``impl`` the resolved ``bidirectional_match``): the
    torch tensors ``(labels_rgb, labels_ir, pairs, unmatched_rgb, unmatched_ir)`` and ``n_shared``.
    ``centres``: ``{"rgb": ..., "ir": ...}`` the result of ``impl``'s ``centers`` part on these very
    features and labels when the caller has it (not computed again)."""
    b = impl.part("brst")

    def cen(x, lab, c):  # prototypes: L2-normalised cluster centres (cosine on both sides)
        if centres is not None:
            return torch.nn.functional.normalize(centres["rgb" if x is xr else "ir"], dim=1)
        return torch.nn.functional.normalize(impl.part("centers")(x, lab, c), dim=1)
    dev = xr.device
    ar_rgb = torch.arange(c_rgb, device=dev)
    ar_ir = torch.arange(c_ir, device=dev)

    if mode == "rgb_to_ir":
        new_rgb = brst_tensors(xr, lr, cen(xi, li, c_ir), ratio, b)
        f = _majority(lr, new_rgb, c_rgb, c_ir)
        has = f >= 0
        pairs = torch.stack([ar_rgb[has], f[has]], 1)
        out = (new_rgb, li.clone(), pairs, ar_rgb[~has], ar_ir[~_received(new_rgb, c_ir)], c_ir)
    elif mode == "ir_to_rgb":
        new_ir = brst_tensors(xi, li, cen(xr, lr, c_rgb), ratio, b)
        g = _majority(li, new_ir, c_ir, c_rgb)
        has = g >= 0
        pairs = torch.stack([g[has], ar_ir[has]], 1)
        pairs = pairs[torch.sort(pairs[:, 0], stable=True).indices]
        out = (lr.clone(), new_ir, pairs, ar_rgb[~_received(new_ir, c_rgb)], ar_ir[~has], c_rgb)
    else:
        new_rgb = brst_tensors(xr, lr, cen(xi, li, c_ir), ratio, b)
        new_ir = brst_tensors(xi, li, cen(xr, lr, c_rgb), ratio, b)
        f = _majority(lr, new_rgb, c_rgb, c_ir)
        g = _majority(li, new_ir, c_ir, c_rgb)
        mutual = (f >= 0) & (g[f.clamp(min=0)] == ar_rgb)
        pairs = torch.stack([ar_rgb[mutual], f[mutual]], 1)
        p = pairs.shape[0]
        matched_ir = torch.zeros(c_ir, dtype=torch.bool, device=dev)
        matched_ir[pairs[:, 1]] = True
        un_rgb, un_ir = ar_rgb[~mutual], ar_ir[~matched_ir]
        map_rgb = torch.empty(c_rgb, dtype=torch.int64, device=dev)
        map_ir = torch.empty(c_ir, dtype=torch.int64, device=dev)
        map_rgb[pairs[:, 0]] = torch.arange(p, device=dev)
        map_ir[pairs[:, 1]] = torch.arange(p, device=dev)
        map_rgb[un_rgb] = p + torch.arange(un_rgb.numel(), device=dev)
        map_ir[un_ir] = p + un_rgb.numel() + torch.arange(un_ir.numel(), device=dev)
        shared_rgb = torch.where(lr >= 0, map_rgb[lr.clamp(min=0)], lr)
        shared_ir = torch.where(li >= 0, map_ir[li.clamp(min=0)], li)
        out = (shared_rgb, shared_ir, pairs, un_rgb, un_ir, p + un_rgb.numel() + un_ir.numel())
    return out
