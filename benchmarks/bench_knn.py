"""Benchmark: hilcore's CPU kNN (int8 candidates + exact rescoring) against the fp32 path and a plain baseline.

For each N (default 11,909 and 22,258 = SYSU-MM01 IR and RGB; D = 1536, k = 30,
ReID-like features from :mod:`hilcore.synthetic`) it times

- ``hilcore.knn`` (backend auto: on a CPU the native backend, ``precision="auto"``,
  i.e. the int8-candidate path at these sizes);
- the native fp32 path (``hilcore.backend.native.knn.knn(..., precision="fp32")``);
- a plain baseline: blocked ``torch.mm`` over all columns + ``torch.topk`` per block,
  merged with a second topk (no symmetry, no custom merge).

Results are checked first: the two native paths, on the rows as ``hilcore.knn``
normalises them, must agree bit for bit (indices and similarities: both are the
exact top-k under the same fixed-order float32 dot); the baseline must agree on the
similarities (within 2e-6) and on the indices except float32 near-ties. The table gives medians
over ``--repeats`` runs, the rate of the work each path does (``gflops``: 2 D per
dot product it computes; the native self-search computes only the tiles on and
above the diagonal, about ``N^2 / 2`` products, the int8 path's as int8 products,
the baseline all ``N^2``), the time relative to the dense ``2 N^2 D`` at the
measured fp32 ``torch.mm`` peak, and the int8 path's certification rate and its
measured stage times.

    python benchmarks/bench_knn.py              # N = 11,909 and 22,258, 3 repeats
    python benchmarks/bench_knn.py --quick      # smoke test: N = 5,000, 1 repeat

Results: ``benchmarks/results/knn_cpu_<cpu-model>.json``. On a shared machine the
timings are noisy; the medians are what the JSON keeps, with every repeat.

On a GPU (``--device cuda``) it compares the kNN backends side by side, each
column checked against the Triton fp32 kernel before it is timed: ``triton``
(fp16 tensor-core candidates + fp32 rescoring and certificate, what ``auto``
runs), ``triton_fp32`` (the IEEE fp32 kernel alone), ``torch``, ``faiss_gpu``
(``faiss.GpuIndexFlatIP`` candidates rescored and certified by hilcore) and
``cuvs`` (cuVS brute-force candidates, the same). A column that cannot run here
(library not installed, ...) is kept in the JSON as skipped, with the reason.

    python benchmarks/bench_knn.py --device cuda     # N = 11,909 and 22,258, D = 1536, k = 30

Results: ``benchmarks/results/knn_cuda_<gpu-model>.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_cluster import RESULTS, knn_products, machine_info, n_ids_for, slug  # noqa: E402

SIZES = (11909, 22258)
QUICK_SIZES = (5000,)


def baseline_knn(x: torch.Tensor, k: int, block: int = 2048):
    """Blocked torch.mm of row blocks against every column, topk per block (self included as rank 0 by value)."""
    n = x.shape[0]
    idx = torch.empty((n, k), dtype=torch.int64)
    sim = torch.empty((n, k), dtype=torch.float32)
    for i0 in range(0, n, block):
        s = torch.mm(x[i0:i0 + block], x.t())
        v, j = torch.topk(s, k, dim=1)
        idx[i0:i0 + block], sim[i0:i0 + block] = j, v
        del s
    return idx, sim


def mm_peak(d: int) -> float:
    m = 4096
    a, b = torch.randn(m, d), torch.randn(d, m)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * m * m * d / best / 1e9


def compare(a, b, atol=2e-6) -> dict:
    (ia, sa), (ib, sb) = a, b
    return {"max_sim_diff": float((sa - sb).abs().max()), "idx_equal_fraction": float((ia == ib).float().mean()),
            "sim_ok": bool(torch.allclose(sa, sb, atol=atol, rtol=0))}


def timed(fn, repeats):
    out, ts = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return out, ts


def bench(args) -> dict:
    import hilcore
    from hilcore.backend.native import knn as nk
    from hilcore.synthetic import reid_features

    sizes = list(QUICK_SIZES if args.quick else (args.sizes or SIZES))
    repeats = 1 if args.quick else args.repeats
    info = machine_info("cpu")
    peak = mm_peak(args.dim)
    print(f"# hilcore kNN benchmark on {info['device_name']}, {info['cpu_count']} CPUs, torch {info['torch']} "
          f"({info['torch_threads']} threads); fp32 torch.mm peak {peak:.0f} GFLOP/s", flush=True)
    print("# shared machine: timings are noisy (medians over repeats; every repeat is in the JSON)", flush=True)
    rows = []
    hdr = (f"{'N':>7} {'impl':>10} {'median s':>9} {'GFLOP/s':>8} {'%peak':>6} {'speedup':>8}  notes")
    print(hdr, flush=True)
    for n in sizes:
        x, _, _ = reid_features(n_ids_for(n), n=n, dim=args.dim, seed=args.seed)
        xt = torch.from_numpy(x)
        k = min(args.k, n)
        hilcore.knn(x[:300], min(k, 300))  # warm-up: imports, thread pools
        # correctness first
        if hilcore._dispatch.resolve("knn", "auto", "cpu").backend != "native":
            raise SystemExit("hilcore.knn does not run the native backend here: build the extension first")
        res = {"auto": hilcore.knn(xt, k)}
        # the rows exactly as hilcore.knn validates and normalises them, so both native paths see the same input
        xn = hilcore._arrays.features(xt)[0]
        stats_auto: dict = {}
        nk.knn(xn, k, info=stats_auto)  # what that call did
        res["fp32"] = nk.knn(xn, k, precision="fp32")
        res["baseline"] = baseline_knn(xt, k)
        checks = {"auto_vs_fp32": compare(res["auto"], res["fp32"]),
                  "baseline_vs_fp32": compare(res["baseline"], res["fp32"])}
        for name, c in checks.items():
            if not c["sim_ok"] or c["idx_equal_fraction"] < 0.999:
                raise SystemExit(f"N={n}: {name} disagree: {c}")
        # every native path returns the exact top-k under the same dot_f32 values: bit for bit
        if checks["auto_vs_fp32"]["idx_equal_fraction"] != 1.0 or checks["auto_vs_fp32"]["max_sim_diff"] != 0.0:
            raise SystemExit(f"N={n}: the int8 and fp32 native paths differ: {checks['auto_vs_fp32']}")
        del res
        fns = {"auto": lambda: hilcore.knn(xt, k), "fp32": lambda: nk.knn(xn, k, precision="fp32"),
               "baseline": lambda: baseline_knn(xt, k)}
        row = {"n": n, "dim": args.dim, "k": k, "checks": checks, "impl": {},
               "auto_backend": hilcore._dispatch.resolve("knn", "auto", "cpu").label}
        stage_runs: list = []
        for name in ("auto", "fp32", "baseline"):
            _, ts = timed(fns[name], repeats)
            if name == "auto":  # the measured stage times of one more (untimed) run of the same path
                st: dict = {}
                nk.knn(torch.nn.functional.normalize(xt, dim=1), k, info=st)
                stage_runs.append(st)
            row["impl"][name] = {"s": ts, "median_s": float(statistics.median(ts))}
        dense = 2.0 * n * n * args.dim
        half = 2.0 * knn_products(n, "native") * args.dim  # both native paths compute half the tiles
        work = {"auto": half, "fp32": half, "baseline": dense}
        for name, r in row["impl"].items():
            r["gflops"] = work[name] / r["median_s"] / 1e9  # the work this path does
            r["dense_equivalent_gflops"] = dense / r["median_s"] / 1e9
            r["share_of_fp32_peak"] = r["gflops"] / peak
            r["speedup_vs_fp32"] = row["impl"]["fp32"]["median_s"] / r["median_s"]
        row["int8_stats"] = {"first_run": stats_auto, "timed_last": stage_runs[-1] if stage_runs else None}
        st = stats_auto
        for name, r in row["impl"].items():
            note = ""
            if name == "auto":
                note = (f"{st['precision']}: K'={st.get('candidates')}, certified "
                        f"{100 * (1 - st.get('uncertified_fraction', 0)):.1f}%, fp32 fallback "
                        f"{100 * st.get('fallback_fraction', 0):.2f}%, stages "
                        + " ".join(f"{a}={b:.2f}" for a, b in stage_runs[-1]["timings"].items()))
            print(f"{n:>7} {name:>10} {r['median_s']:>9.3f} {r['gflops']:>8.0f} {100 * r['share_of_fp32_peak']:>6.0f} "
                  f"{r['speedup_vs_fp32']:>8.2f}  {note}", flush=True)
        rows.append(row)
    return {"benchmark": "knn", "machine": info, "mm_peak_gflops": {"fp32": peak, "shape": [4096, args.dim, 4096]},
            "params": {"dim": args.dim, "k": args.k, "seed": args.seed, "repeats": repeats, "sizes": sizes},
            "rows": rows, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": bool(args.quick),
            "note": "shared machine (2 cores, other jobs running): timings are noisy"}


# ------------------------------------------------------------------ GPU: the kNN backends side by side
GPU_COLUMNS = ("triton", "triton_fp32", "torch", "faiss_gpu", "cuvs")


def _gpu_column(name: str, device: str):
    """(fn(x, k) -> (idx, sim, stats), label) of one column, or (None, why it cannot run here)."""
    import hilcore
    from hilcore import _dispatch

    backend = "triton" if name == "triton_fp32" else name
    try:
        impl = _dispatch.resolve("knn", backend, device)
    except hilcore.BackendUnavailable as e:
        return None, str(e)
    if name in ("triton", "triton_fp32"):
        from hilcore.backend.triton import knn as tknn

        prec = "fp32" if name == "triton_fp32" else "auto"

        def fn(x, k):
            st: dict = {}
            idx, sim = tknn.knn(x, k, precision=prec, info=st)
            return idx, sim, st
        return fn, f"{impl.label} (precision={prec})"
    if name in ("faiss_gpu", "cuvs"):
        def fn(x, k):
            st: dict = {}
            f = impl.fn
            idx, sim = f(x, k, None, info=st)
            return idx, sim, st
        return fn, impl.label + " (library candidates, fp32 rescoring + certificate)"
    return (lambda x, k: (*impl(x, k, None), {})), impl.label


def bench_backends(args, device: str = "cuda") -> dict:
    """Every column of :data:`GPU_COLUMNS` on ``device``: checked against the fp32 kernel, then timed."""
    import hilcore  # noqa: F401
    from hilcore.synthetic import reid_features

    from benchmarks.bench_cluster import sync

    sizes = list(QUICK_SIZES if args.quick else (args.sizes or SIZES))
    repeats = 1 if args.quick else args.repeats
    info = machine_info(device)
    print(f"# hilcore kNN backends on {info['device_name']}: D={args.dim}, k={args.k}, medians of {repeats}",
          flush=True)
    print(f"{'N':>7} {'column':>12} {'median ms':>10} {'vs triton':>9}  notes", flush=True)
    cols = {name: _gpu_column(name, device) for name in GPU_COLUMNS}
    rows = []
    for n in sizes:
        x, _, _ = reid_features(n_ids_for(n), n=n, dim=args.dim, seed=args.seed)
        xt = torch.nn.functional.normalize(torch.from_numpy(x).to(device), dim=1)
        k = min(args.k, n)
        ref = cols["triton_fp32"][0](xt, k) if cols["triton_fp32"][0] else None
        row = {"n": n, "dim": args.dim, "k": k, "columns": {}}
        for name, (fn, label) in cols.items():
            if fn is None:
                row["columns"][name] = {"skipped": label}
                print(f"{n:>7} {name:>12} {'-':>10} {'-':>9}  skipped: {label}", flush=True)
                continue
            idx, sim, st = fn(xt, k)  # warm-up (compilation) and the result that is checked
            sync(device)
            check = compare((idx.cpu(), sim.cpu()), (ref[0].cpu(), ref[1].cpu())) if ref else None
            if check and (not check["sim_ok"] or check["idx_equal_fraction"] < 0.999):
                raise SystemExit(f"N={n}: {name} disagrees with the fp32 kernel: {check}")
            ts = []
            for _ in range(repeats):
                sync(device)
                t = time.perf_counter()
                fn(xt, k)
                sync(device)
                ts.append(time.perf_counter() - t)
            row["columns"][name] = {"label": label, "s": ts, "median_s": float(statistics.median(ts)),
                                    "check_vs_fp32": check, "stats": st}
        base = row["columns"].get("triton", {}).get("median_s")
        for name, c in row["columns"].items():
            if "median_s" not in c:
                continue
            c["speedup_vs_triton"] = base / c["median_s"] if base else None
            st = c["stats"]
            note = c["label"]
            if "uncertified_rows" in st:
                note += f"; uncertified rows {st['uncertified_rows']}/{st.get('rows', n)}"
            sp = f"{c['speedup_vs_triton']:.2f}" if c["speedup_vs_triton"] else "-"
            print(f"{n:>7} {name:>12} {1e3 * c['median_s']:>10.2f} {sp:>9}  {note}", flush=True)
        rows.append(row)
        del xt
    return {"benchmark": "knn_backends", "machine": info,
            "params": {"dim": args.dim, "k": args.k, "seed": args.seed, "repeats": repeats, "sizes": sizes,
                       "columns": list(GPU_COLUMNS)},
            "rows": rows, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": bool(args.quick)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", help=f"feature counts (default {' '.join(map(str, SIZES))})")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help=f"smoke test: N in {QUICK_SIZES}, 1 repeat")
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (native paths vs a baseline) or cuda (the GPU backends)")
    p.add_argument("--out", help="result JSON (default benchmarks/results/knn_<cpu|cuda>_<model>[_quick].json)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available")
        result = bench_backends(args, args.device)
    else:
        result = bench(args)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    out = Path(args.out) if args.out else RESULTS / (
        f"knn_{kind}_{slug(result['machine']['device_name'])}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"# wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
