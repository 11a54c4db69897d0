// AVX2 + FMA variants of the kNN row kernels (see ../knn_simd.h). This file is
// compiled alone with -mavx2 -mfma (CMakeLists.txt, x86_64 only) and is only
// called after CPUID says the CPU has both (knn_cpu.cpp). It uses no standard
// library templates: an inline template instantiated here would carry AVX2
// code and could be the copy the linker keeps for the generic objects.
#if !defined(__AVX2__) || !defined(__FMA__)
#error "x86/knn_avx2.cpp must be compiled with -mavx2 -mfma"
#endif

#include <immintrin.h>

#include "cpu/knn_simd.h"

namespace hilcore {
namespace knn_simd {

namespace {

// Merge columns [q0, q1) of one int32 tile row (8 columns per compare).
inline void merge_span_i8(const int32_t* srow, int64_t q0, int64_t q1, int64_t col0, float sr, const float* sc,
                          BatchedList& L) {
  int64_t q = q0;
  const __m256 vsr = _mm256_set1_ps(sr);
  __m256 vthr = _mm256_set1_ps(L.thr());
  alignas(32) float vals[8];
  for (; q + 8 <= q1; q += 8) {
    const __m256 s = _mm256_mul_ps(vsr, _mm256_loadu_ps(sc + q));
    const __m256 v =
        _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(srow + q))));
    int mask = _mm256_movemask_ps(_mm256_cmp_ps(v, vthr, _CMP_GE_OQ));
    if (mask == 0) continue;
    _mm256_store_ps(vals, v);
    while (mask) {
      const int l = __builtin_ctz(mask);
      mask &= mask - 1;
      L.offer(vals[l], col0 + q + l);
    }
    vthr = _mm256_set1_ps(L.thr());
  }
  for (; q < q1; ++q) L.offer(approx(sr, sc[q], srow[q]), col0 + q);
}

void merge_row_i8(const int32_t* srow, int64_t c, int64_t col0, float sr, const float* sc, float* sim, int64_t* idx,
                  int64_t k, int64_t self) {
  BatchedList L(sim, idx, k, self);
  const int64_t qs = self != kNoSelf ? self - col0 : -1;
  if (qs >= 0 && qs < c) {
    merge_span_i8(srow, 0, qs, col0, sr, sc, L);
    L.flush();
    insert_first(sim, idx, k, approx(sr, sc[qs], srow[qs]), self);
    L.L.refresh();
    merge_span_i8(srow, qs + 1, c, col0, sr, sc, L);
  } else {
    merge_span_i8(srow, 0, c, col0, sr, sc, L);
  }
  L.flush();
}

void merge_cols16_i8(const int32_t* S, int64_t r0, int64_t r1, int64_t c, int64_t q0, int64_t row0, int64_t col0,
                     const float* rs, const float* sc, float* best_sim, int64_t* best_idx, int64_t k,
                     bool self_search) {
  alignas(32) float thr[16];
  alignas(32) float vals[16];
  BatchedList lists[16];
  for (int l = 0; l < 16; ++l) {
    const int64_t g = col0 + q0 + l;
    lists[l] = BatchedList(best_sim + g * k, best_idx + g * k, k, self_search ? g : kNoSelf);
    thr[l] = lists[l].thr();
  }
  __m256 t0 = _mm256_load_ps(thr), t1 = _mm256_load_ps(thr + 8);
  const __m256 c0 = _mm256_loadu_ps(sc + q0), c1 = _mm256_loadu_ps(sc + q0 + 8);
  for (int64_t r = r0; r < r1; ++r) {
    const int32_t* p = S + r * c + q0;
    const __m256 vr = _mm256_set1_ps(rs[r]);
    const __m256 v0 = _mm256_mul_ps(_mm256_mul_ps(vr, c0),
                                    _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
    const __m256 v1 = _mm256_mul_ps(_mm256_mul_ps(vr, c1),
                                    _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8))));
    int mask = _mm256_movemask_ps(_mm256_cmp_ps(v0, t0, _CMP_GE_OQ)) |
               (_mm256_movemask_ps(_mm256_cmp_ps(v1, t1, _CMP_GE_OQ)) << 8);
    if (mask == 0) continue;
    _mm256_store_ps(vals, v0);
    _mm256_store_ps(vals + 8, v1);
    while (mask) {
      const int l = __builtin_ctz(mask);
      mask &= mask - 1;
      lists[l].offer(vals[l], row0 + r);
      thr[l] = lists[l].thr();
    }
    t0 = _mm256_load_ps(thr);
    t1 = _mm256_load_ps(thr + 8);
  }
  for (int l = 0; l < 16; ++l) lists[l].flush();
}

// 4 x 8 FMA partial sums; lane l of s_j holds the terms t = 8 j + l (mod 32)
float dot_f32(const float* a, const float* b, int64_t d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 32 <= d; t += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + t), _mm256_loadu_ps(b + t), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + t + 8), _mm256_loadu_ps(b + t + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + t + 16), _mm256_loadu_ps(b + t + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + t + 24), _mm256_loadu_ps(b + t + 24), s3);
  }
  for (; t + 8 <= d; t += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + t), _mm256_loadu_ps(b + t), s0);
  const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float acc = _mm_cvtss_f32(h);
  for (; t < d; ++t) acc = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a[t]), _mm_set_ss(b[t]), _mm_set_ss(acc)));
  return acc;
}

// The second pass: 8 columns per compare (approx widened to double, + B, >= the k-th value) pick the
// few columns worth the exact test of refine_column, which repeats it with the current k-th value.
int64_t refine_row_i8(const int32_t* srow, int64_t c, int64_t col0, float sr, const float* sc, double B,
                      const float* xr, const float* y, int64_t d, float* sim, int64_t* idx, int64_t k, int64_t self,
                      int64_t cnt, int64_t cap) {
  TopList L(sim, idx, k, self);
  const __m256 vsr = _mm256_set1_ps(sr);
  const __m256d vb = _mm256_set1_pd(B);
  int64_t q = 0;
  for (; q + 8 <= c; q += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(vsr, _mm256_loadu_ps(sc + q)),
                                   _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(srow + q))));
    const __m256d lo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vb);
    const __m256d hi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vb);
    const __m256d vthr = _mm256_set1_pd(static_cast<double>(L.thr));
    int mask = _mm256_movemask_pd(_mm256_cmp_pd(lo, vthr, _CMP_GE_OQ)) |
               (_mm256_movemask_pd(_mm256_cmp_pd(hi, vthr, _CMP_GE_OQ)) << 4);
    if (mask == 0) continue;
    alignas(32) double ab[8];
    _mm256_store_pd(ab, lo);
    _mm256_store_pd(ab + 4, hi);
    while (mask) {
      const int l = __builtin_ctz(mask);
      mask &= mask - 1;
      if (!refine_column<dot_f32>(L, ab[l], col0 + q + l, xr, y, d, cnt, cap)) return cnt;
    }
  }
  for (; q < c; ++q)
    if (!refine_column<dot_f32>(L, static_cast<double>(approx(sr, sc[q], srow[q])) + B, col0 + q, xr, y, d, cnt, cap))
      break;
  return cnt;
}

}  // namespace

const Ops kAvx2Ops = {"avx2", merge_row_i8, merge_cols16_i8, refine_row_i8, dot_f32};

}  // namespace knn_simd
}  // namespace hilcore
