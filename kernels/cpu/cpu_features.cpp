#include "cpu/cpu_features.h"

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

}  // namespace hilcore
