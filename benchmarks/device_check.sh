#!/usr/bin/env bash
# One GPU run of hilcore, <= 8 minutes on a fresh GPU machine without network.
#
#   bash benchmarks/device_check.sh            # from the repository root
#   TOTAL_S=300 bash benchmarks/device_check.sh
#
# Steps, each bounded by `timeout` against one overall deadline (TOTAL_S, default
# 470 s), so the script always finishes and keeps what it got:
#   1. build: pip install --no-build-isolation --no-deps --no-index -e .
#      (falls back to a direct CMake build with HILCORE_CUDA=ON)
#   2. GPU tests (pytest; conftest leaves TRITON_INTERPRET unset on a GPU)
#   3. compute-sanitizer memcheck on the CUDA tests
#   4. bench_knn.py --device cuda: the kNN backends side by side (triton, triton_fp32,
#      torch, faiss_gpu, cuvs; a library not installed is a skipped column with the reason)
#      bench_cluster.py --device cuda --no-baseline
#   5. bench_epoch.py --device cuda --skip-loop
#   6. bench_scale.py --device cuda up to 10^6 (its own budget from what is left)
# Every result lands in benchmarks/results/ with the device named: the benches'
# JSONs (file names carry the GPU model) and device_check_<gpu>.json with each
# step's exit status, seconds and log tail. Logs: benchmarks/results/device_check_logs/.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}
TOTAL_S=${TOTAL_S:-470}
START=$(date +%s)
DEADLINE=$((START + TOTAL_S))
RES=$ROOT/benchmarks/results
LOGS=$RES/device_check_logs
mkdir -p "$LOGS"
unset TRITON_INTERPRET
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export TRITON_DEFAULT_FP_FUSION=1

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
GPU=${GPU:-unknown-gpu}
SLUG=$(echo "$GPU" | tr 'A-Z' 'a-z' | sed -e 's/nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
STEPS=$LOGS/steps.tsv
: > "$STEPS"
echo "# device_check on $GPU, budget ${TOTAL_S}s"

# step NAME BUDGET_S CMD...: run CMD under timeout min(BUDGET_S, time left - 5)
step() {
  local name=$1 budget=$2
  shift 2
  local left=$((DEADLINE - $(date +%s) - 5))
  if [ "$left" -lt 10 ]; then
    echo "skip $name: no time left"
    printf '%s\t%s\t%s\n' "$name" "skipped" "0" >> "$STEPS"
    return 0
  fi
  [ "$budget" -gt "$left" ] && budget=$left
  echo "== $name (<= ${budget}s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=5 "$budget" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$STEPS"
  tail -n 5 "$LOGS/$name.log"
  echo "   -> rc=$rc ($(( $(date +%s) - t0 ))s)"
  return 0
}

export PY
BUILD='"$PY" -m pip install --no-build-isolation --no-deps --no-index -e . && exit 0
echo "pip install failed: direct CMake build"
cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DHILCORE_CUDA=ON -DPython_EXECUTABLE="$(command -v "$PY")" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" && cmake --build build-device -j"$(nproc)" \
  && cp build-device/_native*.so hilcore/'
step build 150 bash -c "$BUILD"
step gpu_tests 75 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_triton_knn.py \
  tests/test_triton_knn_tc.py tests/test_triton_centers.py tests/test_triton_memory.py tests/test_knn.py \
  tests/test_jaccard.py tests/test_gpu_static.py tests/test_gpu_knn_backends.py
if command -v compute-sanitizer > /dev/null 2>&1; then
  step memcheck 50 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 \
    "$PY" -m pytest -q -x -p no:cacheprovider tests/test_cuda.py
else
  echo "compute-sanitizer not found: memcheck skipped"
  printf '%s\t%s\t%s\n' memcheck "no compute-sanitizer" 0 >> "$STEPS"
fi
step bench_knn 35 "$PY" benchmarks/bench_knn.py --device cuda --repeats 3
step bench_cluster 45 "$PY" benchmarks/bench_cluster.py --device cuda --no-baseline --repeats 3
step bench_epoch 45 "$PY" benchmarks/bench_epoch.py --device cuda --skip-loop --repeats 3
LEFT=$((DEADLINE - $(date +%s) - 25))
step bench_scale 200 "$PY" benchmarks/bench_scale.py --device cuda --sizes 10000 100000 1000000 \
  --budget-s $(( LEFT > 30 ? LEFT : 30 ))

# the summary, with the device named
"$PY" - "$RES/device_check_$SLUG.json" "$GPU" "$STEPS" "$LOGS" "$START" <<'EOF'
import json, sys, time, platform, subprocess
from pathlib import Path
out, gpu, steps, logs, start = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
info = {"device": gpu, "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "wall_s": round(time.time() - start, 1)}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda,
                capability=".".join(map(str, torch.cuda.get_device_capability())) if torch.cuda.is_available() else None)
except Exception as e:
    info["torch_error"] = str(e)
try:
    info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip()
except Exception:
    pass
info["steps"] = []
for line in steps.read_text().splitlines():
    name, rc, secs = line.split("\t")
    log = logs / f"{name}.log"
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
    info["steps"].append({"step": name, "rc": rc, "seconds": int(secs), "log_tail": tail})
Path(out).write_text(json.dumps(info, indent=1) + "\n")
print("wrote", out)
EOF
echo "# done in $(( $(date +%s) - START ))s; results in $RES"
