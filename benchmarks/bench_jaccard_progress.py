"""Benchmark: what the per-chunk progress of the native Jaccard stages costs (issue 21, point 6).

The kNN ranking of synthetic ReID features is computed once and saved; then
worker processes time the native ``jaccard`` stage call on it, interleaved
round by round so that the drift of a shared machine hits every variant:

* ``baseline``: another build of the extension (``--baseline-so``, e.g. the one
  before the change), loaded in its own process (two builds of the extension
  cannot share one process);
* ``native``: this build, no progress hook (the passes run as one block each);
* ``native_progress``: this build under a ``hilcore._progress`` hook, as
  ``hil cluster --progress on`` runs it (blocks of ``BLOCK_ROWS`` rows, a
  report after each), timed in the same process as ``native``, alternating.

Every run must return bitwise the same CSR (SHA-256 of indptr, indices and the
float32 bits); medians of wall seconds per variant, their ratios to ``native``
and the median of the paired ratios (each call against the ``native`` call of
the same round and repeat, the steadier figure on a shared machine) are
printed and written.

    python benchmarks/bench_jaccard_progress.py --baseline-so /tmp/old/_native.cpython-311-x86_64-linux-gnu.so
    python benchmarks/bench_jaccard_progress.py --n 2000 --dim 64 --rounds 2

Results: ``benchmarks/results/jaccard_progress_<cpu-model>.json`` (with ``--out``, that path).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _digest(out) -> str:
    h = hashlib.sha256()
    for a in out[:3]:
        h.update(np.ascontiguousarray(a).view(np.uint8).tobytes())
    return h.hexdigest()


def worker(a) -> dict:
    """Times the stage call ``--repeats`` times per variant of this process; prints one JSON line."""
    x, rank = np.load(a.data / "x.npy"), np.load(a.data / "rank.npy")
    if a.so is not None:   # another build: loaded before hilcore, as the only extension of this process
        import importlib.machinery
        import importlib.util

        loader = importlib.machinery.ExtensionFileLoader("_native", str(a.so))
        mod = importlib.util.module_from_spec(importlib.util.spec_from_file_location("_native", str(a.so),
                                                                                     loader=loader))
        loader.exec_module(mod)
        variants = {"baseline": (mod.jaccard, None)}
    else:
        from hilcore import _progress
        from hilcore._dispatch import native_module
        from hilcore.backend.native.jaccard import BLOCK_ROWS

        def tick(done, total):
            _progress.report("stages", done, total)

        variants = {"native": (native_module().jaccard, None),
                    "native_progress": (lambda *args: native_module().jaccard(*args, tick, BLOCK_ROWS), tick)}
    res = {name: {"seconds": [], "digest": None, "reports": 0} for name in variants}
    for _ in range(a.repeats):
        for name, (fn, hook) in variants.items():
            seen = []
            if hook is not None:
                from hilcore import _progress

                ctx = _progress.reporting(lambda *r: seen.append(r))
            else:
                import contextlib

                ctx = contextlib.nullcontext()
            with ctx:
                t0 = time.perf_counter()
                out = fn(x, rank, a.k1, a.k2, a.eps)
                res[name]["seconds"].append(time.perf_counter() - t0)
            res[name]["digest"] = _digest(out)
            res[name]["reports"] = len(seen)
    print(json.dumps(res))
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--eps", type=float, default=0.6, help="max_distance (the DBSCAN eps)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of worker processes (one per variant each)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant in each worker")
    p.add_argument("--baseline-so", type=Path, default=None, help="another build of the extension to time")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--so", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)

    import torch

    from benchmarks.bench_cluster import RESULTS, machine_info, slug
    from hilcore.backend.native.jaccard import BLOCK_ROWS
    from hilcore.backend.native.knn import knn
    from hilcore.synthetic import reid_features

    x, _, _ = reid_features(max(2, a.n // 20), n=a.n, dim=a.dim, seed=0)
    rank, _ = knn(torch.from_numpy(x), a.k1, None)
    res: dict = {"machine": machine_info("cpu"), "n": a.n, "dim": a.dim, "k1": a.k1, "k2": a.k2, "eps": a.eps,
                 "block_rows": BLOCK_ROWS, "threads": torch.get_num_threads(), "rounds": a.rounds,
                 "repeats": a.repeats, "baseline_so": None if a.baseline_so is None else str(a.baseline_so)}
    secs: dict = {}
    digests, reports = set(), {}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "rank.npy", rank.numpy())
        common = [sys.executable, __file__, "--worker", "--data", tmp, "--k1", str(a.k1), "--k2", str(a.k2),
                  "--eps", str(a.eps), "--repeats", str(a.repeats)]
        for _ in range(a.rounds):
            for so in ([a.baseline_so] if a.baseline_so else []) + [None]:
                cmd = common + (["--so", str(so)] if so else [])
                proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
                got = json.loads(proc.stdout.splitlines()[-1])
                for name, r in got.items():
                    secs.setdefault(name, []).extend(r["seconds"])
                    digests.add(r["digest"])
                    reports[name] = r["reports"]
    if len(digests) != 1:
        raise SystemExit(f"the variants returned different results: {sorted(digests)}")
    med = {name: statistics.median(v) for name, v in secs.items()}
    res["runs"] = [{"variant": name, "median_s": med[name], "ratio_to_native": med[name] / med["native"],
                    "paired_ratio_to_native": statistics.median(s / t for s, t in zip(secs[name], secs["native"])),
                    "seconds": secs[name], "reports_per_call": reports[name]} for name in secs]
    res["bitwise_equal"] = True
    for r in res["runs"]:
        print(f"{r['variant']:16s} median {r['median_s']:.4f} s  x{r['ratio_to_native']:.3f} of native  "
              f"(paired x{r['paired_ratio_to_native']:.3f}; {len(r['seconds'])} runs, "
              f"{r['reports_per_call']} reports per call)")
    print("every run bitwise equal: True")
    out_path = a.out or RESULTS / f"jaccard_progress_{slug(res['machine'].get('cpu_model', 'cpu'))}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1))
    print(f"wrote {out_path}")
    return res


if __name__ == "__main__":
    main()
