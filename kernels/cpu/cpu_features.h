// What the CPU running the library supports (CPUID on x86; nothing to ask
// elsewhere), for the run-time choice of kernels and for reports.
#pragma once

namespace hilcore {

struct CpuFeatures {
  const char* arch;  // "x86_64", "aarch64" or "other"
  // x86 only (false elsewhere)
  bool avx2;
  bool fma;
  bool avx512f;
  bool avx512bw;
  bool avx512vnni;
  bool avxvnni;
};

CpuFeatures cpu_features();

// x86: the OS enables the AVX-512 register state (CPUID.1:ECX.OSXSAVE and XCR0 bits 1, 2, 5, 6, 7: SSE,
// AVX, opmask, upper halves of zmm0-15, zmm16-31), without which zmm instructions fault even on a CPU
// that has them. false elsewhere.
bool os_saves_zmm();

// Whether the x86 SIMD units built with this library (kernels/cpu/x86/, HILCORE_KNN_AVX2) may run here: AVX2 +
// FMA, and AVX-512F with the OS saving the zmm state. false on other architectures and builds without them.
bool avx2_fma_usable();
bool avx512f_usable();

}  // namespace hilcore
