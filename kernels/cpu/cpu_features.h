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

}  // namespace hilcore
