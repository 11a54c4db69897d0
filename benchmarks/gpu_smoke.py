"""A few hundred rows through every CUDA and Triton kernel of hilcore, for compute-sanitizer.

``benchmarks/device_check.sh full`` runs this once plainly (compiles the Triton
kernels into the cache and checks the results against the torch backend), then
under ``compute-sanitizer --tool memcheck``, ``racecheck`` and ``synccheck``.
Sizes are odd, with duplicate rows and ties, so the masked edges of every tile
run. Exit status 0 when every result matched; the last line says what ran.

    python3 benchmarks/gpu_smoke.py             # needs a CUDA device
    python3 benchmarks/gpu_smoke.py --cpu       # the Triton part in the interpreter, CUDA part skipped (tests)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> int:
    cpu = "--cpu" in (sys.argv[1:] if argv is None else argv)
    if cpu:
        import os
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device")
        return 2
    import hilcore
    import hilcore.backend.triton.knn as tknn

    ran = []
    dev = "cpu" if cpu else "cuda"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((301, 40)).astype(np.float32)
    x[10:14] = x[0]  # duplicates: ties at the top of their lists
    xc = torch.nn.functional.normalize(torch.from_numpy(x).to(dev), dim=1)
    ref_i, _ = hilcore.knn(xc.cpu(), 20, backend="torch")

    def same(name, idx):
        ok = bool((idx.cpu() == ref_i[:, :idx.shape[1]]).all())
        ran.append(f"{name}:{'ok' if ok else 'MISMATCH'}")
        return ok

    ok = True
    # Triton kNN: fp16 candidates + rescoring (+ merge of column splits), fp32 kernel, split fallback + merge
    st: dict = {}
    ok &= same("knn_fp16", tknn.knn(xc, 20, info=st)[0])
    ok &= same("knn_fp32", tknn.knn(xc, 20, precision="fp32")[0])
    rows = torch.tensor([0, 10, 11, 150, 300], device=dev)
    idx = torch.zeros((301, 20), dtype=torch.int64, device=dev)
    sim = torch.zeros((301, 20), dtype=torch.float32, device=dev)
    tknn._exact(xc, xc, 20, True, rows=rows, idx=idx, sim=sim, splits=3)
    ok &= bool((idx[rows].cpu() == ref_i[rows.cpu()]).all())
    ran.append("knn_fp32_split+merge")
    ci, cs = hilcore.knn(xc, tknn.candidates(20), backend="torch")
    ok &= same("knn_rescore_foreign", tknn.rescore_candidates(xc, xc, 20, ci, cs, True)[0])
    # CUDA Jaccard stages and DBSCAN (the fused Jaccard takes the Triton kNN)
    labels = torch.zeros(1, dtype=torch.int64)
    if not cpu:
        for md in (None, 0.6):
            d = hilcore.jaccard_distance(xc, 20, 6, max_distance=md, backend="cuda")
            labels = hilcore.dbscan(d, eps=0.6, min_samples=4, backend="cuda")
        ran.append("jaccard_cuda+dbscan_cuda")
    lab = torch.as_tensor(np.arange(301) % 7, device=dev)
    # Triton centres, sub-centres (k-means: assignment + Lloyd update), BRST, memory update, MCCL
    centers = hilcore.cluster_centers(xc, lab, backend="triton")
    mem_c = hilcore.subcluster(xc, lab, n_sub=3, iters=5, n_init=2, backend="triton")
    ran.append("centers+subcluster_triton")
    hilcore.brst(xc, lab, centers, backend="triton")
    ran.append("brst_triton")
    mem = hilcore.MultiCenterMemory.from_centers(mem_c) if hasattr(hilcore.MultiCenterMemory, "from_centers") \
        else None
    cmem = hilcore.ClusterMemory.from_centers(centers)
    cmem.update(xc[:64], lab[:64], backend="triton")
    ran.append("memory_update_triton")
    xg = xc[:64].clone().requires_grad_(True)
    loss = hilcore.mccl_loss(xg, mem if mem is not None else cmem, backend="triton")
    loss.backward()
    ran.append("mccl_fwd+bwd_triton")
    if not cpu:
        torch.cuda.synchronize()
    print(f"gpu_smoke: {'ok' if ok else 'FAILED'}: labels max {int(labels.max())}; " + ", ".join(ran))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
