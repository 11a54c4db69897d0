"""Static GPU report: registers, spills, shared memory and tensor-core instructions, no GPU needed.

Every Triton kernel of hilcore is compiled with Triton's own compiler for
sm_90 and sm_80 at the configuration its launcher picks on a GPU (block
sizes, warps, stages; the divisibility-by-16 specialisation a real launch
gets for aligned pointers, D and strides), for D in {768, 1536, 2048}. The
kNN kernels are taken from the kNN launcher itself: it runs on CPU tensors of
the SYSU-MM01 shapes with its GPU branch (the target's SM count decides the
column splits), its launches are recorded instead of run, and Triton's binder
specialises their arguments as a launch does. Each row carries D, the
configuration and, for the kNN, its launches (rows, k, grid, splits). The TTGIR's
shared layouts say whether the operand tiles are swizzled (``shared_swizzled``:
NVMMA or a multi-phase XOR swizzle, conflict-free reads). The
cubin is read with the ``cuobjdump`` bundled with Triton: resource usage
(REG, STACK, LOCAL, SHARED) and the SASS, where the tensor-core instructions
(HMMA, HGMMA, IMMA, ...) are counted. Every CUDA file in ``kernels/cuda`` is
compiled with ``nvcc -Xptxas -v`` for the same architectures when nvcc exists.

Nothing here runs a kernel: the numbers say what the compiled code is, not
how fast it is ("compiled, not run").

Usage:
    python benchmarks/gpu_static.py --json benchmarks/results/gpu_static.json
    python benchmarks/gpu_static.py --kernels knn_cand --arch 90 --dims 768
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.pop("TRITON_INTERPRET", None)  # compile for real, never interpret
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the launch default; silences triton's notice

DIMS = (768, 1536, 2048)
ARCHS = (90, 80)
# the pipeline's sizes (hilcore.EpochConfig defaults): k1 = 30 neighbours, k2 = 6,
# n_sub = 9 sub-centres, memories of 1 + n_sub slots
K1, K2, N_SUB = 30, 6, 9
TC_OPS = ("HMMA", "HGMMA", "IMMA", "IGMMA", "QGMMA", "UTCHMMA", "UTCQMMA", "UTCIMMA", "DMMA")


def _tool(name: str) -> str | None:
    import triton
    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(p) if p.exists() else shutil.which(name)


def triton_specs(d: int, arch: int = 90) -> list[dict]:
    """(name, jit fn, signature, constexprs, options, divisible args) of every Triton kernel at width d.

    The kNN kernels come from running the kNN launcher itself with its launches
    recorded (:func:`knn_specs`); the others from their launchers' block functions."""
    import triton

    import hilcore.backend.triton.brst as tbrst
    import hilcore.backend.triton.centers as tcen
    import hilcore.backend.triton.knn as tknn
    import hilcore.backend.triton.mccl as tmccl
    import hilcore.backend.triton.memory as tmem

    specs = knn_specs(d, arch)

    def add(name, fn, ptr_types, constexprs, options, scalars=None, divisible=()):
        sig = {}
        for p in fn.params:
            if p.is_constexpr:
                sig[p.name] = "constexpr"
            elif p.name.endswith("_ptr"):
                sig[p.name] = ptr_types.get(p.name, "*fp32")
            else:
                sig[p.name] = (scalars or {}).get(p.name, "i32")
        div = [i for i, p in enumerate(fn.params)
               if not p.is_constexpr and (p.name.endswith("_ptr") or p.name in divisible)]
        specs.append(dict(name=name, fn=fn, signature=sig, constexprs=constexprs, options=options,
                          divisible=div))

    # centres (hilcore/backend/triton/centers.py launchers, GPU branch)
    add("segment_mean", tcen._segment_mean_kernel, {"order_ptr": "*i64", "starts_ptr": "*i64", "sizes_ptr": "*i64"},
        dict(BLOCK_R=32, BLOCK_D=128), dict(num_warps=4), divisible=("D",))
    k_p = max(2, triton.next_power_of_2(N_SUB))
    bm_a, bd_a, w_a = max(8, min(64, 4096 // (k_p * 32))), 32, 4  # the GPU branch of centers._assign_config
    add("assign", tcen._assign_kernel,  # seeding / final assignment
        {"seg_ptr": "*i64", "a_ptr": "*i64", "done_ptr": "*i32"},
        dict(BLOCK_M=bm_a, K_P=k_p, BLOCK_D=bd_a, SCORE=False, SKIP_DONE=False), dict(num_warps=w_a),
        divisible=("D",))
    add("assign[lloyd]", tcen._assign_lloyd_kernel,  # the Lloyd loop's (converged runs and bounded rows skipped)
        {"seg_ptr": "*i64", "a_ptr": "*i64", "done_ptr": "*i32", "prev_ptr": "*i64", "ub_ptr": "*fp64",
         "lb_ptr": "*fp64", "par_ptr": "*fp64", "cnt_ptr": "*i32"},
        dict(BLOCK_M=bm_a, K_P=k_p, BLOCK_D=bd_a, INIT=False, COUNT=False), dict(num_warps=w_a),
        divisible=("D",))
    u = tcen._UPDATE_GPU
    add("lloyd_update", tcen._lloyd_update_kernel,
        {"a_ptr": "*i64", "prev_ptr": "*i64", "done_ptr": "*i32", "starts_ptr": "*i64", "sizes_ptr": "*i64"},
        dict(RUNS=u["RUNS"], K_P=k_p, BLOCK_R=u["BLOCK_R"], BLOCK_D=u["BLOCK_D"]), dict(num_warps=u["num_warps"]),
        divisible=("D",))
    # MCCL forward / backward, memory update, BRST scan
    s = 1 + N_SUB
    bb, s_p, bd, bo, w = tmccl._blocks(s, d, False)
    add("mccl_fwd", tmccl._mccl_fwd_kernel, {"cstar_ptr": "*i64"}, dict(BLOCK_B=bb, S_P=s_p, BLOCK_D=bd),
        dict(num_warps=w), scalars={"EPS": "fp32"}, divisible=("D",))
    add("mccl_bwd", tmccl._mccl_bwd_kernel, {"cstar_ptr": "*i64"},
        dict(BLOCK_B=bb, S_P=s_p, BLOCK_D=bd, BLOCK_O=bo), dict(num_warps=w), scalars={"EPS": "fp32"},
        divisible=("D",))
    s_p, bd, w = tmem._blocks(s, d, False)
    add("memory_update", tmem._memory_update_kernel, {"order_ptr": "*i64", "seg_ptr": "*i64", "tgt_ptr": "*i64"},
        dict(S_P=s_p, BLOCK_D=bd), dict(num_warps=w), scalars={"MU": "fp32", "EPS": "fp32"}, divisible=("D",))
    bm, bn, bk, w = tbrst._blocks(d, False)
    add("brst_scan", tbrst._brst_scan_kernel, {"best_ptr": "*i64"}, dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk),
        dict(num_warps=w), divisible=("D", "stride_x", "stride_pr"))
    return specs


# The kNN calls of one epoch at SYSU-MM01 size: the Jaccard kNN (k = k1) of the RGB
# and IR features (their row counts decide the column splits), and a small k = k2.
KNN_CASES = ((22258, K1), (11909, K1), (11909, K2))
# SMs of the devices the splits are computed for: H100/H200 SXM (sm_90), A100 (sm_80)
SMS = {90: 132, 80: 108}


@contextlib.contextmanager
def _recorded_launches():
    """Every ``kernel[grid](...)`` inside is recorded (kernel, args, kwargs, grid), not run."""
    from triton.runtime.jit import JITFunction

    launches = []
    run = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        launches.append((self, args, dict(kwargs), grid))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = run


def knn_specs(d: int, arch: int) -> list[dict]:
    """The kNN kernels exactly as the launcher of hilcore/backend/triton/knn.py launches them on a GPU.

    For each case of :data:`KNN_CASES` the fp16 path (``_fp16_path``: prep, candidates,
    rescoring; once with the symmetric self-search pass and once with the full sweep, which
    database searches and larger self-searches take) and the fp32 kernel of the uncertified rows (``_exact`` with GATHER) run on
    CPU tensors of the real shapes with the GPU branch of every choice (``interpreting()``
    false, the SM count of the target) and their launches recorded, not run; each
    distinct (kernel, constexprs, launch options) becomes a spec whose arguments Triton's
    own binder specialises as a launch would (divisibility of pointers, sizes, strides)."""
    import torch
    from unittest import mock

    import hilcore.backend.triton.knn as tknn

    specs, seen = [], {}
    for n, k in KNN_CASES:
        kc = tknn.candidates(k)
        x = torch.empty((n, d), dtype=torch.float32)  # never read: nothing runs
        with mock.patch.object(tknn, "interpreting", lambda: False), \
                mock.patch.object(tknn, "_sm_count", lambda t, interpret: SMS.get(arch, 132)), \
                mock.patch.object(tknn, "_cc_major", lambda t, interpret: arch // 10):
            fp16 = []
            for sym in (True, False):  # the symmetric self-search and the full sweep (database search, large N)
                info: dict = {}
                with mock.patch.object(tknn, "_exact", lambda *a, **kw: None), \
                        mock.patch.object(tknn, "SYMMETRIC", sym), _recorded_launches() as rec:
                    tknn._fp16_path(x, x, k, kc, True, False, info)
                fp16 += [(*la, info) for la in rec]
            rows = torch.arange(min(n, 1000), dtype=torch.int64)  # the uncertified rows
            idx = torch.empty((n, k), dtype=torch.int64)
            with _recorded_launches() as fp32:
                tknn._exact(x, x, k, True, rows=rows, idx=idx, sim=torch.empty((n, k)))
            foreign = []
            if (n, k) == KNN_CASES[0]:  # the rescoring of faiss_gpu / cuvs candidates (CHECK=True)
                cand = torch.arange(kc, dtype=torch.int64).expand(n, kc)
                with mock.patch.object(tknn, "_exact", lambda *a, **kw: None), _recorded_launches() as foreign:
                    tknn.rescore_candidates(x, x, k, cand, torch.zeros(n, kc), True)
        for fn, args, kwargs, grid, *info in fp16 + [(*la, {}) for la in fp32 + foreign]:
            const = {p.name: kwargs.get(p.name, p.default) for p in fn.params if p.is_constexpr}
            opts = {o: kwargs[o] for o in ("num_warps", "num_stages") if o in kwargs}
            key = (fn.__name__, tuple(sorted(const.items())), tuple(sorted(opts.items())))
            launch = dict(n=n, k=k, grid=list(grid), splits=info[0].get("splits"), sms=SMS.get(arch, 132),
                          symmetric=info[0].get("symmetric"))
            if key in seen:  # the same compiled kernel: one more launch of it
                seen[key]["launches"].append(launch)
                continue
            short = fn.__name__.removeprefix("_knn_").removesuffix("_kernel")
            name = {"cand": f"knn_cand[k={k},KC={const.get('KP')}]",
                    "sym": f"knn_sym[k={k},KC={const.get('KP')}]",
                    "sym_merge": f"knn_sym_merge[k={k},KC={const.get('KP')}]",
                    "rescore": f"knn_rescore_lib[k={k},KC={const.get('KC')}]" if const.get("CHECK")  # faiss_gpu/cuvs
                    else f"knn_rescore[k={k},KC={const.get('KC')},CP={const.get('CP')}]",
                    "topk": f"knn_fp32[k={k}{',split' if const.get('SPLIT') else ''}]",
                    "merge": f"knn_merge[k={k},CP={const.get('CP')}]", "prep": "knn_prep"}[short]
            seen[key] = dict(name=name, fn=fn, args=args, kwargs=kwargs, constexprs=const, options=opts,
                             launches=[launch])
            specs.append(seen[key])
    return specs


def sass_stats(cubin: bytes) -> dict:
    """Registers, stack, local, shared and instruction counts of a cubin (cuobjdump)."""
    cuobjdump = _tool("cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res)
    ops = collections.Counter(re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", sass, re.M))
    tc = {op: ops[op] for op in TC_OPS if ops.get(op)}
    return dict(registers=int(m[1]), stack_bytes=int(m[2]), static_shared_bytes=int(m[3]), local_bytes=int(m[4]),
                spill_stores=ops.get("STL", 0), spill_loads=ops.get("LDL", 0), tensor_core=tc,
                tensor_core_total=sum(tc.values()), ffma=ops.get("FFMA", 0),
                ldsm=ops.get("LDSM", 0), lds=ops.get("LDS", 0))


def _bound_source(spec: dict, target):
    """(ASTSource, options) of a recorded launch, specialised by Triton's own binder as a launch would be."""
    from triton import knobs
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = spec["fn"]
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    # the compilation knobs JITFunction.run passes to the binder; which exist depends on the Triton version
    # (3.6: instrumentation_mode; 3.9: + fpsan_homomorphic_casts)
    kwargs = dict(spec["kwargs"], debug=False)
    for knob in ("instrumentation_mode", "fpsan_homomorphic_casts"):
        if hasattr(knobs.compilation, knob):
            kwargs[knob] = getattr(knobs.compilation, knob)
    bound, specialization, options = binder(*spec["args"], **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return ASTSource(fn, signature, constexprs, attrs), options.__dict__


def swizzled(layout: str) -> bool:
    """True for a TTGIR shared layout whose reads are conflict-free by construction: NVMMA with a swizzle
    width (wgmma / ldmatrix on sm_90) or an XOR swizzle with more than one phase (ldmatrix on sm_80)."""
    m = re.search(r"swizzlingByteWidth = (\d+)", layout)
    if layout.startswith("nvmma_shared"):
        return bool(m and int(m[1]) > 0)
    m = re.search(r"maxPhase = (\d+)", layout)
    return bool(m and int(m[1]) > 1)


def compile_triton(spec: dict, arch: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", arch, 32)
    if "args" in spec:  # a recorded launch
        src, options = _bound_source(spec, target)
    else:
        src = triton.compiler.ASTSource(spec["fn"], spec["signature"], constexprs=spec["constexprs"],
                                        attrs={(i,): [["tt.divisibility", 16]] for i in spec["divisible"]})
        options = spec["options"]
    k = triton.compile(src, target=target, options=options)
    out = sass_stats(k.asm["cubin"])
    out["shared_bytes"] = int(k.metadata.shared)  # dynamic shared memory the launch asks for
    ttgir = k.asm["ttgir"]
    out["shared_layouts"] = sorted(set(re.findall(r"#ttg\.(nvmma_shared<[^>]*>|swizzled_shared<[^>]*>)", ttgir)))
    out["shared_swizzled"] = bool(out["shared_layouts"]) and all(map(swizzled, out["shared_layouts"]))
    out["num_warps"] = int(k.metadata.num_warps)
    out["num_stages"] = int(k.metadata.num_stages)
    return out


def triton_report(dims, archs, only=None) -> list[dict]:
    rows = []
    for d in dims:
        for arch in archs:
            for spec in triton_specs(d, arch):
                if only and not any(spec["name"].startswith(o) for o in only):
                    continue
                r = dict(kind="triton", kernel=spec["name"], d=d, arch=f"sm_{arch}",
                         config={**spec["constexprs"], **spec["options"]})
                if "launches" in spec:
                    r["launches"] = spec["launches"]
                try:
                    r.update(compile_triton(spec, arch))
                except Exception as e:  # report, do not hide: a kernel that does not compile is a finding
                    r["error"] = f"{type(e).__name__}: {e}"[:400]
                rows.append(r)
    rows.sort(key=lambda r: (r["d"], _order(r["kernel"]), r["arch"] != "sm_90"))
    return rows


def _order(kernel: str) -> int:
    for i, p in enumerate(("knn_sym[", "knn_sym_merge", "knn_cand", "knn_rescore", "knn_prep", "knn_fp32", "knn_merge",
                           "segment_mean", "assign",
                           "lloyd_update", "mccl_fwd", "mccl_bwd", "memory_update", "brst_scan")):
        if kernel.startswith(p):
            return i
    return 99


def cuda_report(archs) -> list[dict]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return [dict(kind="cuda", error="nvcc not found")]
    rows = []
    for cu in sorted((ROOT / "kernels" / "cuda").glob("*.cu")):
        for arch in archs:
            with tempfile.TemporaryDirectory() as tmp:
                obj = Path(tmp) / "k.cubin"
                p = subprocess.run([nvcc, "-cubin", f"-arch=sm_{arch}", "-O3", "--expt-relaxed-constexpr",
                                    "-Xptxas", "-v", "-I", str(ROOT / "kernels"), "-o", str(obj), str(cu)],
                                   capture_output=True, text=True)
                if p.returncode:
                    rows.append(dict(kind="cuda", file=cu.name, arch=f"sm_{arch}", error=p.stderr[-400:]))
                    continue
                rows += _ptxas_rows(p.stderr, cu.name, arch, obj.read_bytes())
    return rows


def _dynamic_shared() -> dict:
    """Largest dynamic shared memory per block of the CUDA kernels that take it (their launchers
    size it per launch; kernels/cuda/launchers.h): 8 warps x region slots x slot bytes."""
    text = (ROOT / "kernels" / "cuda" / "launchers.h").read_text()
    slots = {k: int(v) for k, v in re.findall(r"constexpr int64_t (kJaccard\w+SmemSlots) = (\d+);", text)}
    out = {}
    if "kJaccardPartnersSmemSlots" in slots:
        out["jaccard_partners_kernel<true>"] = 8 * slots["kJaccardPartnersSmemSlots"] * 4
    if "kJaccardRowsSmemSlots" in slots:
        out["jaccard_rows_kernel<true>"] = 8 * slots["kJaccardRowsSmemSlots"] * 8
    return out


def _demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    short = {}
    for n, o in zip(names, out):
        # "void hilcore::cuda::(anonymous namespace)::jaccard_rows_kernel<true>(...)" -> "jaccard_rows_kernel<true>"
        o = (o or n).replace("(anonymous namespace)::", "").split("(")[0]
        base, _, targs = o.partition("<")
        base = base.split()[-1].split("::")[-1] if base.strip() else n
        short[n] = base + ("<" + targs if targs else "")
    return short


def _ptxas_rows(log: str, file: str, arch: int, cubin: bytes) -> list[dict]:
    rows, cur = [], None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            cur = dict(kind="cuda", file=file, arch=f"sm_{arch}", mangled=m[1])
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur.update(stack_bytes=int(m[1]), spill_store_bytes=int(m[2]), spill_load_bytes=int(m[3]))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["registers"] = int(m[1])
            s = re.search(r"(\d+) bytes smem", line)
            cur["static_shared_bytes"] = int(s[1]) if s else 0
    # tensor-core instructions per function from the SASS
    cuobjdump = _tool("cuobjdump")
    per_fn = {}
    if cuobjdump:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(cubin)
            f.flush()
            sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
        fn = None
        for line in sass.splitlines():
            m = re.match(r"\s+Function : (\S+)", line)
            if m:
                fn = m[1]
                per_fn[fn] = collections.Counter()
            elif fn:
                m = re.match(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", line)
                if m:
                    per_fn[fn][m[1]] += 1
    names = _demangle([r["mangled"] for r in rows])
    dyn = _dynamic_shared()
    for r in rows:
        r["kernel"] = names[r["mangled"]]
        if r["kernel"] in dyn:
            r["dynamic_shared_max_bytes"] = dyn[r["kernel"]]
        ops = per_fn.get(r["mangled"], collections.Counter())
        tc = {op: ops[op] for op in TC_OPS if ops.get(op)}
        r.update(tensor_core=tc, tensor_core_total=sum(tc.values()))
    return rows


def table(rows: list[dict]) -> str:
    head = (f"{'kind':6} {'kernel':36} {'D':>5} {'arch':6} {'regs':>4} {'spill':>5} {'smem B':>7} "
            f"{'tensor-core ops':>22}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['kind']:6} {r.get('kernel', r.get('file', '')):36} {r.get('d') or '':>5} "
                         f"{r.get('arch', ''):6} ERROR {r['error'][:80]}")
            continue
        spill = (r.get("spill_stores", 0) + r.get("spill_loads", 0) + r.get("local_bytes", 0)
                 if r["kind"] == "triton" else r.get("spill_store_bytes", 0) + r.get("spill_load_bytes", 0))
        smem = r.get("shared_bytes", r.get("static_shared_bytes", 0))
        if r.get("dynamic_shared_max_bytes"):
            smem = f"<={r['dynamic_shared_max_bytes'] // 1024}Ki"  # dynamic, sized per launch
        tc = " ".join(f"{k}:{v}" for k, v in r["tensor_core"].items()) or "0"
        lines.append(f"{r['kind']:6} {r['kernel'][:36]:36} {r.get('d') or '-':>5} {r['arch']:6} {r['registers']:>4} "
                     f"{spill:>5} {smem:>7} {tc:>22}")
    return "\n".join(lines)


def _row_key(r: dict) -> tuple:
    return (r["kind"], r.get("kernel", r.get("file")), r.get("d"), r.get("arch"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    ap.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities, e.g. 90 80")
    ap.add_argument("--kernels", nargs="+", help="only Triton kernels whose name starts with one of these")
    ap.add_argument("--no-cuda", action="store_true", help="skip the nvcc part")
    ap.add_argument("--no-triton", action="store_true", help="only the nvcc part")
    ap.add_argument("--no-model", action="store_true", help="leave out the kNN cost model (benchmarks/knn_model.py)")
    ap.add_argument("--merge", action="store_true",
                    help="with --json: keep the rows of the existing file that this run did not compile "
                         "(the other kind, or other Triton kernels/dims/archs)")
    args = ap.parse_args(argv)
    import triton

    rows = [] if args.no_triton else triton_report(args.dims, args.arch, args.kernels)
    if not args.no_cuda and not args.kernels:
        rows += cuda_report(args.arch)
    for r in rows:
        r.setdefault("d", None)  # CUDA kernels: D is a runtime argument, nothing is compiled per D
    print(table(rows))
    if args.json and args.merge and args.json.exists():
        done = {_row_key(r) for r in rows}
        kept = [r for r in json.loads(args.json.read_text())["rows"] if _row_key(r) not in done]
        if args.no_triton:
            kept = [r for r in kept if r["kind"] != "cuda"]  # every CUDA row was recompiled
        rows = kept + rows
    if args.json:
        nvcc = shutil.which("nvcc")
        nvcc_v = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1] \
            if nvcc else None
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = dict(
            note="compiled, not run: static resource usage of the SASS; no kernel was executed",
            device="none (compiled for " + ", ".join(f"sm_{a}" for a in args.arch) + f" on {platform.node() or 'host'})",
            triton=triton.__version__, nvcc=nvcc_v, dims=args.dims,
            knn_cases=[dict(n=n, k=k) for n, k in KNN_CASES], sms={f"sm_{a}": SMS.get(a, 132) for a in args.arch},
            rows=rows)
        if not args.no_model and any(r.get("kernel", "").startswith("knn_cand") for r in rows):
            import knn_model  # benchmarks/, beside this script
            doc["knn_model"] = knn_model.model(static_rows=rows)
            print(knn_model.table(doc["knn_model"]))
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
