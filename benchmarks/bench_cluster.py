"""Benchmark: hilcore's Jaccard + DBSCAN against the widely used dense baseline.

For each N (default 2,060 = RegDB, 11,909 and 22,258 = SYSU-MM01 IR and RGB),
ReID-like features (D = 1536, :mod:`hilcore.synthetic`) are clustered by

- hilcore: ``jaccard_distance(x, k1, k2, max_distance=eps)`` then ``dbscan``;
- the baseline (benchmarks/baseline.py): flat kNN, per-row NumPy loops over
  dense N x N matrices, scikit-learn DBSCAN on the dense matrix.

Each (implementation, N) runs in a fresh subprocess, so the peak RSS is that
run's own (``getrusage(RUSAGE_SELF).ru_maxrss`` of the worker). Labels are
compared (adjusted Rand index) before any time is reported. The table gives
median total times over ``--repeats``, the ratio, hilcore's stage split
(kNN and k-reciprocal stages each measured inside ``jaccard_distance``, the
device synchronised around each, and reported through its ``info``; DBSCAN
timed on its own), peak memory, and the kNN's achieved GFLOP/s against a
measured ``torch.mm`` peak on the same machine (the floor of the whole step on
a CPU), counting the products the kNN computes (the native self-search computes
only the tiles on and above the diagonal, about half of ``N^2``). The JSON
records the label of what ran (e.g. ``knn=native, stages=native``).
``--extra-n`` sizes run hilcore only; the baseline is recorded as
"does not fit" when its dense matrices exceed the available memory.

    python benchmarks/bench_cluster.py                    # full run (about 10 minutes on 2 cores)
    python benchmarks/bench_cluster.py --extra-n 50000    # plus N = 50,000, hilcore only
    python benchmarks/bench_cluster.py --quick            # smoke test: small N, 1 repeat
    python benchmarks/bench_cluster.py --device cuda      # hilcore on the GPU (baseline kNN too)

Results: ``benchmarks/results/cluster_<device>_<cpu-or-gpu-model>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARK = "@@RESULT "
SIZES = (2060, 11909, 22258)
QUICK_SIZES = (600, 2060)
SYSU = (22258, 11909)


def n_ids_for(n: int) -> int:
    """Identities per size: RegDB (206) and SYSU-MM01 (395) where the size is theirs, else ~50 images each."""
    return {2060: 206, 11909: 395, 22258: 395}.get(n, max(2, round(n / 50)))


# ---------------------------------------------------------------------------------------------- workers


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def sync(device: str):
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_cluster(xt, k1: int, k2: int, eps: float, min_samples: int, backend: str, db_backend: str, dev: str):
    """One timed hilcore run, jaccard_distance(max_distance=eps) then dbscan:
    ``(jaccard_s, dbscan_s, labels, stored_pairs, info)``; ``info`` is what jaccard_distance
    reports: the label of what ran and the measured seconds of its kNN and stages."""
    import hilcore
    import torch

    info: dict = {}
    sync(dev)
    t0 = time.perf_counter()
    d = hilcore.jaccard_distance(xt, k1, k2, max_distance=eps, backend=backend, info=info)
    sync(dev)
    t1 = time.perf_counter()
    labels = hilcore.dbscan(d, eps, min_samples, backend=db_backend)
    sync(dev)
    t2 = time.perf_counter()
    nnz = int(d._nnz()) if isinstance(d, torch.Tensor) else int(d.nnz)
    return t1 - t0, t2 - t1, labels, nnz, info


def knn_products(n: int, knn_backend: str, tile: int | None = None) -> float:
    """Dot products the self-search kNN of ``n`` rows computes: the native backend computes only the
    tiles on and above the diagonal (sum over tile pairs i <= j of rows_i * rows_j); the others all n^2."""
    if knn_backend != "native":
        return float(n) * n
    if tile is None:
        from hilcore.backend.native.knn import TILE as tile
    full, rest = divmod(n, tile)
    sizes = [tile] * full + ([rest] if rest else [])
    return (float(n) * n + sum(float(s) * s for s in sizes)) / 2.0


def _features(spec):
    from hilcore.synthetic import reid_features

    x, ids, _ = reid_features(spec["n_ids"], n=spec["n"], dim=spec["dim"], seed=spec["seed"])
    return x, ids


def worker_hilcore(spec) -> dict:
    import torch

    import hilcore
    from hilcore import _dispatch

    x, _ = _features(spec)
    dev = spec["device"]
    xt = torch.from_numpy(x).to(dev) if dev != "cpu" else x
    k1, k2, eps, ms, backend = spec["k1"], spec["k2"], spec["eps"], spec["min_samples"], spec["backend"]
    jac = _dispatch.resolve("jaccard_distance", backend, torch.device(dev))
    # DBSCAN has no Triton kernel: a "triton" run clusters with the automatic choice
    db_backend = backend if _dispatch.implements("dbscan", backend) else "auto"
    db_label = _dispatch.resolve("dbscan", db_backend, torch.device(dev)).label
    # warm-up on a small slice: imports, thread pools, kernel compilation are not the op's cost
    warm = xt[: min(256, len(x))]
    hilcore.dbscan(hilcore.jaccard_distance(warm, min(k1, len(warm)), k2, max_distance=eps, backend=backend),
                   eps, ms, backend=db_backend)
    sync(dev)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    totals, jacs, dbs, knns, stages = [], [], [], [], []
    labels = nnz = info = None
    for _ in range(spec["repeats"]):
        t_jac, t_db, labels, nnz, info = time_cluster(xt, k1, k2, eps, ms, backend, db_backend, dev)
        jacs.append(t_jac)
        dbs.append(t_db)
        totals.append(t_jac + t_db)
        knns.append(info["timings"]["knn"])  # measured inside the pipeline, synchronised
        stages.append(info["timings"]["stages"])
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    np.save(spec["labels_out"], labels.astype(np.int64))
    out = {
        "backend": f"jaccard: {info['backend']}; dbscan: {db_label}", "jaccard_backend": info["backend"],
        "knn_backend": jac.part("knn").backend, "dbscan_backend": db_label, "total_s": totals, "jaccard_s": jacs,
        "dbscan_s": dbs, "knn_s_all": knns, "knn_s": statistics.median(knns), "jaccard_stages_s": stages,
        "nnz": nnz, "peak_rss_mb": _peak_rss_mb(),
    }
    if dev.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def worker_baseline(spec) -> dict:
    sys.path.insert(0, str(ROOT))
    from benchmarks.baseline import baseline_cluster

    x, _ = _features(spec)
    totals, stages = [], []
    labels = None
    for _ in range(spec["repeats"]):
        tm: dict = {}
        t0 = time.perf_counter()
        labels = baseline_cluster(x, spec["k1"], spec["k2"], spec["eps"], spec["min_samples"],
                                  device=spec["device"], timings=tm)
        totals.append(time.perf_counter() - t0)
        stages.append(tm)
    np.save(spec["labels_out"], labels)
    return {"total_s": totals, "stages": stages, "peak_rss_mb": _peak_rss_mb()}


def worker_peak(spec) -> dict:
    """Best-of torch.mm throughput (GFLOP/s) in fp32 and bf16 on this device: the floor of the kNN."""
    import torch

    dev = spec["device"]
    m, k = (4096, 1536) if dev == "cpu" else (16384, 1536)
    out = {"shape": [m, k, m]}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(m, k, device=dev).to(dt)
        b = torch.randn(k, m, device=dev).to(dt)
        torch.mm(a, b)
        sync(dev)
        best = float("inf")
        for _ in range(5 if dev == "cpu" else 20):
            t = time.perf_counter()
            torch.mm(a, b)
            sync(dev)
            best = min(best, time.perf_counter() - t)
        out[name] = 2.0 * m * m * k / best / 1e9
    return out


def run_worker(spec: dict) -> dict:
    """Run one configuration in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"worker exited with {proc.returncode}", "stderr_tail": tail}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {"error": "worker printed no result", "stdout_tail": proc.stdout[-2000:]}


# ---------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def slug(s: str) -> str:
    s = re.sub(r"\((r|tm|c)\)", "", s, flags=re.I)
    s = re.sub(r"\b(cpu|processor)\b", "", s, flags=re.I)
    s = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return s or socket.gethostname()


def machine_info(device: str) -> dict:
    import psutil
    import torch

    import hilcore

    info = {
        "device": device, "device_name": device_name(device), "cpu_model": cpu_model(),
        "host": socket.gethostname(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "memory_total_gb": psutil.virtual_memory().total / 1e9, "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "hilcore": hilcore.__version__,
        "hilcore_backends": hilcore.backends(device),
    }
    try:
        from hilcore import _dispatch

        mod = _dispatch.native_module()
        if mod is not None:
            info["native_threads"] = int(mod.num_threads())
    except Exception:  # noqa: BLE001 - informational only
        pass
    try:
        import sklearn

        info["sklearn"] = sklearn.__version__
    except ImportError:
        pass
    return info


# ---------------------------------------------------------------------------------------------- driver


def _med(v):
    return float(statistics.median(v)) if v else None


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def bench(args) -> dict:
    import psutil

    sizes = list(QUICK_SIZES if args.quick else (args.sizes or SIZES))
    extra = list(args.extra_n or [])
    repeats = 1 if args.quick else args.repeats
    info = machine_info(args.device)
    print(f"# hilcore cluster benchmark on {info['device_name']} ({args.device}), {info['cpu_count']} CPUs, "
          f"torch {info['torch']} ({info['torch_threads']} threads), numpy {info['numpy']}", flush=True)
    peak = run_worker({"role": "peak", "device": args.device})
    if "error" in peak:
        print(f"# torch.mm peak measurement failed: {peak['error']}", flush=True)
        peak = {}
    else:
        print(f"# torch.mm peak ({'x'.join(map(str, peak['shape']))}): fp32 {peak['fp32']:.0f} GFLOP/s, "
              f"bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)
    params = {"k1": args.k1, "k2": args.k2, "eps": args.eps, "min_samples": args.min_samples, "dim": args.dim,
              "seed": args.seed, "repeats": repeats, "backend": args.backend}
    rows = []
    tmp = tempfile.mkdtemp(prefix="hilcore_bench_")
    for n in sizes + extra:
        base_spec = dict(params, n=n, n_ids=n_ids_for(n), device=args.device)
        row = {"n": n, "n_ids": base_spec["n_ids"], "extra": n in extra and n not in sizes}
        print(f"# N={n}: hilcore ...", flush=True)
        hil = run_worker(dict(base_spec, role="hilcore", labels_out=f"{tmp}/hil_{n}.npy"))
        row["hilcore"] = hil
        need = None
        if not args.no_baseline:
            sys.path.insert(0, str(ROOT))
            from benchmarks.baseline import dense_bytes_needed

            need = dense_bytes_needed(n, args.dim)
            avail = psutil.virtual_memory().available
            row["baseline_bytes_needed"] = need
            row["available_bytes"] = avail
            if row["extra"] or need > 0.9 * avail:
                reason = ("does not fit" if need > 0.9 * avail else "not run (--extra-n sizes are hilcore only)")
                row["baseline"] = {"skipped": f"{reason}: needs ~{need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available"}
            else:
                print(f"# N={n}: baseline (dense, ~{need / 1e9:.1f} GB) ...", flush=True)
                row["baseline"] = run_worker(dict(base_spec, role="baseline", labels_out=f"{tmp}/base_{n}.npy"))
        else:
            row["baseline"] = {"skipped": "--no-baseline"}
        # labels first: check they agree before any time is reported
        if "error" not in hil:
            lab_h = np.load(f"{tmp}/hil_{n}.npy")
            row["clusters"] = int(lab_h.max()) + 1 if (lab_h >= 0).any() else 0
            row["noise"] = int((lab_h < 0).sum())
            if "total_s" in row["baseline"]:
                from sklearn.metrics import adjusted_rand_score

                lab_b = np.load(f"{tmp}/base_{n}.npy")
                row["ari"] = float(adjusted_rand_score(lab_b, lab_h))
                row["labels_identical"] = bool(np.array_equal(lab_b, lab_h))
                if row["ari"] < 0.999:
                    warnings.warn(f"N={n}: hilcore and baseline labels disagree (ARI {row['ari']:.4f} < 0.999)",
                                  stacklevel=1)
            t_knn = hil["knn_s"]
            flops = 2.0 * knn_products(n, hil["knn_backend"]) * args.dim  # the work done (self-search: half)
            row["knn_gflops"] = flops / t_knn / 1e9
            if peak:
                row["knn_share_of_fp32_peak"] = row["knn_gflops"] / peak["fp32"]
            row["hilcore_s"] = _med(hil["total_s"])
            row["hilcore_stages_s"] = {"knn": t_knn, "jaccard": _med(hil["jaccard_stages_s"]),
                                       "dbscan": _med(hil["dbscan_s"])}  # each measured, none by subtraction
        if "total_s" in row["baseline"]:
            row["baseline_s"] = _med(row["baseline"]["total_s"])
            row["baseline_stages_s"] = {k: _med([s[k] for s in row["baseline"]["stages"]])
                                        for k in ("knn", "jaccard", "dbscan")}
            if row.get("hilcore_s"):
                row["ratio"] = row["baseline_s"] / row["hilcore_s"]
        _print_row(row, header=len(rows) == 0)
        rows.append(row)

    result = {"benchmark": "cluster", "machine": info, "params": params, "mm_peak_gflops": peak, "rows": rows,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": bool(args.quick)}
    by_n = {r["n"]: r for r in rows}
    if all(n in by_n and by_n[n].get("hilcore_s") for n in SYSU):
        tot = {"n": sum(SYSU), "hilcore_s": sum(by_n[n]["hilcore_s"] for n in SYSU)}
        if all(by_n[n].get("baseline_s") for n in SYSU):
            tot["baseline_s"] = sum(by_n[n]["baseline_s"] for n in SYSU)
            tot["ratio"] = tot["baseline_s"] / tot["hilcore_s"]
            tot["ari_min"] = min(by_n[n]["ari"] for n in SYSU)
        result["sysu_total"] = tot
        print(f"{'SYSU total':>10} {_fmt(tot.get('baseline_s')):>10} {_fmt(tot['hilcore_s'], '.3f'):>10} "
              f"{_fmt(tot.get('ratio'), '.1f'):>7}   (22,258 RGB + 11,909 IR)")
    for r in rows:
        for who in ("hilcore", "baseline"):
            if "error" in r.get(who, {}):
                print(f"# N={r['n']} {who} failed: {r[who]['error']}\n{r[who].get('stderr_tail', '')}")
    return result


_HEADER = (f"{'N':>10} {'base s':>10} {'hil s':>10} {'ratio':>7} {'knn s':>8} {'jacc s':>8} {'dbscan s':>8} "
           f"{'RSS base':>9} {'RSS hil':>8} {'ARI':>7} {'clusters':>8} {'noise':>6} {'knn GF/s':>9} {'%peak':>6}")


def _print_row(row: dict, header: bool):
    if header:
        print(_HEADER)
    h, b = row.get("hilcore", {}), row.get("baseline", {})
    st = row.get("hilcore_stages_s", {})
    share = 100 * row["knn_share_of_fp32_peak"] if "knn_share_of_fp32_peak" in row else None
    base_s = _fmt(row.get("baseline_s")) if "baseline_s" in row else ("n/fit" if "does not fit" in
                                                                       b.get("skipped", "") else "-")
    print(f"{row['n']:>10} {base_s:>10} {_fmt(row.get('hilcore_s'), '.3f'):>10} {_fmt(row.get('ratio'), '.1f'):>7} "
          f"{_fmt(st.get('knn'), '.3f'):>8} {_fmt(st.get('jaccard'), '.3f'):>8} {_fmt(st.get('dbscan'), '.3f'):>8} "
          f"{_fmt(b.get('peak_rss_mb'), '.0f'):>9} {_fmt(h.get('peak_rss_mb'), '.0f'):>8} "
          f"{_fmt(row.get('ari'), '.4f'):>7} {row.get('clusters', '-'):>8} {row.get('noise', '-'):>6} "
          f"{_fmt(row.get('knn_gflops'), '.0f'):>9} {_fmt(share, '.0f'):>6}", flush=True)
    if "skipped" in b and "not run" not in b["skipped"] and b["skipped"] != "--no-baseline":
        print(f"{'':>10} baseline {b['skipped']}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", help=f"feature counts (default {' '.join(map(str, SIZES))})")
    p.add_argument("--extra-n", type=int, nargs="+", help="extra sizes for hilcore only (e.g. 50000)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per configuration; medians (default 3)")
    p.add_argument("--quick", action="store_true", help=f"smoke test: N in {QUICK_SIZES}, 1 repeat")
    p.add_argument("--device", default="cpu", help="cpu or cuda (hilcore's inputs; the baseline's kNN product)")
    p.add_argument("--backend", default="auto", help="hilcore backend (default auto)")
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--min-samples", type=int, default=4)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="time hilcore only")
    p.add_argument("--out", help="result JSON path (default OUT_DIR/cluster_<device>_<model>[_quick].json)")
    p.add_argument("--out-dir", default=None,
                   help="folder of the default result path (default benchmarks/results, the committed results, when "
                   "run as a script; `hil bench` passes a folder outside the source tree)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        fn = {"hilcore": worker_hilcore, "baseline": worker_baseline, "peak": worker_peak}[spec["role"]]
        print(MARK + json.dumps(fn(spec)), flush=True)
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
    result = bench(args)
    out = Path(args.out) if args.out else Path(args.out_dir or RESULTS) / (
        f"cluster_{args.device.split(':')[0]}_{slug(result['machine']['device_name'])}"
        f"{'_quick' if args.quick else ''}.json")
    from hilcore._files import write_text

    write_text(out, json.dumps(result, indent=1))  # atomically: a failed write keeps the earlier result
    print(f"# wrote {out}")
    failed = any("error" in r.get(w, {}) for r in result["rows"] for w in ("hilcore", "baseline"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
