"""How many rows would the Triton kNN's certificate leave to the fp32 fallback? Emulated on the CPU.

The GPU path (``hilcore/backend/triton/knn.py``) ranks ``KC`` candidates per row by the
float16 tensor-core value ``a_ij`` of ``p_i . p_j`` (``p = fl16(x)``: exact
products, float32 accumulation), rescores them in float32 and certifies a row
iff its k-th rescored value exceeds ``fl32(c_i + B_i)`` (``c_i`` the smallest
candidate value, ``B_i`` from :func:`hilcore.backend.triton.knn.bounds`, the same code
the launcher runs). Here the candidate values are the float32 product of the
float16-rounded rows on the CPU (an accumulation order the bound covers like
the tensor core's), the rescoring a float32 sum, and the bound the launcher's
own function: the share of rows the GPU would send to the fp32 fallback, on
ReID-like features of SYSU-MM01's sizes (:mod:`hilcore.synthetic`), k = 30.

It also counts the candidates the rescoring kernel reads (those at or above
``a_(k) - 2 B_i``, the rest provably cannot enter the top k) and the merge rounds
of the candidate kernel (``_keep_best_f``: per column tile, the most entries of
one row of the 128-row tile at or above its running KC-th value), which the cost
model of ``benchmarks/knn_model.py`` uses. One JSON row per (modality, D), written after
each row. Emulated, not measured on a GPU; the machine is named.

    python benchmarks/bench_knn_certificate.py --json benchmarks/results/knn_certificate_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hilcore._precision import ieee_fp32  # noqa: E402
from hilcore.synthetic import reid_features, sysu_sizes  # noqa: E402

from benchmarks.bench_cluster import cpu_model  # noqa: E402


def _merge_rounds(a: torch.Tensor, kc: int, bm: int, bn: int) -> torch.Tensor:
    """Rounds of ``_keep_best_f`` at each column tile of one sweep over all columns, per row tile of ``bm``
    rows of ``a``: min(KC, the most entries of one row at or above its running KC-th value). ``[row tiles,
    column tiles]``. A column split of the launcher sweeps a contiguous range of the (shuffled) columns, so
    its rounds follow the first tiles of this curve (the cost model sums them per split)."""
    tiles = triton_cdiv(a.shape[0], bm)
    starts = list(range(0, a.shape[1], bn))
    out = torch.zeros((tiles, len(starts)), dtype=torch.int64)
    best = torch.full((a.shape[0], kc), float("-inf"))
    pad = torch.zeros(tiles * bm, dtype=torch.int64)
    for t, t0 in enumerate(starts):
        tile = a[:, t0:t0 + bn]
        beats = (tile >= best.min(dim=1).values[:, None]).sum(dim=1)
        pad.zero_()
        pad[:beats.numel()] = beats
        out[:, t] = pad.view(tiles, bm).max(dim=1).values.clamp(max=kc)
        best = torch.topk(torch.cat([best, tile], dim=1), kc, dim=1).values
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def emulate(x: torch.Tensor, k: int, block: int = 512, round_sample: int = 4) -> dict:
    """Certificate outcome of every row of a self-search of the normalised float32 rows ``x``, and the merge
    rounds of the candidate kernel (sm_90 tiles) along a full column sweep, on every ``round_sample``-th
    block of rows."""
    import hilcore.backend.triton.knn as tknn  # the launcher's own candidates(), blocks, splits and bounds()

    n, d = x.shape
    kc = tknn.candidates(k)
    bm, bn, _, _ = tknn._tc_blocks(kc, d, False, 9)
    assert block % bm == 0
    rounds = []
    p = x.to(torch.float16).to(torch.float32)
    e = x - p
    sq = torch.stack([(x * x).sum(1), (p * p).sum(1), (e * e).sum(1)])  # float32 sums, as _knn_prep_kernel
    norms = tknn._norms_up(sq, d)
    bound = tknn.bounds(d, norms, norms)  # float32, rounded up: B_i of every row
    cert = torch.zeros(n, dtype=torch.bool)
    reads = torch.zeros(n, dtype=torch.int64)
    margin = torch.zeros(n, dtype=torch.float32)
    with ieee_fp32():
        for r0 in range(0, n, block):
            r1 = min(n, r0 + block)
            rows = torch.arange(r0, r1)
            a = p[r0:r1] @ p.t()  # exact float16 products, float32 sums
            a[rows - r0, rows] = float("inf")  # the row itself first
            if (r0 // block) % round_sample == 0:  # the rounds on every round_sample-th block of rows
                rounds.append(_merge_rounds(a, kc, bm, bn))
            av, ac = torch.topk(a, kc, dim=1)
            c = av[:, -1]
            ex = (x[r0:r1, None, :] * x[ac]).sum(-1)  # float32 rescoring of the candidates
            key = torch.where(ac == rows[:, None], torch.full_like(ex, float("inf")), ex)
            kth = torch.topk(key, k, dim=1).values[:, -1]
            kth = torch.where(torch.isinf(kth), ex.max(dim=1).values, kth)
            b = bound[r0:r1]
            thr = (c + b)  # float32 addition, as the kernel rounds it
            cert[r0:r1] = kth > thr
            margin[r0:r1] = kth - thr
            a_k = av[:, k - 1].double()
            floor = a_k - 2.0 * b.double() - 2.0**-22 * (a_k.abs() + 1.0)
            reads[r0:r1] = (av.double() >= floor[:, None]).sum(1)
    unc = int((~cert).sum())
    curve = torch.cat(rounds).double().mean(dim=0)  # mean rounds at each column tile of a full sweep
    return dict(rows=n, k=k, candidates=kc, block_m=bm, block_n=bn,
                merge_rounds_curve=[round(float(v), 2) for v in curve],
                merge_rounds_per_column_tile=float(curve.mean()), merge_rounds_row_tiles_sampled=sum(
                    r.shape[0] for r in rounds), uncertified_rows=unc, uncertified_fraction=unc / n,
                bound_median=float(bound.median()), bound_max=float(bound.max()),
                certificate_margin_median=float(margin.median()),
                rescored_candidates_mean=float(reads.double().mean()), rescored_candidates_max=int(reads.max()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--dims", type=int, nargs="+", default=[2048, 1536])
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--ids", type=int, default=395, help="identities (SYSU-MM01 training set: 395)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the SYSU sizes (tests: small)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    doc = dict(note="emulated on the CPU, not measured on a GPU: float16-rounded candidates (float32 sums), "
                    "float32 rescoring, the Triton launcher's own bound (hilcore.backend.triton.knn.bounds)",
               machine=f"{cpu_model()}, {os.cpu_count()} CPUs ({platform.node() or 'host'})",
               torch=torch.__version__, seed=args.seed, rows=[])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for d in args.dims:
        for mod in ("rgb", "ir"):
            n = max(args.k + 1, int(sysu_sizes[mod] * args.scale))
            x, _, _ = reid_features(min(args.ids, n), n=n, dim=d, seed=args.seed + (mod == "ir"))
            t = time.perf_counter()
            r = emulate(torch.from_numpy(np.ascontiguousarray(x)), args.k)
            r.update(modality=mod, d=d, seconds=round(time.perf_counter() - t, 1))
            doc["rows"].append(r)
            args.json.write_text(json.dumps(doc, indent=1) + "\n")  # after every row
            print(f"{mod:4} N={n:6} D={d:5} uncertified {r['uncertified_rows']:5} "
                  f"({100 * r['uncertified_fraction']:.3f} %)  B median {r['bound_median']:.2e}  "
                  f"rescored {r['rescored_candidates_mean']:.1f}/{r['candidates']}  "
              f"rounds/tile (one sweep) {r['merge_rounds_per_column_tile']:.2f}  {r['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
