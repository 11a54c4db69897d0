"""Slow reference for hilcore.eval, one query at a time, straight from docs/design.md "Evaluation protocols".

Ranking: gallery images sorted by (distance, gallery index), i.e. ties keep
the gallery order. Returns the same ``(cmc, mAP, mINP)`` as hilcore.eval.
"""
from __future__ import annotations

import random

import numpy as np


def _one_query(dist_row, q_pid, q_cam, g_pids, g_cams, sysu: bool):
    """(rank of the first correct entry for the CMC, AP, INP) or None when nothing matches."""
    order = sorted(range(len(dist_row)), key=lambda j: (dist_row[j], j))
    kept = []
    for j in order:
        if sysu and g_pids[j] == q_pid and g_cams[j] == q_cam:
            continue  # same identity seen by the same camera
        if sysu and q_cam == 3 and g_cams[j] == 2:
            continue  # camera 2 is removed for camera-3 queries
        kept.append(j)
    is_match = [g_pids[j] == q_pid for j in kept]
    n_match = sum(is_match)
    if n_match == 0:
        return None

    if sysu:
        # CMC over distinct identities: keep the first occurrence of each identity
        ids_in_order = []
        for j in kept:
            if g_pids[j] not in ids_in_order:
                ids_in_order.append(g_pids[j])
        first_rank = ids_in_order.index(q_pid)
    else:
        first_rank = is_match.index(True)

    found = 0
    precision_sum = 0.0
    hardest = 0
    for rank, m in enumerate(is_match, start=1):
        if m:
            found += 1
            precision_sum += found / rank
            hardest = rank
    ap = precision_sum / n_match
    inp = n_match / hardest
    return first_rank, ap, inp


def _metrics(distmat, q_pids, g_pids, q_cams, g_cams, max_rank, sysu):
    distmat = np.asarray(distmat, dtype=np.float64)
    q_pids = [int(v) for v in np.asarray(q_pids)]
    g_pids = [int(v) for v in np.asarray(g_pids)]
    q_cams = [int(v) for v in np.asarray(q_cams)] if q_cams is not None else [0] * len(q_pids)
    g_cams = [int(v) for v in np.asarray(g_cams)] if g_cams is not None else [0] * len(g_pids)
    cmc = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(distmat.shape[0]):
        res = _one_query(list(distmat[i]), q_pids[i], q_cams[i], g_pids, g_cams, sysu)
        if res is None:
            continue
        first_rank, ap, inp = res
        for k in range(max_rank):
            if first_rank <= k:
                cmc[k] += 1
        aps.append(ap)
        inps.append(inp)
    if not aps:
        raise ValueError("no valid query")
    n = len(aps)
    return cmc / n, sum(aps) / n, sum(inps) / n


def sysu_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    return _metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, sysu=True)


def regdb_metrics(distmat, q_pids, g_pids, max_rank=20):
    return _metrics(distmat, q_pids, g_pids, None, None, max_rank, sysu=False)


def sysu_gallery(g_paths, g_pids, g_camids, mode="all", trial=0):
    """Loop of the SYSU-MM01 evaluation code: seed with the trial, then for each
    identity (ascending) and each RGB camera of the mode (in order), pick one of
    that folder's images (sorted) with random.choice."""
    cams = {"all": [1, 2, 4, 5], "indoor": [1, 2]}[mode]
    random.seed(trial)
    picked_paths = []
    for pid in sorted(set(int(p) for p in g_pids)):
        for cam in cams:
            files = sorted(str(g_paths[i]) for i in range(len(g_paths))
                           if int(g_pids[i]) == pid and int(g_camids[i]) == cam)
            if files:
                picked_paths.append(random.choice(files))
    where = {str(p): i for i, p in enumerate(g_paths)}
    return np.array([where[p] for p in picked_paths], dtype=np.int64)
