"""Plot benchmark results written by bench_cluster.py: time and peak memory against N.

    python benchmarks/plot.py benchmarks/results/cluster_cpu_*.json [-o benchmarks/results/cluster.png]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="JSON files from bench_cluster.py")
    p.add_argument("-o", "--out", help="output image (default: beside the first JSON, .png)")
    args = p.parse_args(argv)

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
