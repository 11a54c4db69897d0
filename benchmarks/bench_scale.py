"""Benchmark: the scale sweep of the clustering step, N = 10^4 ... 10^6 (issue 3).

For each N, ReID-like features (D = 768, :mod:`hilcore.synthetic`, drawn on
the CPU in float32 and moved to the device) are clustered by
``hilcore.jaccard_distance(x, k1, k2, max_distance=eps)`` then
``hilcore.dbscan(d, eps, min_samples)``. Each row gives

- the median total time over the repeats (default 3 for N <= 10^5, 1 above)
  and its split: kNN and the k-reciprocal stages (each measured inside
  ``jaccard_distance``, synchronised, reported through its ``info``; medians)
  and DBSCAN; the kNN's share of the total; the label of what ran;
- peak memory of the pipeline: ``torch.cuda.max_memory_allocated`` (and
  ``max_memory_reserved``) on CUDA, the process's peak RSS (VmHWM, reset
  through /proc/self/clear_refs before the pipeline) on a CPU;
- stored pairs per row of the sparse distance, clusters, noise, and the
  adjusted Rand index against the generating identities (a sanity check);
- the all-pairs product floor: a plain ``torch.mm`` of [N, D] x [D, N] in
  row tiles, measured once at the smallest N (fp32; on CUDA also TF32 and
  bf16) and extrapolated as N^2, and the floor's share of the total (how close
  the whole step is to the product it cannot avoid).

An out-of-memory (``torch.cuda.OutOfMemoryError``, ``MemoryError``) is
recorded as ``inf`` with the reason and the sweep goes on with the next N.
Once ``--budget-s`` seconds are spent, or the next N is predicted to overrun
them (last row's generation time x N and run time x N^2), the larger N are
recorded as skipped. The JSON is rewritten after every row, so a run killed
from outside keeps what it measured.

    python benchmarks/bench_scale.py --device cuda                   # 10^4 ... 10^6, D = 768
    python benchmarks/bench_scale.py --device cpu --sizes 1000 3000 --repeats 1
    python benchmarks/plot.py benchmarks/results/scale_cuda_*.json   # time and memory against N

Results: ``benchmarks/results/scale_<device>_<cpu-or-gpu-model>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# shared with the cluster benchmark: device naming, file slug, machine record, sync
from benchmarks.bench_cluster import (RESULTS, knn_products, machine_info, n_ids_for, slug, sync,  # noqa: E402
                                      time_cluster)

SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
DIM = 768
REPEAT_SPLIT = 100_000  # default repeats: 3 up to this N, 1 above


# ---------------------------------------------------------------------------------------------- memory


def _proc_status_mb(field: str) -> float | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), flags=re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    # allocation failures reported by the extension or by other libraries
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def _free(device: str):
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- floor


class _tf32:
    """Context: fp32 matmuls on CUDA in TF32 (``on``) or IEEE fp32 (``off``); restores the setting."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        import torch

        self.old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.on

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.old


def measure_floor(n: int, dim: int, device: str) -> dict:
    """Best-of time of the all-pairs product [n, dim] x [dim, n] as plain ``torch.mm`` over row tiles.

    The output tile ([tile, n]) is reused, so memory stays O(tile x n) as in a
    blocked kNN; fp32 is IEEE (TF32 off). On CUDA also TF32 and bf16.
    """
    import torch

    cuda = device.startswith("cuda")
    tile = min(n, 8192 if cuda else 1024)
    tries = 5 if cuda else 2
    kinds = (("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False))
    if not cuda:
        kinds = kinds[:1]
    gen = torch.Generator(device="cpu").manual_seed(0)
    out = {"n": n, "dim": dim, "tile_rows": tile, "tries": tries, "s": {}, "gflops": {}}
    for name, dt, tf32 in kinds:
        a = torch.randn(n, dim, generator=gen).to(device=device, dtype=dt)
        bt = a.t()  # [dim, n]: the product of the rows with themselves, as the kNN does
        buf = torch.empty(tile, n, device=device, dtype=dt)
        with _tf32(tf32) if cuda else contextlib.nullcontext():
            torch.mm(a[:tile], bt, out=buf)  # warm-up: library init, kernel selection
            sync(device)
            best = math.inf
            for _ in range(tries):
                sync(device)
                t0 = time.perf_counter()
                for s in range(0, n, tile):
                    e = min(n, s + tile)
                    torch.mm(a[s:e], bt, out=buf[: e - s])
                sync(device)
                best = min(best, time.perf_counter() - t0)
        out["s"][name] = best
        out["gflops"][name] = 2.0 * n * n * dim / best / 1e9
        del a, bt, buf
        _free(device)
    return out


# ---------------------------------------------------------------------------------------------- one N


def _med(v):
    return float(statistics.median(v)) if v else None


def _warm(xt, args, k1: int):
    """Untimed run on a slice whose length is N mod 16 like N's, so compiled kernels specialise alike."""
    import hilcore

    n = xt.shape[0]
    w = n if n <= 512 + 16 else 512 + n % 16
    part = xt[:w]
    d = hilcore.jaccard_distance(part, min(k1, w), args.k2, max_distance=args.eps, backend=args.backend)
    hilcore.dbscan(d, args.eps, args.min_samples, backend=args.dbscan_backend)
    hilcore.knn(part, min(k1, w), backend=args.knn_backend)
    sync(args.device)


def measure(n: int, reps: int, args, row: dict) -> None:
    """Fill ``row`` with the measurements for N = n (raises on out-of-memory; the caller records it)."""
    import torch

    import hilcore
    from hilcore.synthetic import reid_features

    dev = args.device
    cuda = dev.startswith("cuda")
    row["stage"] = "features"
    t = time.perf_counter()
    x, ids, _ = reid_features(row["n_ids"], n=n, dim=args.dim, seed=args.seed)
    row["gen_s"] = time.perf_counter() - t
    row["input_mb"] = x.nbytes / 2**20
    row["stage"] = "transfer"
    xt = torch.from_numpy(x).to(dev) if cuda else torch.from_numpy(x)
    if cuda:
        del x
        sync(dev)
    gc.collect()
    k1 = min(args.k1, n)

    row["stage"] = "warm-up"
    _warm(xt, args, k1)

    row["stage"] = "jaccard+dbscan"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    else:
        row["peak_rss_kind"] = "since reset" if _reset_peak_rss() else "process lifetime"
        row["rss_before_mb"] = _proc_status_mb("VmRSS")
    totals, jacs, dbs, knns, stages = [], [], [], [], []
    labels = nnz = info = None
    for _ in range(reps):
        t_jac, t_db, labels, nnz, info = time_cluster(xt, k1, args.k2, args.eps, args.min_samples, args.backend,
                                                      args.dbscan_backend, dev)
        jacs.append(t_jac)
        dbs.append(t_db)
        totals.append(t_jac + t_db)
        knns.append(info["timings"]["knn"])  # measured inside jaccard_distance, synchronised
        stages.append(info["timings"]["stages"])
    row["backend_label"] = info["backend"]
    if cuda:
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        row["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        row["peak_gpu_above_input_mb"] = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20
    else:
        row["peak_rss_mb"] = _peak_rss_mb()

    del row["stage"]

    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    total, t_knn = _med(totals), _med(knns)
    row.update({
        "status": "ok", "total_s": total, "total_s_all": totals, "jaccard_s_all": jacs, "dbscan_s_all": dbs,
        "knn_s_all": knns, "jaccard_stages_s_all": stages,
        "stages_s": {"knn": t_knn, "jaccard": _med(stages), "dbscan": _med(dbs)},  # each measured
        "knn_share": t_knn / total if total > 0 else None,
        # the work done: the native self-search computes only the tiles on and above the diagonal
        "knn_gflops": 2.0 * knn_products(n, args.knn_backend) * args.dim / t_knn / 1e9 if t_knn > 0 else None,
        "nnz": nnz, "pairs_per_row": nnz / n,
        "clusters": int(labels.max()) + 1 if (labels >= 0).any() else 0, "noise": int((labels < 0).sum()),
    })
    row["noise_share"] = row["noise"] / n
    try:
        from sklearn.metrics import adjusted_rand_score

        row["ari_vs_ids"] = float(adjusted_rand_score(ids, labels))
    except ImportError:
        pass


def add_floor(row: dict, floor: dict | None):
    """The extrapolated product floor at this N and its share of the measured total."""
    if not floor or not floor.get("s"):
        return
    scale = (row["n"] / floor["n"]) ** 2
    row["floor_s"] = {k: v * scale for k, v in floor["s"].items()}
    total = row.get("total_s")
    if total and math.isfinite(total):
        row["floor_share"] = {k: v / total for k, v in row["floor_s"].items()}
        knn = row["stages_s"]["knn"]
        row["knn_over_fp32_floor"] = knn / row["floor_s"]["fp32"] if row["floor_s"].get("fp32") else None


def predict_s(prev: dict | None, n: int, reps: int) -> float | None:
    """Seconds the row for N = n should take, from the last measured row: generation ~ N, runs ~ N^2."""
    if not prev or prev.get("status") != "ok":
        return None
    s = n / prev["n"]
    run = prev["total_s"] + prev["stages_s"]["knn"]  # conservative: counts the kNN twice
    return prev.get("gen_s", 0.0) * s + reps * run * s * s


# ---------------------------------------------------------------------------------------------- driver

_HEADER = (f"{'N':>9} {'reps':>4} {'total s':>9} {'knn s':>8} {'jacc s':>8} {'dbscan s':>8} {'knn %':>6} "
           f"{'floor s':>8} {'floor %':>7} {'peak GiB':>8} {'pairs/row':>9} {'clusters':>8} {'noise':>7} "
           f"{'ARI':>6}  note")


def _f(v, spec=".3f", none="-"):
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def print_row(row: dict):
    st = row.get("stages_s", {})
    peak = row.get("peak_gpu_mb", row.get("peak_rss_mb"))
    fl = row.get("floor_s", {}).get("fp32")
    fs = row.get("floor_share", {}).get("fp32")
    note = row.get("reason", "")
    print(f"{row['n']:>9} {row.get('repeats', '-'):>4} {_f(row.get('total_s')):>9} {_f(st.get('knn')):>8} "
          f"{_f(st.get('jaccard')):>8} {_f(st.get('dbscan')):>8} "
          f"{_f(100 * row['knn_share'] if row.get('knn_share') is not None else None, '.0f'):>6} "
          f"{_f(fl):>8} {_f(100 * fs if fs is not None else None, '.0f'):>7} "
          f"{_f(peak / 1024 if peak is not None and math.isfinite(peak) else peak, '.2f'):>8} "
          f"{_f(row.get('pairs_per_row'), '.1f'):>9} {row.get('clusters', '-'):>8} {row.get('noise', '-'):>7} "
          f"{_f(row.get('ari_vs_ids'), '.3f'):>6}  {row['status']}{': ' + note if note else ''}", flush=True)


def write(result: dict, out: Path):
    """Atomic rewrite of the result file (a ``.tmp`` beside it, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


def default_out(device: str, name: str) -> Path:
    return RESULTS / f"scale_{device.split(':')[0]}_{slug(name)}.json"


def run(args) -> tuple[dict, Path]:
    import torch

    import hilcore
    from hilcore import _dispatch

    t_start = time.perf_counter()
    dev = torch.device(args.device)
    sizes = sorted(set(args.sizes or SIZES))
    jac = _dispatch.resolve("jaccard_distance", args.backend, dev)
    args.backend = jac.backend
    if args.dbscan_backend is None:
        args.dbscan_backend = args.backend if _dispatch.implements("dbscan", args.backend) else "auto"
    args.dbscan_backend = _dispatch.resolve("dbscan", args.dbscan_backend, dev).backend
    args.knn_backend = jac.part("knn").backend
    args.backend_label = jac.label

    info = machine_info(args.device)
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gb"] = props.total_memory / 1e9
        info["gpu_capability"] = f"{props.major}.{props.minor}"
    out = Path(args.out) if args.out else default_out(args.device, info["device_name"])
    params = {"k1": args.k1, "k2": args.k2, "eps": args.eps, "min_samples": args.min_samples, "dim": args.dim,
              "seed": args.seed, "sizes": sizes, "repeats": args.repeats, "budget_s": args.budget_s,
              "predict": args.predict, "backend": args.backend, "dbscan_backend": args.dbscan_backend,
              "knn_backend": args.knn_backend, "backend_label": args.backend_label}
    print(f"# hilcore scale sweep on {info['device_name']} ({args.device}); torch {info['torch']}, "
          f"triton {info['triton']}; jaccard: {args.backend_label}; dbscan: {args.dbscan_backend}; "
          f"D={args.dim} k1={args.k1} k2={args.k2} eps={args.eps} min_samples={args.min_samples}", flush=True)

    result = {"benchmark": "scale", "machine": info, "params": params, "floor": None, "rows": [],
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False, "hilcore": hilcore.__version__}
    floor = None
    if not args.no_floor:
        try:
            floor = measure_floor(sizes[0], args.dim, args.device)
            result["floor"] = floor
            print("# all-pairs product floor at N={} (torch.mm in {}-row tiles, best of {}): {}".format(
                floor["n"], floor["tile_rows"], floor["tries"],
                ", ".join(f"{k} {v * 1e3:.2f} ms ({floor['gflops'][k]:.0f} GFLOP/s)" for k, v in floor["s"].items())),
                flush=True)
        except Exception as e:  # noqa: BLE001 - the floor is informational; the sweep still runs
            result["floor"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"# floor measurement failed: {type(e).__name__}: {e}", flush=True)
        _free(args.device)
    write(result, out)

    print(_HEADER, flush=True)
    prev = None
    stop_reason = None
    for n in sizes:
        reps = args.repeats or (3 if n <= REPEAT_SPLIT else 1)
        row = {"n": n, "dim": args.dim, "n_ids": n_ids_for(n), "repeats": reps}
        elapsed = time.perf_counter() - t_start
        est = predict_s(prev, n, reps) if args.predict else None
        if stop_reason is None:
            if elapsed >= args.budget_s:
                stop_reason = f"time budget of {args.budget_s:.0f} s spent ({elapsed:.0f} s elapsed)"
            elif est is not None and elapsed + est > args.budget_s:
                stop_reason = (f"predicted {est:.0f} s would overrun the budget of {args.budget_s:.0f} s "
                               f"({elapsed:.0f} s elapsed)")
        if stop_reason is not None:
            row.update(status="skipped", reason=stop_reason, total_s=None)
        else:
            if est is not None:
                row["predicted_s"] = est
            t_row = time.perf_counter()
            failure = None
            try:
                measure(n, reps, args, row)
            except Exception as e:  # noqa: BLE001 - recorded per row; the sweep continues
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                failure = (_is_oom(e), f"{type(e).__name__}: {first}", traceback.format_exc(limit=6))
            _free(args.device)  # after the except block: the traceback (and its tensors) is gone
            if failure is not None:
                oom, msg, tb = failure
                row.update(status="oom" if oom else "error", reason=f"in {row.pop('stage', '?')}: {msg}",
                           total_s=math.inf if oom else None)
                if oom:
                    row["peak_memory"] = math.inf
                else:
                    row["traceback"] = tb
            row["row_wall_s"] = time.perf_counter() - t_row
            if row["status"] == "ok":
                add_floor(row, floor)
                prev = row
        result["rows"].append(row)
        result["elapsed_s"] = time.perf_counter() - t_start
        write(result, out)
        print_row(row)

    result["complete"] = True
    result["elapsed_s"] = time.perf_counter() - t_start
    write(result, out)
    for r in result["rows"]:
        if r["status"] == "error":
            print(f"# N={r['n']} failed {r['reason']}\n{r.get('traceback', '')}", flush=True)
    print(f"# wrote {out} ({result['elapsed_s']:.0f} s)", flush=True)
    return result, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", help=f"feature counts (default {' '.join(map(str, SIZES))})")
    p.add_argument("--repeats", type=int, help=f"timed repeats per N, medians (default 3 for N <= {REPEAT_SPLIT}, "
                                               "1 above)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (small N)")
    p.add_argument("--backend", default="auto", help="jaccard_distance backend (default auto)")
    p.add_argument("--dbscan-backend", help="dbscan backend (default: --backend where dbscan has it, else auto)")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="seconds after which larger N are skipped (default 540)")
    p.add_argument("--predict", action=argparse.BooleanOptionalAction, default=True,
                   help="also skip an N whose predicted time overruns the budget (default on)")
    p.add_argument("--no-floor", action="store_true", help="do not measure the torch.mm product floor")
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--min-samples", type=int, default=4)
    p.add_argument("--dim", type=int, default=DIM)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result JSON path (default benchmarks/results/scale_<device>_<model>.json)")
    args = p.parse_args(argv)
    if any(n < 2 for n in (args.sizes or SIZES)):
        p.error("--sizes: expected every N >= 2")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats: expected >= 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available (use --device cpu for small N)")
    result, _ = run(args)
    return 1 if any(r["status"] == "error" for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
