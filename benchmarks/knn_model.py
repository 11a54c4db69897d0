"""A cost model of the Triton kNN on an H100, from the launches its launcher records. A model, not a measurement.

:func:`knn_model` runs the launcher of ``hilcore/backend/triton/knn.py`` on CPU tensors of the
given shapes with its GPU branch (sm_90 tiles, 132 SMs), records every launch
instead of running it (``gpu_static._recorded_launches``) and prices each launch
from its grid, block sizes and shapes with the H100's published figures:

- FLOPs: the tensor-core FLOPs of the padded tiles each program multiplies
  (candidate pass: the full sweep, or in self-search the symmetric tiles, each
  unordered pair of row blocks once), the float32 FLOPs of the rescoring;
- the symmetric pass's stored tiles (float32, off the diagonal) go to HBM and its
  merge reads them back from HBM with the row-side lists;
- bytes per level: operand bytes every program loads (L2), and the bytes that
  must come from HBM (the candidate pass: each wave of resident programs reads
  its distinct query tiles and column ranges once; prep: read x, write its
  float16 copy; rescoring: the gathered candidate rows, from HBM in the
  pessimistic figure and through L2 in the modelled one);
- waves: programs over 132 SMs x the programs one SM holds (registers and
  shared memory of the compiled kernel, from the static report when given);
- the selection work of the candidate kernel on the CUDA cores: ~8 lane
  operations per tile entry (threshold test) and ~10 per entry per merge round,
  with the rounds per column tile from ``benchmarks/results/knn_certificate_cpu.json``
  (emulated on SYSU-like features) when present.

A launch's time is the largest of its compute and memory times (roofline), the
candidate pass wave by wave with the GEMM and the selection not overlapped.
Everything in it is an assumption written down here; the device check
(``benchmarks/device_check.sh``) measures the real thing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CERT_JSON = ROOT / "benchmarks" / "results" / "knn_certificate_cpu.json"

#: NVIDIA H100 SXM5 datasheet figures (dense, no sparsity). The L2 bandwidth is not in the datasheet: 7 TB/s
#: is an assumption, chipsandcheese.com's ~5.5 TB/s on the H100 PCIe (114 SMs, <= 1755 MHz) scaled to the
#: SXM's 132 SMs and 1980 MHz; every case is also priced at the unscaled 5.5 TB/s (``*_l2_5p5``)
L2_PESSIMISTIC = 5.5e12
H100 = dict(name="NVIDIA H100 SXM5 80GB (datasheet figures; L2 bandwidth assumed)", sms=132,
            fp16_tensor_flops=989.4e12, fp32_flops=66.9e12, hbm_bytes_per_s=3.35e12, l2_bytes_per_s=7.0e12,
            l2_bytes=50 * 2**20, regs_per_sm=65536, smem_per_sm=228 * 1024, max_threads_per_sm=2048,
            launch_s=3e-6)
#: CUDA-core lane operations per second: the float32 rate counts an FMA as 2 FLOPs
LANE_OPS = H100["fp32_flops"] / 2
SELECT_OPS_PER_ENTRY = 8
ROUND_OPS_PER_ENTRY = 10
#: merge rounds per column tile when no emulation is at hand (about the emulated SYSU-sized average)
DEFAULT_ROUNDS_PER_TILE = 10.0

#: SYSU-MM01 training set (both modalities), and a large case
CASES = {"sysu_d1536": ((22258, 11909), 1536), "sysu_d2048": ((22258, 11909), 2048), "1e6_d768": ((10**6,), 768)}
TARGET_S = 8e-3


def _args(fn, args) -> dict:
    return {p.name: a for p, a in zip(fn.params, args)}


def _resident(regs: int | None, smem: int | None, warps: int) -> int:
    """Programs one SM holds (registers in units of 256 per warp, shared memory, threads)."""
    threads = 32 * warps
    by_threads = H100["max_threads_per_sm"] // threads
    by_regs = H100["regs_per_sm"] // (warps * 32 * math.ceil(max(regs or 255, 1) / 8) * 8) if regs else 1
    by_smem = H100["smem_per_sm"] // smem if smem else by_threads
    return max(1, min(by_threads, by_regs, by_smem))


def _rounds(curve: list[float], tiles: int) -> float:
    """Merge rounds of a program sweeping ``tiles`` column tiles: the first tiles of the emulated curve (its
    last value repeated past its end)."""
    if not curve:
        return DEFAULT_ROUNDS_PER_TILE * tiles
    return float(sum(curve[:tiles])) + max(0, tiles - len(curve)) * curve[-1]


def _price(terms, l2_bytes_per_s: float) -> float:
    """Seconds of a stage's parts at an L2 bandwidth: each part (compute seconds, L2 bytes, HBM bytes) takes the
    largest of its compute, L2 and HBM times (roofline), the parts run one after another."""
    return sum(max(c, l2 / l2_bytes_per_s, hbm / H100["hbm_bytes_per_s"]) for c, l2, hbm in terms)


def _priced(stage: dict, terms, launches: int) -> dict:
    """``stage`` with its times at the assumed and at the pessimistic L2 bandwidth, and its parts kept under
    ``_terms`` (for :func:`l2_to_meet`; dropped before the JSON is written)."""
    extra = launches * H100["launch_s"]
    stage.update(time_s=_price(terms, H100["l2_bytes_per_s"]) + extra,
                 time_s_l2_5p5=_price(terms, L2_PESSIMISTIC) + extra, _terms=(list(terms), extra))
    return stage


def _cand_cost(a: dict, kw: dict, grid, static: dict | None, curve: list[float]) -> dict:
    n, m, dp, cols = int(a["N"]), int(a["M"]), int(a["DP"]), int(a["COLS"])
    bm, bn, kp = kw["BLOCK_M"], kw["BLOCK_N"], kw["KP"]
    rt, sp = grid[0], grid[1]
    tiles = [math.ceil((min(m, (s + 1) * cols) - s * cols) / bn) for s in range(sp)]
    per_sm = _resident(static and static.get("registers"), static and static.get("shared_bytes"), kw["num_warps"])
    slots = H100["sms"] * per_sm
    programs = [(r, s) for s in range(sp) for r in range(rt)]  # blockIdx.x (row tile) varies fastest
    waves = math.ceil(len(programs) / slots)
    terms, t_gemm, t_sel, flops, l2, hbm, keys, sel_ops = [], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    def rows_in(r):  # masked rows and columns are not loaded
        return min(bm, n - r * bm)

    def cols_in(s):
        return min(m - s * cols, cols)

    for w in range(waves):
        wave = programs[w * slots:(w + 1) * slots]
        f_w = sum(2.0 * bm * bn * dp * tiles[s] for _, s in wave)
        keys_w = sum(rows_in(r) * kp * 8.0 for r, _ in wave)  # the KP kept keys of each row, written once
        l2_w = sum((tiles[s] * rows_in(r) + cols_in(s)) * dp * 2.0 for r, s in wave) + keys_w
        hbm_w = (sum(rows_in(r) for r in {r for r, _ in wave}) * dp * 2.0
                 + sum(cols_in(s) for s in {s for _, s in wave}) * dp * 2.0 + keys_w)
        # one program per SM slot: its GEMM, then its selection (not overlapped), at the SM's share of the peaks
        longest = max(tiles[s] for _, s in wave)
        gemm_prog = 2.0 * bm * bn * dp * longest / (H100["fp16_tensor_flops"] / slots)
        sel_prog = bm * bn * (SELECT_OPS_PER_ENTRY * longest + ROUND_OPS_PER_ENTRY * _rounds(curve, longest)) \
            / (LANE_OPS / slots)
        terms.append((gemm_prog + sel_prog, l2_w, hbm_w))
        t_gemm += gemm_prog
        t_sel += sel_prog
        flops, l2, hbm, keys = flops + f_w, l2 + l2_w, hbm + hbm_w, keys + keys_w
        sel_ops += sum(bm * bn * (SELECT_OPS_PER_ENTRY * tiles[s] + ROUND_OPS_PER_ENTRY * _rounds(curve, tiles[s]))
                       for _, s in wave)
    return _priced(dict(stage="candidates", flops_tensor=flops, selection_lane_ops=sel_ops, l2_bytes=l2,
                        key_write_bytes=keys, hbm_bytes=hbm, programs=len(programs), programs_per_sm=per_sm,
                        waves=waves, time_s_tensor_cores=t_gemm, time_s_selection=t_sel,
                        config=dict(BLOCK_M=bm, BLOCK_N=bn, KC=kp, splits=sp,
                                    merge_rounds_per_program=_rounds(curve, max(tiles)),
                                    rounds_from="emulation" if curve else f"assumed {DEFAULT_ROUNDS_PER_TILE}/tile")),
                   terms, 1)


def _sym_cost(a: dict, kw: dict, grid, static: dict | None, curve: list[float]) -> dict:
    """The symmetric candidate pass (``_knn_sym_kernel``): program (b, sp) multiplies the tiles (b, b + t mod NB)
    of its part of t = 0..T_b, loads both operand tiles of each through L2, stores each off-diagonal tile
    (BT x BT float32, through TMA) and writes its KP keys per row."""
    n, nb, dp, ts = int(a["N"]), int(a["NB"]), int(a["DP"]), int(a["TS"])
    bt, kp = kw["BT"], kw["KP"]
    sp = grid[1]
    half = nb // 2

    def t_range(b, s):
        t_end = (nb - 1) // 2 + 1 + (1 if nb % 2 == 0 and b < half else 0)
        return range(s * ts, min(t_end, (s + 1) * ts))

    def rows_in(b):  # masked rows are not loaded
        return min(bt, n - b * bt)

    per_sm = _resident(static and static.get("registers"), static and static.get("shared_bytes"), kw["num_warps"])
    slots = H100["sms"] * per_sm
    programs = [(b, s) for s in range(sp) for b in range(nb)]  # blockIdx.x (row block) varies fastest
    waves = math.ceil(len(programs) / slots)
    terms, t_gemm, t_sel, flops, l2, hbm, keys, stored, sel_ops = [], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for w in range(waves):
        wave = programs[w * slots:(w + 1) * slots]
        tiles = {(b, s): list(t_range(b, s)) for b, s in wave}
        f_w = sum(2.0 * bt * bt * dp * len(tl) for tl in tiles.values())
        keys_w = sum(rows_in(b) * kp * 8.0 for b, _ in wave)
        tt_w = sum(bt * bt * 4.0 for tl in tiles.values() for t in tl if t > 0)
        blocks = {(b + t) % nb for (b, _), tl in tiles.items() for t in tl} | {b for b, _ in wave}
        l2_w = sum((rows_in(b) + rows_in((b + t) % nb)) * dp * 2.0 for (b, _), tl in tiles.items() for t in tl) \
            + keys_w + tt_w
        hbm_w = sum(rows_in(b) for b in blocks) * dp * 2.0 + keys_w + tt_w
        longest = max(len(tl) for tl in tiles.values())
        gemm_prog = 2.0 * bt * bt * dp * longest / (H100["fp16_tensor_flops"] / slots)
        sel_prog = bt * bt * (SELECT_OPS_PER_ENTRY * longest + ROUND_OPS_PER_ENTRY * _rounds(curve, longest)) \
            / (LANE_OPS / slots)
        terms.append((gemm_prog + sel_prog, l2_w, hbm_w))
        t_gemm += gemm_prog
        t_sel += sel_prog
        flops, l2, hbm, keys, stored = flops + f_w, l2 + l2_w, hbm + hbm_w, keys + keys_w, stored + tt_w
        sel_ops += sum(bt * bt * (SELECT_OPS_PER_ENTRY * len(tl) + ROUND_OPS_PER_ENTRY * _rounds(curve, len(tl)))
                       for tl in tiles.values())
    return _priced(dict(stage="candidates", flops_tensor=flops, selection_lane_ops=sel_ops, l2_bytes=l2,
                        key_write_bytes=keys, tile_store_bytes=stored, hbm_bytes=hbm, programs=len(programs),
                        programs_per_sm=per_sm, waves=waves, time_s_tensor_cores=t_gemm, time_s_selection=t_sel,
                        config=dict(symmetric=True, BLOCK_M=bt, BLOCK_N=bt, KC=kp, splits=sp, tiles_per_split=ts,
                                    tiles=nb * (nb + 1) // 2,
                                    merge_rounds_per_program=_rounds(curve, max(len(t_range(0, s)) for s in range(sp))),
                                    rounds_from="emulation" if curve else f"assumed {DEFAULT_ROUNDS_PER_TILE}/tile")),
                   terms, 1)


def _sym_merge_cost(a: dict, kw: dict, grid, static: dict | None, curve: list[float]) -> dict:
    """The column side of the symmetric pass (``_knn_sym_merge_kernel``): each row reads its S row-side lists and
    its stored tiles (BR x BT float32 each, from HBM: the buffer is ~N^2 / 2 x 4 bytes), merges them (the
    threshold test per entry and the steady-state rounds of the emulated curve per tile: the list starts full)
    and writes KP keys."""
    n, nb, s = int(a["N"]), int(a["NB"]), int(a["S"])
    kp, br, bt = kw["KP"], kw["BR"], kw["BT"]
    half = nb // 2
    entries = 0.0
    for c in range(nb):
        t_end = (nb - 1) // 2 + 1 + (1 if nb % 2 == 0 and c >= half else 0)
        entries += min(bt, n - c * bt) * bt * (t_end - 1)
    read = entries * 4.0 + n * s * kp * 8.0
    written = n * kp * 8.0
    steady = curve[-1] if curve else DEFAULT_ROUNDS_PER_TILE
    ops = entries * (SELECT_OPS_PER_ENTRY + ROUND_OPS_PER_ENTRY * steady) + n * (s - 1) * kp * kp * 4.0
    per_sm = _resident(static and static.get("registers"), static and static.get("shared_bytes"), kw["num_warps"])
    return _priced(dict(stage="candidates_merge", flops_tensor=0.0, selection_lane_ops=ops, l2_bytes=read + written,
                        hbm_bytes=read + written, programs=grid[0], programs_per_sm=per_sm,
                        waves=math.ceil(grid[0] / (H100["sms"] * per_sm)),
                        config=dict(BR=br, BT=bt, KC=kp, rows_lists=s, rounds_per_tile=steady)),
                   [(ops / LANE_OPS, read + written, read + written)], 1)


def _prep_cost(a: dict, kw: dict, grid) -> dict:
    n, d, dp = int(a["N"]), int(a["D"]), int(a["DP"])
    hbm = n * d * 4.0 + n * dp * 2.0 + 12.0 * n
    return _priced(dict(stage="prep", flops_tensor=0.0, l2_bytes=hbm, hbm_bytes=hbm, programs=grid[0],
                        waves=math.ceil(grid[0] / (H100["sms"] * 16))), [(0.0, 0.0, hbm)], 1)


def _rescore_cost(a: dict, kw: dict, grid, reads: float) -> dict:
    n, d, ncand = int(a["N"]), int(a["D"]), int(a["NCAND"])
    kc = kw["KC"]
    rows = min(float(kc), reads)
    gathered = n * rows * d * 4.0
    own = n * d * 4.0 + n * ncand * 8.0
    flops = 2.0 * n * rows * d
    t_hbm_worst = (gathered + own) / H100["hbm_bytes_per_s"]
    # modelled: rows of one identity share their neighbours, so the gathered rows come through L2 and HBM
    # supplies the float32 database about once
    hbm = own + n * d * 4.0
    terms = [(flops / H100["fp32_flops"], gathered + own, hbm)]
    out = _priced(dict(stage="rescore", flops_fp32=flops, l2_bytes=gathered + own, hbm_bytes=hbm,
                       hbm_bytes_worst=gathered + own, programs=grid[0],
                       config=dict(KC=kc, CP=kw["CP"], rescored_rows_per_query=rows)), terms, 1)
    out["time_s_worst"] = max(t_hbm_worst, out["time_s"] - H100["launch_s"]) + H100["launch_s"]
    return out


def _fallback_cost(n_rows: int, m: int, d: int, k: int) -> dict:
    """The fp32 kernel for ``n_rows`` uncertified rows (split over the SMs) and its merge."""
    import triton

    import hilcore.backend.triton.knn as tknn
    kp = triton.next_power_of_2(k)
    bm, bn, _, _ = tknn._blocks(kp, d, False)
    rt = math.ceil(n_rows / bm)
    sp = tknn._splits(rt, m, bn, kp, H100["sms"], tknn.FALLBACK_KEYS)
    flops = 2.0 * rt * bm * m * d
    l2 = rt * m * d * 4.0 * (1 + bn / bm)
    compute = flops / min(H100["fp32_flops"], H100["fp32_flops"] * rt * sp / H100["sms"])
    return _priced(dict(stage=f"fallback[{n_rows} rows]", flops_fp32=flops, l2_bytes=l2, hbm_bytes=m * d * 4.0,
                        programs=rt * sp, config=dict(splits=sp, BLOCK_M=bm, BLOCK_N=bn)),
                   [(compute, l2, m * d * 4.0)], 2)


def _emulated(d: int) -> dict:
    """Rows of the certificate emulation (benchmarks/bench_knn_certificate.py) by modality, at width d or, when
    that width was not emulated, at the nearest one emulated (``emulated_d`` says which)."""
    if not CERT_JSON.exists():
        return {}
    rows = json.loads(CERT_JSON.read_text()).get("rows", [])
    if not rows:
        return {}
    near = min({r["d"] for r in rows}, key=lambda w: (abs(w - d), -w))
    return {r["modality"]: dict(r, emulated_d=near) for r in rows if r["d"] == near}


def knn_cost(n: int, d: int, k: int = 30, *, static: dict | None = None, emulated: dict | None = None,
             tc_blocks=None, symmetric: bool = True) -> dict:
    """Modelled stages of ``hilcore.backend.triton.knn.knn`` (self-search of n rows, width d, k) on an H100.

    ``static``: the static report's rows (registers, shared memory) for occupancy, by kernel function name
    (``_knn_cand_kernel``, ``_knn_sym_kernel``, ``_knn_sym_merge_kernel``);
    ``emulated``: the certificate emulation's row (rescored candidates, merge rounds, uncertified rows);
    ``tc_blocks``: another candidate-kernel configuration (BLOCK_M, BLOCK_N, BLOCK_K, warps), for comparison;
    ``symmetric``: False models the full sweep (the launcher's ``SYMMETRIC`` off)."""
    from unittest import mock

    import torch

    import hilcore.backend.triton.knn as tknn
    from gpu_static import _recorded_launches

    x = torch.empty((n, d), dtype=torch.float32)  # never read
    kc = tknn.candidates(k)
    patches = [mock.patch.object(tknn, "interpreting", lambda: False),
               mock.patch.object(tknn, "_sm_count", lambda t, interpret: H100["sms"]),
               mock.patch.object(tknn, "_cc_major", lambda t, interpret: 9),
               mock.patch.object(tknn, "_exact", lambda *a, **kw: None),
               mock.patch.object(tknn, "SYMMETRIC", symmetric)]
    if tc_blocks is not None:
        patches.append(mock.patch.object(tknn, "_tc_blocks", lambda *a, **kw: tc_blocks))
    with contextlib_stack(patches), _recorded_launches() as launches:
        tknn._fp16_path(x, x, k, kc, True, False, {})
    em = emulated or {}
    curve = em.get("merge_rounds_curve", [])
    reads = em.get("rescored_candidates_mean", float(kc))
    stages = []
    for fn, args, kwargs, grid in launches:
        a = _args(fn, args)
        name = fn.__name__
        if name == "_knn_prep_kernel":
            stages.append(_prep_cost(a, kwargs, grid))
        elif name == "_knn_cand_kernel":
            stages.append(_cand_cost(a, kwargs, grid, (static or {}).get(name), curve))
        elif name == "_knn_sym_kernel":
            stages.append(_sym_cost(a, kwargs, grid, (static or {}).get(name), curve))
        elif name == "_knn_sym_merge_kernel":
            stages.append(_sym_merge_cost(a, kwargs, grid, (static or {}).get(name), curve))
        elif name == "_knn_rescore_kernel":
            stages.append(_rescore_cost(a, kwargs, grid, reads))
    unc = int(em.get("uncertified_rows", 0))
    if unc:
        stages.append(_fallback_cost(unc, n, d, k))
    return dict(n=n, d=d, k=k, stages=stages, time_s=sum(s["time_s"] for s in stages),
                _terms=[s.pop("_terms") for s in stages],
                emulated_d=em.get("emulated_d"),
                time_s_l2_5p5=sum(s["time_s_l2_5p5"] for s in stages),
                l2_bytes=sum(s["l2_bytes"] for s in stages), hbm_bytes=sum(s["hbm_bytes"] for s in stages),
                uncertified_rows=unc, inputs_from_emulation=bool(em))


class contextlib_stack:
    """Enter several context managers (a tiny ExitStack that keeps the call above one line)."""

    def __init__(self, cms):
        self.cms = cms

    def __enter__(self):
        for c in self.cms:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        for c in reversed(self.cms):
            c.__exit__(*exc)
        return False


def time_at(runs: list[dict], l2_bytes_per_s: float) -> float:
    """Modelled seconds of ``runs`` (:func:`knn_cost` results still holding their ``_terms``) at an L2 bandwidth."""
    return sum(_price(terms, l2_bytes_per_s) + extra for r in runs for terms, extra in r["_terms"])


def l2_to_meet(runs: list[dict], target_s: float = TARGET_S) -> float | None:
    """The smallest L2 bandwidth (bytes/s, rounded up to 0.01 TB/s) at which ``runs`` take at most ``target_s`` in
    the model; ``None`` when no L2 bandwidth is enough (compute or HBM alone exceed the target)."""
    if time_at(runs, 1e18) > target_s:
        return None
    lo, hi = 1e9, 1e15
    for _ in range(200):  # time_at falls as the bandwidth grows: bisection
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if time_at(runs, mid) <= target_s else (mid, hi)
    return math.ceil(hi / 1e10) * 1e10


STATIC_KERNELS = {"_knn_cand_kernel": "knn_cand[k=30,", "_knn_sym_kernel": "knn_sym[k=30,",
                  "_knn_sym_merge_kernel": "knn_sym_merge[k=30,"}


def _cand_pass(run: dict) -> dict:
    """The candidate pass of a modelled run (the candidate kernel, or the symmetric kernel and its merge): bytes
    through L2, the operand loads alone (without key writes, stored tiles and the merge), HBM bytes, time."""
    st = [s for s in run["stages"] if s["stage"].startswith("candidates")]
    l2 = sum(s["l2_bytes"] for s in st)
    main = next(s for s in st if s["stage"] == "candidates")
    operands = main["l2_bytes"] - main["key_write_bytes"] - main.get("tile_store_bytes", 0.0)
    return dict(config=main["config"], l2_bytes=l2, operand_l2_bytes=operands, key_write_bytes=main["key_write_bytes"],
                hbm_bytes=sum(s["hbm_bytes"] for s in st), time_s=sum(s["time_s"] for s in st),
                time_s_l2_5p5=sum(s["time_s_l2_5p5"] for s in st))


def model(static_rows: list[dict] | None = None) -> dict:
    """The kNN cost model at SYSU-MM01 size (D = 1536, 2048; both modalities) and 10^6 x 768, plus the
    candidate pass of the previous kernel (64 x 32 tiles) and of the full sweep of 128 x 128 tiles (the
    symmetric pass off) for comparison."""
    import hilcore.backend.triton.knn as tknn

    out = dict(note="a model, not a measurement: launches recorded from the launcher, priced with H100 "
                    "datasheet figures (see benchmarks/knn_model.py for every assumption)",
               device=H100, target_s=TARGET_S, cases={})
    for case, (sizes, d) in CASES.items():
        em = _emulated(d)
        static = {fn: r for r in static_rows or [] for fn, pre in STATIC_KERNELS.items()
                  if r.get("kernel", "").startswith(pre) and r.get("d") == d and r.get("arch") == "sm_90"}
        runs = []
        for n, mod in zip(sizes, ("rgb", "ir")):
            # 10^6 rows: the SYSU RGB emulation (its rounds curve extended by its last value, its rescored count)
            e = em.get(mod) if n in (22258, 11909) else em.get("rgb")
            run = knn_cost(n, d, 30, static=static, emulated=e)
            before = knn_cost(n, d, 30, tc_blocks=(64, 32, 64, 8), emulated=e, symmetric=False)
            full = knn_cost(n, d, 30, static=static, emulated=e, symmetric=False)
            if n not in (22258, 11909) and e:
                run["note"] = "rounds and rescored candidates extrapolated from the SYSU-sized RGB emulation"
            cand, old = _cand_pass(run), _cand_pass(before)
            run["candidate_pass"] = cand
            run["candidate_pass_before"] = old
            run["candidate_pass_full_sweep"] = dict(_cand_pass(full), knn_time_s=full["time_s"],
                                                    knn_time_s_l2_5p5=full["time_s_l2_5p5"])
            run["candidate_l2_ratio"] = cand["l2_bytes"] / old["l2_bytes"]
            run["modality"] = mod if len(sizes) > 1 else None
            runs.append(run)
        total = sum(r["time_s"] for r in runs)
        need = l2_to_meet(runs) if len(sizes) > 1 else None
        cands = [r["candidate_pass"] for r in runs]
        olds = [r["candidate_pass_before"] for r in runs]
        fulls = [r["candidate_pass_full_sweep"] for r in runs]
        out["cases"][case] = dict(
            d=d, runs=runs, time_s=total, time_s_l2_5p5=sum(r["time_s_l2_5p5"] for r in runs),
            candidate_l2_ratio=sum(c["l2_bytes"] for c in cands) / sum(o["l2_bytes"] for o in olds),
            # the operand loads alone (no key writes, no stored tiles, no merge): the floor set by the tiles, the
            # padding of the last row and column tiles and, in self-search, the symmetric tiles
            candidate_operand_l2_ratio=sum(c["operand_l2_bytes"] for c in cands)
            / sum(o["operand_l2_bytes"] for o in olds),
            full_sweep_l2_ratio=sum(f["l2_bytes"] for f in fulls) / sum(o["l2_bytes"] for o in olds),
            full_sweep_time_s=sum(f["knn_time_s"] for f in fulls),
            full_sweep_time_s_l2_5p5=sum(f["knn_time_s_l2_5p5"] for f in fulls),
            meets_target=total <= TARGET_S if len(sizes) > 1 else None,
            meets_target_l2_5p5=sum(r["time_s_l2_5p5"] for r in runs) <= TARGET_S if len(sizes) > 1 else None,
            l2_bytes_per_s_to_meet_target=need)
        for r in runs:
            del r["_terms"]
    out["kc"] = tknn.candidates(30)
    return out


def table(doc: dict) -> str:
    """The model's stages as text (the static report prints it)."""
    lines = [f"kNN cost model on an {doc['device']['name']} (a model, not a measurement), k = 30:"]
    for case, c in doc["cases"].items():
        head = f"{case}: {1e3 * c['time_s']:.2f} ms ({1e3 * c['time_s_l2_5p5']:.2f} ms at 5.5 TB/s L2)"
        if c.get("meets_target") is not None:
            head += f", target <= {1e3 * doc['target_s']:.0f} ms {'met' if c['meets_target'] else 'MISSED'}"
        if c.get("meets_target") is not None:
            need = c.get("l2_bytes_per_s_to_meet_target")
            head += f" (needs L2 >= {need / 1e12:.2f} TB/s)" if need else " (no L2 bandwidth is enough)"
        head += (f"; candidate-pass L2 bytes {c['candidate_l2_ratio']:.4f} x the 64x32 kernel's"
                 f" ({c['candidate_operand_l2_ratio']:.4f} operand loads alone; full sweep of 128x128 tiles"
                 f" {c['full_sweep_l2_ratio']:.4f}, {1e3 * c['full_sweep_time_s']:.2f} ms /"
                 f" {1e3 * c['full_sweep_time_s_l2_5p5']:.2f} ms)")
        lines.append(head)
        for r in c["runs"]:
            st = ", ".join(f"{s['stage']} {1e3 * s['time_s']:.2f}" for s in r["stages"])
            lines.append(f"  {r.get('modality') or ''} N={r['n']} D={r['d']}: {1e3 * r['time_s']:.2f} ms ({st} ms), "
                         f"L2 {r['l2_bytes'] / 1e9:.1f} GB, HBM {r['hbm_bytes'] / 1e9:.2f} GB")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Recompute the model into an existing static report (its compiled rows give the occupancy)."""
    import argparse
    import sys

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--static", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_static.json",
                    help="the static report to write the model into (key knn_model)")
    args = ap.parse_args(argv)
    doc = json.loads(args.static.read_text())
    doc["knn_model"] = model(static_rows=doc.get("rows", []))
    args.static.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(table(doc["knn_model"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
