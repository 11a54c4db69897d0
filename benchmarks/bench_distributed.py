"""Sharded clustering (hilcore.distributed) on 1, 2, 4 processes: time, bytes sent and peak memory per rank.

Each world size W runs the pipeline kNN (k1) -> Jaccard (k1, k2, max_distance=eps) -> DBSCAN on ReID-like
synthetic features (hilcore.synthetic.reid_features) split into W contiguous shards, ``--repeats`` times;
the table reports the median over repeats of the slowest rank, the bytes each rank put into collectives
(payload x receivers, the ``info`` dict of :mod:`hilcore.distributed`) and each rank's peak memory above its
baseline (CPU: peak RSS growth; CUDA: ``torch.cuda.max_memory_allocated``). The baseline in the same run
is the single-process ``hilcore.jaccard_distance`` + ``hilcore.dbscan`` (torch and native backends). Every
world size's labels are checked equal to W = 1's and to the single-process torch backend's.

CPU (gloo, processes spawned here; results to benchmarks/results/distributed_cpu_<machine>.json):

    python benchmarks/bench_distributed.py                  # N = 4000, D = 256, W = 1, 2, 4
    python benchmarks/bench_distributed.py --n 1000 --worlds 1 2    # seconds

GPUs (NCCL, one process per GPU; rank 0 writes distributed_cuda_<gpu>_w<W>.json):

    torchrun --nproc_per_node 8 benchmarks/bench_distributed.py --device cuda --n 200000 --dim 1536
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_cluster import cpu_model as _cpu_model, slug as _slug  # noqa: E402  (one machine naming)

RESULTS = ROOT / "benchmarks" / "results"


def _features(n: int, dim: int, seed: int) -> np.ndarray:
    from hilcore.synthetic import reid_features

    return reid_features(max(2, n // 20), n=n, dim=dim, seed=seed)[0]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_rank(args, device: torch.device) -> dict:
    """The pipeline on this rank's shard; returns its measurements (and the labels)."""
    import hilcore.distributed as H
    from hilcore.train.distributed import shard_range

    w = dist.get_world_size() if dist.is_initialized() else 1
    r = dist.get_rank() if dist.is_initialized() else 0
    x = _features(args.n, args.dim, args.seed)
    lo, hi = shard_range(args.n, r, w)
    xl = torch.from_numpy(x[lo:hi]).to(device)
    # one untimed pass (first-call costs: kernels, allocator, the process group's connections)
    H.dbscan(H.jaccard_distance(xl, args.k1, args.k2, max_distance=args.eps), args.eps, args.min_samples)
    base_rss = _rss_mb()
    out = {"rank": r, "world": w, "rows": hi - lo, "ops": {}}
    labels = None
    for op in ("knn", "jaccard", "dbscan"):
        times, sent = [], 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base_cuda = torch.cuda.memory_allocated(device)
        for _ in range(args.repeats):
            if dist.is_initialized():
                dist.barrier()
            _sync(device)
            st: dict = {}
            t0 = time.perf_counter()
            if op == "knn":
                H.knn(xl, args.k1, info=st)
            elif op == "jaccard":
                d = H.jaccard_distance(xl, args.k1, args.k2, max_distance=args.eps, info=st)
            else:
                labels = H.dbscan(d, args.eps, args.min_samples, info=st)
            _sync(device)
            times.append(time.perf_counter() - t0)
            sent = st["bytes_sent"]
        rec = {"median_s": statistics.median(times), "times_s": times, "bytes_sent": sent}
        if device.type == "cuda":
            rec["peak_mem_mb"] = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
        out["ops"][op] = rec
    out["peak_rss_growth_mb"] = _peak_rss_mb() - base_rss
    out["labels"] = np.asarray(torch.as_tensor(labels).cpu()).tolist()
    return out


def _spawned(rank: int, world: int, init: str, args, outdir: str):
    torch.set_num_threads(args.threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    res = run_rank(args, torch.device("cpu"))
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _single_process_baseline(args) -> dict:
    import hilcore

    torch.set_num_threads(args.threads)
    x = _features(args.n, args.dim, args.seed)
    out = {}
    for be in ("torch", "native"):
        hilcore.dbscan(hilcore.jaccard_distance(x, args.k1, args.k2, max_distance=args.eps, backend=be),
                       args.eps, args.min_samples)  # untimed warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            d = hilcore.jaccard_distance(x, args.k1, args.k2, max_distance=args.eps, backend=be)
            lab = hilcore.dbscan(d, args.eps, args.min_samples)
            times.append(time.perf_counter() - t0)
        out[be] = {"median_s": statistics.median(times), "times_s": times, "labels": lab.tolist()}
    return out


def _summary(ranks: list[dict]) -> dict:
    s = {"world": ranks[0]["world"], "rows_per_rank": [r["rows"] for r in ranks]}
    for op in ranks[0]["ops"]:
        s[op] = {"median_s_slowest_rank": max(r["ops"][op]["median_s"] for r in ranks),
                 "bytes_sent_per_rank": [r["ops"][op]["bytes_sent"] for r in ranks]}
        if "peak_mem_mb" in ranks[0]["ops"][op]:
            s[op]["peak_mem_mb_per_rank"] = [r["ops"][op]["peak_mem_mb"] for r in ranks]
    s["peak_rss_growth_mb_per_rank"] = [r["peak_rss_growth_mb"] for r in ranks]
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k1", type=int, default=30)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--eps", type=float, default=0.6)
    ap.add_argument("--min-samples", type=int, default=4)
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per rank (and of the baseline)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (spawns gloo ranks) or cuda (under torchrun, NCCL)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    if args.device.startswith("cuda"):  # one rank per GPU, launched by torchrun
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("nccl")
        res = run_rank(args, torch.device("cuda", local))
        gathered = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
        if dist.is_initialized():
            dist.all_gather_object(gathered, res)
        else:
            gathered = [res]
        if gathered[0]["rank"] == 0 and (not dist.is_initialized() or dist.get_rank() == 0):
            for g in gathered:
                g.pop("labels")
            name = _slug(torch.cuda.get_device_name(local))
            report = {"machine": {"device": torch.cuda.get_device_name(local), "host": socket.gethostname()},
                      "args": vars(args), "summary": _summary(gathered), "ranks": gathered}
            path = Path(args.out or RESULTS / f"distributed_cuda_{name}_w{len(gathered)}.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1))
            print(json.dumps(report["summary"], indent=1))
        if dist.is_initialized():
            dist.destroy_process_group()
        return 0

    import torch.multiprocessing as mp

    machine = {"cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "host": socket.gethostname(),
               "torch": torch.__version__, "threads_per_rank": args.threads,
               "note": "ranks beyond the cores share them (W x threads > cpu_count oversubscribes)"}
    base = _single_process_baseline(args)
    want = base["torch"]["labels"]
    runs = []
    for w in args.worlds:
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_spawned, args=(w, f"file://{tmp}/init", args, tmp), nprocs=w, join=True)
            ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(w)]
        for r in ranks:
            if r["labels"] != want:
                raise SystemExit(f"W={w} rank {r['rank']}: labels differ from the single-process torch backend")
            r.pop("labels")
        runs.append({"summary": _summary(ranks), "ranks": ranks})
        s = runs[-1]["summary"]
        print(f"W={w}: knn {s['knn']['median_s_slowest_rank']:.3f}s  "
              f"jaccard {s['jaccard']['median_s_slowest_rank']:.3f}s"
              f"  dbscan {s['dbscan']['median_s_slowest_rank']:.3f}s  sent/rank (jaccard) "
              f"{max(s['jaccard']['bytes_sent_per_rank']) / 2**20:.2f} MiB  peak RSS growth/rank "
              f"{max(s['peak_rss_growth_mb_per_rank']):.0f} MiB", flush=True)
    for be in ("torch", "native"):
        b = base[be]
        print(f"single process {be}: jaccard+dbscan {b['median_s']:.3f}s; labels equal torch: {b['labels'] == want}")
        b["labels_equal_torch"] = b.pop("labels") == want
    report = {"machine": machine, "args": vars(args), "single_process": base, "runs": runs,
              "labels_identical_all_worlds": True}
    path = Path(args.out or RESULTS / f"distributed_cpu_{_slug(_cpu_model())}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
