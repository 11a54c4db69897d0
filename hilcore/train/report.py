"""Per-epoch reporting: cluster quality against the true identities, the metrics CSV and the PNG plot.

True identities are used here only to *report* how good the pseudo labels
are (scikit-learn's ARI, AMI, FMI and V-measure); nothing flows back into
training. Noise samples (-1) count as singleton clusters, so a clustering
that throws most samples away is not rewarded.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .._extras import require
from .._files import atomic_open

PLOT_GROUPS = (
    ("losses", ("loss", "loss_cc", "loss_shared", "loss_mccl", "loss_nc")),
    ("cluster quality (shared labels)", ("ari", "ami", "fmi", "vmeasure")),
    ("evaluation", ("rank1", "mAP", "mINP")),
    ("clusters", ("clusters_rgb", "clusters_ir", "matched_pairs", "outliers_rgb", "outliers_ir")),
)


def _singletons(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels, dtype=np.int64).copy()
    noise = lab < 0
    base = lab.max() + 1 if (~noise).any() else 0
    lab[noise] = base + np.arange(int(noise.sum()))
    return lab


def cluster_quality(pred, true) -> dict:
    """``{"ari", "ami", "fmi", "vmeasure"}`` of predicted labels (-1 = noise -> singletons) vs true ids."""
    metrics = require("sklearn.metrics", "hilcore.train.report.cluster_quality")

    p, t = _singletons(pred), np.asarray(true)
    if p.shape != t.shape:
        raise ValueError(f"pred, true: expected the same length, got {p.shape} and {t.shape}")
    return {
        "ari": float(metrics.adjusted_rand_score(t, p)),
        "ami": float(metrics.adjusted_mutual_info_score(t, p)),
        "fmi": float(metrics.fowlkes_mallows_score(t, p)),
        "vmeasure": float(metrics.v_measure_score(t, p)),
    }


def write_csv(history: list, path) -> Path:
    """One row per epoch; the columns are the union of the history's keys (first-seen order)."""
    path = Path(path)
    cols: list = []
    for row in history:
        cols += [k for k in row if k not in cols]
    with atomic_open(path, "w", newline="") as fh:      # a failed write keeps the previous CSV
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def plot_history(history: list, path) -> Path | None:
    """A PNG with one panel per group of :data:`PLOT_GROUPS` (matplotlib Agg); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    fig, axes = plt.subplots(1, len(PLOT_GROUPS), figsize=(5 * len(PLOT_GROUPS), 3.8))
    for ax, (title, keys) in zip(axes, PLOT_GROUPS):
        for k in keys:
            pts = [(r["epoch"], r[k]) for r in history if isinstance(r.get(k), (int, float)) and k in r]
            if pts:
                e, v = zip(*pts)
                ax.plot(e, v, marker="o", label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as fh:             # a failed write keeps the previous plot
            fig.savefig(fh, dpi=90, format="png")
    finally:
        plt.close(fig)
    return path


def format_epoch(row: dict) -> str:
    """The multi-line log block of one epoch."""
    g = row.get
    lines = [
        f"epoch {g('epoch')}/{g('epochs')}",
        f"  clusters   rgb {g('clusters_rgb')} (outliers {g('outliers_rgb')})  ir {g('clusters_ir')} "
        f"(outliers {g('outliers_ir')})  cross-modal matches {g('matched_pairs')}  shared {g('shared_clusters')}",
        f"  quality    shared ARI {g('ari'):.3f} AMI {g('ami'):.3f} FMI {g('fmi'):.3f} V {g('vmeasure'):.3f}  |  "
        f"rgb ARI {g('ari_rgb'):.3f}  ir ARI {g('ari_ir'):.3f}",
        f"  losses     total {g('loss'):.4f}  cc {g('loss_cc'):.4f}  shared {g('loss_shared'):.4f}  "
        f"mccl {g('loss_mccl'):.4f} (x{g('mccl_weight')}, heads agree {g('mccl_agree'):.2f})  nc {g('loss_nc'):.4f}"
        f"  lr {g('lr'):.2e}",
    ]
    if "mAP" in row:
        ev = f"  eval       Rank-1 {100 * g('rank1'):.2f}  mAP {100 * g('mAP'):.2f}  mINP {100 * g('mINP'):.2f}"
        extra = [k[:-4] for k in row if k.endswith("_mAP") and k != "mAP"]
        for name in extra:
            ev += f"  | {name}: R1 {100 * row[name + '_rank1']:.2f} mAP {100 * row[name + '_mAP']:.2f}"
        lines.append(ev)
    lines.append(f"  time       extract {g('t_extract'):.1f}s  cluster {g('t_cluster'):.1f}s  train {g('t_train'):.1f}s"
                 f"  eval {g('t_eval', 0.0):.1f}s  epoch {g('t_epoch'):.1f}s")
    return "\n".join(lines)
