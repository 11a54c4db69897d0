"""hilcore.compat's cluster memory against the per-sample Python loop it replaces (cluster-contrast's cm.py).

One training iteration of the memory: forward (normalise, logits, CE),
backward (input gradient) and the momentum update inside the backward. The
loop side is ``hilcore.ref.cm.loop_cluster_loss``: plain PyTorch, the update a
Python loop over the batch (``CM``) or over the classes of the batch
(``CM_Hard``), as in cm.py. The compat side is ``hilcore.compat.ClusterMemory``
on each update backend that runs here. Each configuration is checked first
(loss, input gradient and memory after backward within 1e-5 of the loop), then
timed: medians over ``--repeats`` runs, the loop in the same run and the sides
taking turns within each repeat. "floor" is the same forward + backward with
no memory update at all (normalise, matmul, CE and their gradients): on a
CPU those matmuls dominate, so the time an update costs is ``side - floor``.

Batches are P x K (16 pseudo identities x 16 images, B = 256), so every target
repeats 16 times, as with cluster-contrast's sampler.

    python benchmarks/bench_compat.py --quick           # small sizes, seconds
    python benchmarks/bench_compat.py                   # C = 500, 2000; D = 768, 2048; B = 256
    python benchmarks/bench_compat.py --device cuda
    python benchmarks/bench_compat.py --threads 1       # on a CPU shared with other jobs

Results go to ``benchmarks/results/compat_<device>_<model>[_quick].json``.

``--step`` times the switched clustering step instead, side by side in one run: the original
(``benchmarks.baseline.original_jaccard``: a flat-index kNN and the widely used per-row loops, its arithmetic
kept, then ``sklearn.cluster.DBSCAN(metric="precomputed")``) against ``hilcore.compat.compute_jaccard_distance``
+ ``hilcore.compat.DBSCAN`` on the same features, the dense matrix kept as the pipelines keep it. It checks
that the matrices agree to float32 rounding and the labels are identical, and times DBSCAN alone (scikit-learn
vs compat) on the original's matrix, both sides taking turns. The original runs once (minutes at N = 12,000);
the switched step and the DBSCANs ``--repeats`` times (medians).

    python benchmarks/bench_compat.py --step --n 12000 --dim 2048 --threads 2 --repeats 2

Results go to ``benchmarks/results/compat_step_<device>_<model>.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hilcore  # noqa: E402
from hilcore import compat  # noqa: E402
from hilcore.ref import cm as ref  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_interleaved(fns: dict, repeats: int, device) -> tuple[dict, dict]:
    """Median wall seconds and median process CPU seconds of each function; the functions run in turn within every
    repeat (after one warm-up each), so a CPU shared with other jobs slows all sides alike. With one thread the CPU
    time is what the work costs, whatever else the machine runs."""
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeats):
        for k, f in fns.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            _sync(device)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    med = lambda d: {k: float(statistics.median(v)) for k, v in d.items()}  # noqa: E731
    return med(wall), med(cpu)


def _inputs(c, d, b, ids_per_batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(c, d, generator=g), dim=1)
    ids = torch.randperm(c, generator=g)[:ids_per_batch]
    y = ids.repeat_interleave(b // ids_per_batch)
    y = y[torch.randperm(len(y), generator=g)]
    x = centres[y] + 0.5 * torch.randn(len(y), d, generator=g)  # samples near their cluster centre
    return centres, x, y


def bench(p, device, repeats, backends):
    c, d, b, hard = p["clusters"], p["dim"], p["batch"], p["use_hard"]
    centres, x, y = _inputs(c, d, b, p["ids_per_batch"])
    centres, x, y = centres.to(device), x.to(device), y.to(device)

    def loop_step(bank):
        xa = x.clone().requires_grad_()
        loss = ref.loop_cluster_loss(xa, y, bank, 0.05, 0.2, hard)
        loss.backward()
        return loss, xa.grad

    def compat_step(mem):
        xa = x.clone().requires_grad_()
        loss = mem(xa, y)
        loss.backward()
        return loss, xa.grad

    def floor_step():  # the same forward + backward with no memory update at all: what no update can go below
        xa = x.clone().requires_grad_()
        F.cross_entropy(F.normalize(xa, dim=1).mm(centres.t()) / 0.05, y).backward()

    want_bank = centres.clone()
    want_loss, want_grad = loop_step(want_bank)
    fns = {"loop": lambda: loop_step(centres.clone()), "floor": floor_step}
    errs = {}
    for backend in backends:
        mem = compat.ClusterMemory(d, c, temp=0.05, momentum=0.2, use_hard=hard, backend=backend).to(device)
        mem.features = centres.clone()
        loss, grad = compat_step(mem)
        errs[backend] = max(abs(float(loss.detach() - want_loss.detach())), float((grad - want_grad).abs().max()),
                            float((mem.features - want_bank).abs().max()))

        def run(mem=mem):
            mem.features.copy_(centres)
            compat_step(mem)
        fns[backend] = run
    t, cpu = _time_interleaved(fns, repeats, device)
    rows = []
    for backend in backends:
        rows.append(dict(op="cluster_memory_hard" if hard else "cluster_memory", backend=backend, params=p,
                         check="loss, input grad and memory within 1e-5 of the loop", max_abs_diff=errs[backend],
                         ok=bool(errs[backend] <= 1e-5), loop_s=t["loop"], hilcore_s=t[backend], floor_s=t["floor"],
                         speedup=t["loop"] / t[backend],
                         cpu_loop_s=cpu["loop"], cpu_hilcore_s=cpu[backend], cpu_floor_s=cpu["floor"],
                         cpu_speedup=cpu["loop"] / cpu[backend] if cpu[backend] > 0 else None,
                         update_cpu_loop_s=cpu["loop"] - cpu["floor"],
                         update_cpu_hilcore_s=cpu[backend] - cpu["floor"]))
    return rows


def bench_step(n: int, dim: int, repeats: int, k1: int = 30, k2: int = 6, eps: float = 0.6,
               min_samples: int = 4) -> dict:
    """The switched clustering step against the original, on ReID-like unit features (see the docstring)."""
    import numpy as np
    from sklearn.cluster import DBSCAN as SkDBSCAN

    from benchmarks.baseline import original_jaccard
    from hilcore.synthetic import reid_features

    per = 15
    x, _, _ = reid_features(max(1, n // per), per, dim=dim, seed=0)
    x = torch.as_tensor(x[:n])
    sk = dict(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1)

    tm: dict = {}
    t0 = time.perf_counter()
    d_orig = original_jaccard(x, k1, k2, timings=tm)
    t1 = time.perf_counter()
    lab_orig = SkDBSCAN(**sk).fit_predict(d_orig)
    t2 = time.perf_counter()
    original = dict(total_s=t2 - t0, knn_s=tm["knn"], jaccard_s=tm["jaccard"], dbscan_s=t2 - t1)

    runs, d_new, lab_new = [], None, None
    for _ in range(repeats):
        del d_new
        t0 = time.perf_counter()
        d_new = compat.compute_jaccard_distance(x, k1=k1, k2=k2, print_flag=False)
        t1 = time.perf_counter()
        lab_new = compat.DBSCAN(**sk).fit_predict(d_new)
        t2 = time.perf_counter()
        runs.append((t2 - t0, t1 - t0, t2 - t1))
    med = [float(statistics.median(r[i] for r in runs)) for i in range(3)]
    switched = dict(total_s=med[0], jaccard_s=med[1], dbscan_s=med[2], runs=runs)

    fns = {"sklearn": lambda: SkDBSCAN(**sk).fit_predict(d_orig),
           "compat": lambda: compat.DBSCAN(**sk).fit_predict(d_orig)}
    wall, _ = _time_interleaved(fns, repeats, "cpu")
    same = np.array_equal(lab_orig, lab_new)
    diff = np.abs(d_orig.astype(np.float64) - d_new)
    return dict(op="clustering_step", params=dict(n=n, dim=dim, k1=k1, k2=k2, eps=eps, min_samples=min_samples),
                original=original, switched=switched, speedup=original["total_s"] / switched["total_s"],
                dbscan_dense=dict(sklearn_s=wall["sklearn"], compat_s=wall["compat"],
                                  speedup=wall["sklearn"] / wall["compat"]),
                check=dict(labels_identical=bool(same), clusters=int(lab_orig.max()) + 1,
                           noise=int((lab_orig == -1).sum()), max_abs_diff=float(diff.max()),
                           entries_differing=int((diff > 0).sum()),
                           rows_differing_above_1e_5=int((diff > 1e-5).any(axis=1).sum()),
                           note="the two flat kNNs (float32 GEMM vs hilcore's exact kNN) may order float32 "
                                "near-ties differently; rows whose ranking differs then differ beyond rounding"),
                ok=bool(same))


def main_step(args, info) -> int:
    from benchmarks.bench_cluster import slug

    row = bench_step(args.n, args.dim, args.repeats)
    o, s_, dd = row["original"], row["switched"], row["dbscan_dense"]
    print(f"# clustering step, N={args.n}, D={args.dim}, on {info['device_name']} "
          f"(torch threads {info['torch_threads']})")
    print(f"original  {o['total_s']:8.2f} s  (kNN {o['knn_s']:.2f}, Jaccard {o['jaccard_s']:.2f}, "
          f"scikit-learn DBSCAN {o['dbscan_s']:.2f})")
    print(f"switched  {s_['total_s']:8.2f} s  (compute_jaccard_distance {s_['jaccard_s']:.2f}, DBSCAN "
          f"{s_['dbscan_s']:.2f}; median of {args.repeats})  -> {row['speedup']:.1f}x")
    print(f"DBSCAN on the dense matrix: scikit-learn {dd['sklearn_s']:.3f} s, compat {dd['compat_s']:.3f} s "
          f"-> {dd['speedup']:.2f}x")
    c = row["check"]
    print(f"check: labels identical {c['labels_identical']}, max |d diff| {c['max_abs_diff']:.2e} "
          f"({c['rows_differing_above_1e_5']} rows beyond 1e-5: kNN near-ties), {c['clusters']} clusters")
    name = f"compat_step_{args.device.split(':')[0]}_{slug(info['device_name'])}.json"
    out = Path(args.out) if args.out else RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "compat_step", "machine": info, "repeats": args.repeats,
                               "note": args.note, "results": [row]}, indent=2))
    print(f"wrote {out}")
    return 0 if row["ok"] else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="result JSON path")
    ap.add_argument("--threads", type=int, help="torch / OpenMP threads (both sides); default: torch's")
    ap.add_argument("--step", action="store_true", help="time the switched clustering step (see the docstring)")
    ap.add_argument("--n", type=int, default=12000, help="--step: rows (default 12,000)")
    ap.add_argument("--dim", type=int, default=2048, help="--step: feature dimension (default 2048)")
    ap.add_argument("--note", default="", help="--step: a note stored in the JSON (e.g. the machine's load)")
    args = ap.parse_args(argv)
    from benchmarks.bench_cluster import machine_info, slug

    if args.threads:
        torch.set_num_threads(args.threads)

    info = machine_info(args.device)
    if args.step:
        return main_step(args, info)
    on = hilcore.backends(args.device)
    # the Triton interpreter on a CPU is a correctness tool, not a fast path: GPU only
    backends = [bk for bk in ("torch", "native", "triton") if bk in on and not (bk == "triton" and
                                                                              args.device == "cpu")]
    if args.quick:
        grid = [dict(clusters=60, dim=128, batch=64, ids_per_batch=8)]
    else:
        grid = [dict(clusters=c, dim=d, batch=256, ids_per_batch=16) for c in (500, 2000) for d in (768, 2048)]
    rows = []
    for p in grid:
        for hard in (False, True):
            rows += bench(dict(p, use_hard=hard), args.device, args.repeats, backends)
    print(f"# compat.ClusterMemory forward + backward + update vs the per-sample loop, on {info['device_name']} "
          f"({args.device}){' [quick]' if args.quick else ''}, medians of {args.repeats}")
    print("wall ms: medians of wall time; cpu ms: medians of process CPU time; floor: no update at all")
    print(f"{'op':20s} {'C':>5s} {'D':>5s} {'B':>4s} {'backend':8s} {'check':5s} {'loop ms':>8s} {'compat':>8s} "
          f"{'floor':>8s} {'x':>6s} | {'loop cpu':>8s} {'compat':>8s} {'floor':>8s} {'x':>6s}")
    for r in rows:
        p = r["params"]
        print(f"{r['op']:20s} {p['clusters']:5d} {p['dim']:5d} {p['batch']:4d} {r['backend']:8s} "
              f"{'ok' if r['ok'] else 'FAIL':5s} {1e3 * r['loop_s']:8.2f} {1e3 * r['hilcore_s']:8.2f} "
              f"{1e3 * r['floor_s']:8.2f} {r['speedup']:5.2f}x | {1e3 * r['cpu_loop_s']:8.2f} "
              f"{1e3 * r['cpu_hilcore_s']:8.2f} {1e3 * r['cpu_floor_s']:8.2f} {r['cpu_speedup'] or 0:5.2f}x")
    out = Path(args.out) if args.out else RESULTS / (
        f"compat_{args.device.split(':')[0]}_{slug(info['device_name'])}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "compat", "machine": info, "quick": args.quick, "repeats": args.repeats,
                               "results": rows}, indent=2))
    print(f"wrote {out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
