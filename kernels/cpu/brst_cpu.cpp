// Layout: rows of B in blocks of kRows, prototypes in blocks of kCols; each
// thread owns whole row blocks and keeps a private column max that is merged
// at the end (max is order-independent, so the result is deterministic).
#include "cpu/brst_cpu.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace hilcore {
namespace {
constexpr int64_t kRows = 4;
constexpr int64_t kCols = 64;

inline float dot(const float* a, const float* b, int64_t d) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < d; ++k) s += a[k] * b[k];
  return s;
}

// Four rows against one prototype: the prototype is read once for the four dots.
inline void dot4(const float* a0, const float* a1, const float* a2, const float* a3, const float* b, int64_t d,
                 float* out) {
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t k = 0; k < d; ++k) {
    const float bk = b[k];
    s0 += a0[k] * bk;
    s1 += a1[k] * bk;
    s2 += a2[k] * bk;
    s3 += a3[k] * bk;
  }
  out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}
}  // namespace

int brst_cpu(const float* xb, int64_t m, const float* protos, int64_t c, int64_t d,
             int64_t* best, float* best_sim, float* col_max) {
  if (m < 0 || c <= 0 || d <= 0) return 1;
  const float ninf = -std::numeric_limits<float>::infinity();
  std::fill(col_max, col_max + c, ninf);
#pragma omp parallel
  {
    std::vector<float> cmax(c, ninf);
#pragma omp for schedule(dynamic, 1)
    for (int64_t r0 = 0; r0 < m; r0 += kRows) {
      const int64_t r1 = std::min(m, r0 + kRows);
      float bs[kRows];
      int64_t bi[kRows];
      for (int64_t r = r0; r < r1; ++r) { bs[r - r0] = ninf; bi[r - r0] = 0; }
      for (int64_t c0 = 0; c0 < c; c0 += kCols) {
        const int64_t c1 = std::min(c, c0 + kCols);
        if (r1 - r0 == kRows) {
          const float* x0 = xb + r0 * d;
          for (int64_t j = c0; j < c1; ++j) {
            float s4[kRows];
            dot4(x0, x0 + d, x0 + 2 * d, x0 + 3 * d, protos + j * d, d, s4);
            for (int64_t q = 0; q < kRows; ++q) {
              if (s4[q] > bs[q]) { bs[q] = s4[q]; bi[q] = j; }  // strict: lower j wins ties
              if (s4[q] > cmax[j]) cmax[j] = s4[q];
            }
          }
        } else {
          for (int64_t r = r0; r < r1; ++r) {
            const float* xr = xb + r * d;
            for (int64_t j = c0; j < c1; ++j) {
              const float s = dot(xr, protos + j * d, d);
              if (s > bs[r - r0]) { bs[r - r0] = s; bi[r - r0] = j; }
              if (s > cmax[j]) cmax[j] = s;
            }
          }
        }
      }
      for (int64_t r = r0; r < r1; ++r) { best[r] = bi[r - r0]; best_sim[r] = bs[r - r0]; }
    }
#pragma omp critical
    for (int64_t j = 0; j < c; ++j) col_max[j] = std::max(col_max[j], cmax[j]);
  }
  return 0;
}

}  // namespace hilcore
