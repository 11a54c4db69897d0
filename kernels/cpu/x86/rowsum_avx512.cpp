// AVX-512F row sums and means (../rowsum.h). Compiled alone with -mavx512f (CMakeLists.txt, x86_64 only);
// called only after CPUID reports AVX-512F and the OS saves the zmm state (rowsum.cpp).
#if !defined(__AVX512F__)
#error "x86/rowsum_avx512.cpp must be compiled with -mavx512f"
#endif

#include <immintrin.h>

#include "cpu/rowsum.h"

namespace hilcore {
namespace rowsum {

void add_avx512(double* s, const float* x, int64_t d) {
  int64_t q = 0;
  for (; q + 8 <= d; q += 8)
    _mm512_storeu_pd(s + q, _mm512_add_pd(_mm512_loadu_pd(s + q), _mm512_cvtps_pd(_mm256_loadu_ps(x + q))));
  for (; q < d; ++q) s[q] += static_cast<double>(x[q]);
}

// out[q] = float(s[q] / n). p = s[q] * fl(1 / n) is within 3 ulp of the float64 quotient t = fl(s[q] / n)
// (three roundings of relative size <= 2^-53 each). When p n == s[q] exactly (one fused multiply-add, no
// rounding when it is 0), p is the quotient itself: t = p. Otherwise, float32 rounding only changes at the
// midpoints between float32 values; when |p| is in float32's normal range, the distance of p from the
// midpoint of its float32 interval, in ulps of p, is |(low 29 bits of p) - 2^28|: above kSafe (> 3), t lies
// on the same side of that midpoint (and no other lies within 2^28 ulps), so float(p) == float(t).
// Elsewhere (near a midpoint, tiny, huge) the lane takes float(s[q] / n) itself.
void mean_avx512(const double* s, int64_t n, int64_t d, float* out) {
  constexpr long long kSafe = 16;
  const double c = static_cast<double>(n);
  const __m512d vc = _mm512_set1_pd(c);
  const __m512d r = _mm512_set1_pd(1.0 / c);
  const __m512i low_mask = _mm512_set1_epi64((1LL << 29) - 1), mid = _mm512_set1_epi64(1LL << 28);
  const __m512i safe = _mm512_set1_epi64(kSafe);
  const __m512d lo = _mm512_set1_pd(0x1p-126), hi = _mm512_set1_pd(0x1p127), zero = _mm512_setzero_pd();
  int64_t q = 0;
  for (; q + 8 <= d; q += 8) {
    const __m512d sv = _mm512_loadu_pd(s + q);
    const __m512d p = _mm512_mul_pd(sv, r);
    const __m512i bits = _mm512_castpd_si512(p);
    const __m512i dist = _mm512_abs_epi64(_mm512_sub_epi64(_mm512_and_si512(bits, low_mask), mid));
    const __m512d ap = _mm512_abs_pd(p);
    const __mmask8 exact = _mm512_cmp_pd_mask(_mm512_fmsub_pd(p, vc, sv), zero, _CMP_EQ_OQ);
    const __mmask8 ok = exact | (_mm512_cmpgt_epi64_mask(dist, safe) & _mm512_cmp_pd_mask(ap, lo, _CMP_GE_OQ) &
                                 _mm512_cmp_pd_mask(ap, hi, _CMP_LT_OQ));
    __m512d v = p;
    if (ok != 0xFF) v = _mm512_mask_div_pd(p, static_cast<__mmask8>(~ok), sv, vc);  // the quotient itself
    _mm256_storeu_ps(out + q, _mm512_cvtpd_ps(v));
  }
  for (; q < d; ++q) out[q] = static_cast<float>(s[q] / c);
}

}  // namespace rowsum
}  // namespace hilcore
