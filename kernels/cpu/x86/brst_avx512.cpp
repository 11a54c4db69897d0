// AVX-512F register tile of the BRST scan (../brst_tile.h). Compiled alone with -mavx512f (CMakeLists.txt,
// x86_64 only) and called only after CPUID reports AVX-512F and the OS saves the zmm state (XCR0;
// cpu_features.cpp: os_saves_zmm), brst_cpu.cpp.
#if !defined(__AVX512F__)
#error "x86/brst_avx512.cpp must be compiled with -mavx512f"
#endif

#include <immintrin.h>

#include "cpu/brst_tile.h"

namespace hilcore {
namespace brst_tile {

// kAvx512Rows rows x 32 prototypes (two consecutive packed panels) in 2 kAvx512Rows zmm accumulators; per
// column: two panel loads, one broadcast per row, two FMAs per row. Every lane is s = fma(x_q, p_q, s) over
// q ascending from s = 0: the bits of the AVX2 and portable tiles.
void tile_avx512(const float* const* rows, const float* panel, int64_t d, float* out) {
  constexpr int R = static_cast<int>(kAvx512Rows);
  __m512 lo[R], hi[R];
  const float* r[R];
  for (int i = 0; i < R; ++i) {
    lo[i] = _mm512_setzero_ps();
    hi[i] = _mm512_setzero_ps();
    r[i] = rows[i];
  }
  const float* p1 = panel + d * kTilePanel;
  for (int64_t q = 0; q < d; ++q) {
    const __m512 b0 = _mm512_loadu_ps(panel + q * kTilePanel);
    const __m512 b1 = _mm512_loadu_ps(p1 + q * kTilePanel);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(r[i][q]);
      lo[i] = _mm512_fmadd_ps(a, b0, lo[i]);
      hi[i] = _mm512_fmadd_ps(a, b1, hi[i]);
    }
  }
  for (int i = 0; i < R; ++i) {
    _mm512_storeu_ps(out + i * 2 * kTilePanel, lo[i]);
    _mm512_storeu_ps(out + i * 2 * kTilePanel + kTilePanel, hi[i]);
  }
}

}  // namespace brst_tile
}  // namespace hilcore
