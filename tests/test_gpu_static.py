"""CI guards on compiled GPU code (no GPU needed): the kNN kernel (tensor cores, <= 128 registers,
no spills) and the CUDA Jaccard kernels (no spills, no stack).

benchmarks/gpu_static.py compiles the tensor-core candidate kernel of the Triton
kNN for sm_90 with Triton's own compiler at the configurations the dispatch picks
for D = 768, 1536, 2048 and reads the cubin with the cuobjdump bundled with Triton.
It runs in a subprocess: the test session imports triton in interpreter mode.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _toolchain_reason():
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"triton's compiler is not importable: {e}"
    if not hasattr(triton, "compile") or not hasattr(triton.compiler, "ASTSource"):
        return "this triton has no triton.compile / ASTSource"
    nv = Path(triton.__file__).parent / "backends" / "nvidia"
    for tool in ("ptxas", "cuobjdump"):
        if not (nv / "bin" / tool).exists():
            return f"triton's bundled {tool} is missing ({nv / 'bin'})"
    return None


@pytest.mark.skipif(_toolchain_reason() is not None, reason=str(_toolchain_reason()))
def test_knn_candidate_kernel_uses_tensor_cores_without_spills(tmp_path):
    out = tmp_path / "static.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_static.py"), "--kernels", "knn_cand",
                        "--arch", "90", "--dims", "768", "1536", "2048", "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["d"] for r in rows} == {768, 1536, 2048}
    assert len(rows) >= 3
    for r in rows:
        name = f"{r['kernel']} D={r['d']} {r['arch']}"
        assert "error" not in r, name
        assert r["tensor_core_total"] > 0, f"{name}: no tensor-core instruction in the SASS"
        assert r["registers"] <= 128, f"{name}: {r['registers']} registers"
        assert r["local_bytes"] == 0 and r["stack_bytes"] == 0, f"{name}: local memory (spills)"
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"{name}: STL/LDL in the SASS"


@pytest.mark.skipif(_toolchain_reason() is not None, reason=str(_toolchain_reason()))
def test_lloyd_kernels_compile_without_spills(tmp_path):
    """The sub-clustering Lloyd loop's kernels (assignment with converged runs skipped, fused update) at the
    GPU configuration the launchers use, for sm_90 and sm_80: compiled, no local memory, no spills."""
    out = tmp_path / "static.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_static.py"), "--kernels", "assign[lloyd]",
                        "lloyd_update", "--arch", "90", "80", "--dims", "1536", "--no-cuda", "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["kernel"], r["arch"]) for r in rows} == {(k, a) for k in ("assign[lloyd]", "lloyd_update")
                                                        for a in ("sm_90", "sm_80")}
    for r in rows:
        name = f"{r['kernel']} {r['arch']}"
        assert "error" not in r, name
        assert r["registers"] <= 255, f"{name}: {r['registers']} registers"
        assert r["local_bytes"] == 0 and r["stack_bytes"] == 0, f"{name}: local memory (spills)"
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"{name}: STL/LDL in the SASS"


# the CUDA kernels of the Jaccard stages (kernels/cuda/jaccard_cuda.cu), template instances named
JACCARD_CUDA_KERNELS = {
    "krecip_flags_kernel", "expand_kernel<false>", "expand_kernel<true>", "unique_count_kernel",
    "unique_weights_kernel", "query_expansion_kernel<false>", "query_expansion_kernel<true>", "jaccard_slots_kernel",
    "jaccard_partners_kernel<true>", "jaccard_partners_kernel<false>", "jaccard_rows_kernel<true>",
    "jaccard_rows_kernel<false>",
}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_jaccard_kernels_compile_without_spills(tmp_path):
    """nvcc -Xptxas -v for sm_80 and sm_90: every Jaccard kernel present, no spill, no stack, at most
    64 registers (registers leave room for 4 blocks of 256 threads per SM), no static shared memory."""
    out = tmp_path / "static_cuda.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_static.py"), "--no-triton", "--arch", "90", "80",
                        "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [r for r in json.loads(out.read_text())["rows"] if r.get("file") == "jaccard_cuda.cu"]
    for arch in ("sm_90", "sm_80"):
        assert {r["kernel"] for r in rows if r["arch"] == arch} == JACCARD_CUDA_KERNELS, arch
    for r in rows:
        name = f"{r['kernel']} {r['arch']}"
        assert "error" not in r, name
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, f"{name}: spills"
        assert r["stack_bytes"] == 0, f"{name}: {r['stack_bytes']} bytes of stack (local memory)"
        assert r["registers"] <= 64, f"{name}: {r['registers']} registers"
        # the shared-memory table instances take dynamic shared memory, sized per launch
        assert r["static_shared_bytes"] == 0, name
