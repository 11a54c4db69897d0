"""Re-identification metrics with the published SYSU-MM01 and RegDB protocols.

Both metric functions take a query x gallery distance matrix (smaller is more
similar) and identity/camera labels, rank every gallery image per query with a
stable sort (ties keep the gallery order), and return ``(cmc, mAP, mINP)``:

* ``cmc``: ``[max_rank]`` float64 NumPy array, ``cmc[k]`` = share of queries
  whose first correct match is within the top ``k + 1``;
* ``mAP``: mean average precision over every kept gallery image;
* ``mINP``: mean inverse negative penalty, per query
  ``(number of matches) / (1-based rank of the hardest match)``.

Averages run over the queries that have at least one match among the kept
gallery images. Ranking runs on the distance matrix's device (a CUDA tensor is
ranked on the GPU), in query blocks so memory stays bounded.

SYSU-MM01 (docs/design.md, "Evaluation protocols"): queries are the IR test
images (cameras 3 and 6), the gallery one random RGB image per test identity
and camera (:func:`sysu_gallery`); gallery images with the query's identity and
camera are dropped, and for a query of camera 3 every gallery image of camera 2
too. The CMC ranks distinct gallery identities (the first occurrence of each
identity in the ranking), as the dataset authors' code does. RegDB: no camera
filtering, standard CMC over all gallery images, 10 trials from the released
index files (:func:`regdb_trial`), both directions.

Example:
    >>> import numpy as np, hilcore.eval as ev
    >>> d = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])
    >>> cmc, mAP, mINP = ev.regdb_metrics(d, [0, 1], [0, 1, 0], max_rank=3)
    >>> cmc.tolist(), round(mAP, 4), round(mINP, 4)
    ([1.0, 1.0, 1.0], 1.0, 1.0)
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from . import _arrays

SYSU_RGB_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}

# elements per [block, G] working tensor; a handful of them are alive at once
_BLOCK_ELEMS = 1 << 22

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _labels(a, name: str, n: int, dim_name: str, device: torch.device) -> torch.Tensor:
    return _arrays.int_vector(a, name, n, device, what="integer labels", noun="labels", per=f"{dim_name} of distmat")


def _distmat(distmat) -> torch.Tensor:
    d, _ = _arrays.as_tensor(distmat, "distmat")
    if d.dim() != 2:
        raise ValueError(f"distmat: expected a 2-D array [num_query, num_gallery], got shape {tuple(d.shape)}")
    if d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"distmat: expected at least one query and one gallery image, got shape {tuple(d.shape)}")
    if d.dtype == torch.bool:
        raise TypeError("distmat: expected a numeric dtype, got bool")
    if d.dtype in (torch.float16, torch.bfloat16):
        d = d.float()  # exact widening; sort support for half types varies by device
    elif d.dtype not in _FLOAT_DTYPES:
        d = d.to(torch.float64)
    if not bool(torch.isfinite(d).all()):
        raise ValueError("distmat: contains NaN or Inf")
    return d


def _rank_metrics(d, q_pids, g_pids, q_cams, g_cams, max_rank: int, sysu: bool):
    nq, ng = d.shape
    dev = d.device
    # contiguous identity index for the distinct-identity CMC
    g_uniq, g_idx = torch.unique(g_pids, return_inverse=True)
    n_uniq = g_uniq.shape[0]
    q_idx = torch.searchsorted(g_uniq, q_pids).clamp_(max=n_uniq - 1)
    pos = torch.arange(ng, device=dev)

    hist = torch.zeros(max_rank + 1, dtype=torch.int64, device=dev)  # first-match ranks, last bin = beyond
    ap_sum = torch.zeros((), dtype=torch.float64, device=dev)
    inp_sum = torch.zeros((), dtype=torch.float64, device=dev)
    n_valid = torch.zeros((), dtype=torch.int64, device=dev)

    block = max(1, _BLOCK_ELEMS // ng)
    for s in range(0, nq, block):
        e = min(nq, s + block)
        order = torch.sort(d[s:e], dim=1, stable=True).indices            # [b, G]
        gp = g_pids[order]
        match = gp == q_pids[s:e, None]
        if sysu:
            gc = g_cams[order]
            qc = q_cams[s:e, None]
            keep = ~(match & (gc == qc)) & ~((qc == 3) & (gc == 2))
        else:
            keep = torch.ones_like(match)
        hit = match & keep
        n_hit = hit.sum(1)
        valid = n_hit > 0
        if not bool(valid.any()):
            continue
        kept_rank = keep.cumsum(1)                                          # 1-based rank among kept images
        hit_count = hit.cumsum(1)
        prec = torch.where(hit, hit_count.double() / kept_rank.clamp(min=1).double(), 0.0)
        ap = prec.sum(1) / n_hit.clamp(min=1).double()
        hardest = torch.where(hit, kept_rank, 0).amax(1)                    # rank of the last match
        inp = n_hit.double() / hardest.clamp(min=1).double()

        if sysu:
            # first kept position of every gallery identity, then count identities ahead of the query's
            first = torch.full((e - s, n_uniq), ng, dtype=torch.int64, device=dev)
            first.scatter_reduce_(1, g_idx[order], torch.where(keep, pos, ng), reduce="amin")
            mine = first.gather(1, q_idx[s:e, None])
            r = (first < mine).sum(1)
        else:
            r = torch.where(hit, kept_rank, ng + 1).amin(1) - 1             # kept images before the first match
        r = r[valid].clamp(max=max_rank)
        hist += torch.bincount(r, minlength=max_rank + 1)
        ap_sum += ap[valid].sum()
        inp_sum += inp[valid].sum()
        n_valid += valid.sum()

    nv = int(n_valid)
    if nv == 0:
        raise ValueError("no valid query: no query has a matching identity among the kept gallery images "
                         "(check q_pids/g_pids and, for SYSU-MM01, the camera labels)")
    cmc = (hist[:max_rank].cumsum(0).double() / nv).cpu().numpy()
    return cmc, float(ap_sum) / nv, float(inp_sum) / nv


def sysu_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20):
    """CMC, mAP and mINP under the SYSU-MM01 protocol.

    Args:
        distmat: ``[Q, G]`` distances (NumPy or torch, CPU or CUDA); ranking
            runs on its device.
        q_pids, g_pids: ``[Q]`` / ``[G]`` integer identities.
        q_camids, g_camids: ``[Q]`` / ``[G]`` integer cameras (1..6).
        max_rank: length of the returned CMC curve.

    Returns:
        ``(cmc, mAP, mINP)``: ``[max_rank]`` float64 NumPy array and two floats
        in ``[0, 1]``. For each query, gallery images of the same identity and
        camera are dropped, and camera 2 is dropped for a camera-3 query; the
        CMC ranks distinct identities (first occurrence of each in the ranking);
        mAP/mINP use every kept image; queries with no kept match are skipped.

    Example:
        >>> import numpy as np, hilcore.eval as ev
        >>> d = np.array([[0.1, 0.2, 0.3]])     # one camera-3 query
        >>> cmc, mAP, mINP = ev.sysu_metrics(d, [7], [7, 5, 7], [3], [2, 1, 4], max_rank=2)
        >>> cmc.tolist(), mAP                    # camera 2 is dropped: ranking is 5, 7
        ([0.0, 1.0], 0.5)
    """
    d = _distmat(distmat)
    max_rank = _arrays.positive_int(max_rank, "max_rank")
    nq, ng = d.shape
    qp = _labels(q_pids, "q_pids", nq, "rows", d.device)
    gp = _labels(g_pids, "g_pids", ng, "columns", d.device)
    qc = _labels(q_camids, "q_camids", nq, "rows", d.device)
    gc = _labels(g_camids, "g_camids", ng, "columns", d.device)
    return _rank_metrics(d, qp, gp, qc, gc, max_rank, sysu=True)


def regdb_metrics(distmat, q_pids, g_pids, max_rank: int = 20):
    """CMC, mAP and mINP under the RegDB protocol (no camera filtering, standard CMC).

    Args:
        distmat: ``[Q, G]`` distances (NumPy or torch, CPU or CUDA).
        q_pids, g_pids: ``[Q]`` / ``[G]`` integer identities.
        max_rank: length of the returned CMC curve.

    Returns:
        ``(cmc, mAP, mINP)`` as in :func:`sysu_metrics`, over all gallery images;
        queries with no match in the gallery are skipped.
    """
    d = _distmat(distmat)
    max_rank = _arrays.positive_int(max_rank, "max_rank")
    nq, ng = d.shape
    qp = _labels(q_pids, "q_pids", nq, "rows", d.device)
    gp = _labels(g_pids, "g_pids", ng, "columns", d.device)
    return _rank_metrics(d, qp, gp, None, None, max_rank, sysu=False)


def sysu_gallery(g_paths: Sequence[str], g_pids, g_camids, mode: str = "all", trial: int = 0) -> np.ndarray:
    """Indices of one SYSU-MM01 gallery draw: one random RGB image per (identity, camera).

    Identities are visited in increasing order and, for each, the cameras
    1, 2, 4, 5 (``mode="all"``) or 1, 2 (``mode="indoor"``) in that order; from
    each (identity, camera) that has images, one is drawn uniformly among its
    images sorted by path, with Python's ``random.Random(trial)``. This is the
    order and generator of the widely used SYSU-MM01 evaluation code
    (``random.seed(trial)``; ``random.choice``), so trial ``t`` picks the same
    images as the published numbers' galleries.

    Args:
        g_paths: ``[G]`` image paths of the RGB test images.
        g_pids, g_camids: ``[G]`` integer identities and cameras.
        mode: ``"all"`` or ``"indoor"``.
        trial: seed of the draw (the published protocol averages trials 0..9).

    Returns:
        int64 NumPy array of indices into ``g_paths``, in draw order.

    Example:
        >>> paths = ["cam1/0001/a.jpg", "cam1/0001/b.jpg", "cam4/0001/a.jpg", "cam2/0002/a.jpg"]
        >>> sysu_gallery(paths, [1, 1, 1, 2], [1, 1, 4, 2], mode="indoor", trial=0).tolist()
        [1, 3]
    """
    if mode not in SYSU_RGB_CAMERAS:
        raise ValueError(f"mode: expected 'all' or 'indoor', got {mode!r}")
    trial = _arrays.positive_int(trial, "trial", minimum=0)
    paths = [str(p) for p in g_paths]
    pids = np.asarray(g_pids)
    cams = np.asarray(g_camids)
    for name, a in (("g_pids", pids), ("g_camids", cams)):
        if a.ndim != 1 or a.shape[0] != len(paths):
            raise ValueError(f"{name}: expected {len(paths)} labels (one per path), got shape {a.shape}")
        if len(paths) and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name}: expected integer labels, got dtype {a.dtype}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, c) in enumerate(zip(pids.tolist(), cams.tolist())):
        groups.setdefault((p, c), []).append(i)
    rng = random.Random(trial)
    out = []
    for pid in sorted({p for p, _ in groups}):
        for cam in SYSU_RGB_CAMERAS[mode]:
            members = groups.get((pid, cam))
            if members:
                members = sorted(members, key=lambda i: paths[i])
                out.append(rng.choice(members))
    return np.asarray(out, dtype=np.int64)


def regdb_trial(root, trial: int):
    """The RegDB test split of one trial from the released index files.

    Returns ``(visible, thermal)``: lists of :class:`hilcore.splits.Sample`
    read from ``idx/test_visible_{trial}.txt`` and ``idx/test_thermal_{trial}.txt``.
    Visible-to-thermal uses ``visible`` as queries and ``thermal`` as gallery;
    thermal-to-visible the reverse.
    """
    from .splits import load_regdb

    data = load_regdb(root, trial)
    return data.test_visible, data.test_thermal
