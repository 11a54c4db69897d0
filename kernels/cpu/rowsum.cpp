#include "cpu/rowsum.h"

#include "cpu/cpu_features.h"

namespace hilcore {
namespace rowsum {

void add_portable(double* s, const float* x, int64_t d) {
  for (int64_t q = 0; q < d; ++q) s[q] += static_cast<double>(x[q]);
}

void mean_portable(const double* s, int64_t n, int64_t d, float* out) {
  const double c = static_cast<double>(n);
  for (int64_t q = 0; q < d; ++q) out[q] = static_cast<float>(s[q] / c);
}

namespace {
Ops choose() {
#if defined(HILCORE_KNN_AVX2)
  if (avx512f_usable()) return Ops{add_avx512, mean_avx512, "avx512"};
#endif
  return Ops{add_portable, mean_portable, "portable"};
}
}  // namespace

const Ops& ops() {
  static const Ops chosen = choose();
  return chosen;
}

}  // namespace rowsum
}  // namespace hilcore
