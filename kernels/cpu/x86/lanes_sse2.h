// SSE2 four-lane accumulations used by kernels/cpu/subcluster_cpu.cpp (included there only when
// __SSE2__ is defined, i.e. on x86). Lane l of acc[g] adds the terms of the columns 4 q + l, q ascending,
// for q < d4 (a multiple of 4): the same order as the portable loops beside their callers, so both give the
// same bits. The lanes are stored to l[g][0..3]; the caller adds the tail and folds the lanes.
#pragma once
#include <emmintrin.h>

#include <cstdint>

namespace hilcore {
namespace x86 {

// l[g][r] = sum over q of pa[g][4q + r] * pb[g][4q + r] (one rounding per product and per addition).
template <int G>
inline void lanes4_dot_sse2(const float* const* pa, const float* const* pb, int64_t d4, float (*l)[4]) {
  __m128 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm_setzero_ps();
  for (int64_t q = 0; q < d4; q += 4)
    for (int g = 0; g < G; ++g)
      acc[g] = _mm_add_ps(acc[g], _mm_mul_ps(_mm_loadu_ps(pa[g] + q), _mm_loadu_ps(pb[g] + q)));
  for (int g = 0; g < G; ++g) _mm_storeu_ps(l[g], acc[g]);
}

// l[g][r] = sum over q of (pa[g][4q + r] - pb[g][4q + r])^2.
template <int G>
inline void lanes4_sqdiff_sse2(const float* const* pa, const float* const* pb, int64_t d4, float (*l)[4]) {
  __m128 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm_setzero_ps();
  for (int64_t q = 0; q < d4; q += 4)
    for (int g = 0; g < G; ++g) {
      const __m128 t = _mm_sub_ps(_mm_loadu_ps(pa[g] + q), _mm_loadu_ps(pb[g] + q));
      acc[g] = _mm_add_ps(acc[g], _mm_mul_ps(t, t));
    }
  for (int g = 0; g < G; ++g) _mm_storeu_ps(l[g], acc[g]);
}

}  // namespace x86
}  // namespace hilcore
