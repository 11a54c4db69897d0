#!/usr/bin/env bash
# One short GPU run of hilcore that returns what it learned, whatever happens.
#
#   bash benchmarks/device_check.sh quick   # build + GPU correctness, <= 3 minutes (TOTAL_S=180)
#   bash benchmarks/device_check.sh full    # + sanitizers on one small script + benchmarks, <= 6 minutes (360)
#
# One overall deadline per mode (TOTAL_S overrides it); every step runs under `timeout` against it, so
# the script always ends and keeps what it got. Steps:
#   env      environment report (GPU, driver, CUDA, nvcc, PyTorch, Triton, Python, compilers, CPU)
#   gpu      is there a CUDA device? If not: one line, the archive with the report, exit status 2
#   build    HILCORE_CUDA=ON pip install -e . (no index, no build isolation); the run stops at once
#            (exit status 3) when hilcore.has_cuda() is false after it
#   tests    only GPU tests: the `gpu`-marked ones, then the Triton test files (they run on the GPU when
#            there is one), `-v -rfE`, HILCORE_TEST_TIMEOUT per test (tests/conftest.py), junit XML
#   full mode: smoke (benchmarks/gpu_smoke.py: every CUDA and Triton kernel on a few hundred rows),
#            memcheck / racecheck / synccheck of compute-sanitizer on that script, then bench_knn.py and
#            bench_scale.py on the GPU (both write their JSON after every row)
# At the end ONE archive, $OUT/device_check_<mode>.tar.gz ($OUT unset: benchmarks/results/device_check/),
# holds every JSON, log, the junit XML and env.txt; the summary (<= 60 lines: each step's status and
# time, each failing test's name and first error line, the headline timings) is printed last.
# Exit status: 0 all passed, 1 something failed, 2 no GPU, 3 build without CUDA kernels.
set -u
MODE=${1:-quick}
case "$MODE" in
  quick) TOTAL_S=${TOTAL_S:-180} ;;
  full) TOTAL_S=${TOTAL_S:-360} ;;
  *) echo "device_check: usage: $0 quick|full (got '$MODE')" >&2; exit 64 ;;
esac
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
START=$(date +%s)
DEADLINE=$((START + TOTAL_S))
RESERVE=12  # seconds kept for the archive and the summary
W=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
DEST=${OUT:-$ROOT/benchmarks/results/device_check}
mkdir -p "$DEST"
ARCHIVE=$DEST/device_check_$MODE.tar.gz
STEPS=$W/steps.tsv
: > "$STEPS"
unset TRITON_INTERPRET
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export TRITON_DEFAULT_FP_FUSION=1

left() { echo $((DEADLINE - $(date +%s) - RESERVE)); }

# step NAME BUDGET_S CMD...: CMD under timeout min(BUDGET_S, time left); log in $W/NAME.log
step() {
  local name=$1 budget=$2 t0 rc l
  shift 2
  l=$(left)
  if [ "$l" -lt 5 ]; then
    printf '%s\t%s\t%s\n' "$name" "skipped (deadline)" 0 >> "$STEPS"
    return 0
  fi
  [ "$budget" -gt "$l" ] && budget=$l
  echo "== $name (<= ${budget}s)"
  t0=$(date +%s)
  timeout --kill-after=3 "$budget" "$@" > "$W/$name.log" 2>&1
  rc=$?
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && rc="timeout ${budget}s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$STEPS"
  tail -n 3 "$W/$name.log"
  return 0
}

finish() {  # finish EXIT_STATUS [ONE_LINE]: summary, archive, summary printed last, exit
  local rc=$1
  "$PY" "$ROOT/benchmarks/device_summary.py" "$W" "$MODE" "$(( $(date +%s) - START ))" "$ARCHIVE" "${2:-}" \
    > "$W/summary.log" 2>&1 || printf 'device_check %s: %s\n(summary failed: see summary.log)\n' \
    "$MODE" "${2:-exit status $rc}" > "$W/summary.txt"
  tar -czf "$ARCHIVE" -C "$W" . 2>/dev/null || echo "device_check: could not write $ARCHIVE"
  cat "$W/summary.txt"
  rm -rf "$W"
  exit "$rc"
}

# ---- environment report (every command bounded: a wedged driver must not eat the run)
{
  echo "mode: $MODE, budget ${TOTAL_S}s, started $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
  echo "--- nvidia-smi"; timeout 15 nvidia-smi 2>&1 || echo "(nvidia-smi not available)"
  echo "--- nvcc"; timeout 10 nvcc --version 2>&1 || echo "(nvcc not on PATH)"
  echo "--- compute-sanitizer"; timeout 10 compute-sanitizer --version 2>&1 | tail -2 || echo "(not on PATH)"
  echo "--- python"; timeout 10 "$PY" -VV 2>&1
  echo "--- packages"
  timeout 40 "$PY" - <<'EOF' 2>&1
import importlib, platform
for name in ("torch", "triton", "numpy", "scipy", "pybind11", "cmake", "hilcore"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except Exception as e:  # report, do not stop
        print(f"{name}: not importable ({type(e).__name__}: {e})"[:200])
try:
    import torch
    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
              f"{p.total_memory / 2**30:.1f} GiB")
except Exception as e:
    print("torch cuda query failed:", e)
print("machine", platform.machine(), platform.platform())
EOF
  echo "--- compilers"; (gcc --version 2>&1 | head -1; cmake --version 2>&1 | head -1) || true
  echo "--- cpu"; (grep -m1 "model name" /proc/cpuinfo; nproc) 2>&1
} > "$W/env.txt" 2>&1
printf '%s\t%s\t%s\n' env 0 "$(( $(date +%s) - START ))" >> "$STEPS"

# ---- no GPU: one line, the archive with the report
if ! timeout 30 "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" > /dev/null 2>&1; then
  printf '%s\t%s\t%s\n' gpu "no CUDA device" 0 >> "$STEPS"
  finish 2 "no CUDA device (torch.cuda.is_available() is False): nothing to check; environment report in the archive"
fi

# ---- build with the CUDA kernels required
step build 150 env HILCORE_CUDA=ON CMAKE_ARGS="-DHILCORE_CUDA=ON ${CMAKE_ARGS:-}" \
  "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e . -C cmake.define.HILCORE_CUDA=ON
if ! timeout 60 "$PY" -c "import sys, hilcore; sys.exit(0 if hilcore.has_cuda() else 1)" > "$W/has_cuda.log" 2>&1; then
  printf '%s\t%s\t%s\n' has_cuda "false" 0 >> "$STEPS"
  finish 3 "STOP: hilcore.has_cuda() is False after the build (HILCORE_CUDA=ON): see build.log in the archive"
fi

# ---- GPU tests only: the `gpu`-marked tests, then the Triton test files (on the GPU when there is one)
export HILCORE_TEST_TIMEOUT=${HILCORE_TEST_TIMEOUT:-60}
PYTEST="$PY -m pytest -v -rfE -p no:cacheprovider -o addopts="
if [ "$MODE" = quick ]; then TB=$(( ($(left) - 5) / 2 )); else TB=75; fi
step tests_gpu "$TB" $PYTEST --junitxml="$W/tests_gpu.xml" -m gpu -k "not compute_sanitizer" \
  tests/test_cuda.py tests/test_knn.py tests/test_jaccard.py tests/test_dbscan.py tests/test_eval.py \
  tests/test_compat_memory.py
if [ "$MODE" = quick ]; then TB=$(( $(left) - 5 )); else TB=90; fi
step tests_triton "$TB" $PYTEST --junitxml="$W/tests_triton.xml" tests/test_triton_knn.py \
  tests/test_triton_knn_tc.py tests/test_triton_centers.py tests/test_triton_memory.py \
  tests/test_triton_brst_blocks.py tests/test_gpu_correctness.py tests/test_gpu_knn_backends.py

if [ "$MODE" = full ]; then
  step smoke 60 "$PY" benchmarks/gpu_smoke.py
  if command -v compute-sanitizer > /dev/null 2>&1; then
    for tool in memcheck racecheck synccheck; do
      step "sanitizer_$tool" 45 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
        "$PY" benchmarks/gpu_smoke.py
    done
  else
    printf '%s\t%s\t%s\n' sanitizer "compute-sanitizer not on PATH" 0 >> "$STEPS"
  fi
  step bench_knn 60 "$PY" benchmarks/bench_knn.py --device cuda --sizes 11909 22258 --repeats 3 \
    --out "$W/knn_cuda.json"
  L=$(( $(left) - 3 ))
  step bench_scale "$L" "$PY" benchmarks/bench_scale.py --device cuda --sizes 10000 100000 1000000 \
    --budget-s $(( L > 20 ? L - 10 : 10 )) --out "$W/scale_cuda.json"
fi

if awk -F'\t' '$1 != "env" && $2 != "0" { bad = 1 } END { exit !bad }' "$STEPS"; then finish 1; fi
finish 0
