"""Benchmark: the native Jaccard stages (C++/OpenMP) at 1 and 2 threads, the torch stages as a baseline.

The kNN ranking is computed once (native kNN); then each stage backend runs on
that same ranking, ``--repeats`` times per thread count, and the medians are
reported with the native sub-stage times (wall seconds; ``median_cpu_s`` is the
process CPU time, steadier than wall time on a shared machine at 1 thread). Every run of a backend must return
bitwise the result of its first run (any thread count); whether the native and
torch results are bitwise equal (indptr, indices, float32 values) is recorded
as ``native_equals_torch``.

    python benchmarks/bench_jaccard_stages.py                 # N = 10,000, D = 256, k1 = 30, k2 = 6
    python benchmarks/bench_jaccard_stages.py --n 2000 --repeats 1
    python benchmarks/bench_jaccard_stages.py --baseline-so OLD/_native.cpython-311-x86_64-linux-gnu.so

``--baseline-so`` times the ``jaccard`` of another build of the extension (e.g.
the one before a change) in the same run, as the row ``baseline``.

Results: ``benchmarks/results/jaccard_stages_<cpu-model>.json`` (with ``--out``, that path).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_cluster import RESULTS, machine_info, slug  # noqa: E402


def load_extension(path: Path):
    """Another build of ``hilcore._native``, loaded from ``path`` as a separate module."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("_native", str(path))
    spec = importlib.util.spec_from_file_location("_native", str(path), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def extension_stages(mod):
    def run(x, rank, k1, k2, max_distance, *, timings=None):
        out = mod.jaccard(x.numpy(), rank.numpy(), int(k1), int(k2), float(max_distance))
        if timings is not None:
            timings.update(zip(("reciprocal_weights", "query_expansion", "inverted_index", "jaccard"), out[3]))
        return tuple(torch.from_numpy(a) for a in out[:3])
    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--eps", type=float, default=0.6, help="max_distance (the DBSCAN eps)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-torch", action="store_true", help="skip the torch stages")
    p.add_argument("--torch-repeats", type=int, default=1, help="runs of the (slow) torch stages per thread count")
    p.add_argument("--baseline-so", type=Path, default=None, help="another build of the extension to time")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    from hilcore.backend.native.jaccard import jaccard as native_stages
    from hilcore.backend.native.knn import knn as native_knn
    from hilcore.synthetic import reid_features
    from hilcore.backend.torch.jaccard import jaccard as torch_stages

    x, _, _ = reid_features(max(2, a.n // 20), n=a.n, dim=a.dim, seed=0)
    xt = torch.from_numpy(x)
    rank, _ = native_knn(xt, a.k1, None)
    res: dict = {"machine": machine_info("cpu"), "n": a.n, "dim": a.dim, "k1": a.k1, "k2": a.k2, "eps": a.eps,
                 "repeats": a.repeats, "runs": []}
    base = None if a.baseline_so is None else extension_stages(load_extension(a.baseline_so))
    if a.baseline_so is not None:
        res["baseline_so"] = str(a.baseline_so)
    old = torch.get_num_threads()
    want: dict = {}
    try:
        for nt in a.threads:
            torch.set_num_threads(nt)  # the extension shares torch's OpenMP runtime
            backends = [("native", native_stages)] + ([] if a.no_torch else [("torch", torch_stages)])
            if base is not None:
                backends.insert(0, ("baseline", base))
            secs: dict = {name: [] for name, _ in backends}
            cpus: dict = {name: [] for name, _ in backends}
            subs: dict = {name: [] for name, _ in backends}
            for _ in range(a.repeats):  # the backends interleaved, so drift on a shared machine hits all
                for name, fn in backends:
                    if name == "torch" and len(secs[name]) >= a.torch_repeats:
                        continue
                    sub: dict = {}
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = fn(xt, rank, a.k1, a.k2, a.eps, timings=sub)
                    secs[name].append(time.perf_counter() - t0)
                    cpus[name].append(time.process_time() - c0)
                    subs[name].append(sub)
                    first = want.setdefault(name, out)
                    if not all(torch.equal(u, v) for u, v in zip(out, first)):
                        raise SystemExit(f"{name} at {nt} threads differs from the first result")
            for name, _ in backends:
                row = {"backend": name, "threads": nt, "median_s": statistics.median(secs[name]),
                       "seconds": secs[name], "median_cpu_s": statistics.median(cpus[name]), "cpu_seconds": cpus[name]}
                if subs[name][0]:
                    row["stages_median_s"] = {k: statistics.median(s[k] for s in subs[name]) for k in subs[name][0]}
                res["runs"].append(row)
                print(f"{name:8s} threads={nt}  median {row['median_s']:.4f} s (cpu {row['median_cpu_s']:.4f} s)  "
                      f"{row.get('stages_median_s', '')}", flush=True)
    finally:
        torch.set_num_threads(old)
    res["nnz"] = int(want["native"][1].numel())
    if "torch" in want:
        res["native_equals_torch"] = all(torch.equal(u, v) for u, v in zip(want["native"], want["torch"]))
        print("native == torch bitwise:", res["native_equals_torch"])
    out_path = a.out or RESULTS / f"jaccard_stages_{slug(res['machine'].get('cpu_model', 'cpu'))}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1))
    print(f"wrote {out_path}")
    return res


if __name__ == "__main__":
    main()
