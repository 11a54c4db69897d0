"""Benchmark: the cost of making the native fp32 kNN path's answer path-independent.

The fp32 path now keeps ``k + extra`` GEMM candidates per row, rescores them
with the fixed-order float32 dot (``knn_simd::Ops::dot_f32``), certifies each
row and completes the uncertified ones exactly (hilcore/backend/native/knn.py).
This times (wall and, the calls being single-threaded, the calling thread's
CPU time), in one process and interleaved (before, after, before, after, ...):

- ``before``: the GEMM tiles merged into k-lists alone (what the fp32 path
  returned until now: GEMM values, tile-dependent at float32 near-ties);
- ``after``: the whole fp32 path (``precision="fp32"``).

Defaults: one thread, k = 30, ReID-like features (``hilcore.synthetic``),
(N, D) = (3000, 256) and (2000, 2048), medians of 5.

    python benchmarks/bench_knn_fp32_exact.py [--threads 1] [--repeats 5] [--out path.json]

Results: ``benchmarks/results/knn_fp32_exact_<cpu-model>.json`` (every repeat kept). On a
shared machine the timings are noisy; the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_cluster import RESULTS, cpu_model, slug  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["3000x256", "2000x2048"], help="NxD")
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from hilcore import _arrays
    from hilcore.backend.native import knn as nk
    from hilcore.synthetic import reid_features

    torch.set_num_threads(args.threads)
    rows = []
    load0 = os.getloadavg()
    for shape in args.shapes:
        n, d = (int(v) for v in shape.split("x"))
        x0, _, _ = reid_features(max(2, n // 10), 10, dim=d, seed=0)  # n / 10 identities of 10 rows
        x = _arrays.features(torch.as_tensor(x0), "x")[0]
        before, after, before_cpu, after_cpu = [], [], [], []
        st: dict = {}
        nk.knn(x, args.k, precision="fp32", info=st)  # warm-up (and the stats of one run)
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.thread_time()
            bi, bs = nk._fp32_candidates(x, args.k, True, x, nk.TILE)
            before.append(time.perf_counter() - t)
            before_cpu.append(time.thread_time() - c)
            t, c = time.perf_counter(), time.thread_time()
            ai, as_ = nk.knn(x, args.k, precision="fp32")
            after.append(time.perf_counter() - t)
            after_cpu.append(time.thread_time() - c)
        b, a = statistics.median(before), statistics.median(after)
        bc, ac = statistics.median(before_cpu), statistics.median(after_cpu)
        rows.append({"n": n, "d": d, "k": args.k, "before_s": before, "after_s": after, "before_median_s": b,
                     "after_median_s": a, "overhead": a / b - 1.0,
                     # with one thread every kernel runs on the calling thread: its CPU time is the work,
                     # without the waits for a core of a shared machine
                     "before_cpu_s": before_cpu, "after_cpu_s": after_cpu, "before_cpu_median_s": bc,
                     "after_cpu_median_s": ac, "overhead_cpu": ac / bc - 1.0,
                     "candidates": st["candidates"], "uncertified_rows": st["uncertified_rows"],
                     "stage_times_s": st["timings"],
                     "index_differences_vs_before": int((ai != bi).any(dim=1).sum()),
                     "max_abs_sim_change": float((as_ - bs).abs().max())})
        print(f"N={n} D={d} k={args.k}: before {b * 1e3:.1f} ms, after {a * 1e3:.1f} ms "
              f"({100 * (a / b - 1):+.1f}%); CPU time {bc * 1e3:.1f} -> {ac * 1e3:.1f} ms "
              f"({100 * (ac / bc - 1):+.1f}%), uncertified rows {st['uncertified_rows']}, "
              f"rows whose list changed {rows[-1]['index_differences_vs_before']}", flush=True)
    out = {"benchmark": "knn_fp32_exact", "cpu_model": cpu_model(), "threads": args.threads,
           "repeats": args.repeats, "loadavg_before": load0, "loadavg_after": os.getloadavg(), "rows": rows}
    path = args.out or RESULTS / f"knn_fp32_exact_{slug(cpu_model())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
