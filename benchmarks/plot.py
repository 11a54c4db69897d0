"""Plot benchmark results written by bench_cluster.py or bench_scale.py: time and peak memory against N.

    python benchmarks/plot.py benchmarks/results/cluster_cpu_*.json [-o benchmarks/results/cluster.png]
    python benchmarks/plot.py benchmarks/results/scale_cuda_*.json  # the scale sweep (stages, floor, memory)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# issue 3's targets for one million features (D = 768) on one GPU
SCALE_TARGET_N = 1_000_000
SCALE_TARGET_S = 60.0
SCALE_TARGET_GB = 40.0


def plot_scale(results: list[dict], out) -> Path:
    """Plot bench_scale.py results (parsed JSON dicts) to ``out``; returns the path.

    Left: total time and its kNN / Jaccard / DBSCAN split against N, with the
    extrapolated all-pairs product floor (dotted). Right: peak memory (GPU
    allocated on CUDA, process RSS on CPU). Out-of-memory rows are marked with
    a red x at the top of both panels; CUDA runs show the 10^6 targets.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.6))
    any_cuda = False
    dims = set()
    for ci, res in enumerate(results):
        color = f"C{ci}"
        dev = res["machine"]["device"]
        any_cuda |= dev.startswith("cuda")
        tag = f"{dev}: {res['machine']['device_name']}"
        dims.add(res["params"]["dim"])
        rows = sorted(res["rows"], key=lambda r: r["n"])
        ok = [r for r in rows if r.get("status") == "ok"]
        if ok:
            ns = [r["n"] for r in ok]
            ax_t.plot(ns, [r["total_s"] for r in ok], "o-", color=color, lw=2, label=f"total ({tag})")
            for stage, style in (("knn", "v--"), ("jaccard", "s--"), ("dbscan", "^--")):
                pts = [(r["n"], r["stages_s"][stage]) for r in ok if r["stages_s"].get(stage)]
                if pts:
                    ax_t.plot(*zip(*pts), style, color=color, alpha=0.6, ms=4, lw=1, label=f"{stage}")
            mem_key = "peak_gpu_mb" if dev.startswith("cuda") else "peak_rss_mb"
            mem = [(r["n"], r[mem_key] / 1024) for r in ok if r.get(mem_key)]
            if mem:
                what = "peak GPU allocated" if dev.startswith("cuda") else "peak RSS"
                ax_m.plot(*zip(*mem), "o-", color=color, label=f"{what} ({tag})")
            inp = [(r["n"], r["input_mb"] / 1024) for r in ok if r.get("input_mb")]
            if inp:
                ax_m.plot(*zip(*inp), ":", color=color, alpha=0.6, label="features [N, D] float32")
        floor = res.get("floor") or {}
        if floor.get("s") and rows:
            ns = [r["n"] for r in rows]
            for (name, t), style in zip(floor["s"].items(), (":", "-.", "--")):
                ax_t.plot(ns, [t * (n / floor["n"]) ** 2 for n in ns], linestyle=style, color="gray",
                          label=f"floor: torch.mm {name} (x N^2 from N={floor['n']})")
        for r in rows:
            if r.get("status") == "oom":
                for ax in (ax_t, ax_m):
                    ax.plot([r["n"]], [0.96], "x", color="red", ms=10, transform=ax.get_xaxis_transform())
                    ax.annotate("out of memory", (r["n"], 0.92), xycoords=("data", "axes fraction"), color="red",
                                fontsize=8, ha="center", va="top")
            elif r.get("status") == "skipped":
                ax_t.annotate("skipped", (r["n"], 0.97), xycoords=("data", "axes fraction"), color="gray",
                              fontsize=8, ha="center", va="top", rotation=90)
    if any_cuda:
        ax_t.plot([SCALE_TARGET_N], [SCALE_TARGET_S], "*", color="black", ms=12, label="target: 10^6 in 60 s")
        ax_m.axhline(SCALE_TARGET_GB * 1e9 / 2**30, color="black", lw=0.8, ls="--",
                     label=f"target: {SCALE_TARGET_GB:.0f} GB")
    d = "/".join(str(x) for x in sorted(dims))
    for ax, title, unit in ((ax_t, "Jaccard + DBSCAN time (median) and split", "seconds"),
                            (ax_m, "peak memory of Jaccard + DBSCAN", "GiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"N (features, D = {d})")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="JSON files from bench_cluster.py")
    p.add_argument("-o", "--out", help="output image (default: beside the first JSON, .png)")
    args = p.parse_args(argv)

    loaded = [json.loads(Path(path).read_text()) for path in args.results]
    if any(res.get("benchmark") == "scale" for res in loaded):
        if not all(res.get("benchmark") == "scale" for res in loaded):
            p.error("results: scale-sweep JSON cannot be plotted together with cluster JSON")
        out = plot_scale(loaded, args.out or Path(args.results[0]).with_suffix(".png"))
        print(f"wrote {out}")
        return 0

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for path in args.results:
        res = json.loads(Path(path).read_text())
        dev = f"{res['machine']['device']}: {res['machine']['device_name']}"
        rows = sorted(res["rows"], key=lambda r: r["n"])
        for who, key, style in (("hilcore", "hilcore_s", "o-"), ("baseline", "baseline_s", "s--")):
            pts = [(r["n"], r[key]) for r in rows if r.get(key)]
            if pts:
                ax_t.plot(*zip(*pts), style, label=f"{who} ({dev})")
            mem = [(r["n"], r[who]["peak_rss_mb"] / 1024) for r in rows if r.get(who, {}).get("peak_rss_mb")]
            if mem:
                ax_m.plot(*zip(*mem), style, label=f"{who} ({dev})")
        for r in rows:
            if "does not fit" in r.get("baseline", {}).get("skipped", ""):
                ax_m.plot([r["n"]], [r["baseline_bytes_needed"] / 2**30], "x", color="red")
                ax_m.annotate("baseline: does not fit", (r["n"], r["baseline_bytes_needed"] / 2**30),
                              fontsize=8, ha="right")
    for ax, title, unit in ((ax_t, "Jaccard + DBSCAN time", "seconds (median)"), (ax_m, "peak RSS", "GiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (features, D = 1536)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(args.out) if args.out else Path(args.results[0]).with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
