#!/usr/bin/env bash
# Cross-compile the CPU kernels (kernels/cpu/*.cpp) for aarch64 with the Debian cross compiler
# (package g++-aarch64-linux-gnu) and link them into one shared object with every symbol resolved.
# Fails (non-zero exit) when a source does not build for aarch64: an unguarded x86 intrinsic, an
# x86-only flag, a missing include. kernels/cpu/x86/ is x86_64-only by design and is not compiled here.
# bindings/*.cpp get a compile-only check for aarch64 as well (see the end).
#
#   .ci/cross_aarch64.sh            # CXX=aarch64-linux-gnu-g++ by default
#   CXX=clang++ CXXFLAGS=--target=aarch64-linux-gnu .ci/cross_aarch64.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CXX="${CXX:-aarch64-linux-gnu-g++}"
if ! command -v "$CXX" >/dev/null 2>&1 && [ "$CXX" = aarch64-linux-gnu-g++ ] && [ "$(id -u)" = 0 ] &&
   command -v apt-get >/dev/null 2>&1; then
  echo ".ci/cross_aarch64.sh: installing g++-aarch64-linux-gnu" >&2
  apt-get update -qq >/dev/null && apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null
fi
if ! command -v "$CXX" >/dev/null 2>&1; then
  echo ".ci/cross_aarch64.sh: $CXX not found (Debian/Ubuntu: apt-get install -y g++-aarch64-linux-gnu)" >&2
  exit 1
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

shopt -s nullglob
srcs=(kernels/cpu/*.cpp)
if [ "${#srcs[@]}" -eq 0 ]; then
  echo ".ci/cross_aarch64.sh: no sources in kernels/cpu" >&2
  exit 1
fi
objs=()
for src in "${srcs[@]}"; do
  obj="$OUT/$(basename "${src%.cpp}").o"
  # the flags of CMakeLists.txt's hilcore_cpu target, for aarch64
  "$CXX" -std=c++17 -O3 -fPIC -fopenmp -Wall -Ikernels ${CXXFLAGS:-} -c "$src" -o "$obj"
  objs+=("$obj")
done
"$CXX" -shared -fopenmp ${CXXFLAGS:-} -Wl,--no-undefined -o "$OUT/libhilcore_cpu.so" "${objs[@]}"
arch="$(file -b "$OUT/libhilcore_cpu.so" 2>/dev/null || true)"
case "$arch" in
  *aarch64*|*"ARM aarch64"*|"") ;;
  *) echo ".ci/cross_aarch64.sh: expected an aarch64 object, got: $arch" >&2; exit 1 ;;
esac
echo ".ci/cross_aarch64.sh: ${#objs[@]} sources of kernels/cpu build and link for aarch64 ($CXX)"

# bindings/: no aarch64 Python to link against here, so a compile-only check (-fsyntax-only) against
# this machine's Python and pybind11 headers (LP64 on both sides); skipped when pybind11 is missing.
PY="${PYTHON:-python3}"
if inc="$("$PY" -m pybind11 --includes 2>/dev/null)"; then
  n=0
  for src in bindings/*.cpp; do
    # shellcheck disable=SC2086
    "$CXX" -std=c++17 -fsyntax-only -fopenmp -Wall -Wno-deprecated-declarations -Ikernels -Ibindings $inc ${CXXFLAGS:-} "$src"
    n=$((n + 1))
  done
  echo ".ci/cross_aarch64.sh: $n sources of bindings compile for aarch64 (syntax check, host Python headers)"
else
  echo ".ci/cross_aarch64.sh: pybind11 not importable by $PY: bindings/ not checked" >&2
fi
