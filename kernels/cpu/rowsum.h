// Float64 row sums and their float32 means, the two loops of every centre update (cluster_centers_cpu, the
// k-means update): s[q] += double(x[q]), and out[q] = float(s[q] / n) (the float64 quotient rounded to
// float32). Each element is one fixed expression, so every path gives the same bits: the portable loops
// (rowsum.cpp) and the AVX-512F ones (x86/rowsum_avx512.cpp, chosen when CPUID has AVX-512F and the OS
// saves the zmm state), whose mean multiplies by 1 / n and divides only where that product lies too
// close to a float32 rounding boundary to be sure of the quotient's rounding.
#pragma once
#include <cstdint>

namespace hilcore {
namespace rowsum {

using AddFn = void (*)(double* s, const float* x, int64_t d);
using MeanFn = void (*)(const double* s, int64_t n, int64_t d, float* out);

struct Ops {
  AddFn add;
  MeanFn mean;
  const char* name;
};

// the ops of this CPU (chosen once)
const Ops& ops();

void add_portable(double* s, const float* x, int64_t d);
void mean_portable(const double* s, int64_t n, int64_t d, float* out);
#if defined(HILCORE_KNN_AVX2)
void add_avx512(double* s, const float* x, int64_t d);
void mean_avx512(const double* s, int64_t n, int64_t d, float* out);
#endif

}  // namespace rowsum
}  // namespace hilcore
