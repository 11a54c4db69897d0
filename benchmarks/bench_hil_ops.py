"""HIL operators against the loop-based reference (benchmarks/loop_reference.py).

Four ops, each checked before it is timed:

- subcluster: hilcore.subcluster vs per-cluster scikit-learn KMeans(n_init=10);
  check: total within-sub-cluster inertia <= 1.05x scikit-learn's;
- memory update: ClusterMemory / MultiCenterMemory.update vs the per-sample loop;
  check: same memory (allclose) after a P x K batch full of duplicate targets;
- BRST: hilcore.bidirectional_match(mode="both") vs per-sample NumPy loops;
  check: identical shared labels and pairs;
- MCCL: mccl_loss forward + backward vs a per-sample loop; check: loss and x.grad allclose.

Medians over ``--repeats`` runs; ratios = loop / hilcore. Results go to
``benchmarks/results/hil_ops_<device>_<model>[_quick].json``.

    python benchmarks/bench_hil_ops.py --quick          # small sizes, seconds
    python benchmarks/bench_hil_ops.py                  # SYSU-MM01-like sizes
    python benchmarks/bench_hil_ops.py --device cuda
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

import hilcore  # noqa: E402
from benchmarks import loop_reference as ref  # noqa: E402
from hilcore.brst import bidirectional_match  # noqa: E402
from hilcore.centers import subcluster  # noqa: E402
from hilcore.mccl import mccl_loss  # noqa: E402
from hilcore.memory import ClusterMemory, MultiCenterMemory  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _features(n_ids, n, dim, seed, **kw):
    from hilcore.synthetic import reid_features

    x, ids, _ = reid_features(n_ids, n=n, dim=dim, seed=seed, **kw)
    return x, ids


def _ran(op: str, device: str, backend: str = "auto") -> str:
    """The label of what ``op`` runs with ``backend`` on ``device`` (from the registry, as the op resolves it)."""
    return hilcore._dispatch.resolve(op, backend, torch.device(device)).label


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, repeats, device):
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return float(statistics.median(out))


def bench_subcluster(p, device, repeats):
    x, ids = _features(p["n_ids"], p["n"], p["dim"], 0)
    labels = ids.astype(np.int64)
    xt = torch.from_numpy(x).to(device)
    lt = torch.from_numpy(labels).to(device)
    multi = subcluster(xt, lt, p["n_sub"], 0.9, seed=0).cpu().numpy()
    t0 = time.perf_counter()
    _, subs = ref.loop_subcluster(x, labels, p["n_sub"], 0.9, seed=0)
    t_loop = time.perf_counter() - t0  # sklearn's loop is timed once: it is the slow side
    ine_ref = ref.subcluster_inertia(x, labels, subs)
    ine_hil = ref.subcluster_inertia(x, labels, ref.sub_centres_from_multi(multi, 0.9))
    ok = ine_hil <= 1.05 * ine_ref
    # the same with hilcore at scikit-learn's n_init=10 (the default above is hilcore's own)
    multi10 = subcluster(xt, lt, p["n_sub"], 0.9, seed=0, n_init=10).cpu().numpy()
    ine_hil10 = ref.subcluster_inertia(x, labels, ref.sub_centres_from_multi(multi10, 0.9))
    t_hil = _time(lambda: subcluster(xt, lt, p["n_sub"], 0.9, seed=0), repeats, device)
    sub = hilcore._dispatch.resolve("subcluster", "auto", torch.device(device))
    ran = f"centers={sub.part('centers').label}, kmeans={sub.part('kmeans').label}"
    return dict(op="subcluster", backend=ran, params=p, check="inertia <= 1.05x sklearn", ok=bool(ok),
                inertia_hilcore=ine_hil, inertia_sklearn=ine_ref, inertia_ratio=ine_hil / ine_ref,
                inertia_ratio_n_init10=ine_hil10 / ine_ref,
                loop_s=t_loop, hilcore_s=t_hil, speedup=t_loop / t_hil)


def bench_memory(p, device, repeats, multi):
    g = torch.Generator().manual_seed(0)
    c, d, s = p["clusters"], p["dim"], p["slots"]
    init = torch.randn((c, s, d) if multi else (c, d), generator=g)
    ids = torch.randperm(c, generator=g)[:p["ids_per_batch"]]
    y = ids.repeat_interleave(p["batch"] // p["ids_per_batch"])  # P x K: every target K times
    y = y[torch.randperm(len(y), generator=g)]
    x = torch.randn(len(y), d, generator=g)
    make = (lambda: MultiCenterMemory.from_tensor(init.to(device))) if multi else \
        (lambda: ClusterMemory.from_centers(init.to(device)))
    want = make().features.clone()
    ref.loop_memory_update(want, x.to(device), y, 0.1)
    rows = []
    for backend in hilcore.capabilities(device)["memory.update"]:
        mem = make()
        mem.update(x.to(device), y.to(device), backend=backend)
        ok = torch.allclose(mem.features, want, atol=1e-5)
        t_hil = _time(lambda: mem.update(x.to(device), y.to(device), backend=backend), repeats, device)

        def loop():
            m = make().features
            ref.loop_memory_update(m, x.to(device), y, 0.1)
        t_loop = _time(loop, max(1, repeats // 2), device)
        rows.append(dict(op="multi_memory_update" if multi else "memory_update", backend=backend, params=p,
                         check="allclose to the per-sample loop", ok=bool(ok), loop_s=t_loop, hilcore_s=t_hil,
                         speedup=t_loop / t_hil))
    return rows


def bench_brst(p, device, repeats):
    xr, idr = _features(p["n_ids"], p["n_rgb"], p["dim"], 3)
    xi, idi = _features(p["n_ids"], p["n_ir"], p["dim"], 3, camera_bias=0.4)
    lr, li = idr.astype(np.int64), idi.astype(np.int64)
    t0 = time.perf_counter()
    sr, si, pairs, n_shared = ref.loop_match_both(xr, lr, xi, li, 0.5)
    t_loop = time.perf_counter() - t0
    xrt, xit = torch.from_numpy(xr).to(device), torch.from_numpy(xi).to(device)
    lrt, lit = torch.from_numpy(lr).to(device), torch.from_numpy(li).to(device)
    m = bidirectional_match(xrt, lrt, xit, lit, 0.5, "both")
    ok = (np.array_equal(np.asarray(m.labels_rgb.cpu()), sr) and np.array_equal(np.asarray(m.labels_ir.cpu()), si)
          and np.array_equal(np.asarray(m.pairs.cpu()), pairs) and m.n_shared == n_shared)
    t_hil = _time(lambda: bidirectional_match(xrt, lrt, xit, lit, 0.5, "both"), repeats, device)
    return dict(op="brst_both", backend=_ran("bidirectional_match", device), params=p,
                check="identical shared labels and pairs", ok=bool(ok),
                pairs=int(len(pairs)), loop_s=t_loop, hilcore_s=t_hil, speedup=t_loop / t_hil)


def bench_mccl(p, device, repeats):
    g = torch.Generator().manual_seed(0)
    mem = torch.nn.functional.normalize(torch.randn(p["clusters"], p["slots"], p["dim"], generator=g), dim=2)
    mem = mem.to(device)
    x = torch.randn(p["batch"], p["dim"], generator=g).to(device)

    def run_loop():
        xa = x.clone().requires_grad_()
        ref.loop_mccl(xa, mem.cpu() if device == "cpu" else mem).backward()
        return xa

    def run_hil():
        xb = x.clone().requires_grad_()
        mccl_loss(xb, mem).backward()
        return xb

    xa = x.clone().requires_grad_()
    la = ref.loop_mccl(xa, mem)
    la.backward()
    xb = x.clone().requires_grad_()
    lb = mccl_loss(xb, mem)
    lb.backward()
    ok = bool(torch.allclose(la, lb, rtol=1e-4, atol=1e-5)
              and torch.allclose(xa.grad, xb.grad, rtol=1e-3, atol=1e-4 * float(xa.grad.abs().max())))
    t_loop = _time(run_loop, max(1, repeats // 2), device)
    t_hil = _time(run_hil, repeats, device)
    return dict(op="mccl_fwd_bwd", backend=_ran("mccl_loss", device), params=p,
                check="loss and x.grad allclose to the loop",
                ok=ok, loop_s=t_loop, hilcore_s=t_hil, speedup=t_loop / t_hil)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="result JSON path")
    args = ap.parse_args(argv)
    from benchmarks.bench_cluster import machine_info, slug

    q = args.quick
    sub_p = dict(n_ids=40, n=1200, dim=128, n_sub=9) if q else dict(n_ids=395, n=11909, dim=1536, n_sub=9)
    mem_p = dict(clusters=60, dim=128, slots=1, batch=64, ids_per_batch=8) if q else \
        dict(clusters=500, dim=1536, slots=1, batch=256, ids_per_batch=16)
    brst_p = dict(n_ids=40, n_rgb=1500, n_ir=800, dim=128) if q else \
        dict(n_ids=395, n_rgb=22258, n_ir=11909, dim=1536)
    mccl_p = dict(clusters=40, slots=10, dim=128, batch=32) if q else dict(clusters=500, slots=10, dim=1536,
                                                                            batch=128)
    info = machine_info(args.device)
    rows = [bench_subcluster(sub_p, args.device, args.repeats)]
    rows += bench_memory(mem_p, args.device, args.repeats, multi=False)
    rows += bench_memory(dict(mem_p, slots=10), args.device, args.repeats, multi=True)
    rows.append(bench_brst(brst_p, args.device, args.repeats))
    rows.append(bench_mccl(mccl_p, args.device, args.repeats))
    print(f"# HIL ops on {info['device_name']} ({args.device}){' [quick]' if q else ''}")
    print(f"{'op':22s} {'backend':8s} {'check':5s} {'loop s':>10s} {'hilcore s':>10s} {'speedup':>9s}")
    for r in rows:
        print(f"{r['op']:22s} {r['backend']:8s} {'ok' if r['ok'] else 'FAIL':5s} "
              f"{r['loop_s']:10.4f} {r['hilcore_s']:10.4f} {r['speedup']:8.1f}x")
    out = Path(args.out) if args.out else RESULTS / (
        f"hil_ops_{args.device.split(':')[0]}_{slug(info['device_name'])}{'_quick' if q else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "quick": q, "repeats": args.repeats, "results": rows}, indent=2))
    print(f"wrote {out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
