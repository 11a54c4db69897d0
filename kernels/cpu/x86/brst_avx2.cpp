// AVX2 + FMA register tile of the BRST scan (../brst_tile.h). Compiled alone with -mavx2 -mfma
// (CMakeLists.txt, x86_64 only) and called only after CPUID says the CPU has both (brst_cpu.cpp).
#if !defined(__AVX2__) || !defined(__FMA__)
#error "x86/brst_avx2.cpp must be compiled with -mavx2 -mfma"
#endif

#include <immintrin.h>

#include "cpu/brst_tile.h"

namespace hilcore {
namespace brst_tile {

// 6 rows x 16 prototypes in 12 accumulators; per column: two panel loads, six broadcasts, twelve FMAs.
void tile_avx2(const float* const* rows, const float* panel, int64_t d, float* out) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(),
         c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(),
         c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps(),
         c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4], *r5 = rows[5];
  for (int64_t q = 0; q < d; ++q) {
    const __m256 b0 = _mm256_loadu_ps(panel + q * kTilePanel);
    const __m256 b1 = _mm256_loadu_ps(panel + q * kTilePanel + 8);
    __m256 a = _mm256_broadcast_ss(r0 + q);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(r1 + q);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(r2 + q);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(r3 + q);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(r4 + q);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(r5 + q);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
  }
  _mm256_storeu_ps(out + 0, c00);
  _mm256_storeu_ps(out + 8, c01);
  _mm256_storeu_ps(out + 16, c10);
  _mm256_storeu_ps(out + 24, c11);
  _mm256_storeu_ps(out + 32, c20);
  _mm256_storeu_ps(out + 40, c21);
  _mm256_storeu_ps(out + 48, c30);
  _mm256_storeu_ps(out + 56, c31);
  _mm256_storeu_ps(out + 64, c40);
  _mm256_storeu_ps(out + 72, c41);
  _mm256_storeu_ps(out + 80, c50);
  _mm256_storeu_ps(out + 88, c51);
}

}  // namespace brst_tile
}  // namespace hilcore
