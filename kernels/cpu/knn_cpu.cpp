#include "cpu/knn_cpu.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace hilcore {

namespace {

constexpr int64_t kNoSelf = std::numeric_limits<int64_t>::min();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Insert (v, j) into the sorted row (sim, idx) of length k, known to beat the
// last entry. self_idx is the row's own index (never displaced), or
// kNoSelf outside self-search.
inline void insert_sorted(float* sim, int64_t* idx, int64_t k, float v, int64_t j, int64_t self_idx) {
  int64_t p = k - 1;
  while (p > 0) {
    const float s = sim[p - 1];
    const int64_t q = idx[p - 1];
    // does (v, j) beat slot p-1?  the self entry is never beaten
    const bool beats = q != self_idx && (v > s || (v == s && j < q));
    if (!beats) break;
    sim[p] = s;
    idx[p] = q;
    --p;
  }
  sim[p] = v;
  idx[p] = j;
}

// Put the self entry first, shifting the others down (the last falls off).
inline void insert_first(float* sim, int64_t* idx, int64_t k, float v, int64_t j) {
  for (int64_t p = k - 1; p > 0; --p) {
    sim[p] = sim[p - 1];
    idx[p] = idx[p - 1];
  }
  sim[0] = v;
  idx[0] = j;
}

// One sorted top-k list and its current k-th key (thr, thr_idx); a list whose
// last slot is its own self entry admits nothing (thr = +inf).
struct TopList {
  float* sim = nullptr;
  int64_t* idx = nullptr;
  int64_t k = 0;
  int64_t self_idx = kNoSelf;
  float thr = kInf;
  int64_t thr_idx = -1;

  TopList() = default;
  TopList(float* s, int64_t* i, int64_t kk, int64_t self) : sim(s), idx(i), k(kk), self_idx(self) { refresh(); }
  void refresh() {
    thr = idx[k - 1] == self_idx ? kInf : sim[k - 1];
    thr_idx = idx[k - 1];
  }
  // offer (v, j), j != self_idx
  inline void offer(float v, int64_t j) {
    if (v < thr) return;  // the common case: one compare
    if (v > thr || j < thr_idx) {
      insert_sorted(sim, idx, k, v, j, self_idx);
      refresh();
    }
  }
};

// Merge columns [q0, q1) of one float tile row.
inline void merge_span(const float* srow, int64_t q0, int64_t q1, int64_t col0, TopList& L) {
  for (int64_t q = q0; q < q1; ++q) L.offer(srow[q], col0 + q);
}

// Merge one float tile row into its list, the self column (if in the tile) first.
inline void merge_row(const float* srow, int64_t c, int64_t col0, float* sim, int64_t* idx, int64_t k,
                      bool self_search, int64_t self) {
  TopList L(sim, idx, k, self_search ? self : kNoSelf);
  const int64_t qs = self_search ? self - col0 : -1;  // the self column in this tile
  if (self_search && qs >= 0 && qs < c) {
    merge_span(srow, 0, qs, col0, L);
    insert_first(sim, idx, k, srow[qs], self);
    L.refresh();
    merge_span(srow, qs + 1, c, col0, L);
  } else {
    merge_span(srow, 0, c, col0, L);
  }
}

// ---------------------------------------------------------------- int8 tiles

// approximate similarity of an int8 product: (s_a * s_b) * float(S), this order
inline float approx(float sa, float sb, int32_t s) { return (sa * sb) * static_cast<float>(s); }

// Merge columns [q0, q1) of one int32 tile row (8 columns per AVX2 compare).
inline void merge_span_i8(const int32_t* srow, int64_t q0, int64_t q1, int64_t col0, float sr, const float* sc,
                          TopList& L) {
  int64_t q = q0;
  const __m256 vsr = _mm256_set1_ps(sr);
  __m256 vthr = _mm256_set1_ps(L.thr);
  alignas(32) float vals[8];
  for (; q + 8 <= q1; q += 8) {
    const __m256 s = _mm256_mul_ps(vsr, _mm256_loadu_ps(sc + q));
    const __m256 v = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(srow + q))));
    int mask = _mm256_movemask_ps(_mm256_cmp_ps(v, vthr, _CMP_GE_OQ));
    if (mask == 0) continue;
    _mm256_store_ps(vals, v);
    while (mask) {
      const int l = __builtin_ctz(mask);
      mask &= mask - 1;
      L.offer(vals[l], col0 + q + l);
    }
    vthr = _mm256_set1_ps(L.thr);
  }
  for (; q < q1; ++q) L.offer(approx(sr, sc[q], srow[q]), col0 + q);
}

// Column mode, one strip of 16 columns [q0, q0 + 16): walk the tile rows
// [r0, r1), offering row0 + r to the 16 lists of columns col0 + q0 + l.
inline void merge_cols16_i8(const int32_t* S, int64_t r0, int64_t r1, int64_t c, int64_t q0, int64_t row0,
                            int64_t col0,
                            const float* rs, const float* sc, float* best_sim, int64_t* best_idx, int64_t k,
                            bool self_search) {
  alignas(32) float thr[16];
  alignas(32) float vals[16];
  TopList lists[16];
  for (int l = 0; l < 16; ++l) {
    const int64_t g = col0 + q0 + l;
    lists[l] = TopList(best_sim + g * k, best_idx + g * k, k, self_search ? g : kNoSelf);
    thr[l] = lists[l].thr;
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
      thr[l] = lists[l].thr;
    }
    t0 = _mm256_load_ps(thr);
    t1 = _mm256_load_ps(thr + 8);
  }
}

// ---------------------------------------------------------------- rescoring

// float32 dot product, 4 x 8 FMA partial sums (each partial sum is a chain of
// at most d / 32 + 1 FMAs, then a reduction of 32 terms)
inline float dot_f32(const float* a, const float* b, int64_t d) {
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
  for (; t < d; ++t) acc = std::fma(a[t], b[t], acc);
  return acc;
}

// a float >= v (v >= 0 finite double)
inline float round_up_f32(double v) {
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, kInf);
  return f;
}

}  // namespace

int knn_topk_merge_cpu(const float* S, int64_t b, int64_t c, int64_t row0, int64_t col0, float* best_sim,
                       int64_t* best_idx, int64_t n_rows, int64_t k, bool self_search, int num_threads) {
  if (b < 0 || c < 0 || k < 1 || row0 < 0 || row0 + b > n_rows || col0 < 0) return 1;
  if (num_threads < 1) num_threads = 1;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (b * c > 32768)
  for (int64_t r = 0; r < b; ++r) {
    const int64_t row = row0 + r;
    merge_row(S + r * c, c, col0, best_sim + row * k, best_idx + row * k, k, self_search, row);
  }
  return 0;
}

int knn_topk_merge_rows_cpu(const float* S, int64_t b, int64_t c, const int64_t* row_ids, int64_t col0,
                            float* best_sim, int64_t* best_idx, int64_t k, bool self_search, int num_threads) {
  if (b < 0 || c < 0 || k < 1 || col0 < 0) return 1;
  if (num_threads < 1) num_threads = 1;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (b * c > 32768)
  for (int64_t r = 0; r < b; ++r)
    merge_row(S + r * c, c, col0, best_sim + r * k, best_idx + r * k, k, self_search, row_ids[r]);
  return 0;
}

int knn_quantize_cpu(const float* x, int64_t n, int64_t d, int8_t* q, float* scale, float* xnorm, float* pnorm,
                     float* enorm, int num_threads) {
  if (n < 0 || d < 1) return 1;
  if (num_threads < 1) num_threads = 1;
  // relative error of a float64 sum of d squares is <= d * 2^-53; cover it
  const double up = 1.0 + (static_cast<double>(d) + 2.0) * 0x1p-52;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (n * d > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    int8_t* qi = q + i * d;
    float mx = 0.f;
    for (int64_t t = 0; t < d; ++t) mx = std::max(mx, std::fabs(xi[t]));
    const float s = mx / 127.f;
    double xx = 0, pp = 0, ee = 0;
    if (s > 0.f && std::isfinite(s)) {
      const float inv = 127.f / mx;
      for (int64_t t = 0; t < d; ++t) {
        float r = std::nearbyint(xi[t] * inv);
        r = std::min(127.f, std::max(-127.f, r));
        qi[t] = static_cast<int8_t>(r);
        const double xv = xi[t], pv = static_cast<double>(s) * r;  // exact in float64
        const double ev = xv - pv;
        xx += xv * xv;
        pp += pv * pv;
        ee += ev * ev;
      }
      scale[i] = s;
    } else {
      for (int64_t t = 0; t < d; ++t) {
        qi[t] = 0;
        xx += static_cast<double>(xi[t]) * xi[t];
      }
      ee = xx;  // p = 0, e = x
      scale[i] = 0.f;
    }
    xnorm[i] = round_up_f32(std::sqrt(xx * up) * up);
    pnorm[i] = round_up_f32(std::sqrt(pp * up) * up);
    enorm[i] = round_up_f32(std::sqrt(ee * up) * up);
  }
  return 0;
}

int knn_topk_merge_i8_cpu(const int32_t* S, int64_t b, int64_t c, int64_t row0, int64_t col0,
                          const float* row_scale, const float* col_scale, float* best_sim, int64_t* best_idx,
                          int64_t n_rows, int64_t k, bool self_search, bool columns, int num_threads) {
  if (b < 0 || c < 0 || k < 1 || row0 < 0 || col0 < 0) return 1;
  if (num_threads < 1) num_threads = 1;
  const float* rs = row_scale + row0;
  const float* sc = col_scale + col0;
  if (!columns) {
    if (row0 + b > n_rows) return 1;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (b * c > 32768)
    for (int64_t r = 0; r < b; ++r) {
      const int64_t row = row0 + r;
      const int32_t* srow = S + r * c;
      float* sim = best_sim + row * k;
      int64_t* idx = best_idx + row * k;
      TopList L(sim, idx, k, self_search ? row : kNoSelf);
      const int64_t qs = self_search ? row - col0 : -1;
      if (self_search && qs >= 0 && qs < c) {
        merge_span_i8(srow, 0, qs, col0, rs[r], sc, L);
        insert_first(sim, idx, k, approx(rs[r], sc[qs], srow[qs]), row);
        L.refresh();
        merge_span_i8(srow, qs + 1, c, col0, rs[r], sc, L);
      } else {
        merge_span_i8(srow, 0, c, col0, rs[r], sc, L);
      }
    }
    return 0;
  }
  if (col0 + c > n_rows) return 1;
  if (self_search && row0 < col0 + c && col0 < row0 + b && b > 0 && c > 0) return 2;
  // Groups of 8 strips (128 columns, 512 bytes of each tile row) walked over
  // blocks of 256 rows: the block's slice (128 KiB) stays in L1/L2 while the 8
  // strips read it, and a block touches few pages (a whole-height strip walk
  // touches two pages per row and thrashes the TLB).
  constexpr int64_t kGroup = 8, kRowBlock = 256;
  const int64_t strips = c / 16;
  const int64_t groups = (strips + kGroup - 1) / kGroup;
#pragma omp parallel num_threads(num_threads) if (b * c > 32768)
  {
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t r0 = 0; r0 < b; r0 += kRowBlock)
        for (int64_t st = g * kGroup; st < std::min(strips, (g + 1) * kGroup); ++st)
          merge_cols16_i8(S, r0, std::min(b, r0 + kRowBlock), c, st * 16, row0, col0, rs, sc, best_sim, best_idx,
                          k, self_search);
#pragma omp for schedule(static)
    for (int64_t q = strips * 16; q < c; ++q) {  // the tail columns, one list each
      const int64_t g = col0 + q;
      TopList L(best_sim + g * k, best_idx + g * k, k, self_search ? g : kNoSelf);
      for (int64_t r = 0; r < b; ++r) L.offer(approx(rs[r], sc[q], S[r * c + q]), row0 + r);
    }
  }
  return 0;
}

int knn_refine_i8_cpu(const int32_t* S, int64_t b, int64_t c, const int64_t* row_ids, int64_t col0,
                      const float* row_scale, const float* col_scale, const float* bound, const float* x,
                      const float* y, int64_t d, float* best_sim, int64_t* best_idx, int64_t k, bool self_search,
                      int64_t* counts, int64_t cap, int num_threads) {
  if (b < 0 || c < 0 || k < 1 || col0 < 0 || d < 1) return 1;
  if (num_threads < 1) num_threads = 1;
  const float* sc = col_scale + col0;
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads) if (b * c > 32768)
  for (int64_t r = 0; r < b; ++r) {
    if (counts[r] < 0) continue;  // overflowed earlier: left to the fp32 path
    const int64_t row = row_ids[r];
    const int64_t self = self_search ? row : kNoSelf;
    float* sim = best_sim + r * k;
    int64_t* idx = best_idx + r * k;
    TopList L(sim, idx, k, self);
    const float* xr = x + row * d;
    const int32_t* srow = S + r * c;
    const double B = bound[r];
    const float sr = row_scale[r];
    int64_t cnt = counts[r];
    for (int64_t q = 0; q < c; ++q) {
      const int64_t j = col0 + q;
      // exact(j) <= approx + B: only a column with approx + B >= the k-th key can enter
      if (static_cast<double>(approx(sr, sc[q], srow[q])) + B < static_cast<double>(L.thr) || j == self) continue;
      bool listed = false;
      for (int64_t t = 0; t < k; ++t) listed |= idx[t] == j;
      if (listed) continue;
      if (++cnt > cap) {
        cnt = -1;
        break;
      }
      L.offer(dot_f32(xr, y + j * d, d), j);
    }
    counts[r] = cnt;
  }
  return 0;
}

int knn_rescore_cpu(const float* x, const float* y, int64_t n, int64_t m, int64_t d, const int64_t* cand_idx,
                    const float* cand_sim, int64_t kc, const float* bound, int64_t k, bool self_search,
                    int64_t* out_idx, float* out_sim, uint8_t* certified, int num_threads) {
  if (n < 0 || m < 1 || d < 1 || k < 1 || kc < k || kc > m) return 1;
  if (num_threads < 1) num_threads = 1;
  int bad = 0;
#pragma omp parallel num_threads(num_threads) reduction(| : bad)
  {
    std::vector<float> ex(kc);
    std::vector<int64_t> order(kc);
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t* ci = cand_idx + i * kc;
      const float* xi = x + i * d;
      bool ok = true;
      for (int64_t a = 0; a < kc; ++a) {
        const int64_t j = ci[a];
        if (j < 0 || j >= m) {
          ok = false;
          break;
        }
        if (a + 2 < kc && ci[a + 2] >= 0 && ci[a + 2] < m) {
          const char* nx = reinterpret_cast<const char*>(y + ci[a + 2] * d);
          _mm_prefetch(nx, _MM_HINT_T0);
          _mm_prefetch(nx + 64, _MM_HINT_T0);
        }
        ex[a] = dot_f32(xi, y + j * d, d);
        order[a] = a;
      }
      if (!ok) {
        bad = 1;
        certified[i] = 0;
        continue;
      }
      const int64_t self = self_search ? i : kNoSelf;
      // key: self first, then (exact desc, idx asc)
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b2) {
        const int64_t ja = ci[a], jb = ci[b2];
        if (ja == self || jb == self) return ja == self && jb != self;
        if (ex[a] != ex[b2]) return ex[a] > ex[b2];
        return ja < jb;
      });
      for (int64_t t = 0; t < k; ++t) {
        out_idx[i * k + t] = ci[order[t]];
        out_sim[i * k + t] = ex[order[t]];
      }
      bool cert;
      if (kc == m || (self_search && k == 1)) {
        cert = true;
      } else {
        const double ek = ex[order[k - 1]];
        const double c_last = cand_sim[i * kc + kc - 1];
        cert = ci[order[k - 1]] != self && ek > c_last + static_cast<double>(bound[i]);
      }
      certified[i] = cert ? 1 : 0;
    }
  }
  return bad ? 1 : 0;
}

}  // namespace hilcore
