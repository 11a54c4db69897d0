"""Peak memory of ``hilcore.dbscan`` on a dense N x N distance matrix (the input itself excluded).

Each measurement runs in a fresh process: the matrix (symmetric, float32, a share ``--near`` of the
pairs within eps) is built first, then the peak resident set size (``VmHWM``, reset
after the matrix is built) grows by whatever
the call allocates on top of it. scikit-learn's ``DBSCAN(metric="precomputed")`` on the same matrix is
measured the same way as the baseline.

    PYTHONPATH=$PWD python benchmarks/mem_dbscan_dense.py --n 8000 --near 0.01 0.6

Run it from the root of the tree to measure: the child processes import ``hilcore`` from the current folder.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
n, near, what = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
d = rng.random((n, n), dtype=np.float32)
d = np.minimum(d, d.T)  # symmetric
np.fill_diagonal(d, 0)
eps = float(np.quantile(d[:200], near))
import torch  # noqa: F401  (imported before the baseline RSS in both cases)
import sklearn.cluster
import hilcore
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak RSS to the current RSS: the matrix's construction does not count
base = hwm()
t = time.perf_counter()
if what == "hilcore":
    labels = hilcore.dbscan(d, eps, 4, backend="native")
else:
    labels = sklearn.cluster.DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(d)
dt = time.perf_counter() - t
peak = hwm()
print(json.dumps({"what": what, "n": n, "near": near, "extra_mib": (peak - base) / 1024, "seconds": dt,
                  "clusters": int(labels.max()) + 1, "input_mib": d.nbytes / 2**20}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8000)
    p.add_argument("--near", type=float, nargs="+", default=[0.01, 0.6])
    p.add_argument("--what", nargs="+", default=["hilcore", "sklearn"])
    a = p.parse_args()
    for near in a.near:
        for what in a.what:
            out = subprocess.run([sys.executable, "-c", CHILD, str(a.n), str(near), what], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"N={r['n']} near={r['near']:.2f} {r['what']:8s} peak extra {r['extra_mib']:8.1f} MiB "
                  f"(input {r['input_mib']:.0f} MiB)  {r['seconds']:.2f}s  clusters {r['clusters']}")


if __name__ == "__main__":
    main()
