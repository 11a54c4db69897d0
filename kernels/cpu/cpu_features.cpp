#include "cpu/cpu_features.h"

#include <cstdint>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace hilcore {

CpuFeatures cpu_features() {
  CpuFeatures f{"other", false, false, false, false, false, false};
#if defined(__x86_64__) || defined(_M_X64)
  f.arch = "x86_64";
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") != 0;
  f.fma = __builtin_cpu_supports("fma") != 0;
  f.avx512f = __builtin_cpu_supports("avx512f") != 0;
  f.avx512bw = __builtin_cpu_supports("avx512bw") != 0;
  f.avx512vnni = __builtin_cpu_supports("avx512vnni") != 0;
  f.avxvnni = __builtin_cpu_supports("avxvnni") != 0;
#elif defined(__aarch64__)
  f.arch = "aarch64";
#endif
  return f;
}

bool os_saves_zmm() {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  // no OSXSAVE: no XGETBV
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  const uint32_t want = (1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7);
  return (lo & want) == want;
#else
  return false;
#endif
}

bool avx2_fma_usable() {
#if defined(HILCORE_KNN_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool avx512f_usable() {
#if defined(HILCORE_KNN_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && os_saves_zmm();
#else
  return false;
#endif
}

}  // namespace hilcore
