#include "cpu/knn_cpu.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "cpu/cpu_features.h"
#include "cpu/knn_simd.h"

namespace hilcore {

using knn_simd::approx;
using knn_simd::BatchedList;
using knn_simd::insert_first;
using knn_simd::kInf;
using knn_simd::kNoSelf;
using knn_simd::TopList;

namespace {

// Merge columns [q0, q1) of one float tile row.
inline void merge_span(const float* srow, int64_t q0, int64_t q1, int64_t col0, BatchedList& L) {
  for (int64_t q = q0; q < q1; ++q) L.offer(srow[q], col0 + q);
}

// Merge one float tile row into its list, the self column (if in the tile) first.
inline void merge_row(const float* srow, int64_t c, int64_t col0, float* sim, int64_t* idx, int64_t k,
                      bool self_search, int64_t self) {
  BatchedList L(sim, idx, k, self_search ? self : kNoSelf);
  const int64_t qs = self_search ? self - col0 : -1;  // the self column in this tile
  if (self_search && qs >= 0 && qs < c) {
    merge_span(srow, 0, qs, col0, L);
    L.flush();
    insert_first(sim, idx, k, srow[qs], self);
    L.L.refresh();
    merge_span(srow, qs + 1, c, col0, L);
  } else {
    merge_span(srow, 0, c, col0, L);
  }
  L.flush();
}

// ---------------------------------------------------------------- scalar kernels (knn_simd.h)

void merge_row_i8_scalar(const int32_t* srow, int64_t c, int64_t col0, float sr, const float* sc, float* sim,
                         int64_t* idx, int64_t k, int64_t self) {
  BatchedList L(sim, idx, k, self);
  const int64_t qs = self != kNoSelf ? self - col0 : -1;
  for (int64_t q = 0; q < c; ++q) {
    if (q == qs) {
      L.flush();
      insert_first(sim, idx, k, approx(sr, sc[q], srow[q]), self);
      L.L.refresh();
    } else {
      L.offer(approx(sr, sc[q], srow[q]), col0 + q);
    }
  }
  L.flush();
}

void merge_cols16_i8_scalar(const int32_t* S, int64_t r0, int64_t r1, int64_t c, int64_t q0, int64_t row0,
                            int64_t col0, const float* rs, const float* sc, float* best_sim, int64_t* best_idx,
                            int64_t k, bool self_search) {
  BatchedList lists[16];
  for (int l = 0; l < 16; ++l) {
    const int64_t g = col0 + q0 + l;
    lists[l] = BatchedList(best_sim + g * k, best_idx + g * k, k, self_search ? g : kNoSelf);
  }
  for (int64_t r = r0; r < r1; ++r) {
    const int32_t* p = S + r * c + q0;
    for (int l = 0; l < 16; ++l) lists[l].offer(approx(rs[r], sc[q0 + l], p[l]), row0 + r);
  }
  for (int l = 0; l < 16; ++l) lists[l].flush();
}

// the summation order of knn_simd::Ops::dot_f32, one lane at a time
float dot_f32_scalar(const float* a, const float* b, int64_t d) {
  float s[32] = {};
  int64_t t = 0;
  for (; t + 32 <= d; t += 32)
    for (int l = 0; l < 32; ++l) s[l] = std::fma(a[t + l], b[t + l], s[l]);
  for (; t + 8 <= d; t += 8)
    for (int l = 0; l < 8; ++l) s[l] = std::fma(a[t + l], b[t + l], s[l]);
  float v[8];
  for (int l = 0; l < 8; ++l) v[l] = (s[l] + s[8 + l]) + (s[16 + l] + s[24 + l]);
  float h[4];
  for (int l = 0; l < 4; ++l) h[l] = v[l] + v[l + 4];
  float acc = (h[0] + h[2]) + (h[1] + h[3]);
  for (; t < d; ++t) acc = std::fma(a[t], b[t], acc);
  return acc;
}

// a float >= v (v >= 0 finite double)
inline float round_up_f32(double v) {
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, kInf);
  return f;
}

int64_t refine_row_i8_scalar(const int32_t* srow, int64_t c, int64_t col0, float sr, const float* sc, double B,
                             const float* xr, const float* y, int64_t d, float* sim, int64_t* idx, int64_t k,
                             int64_t self, int64_t cnt, int64_t cap) {
  TopList L(sim, idx, k, self);
  for (int64_t q = 0; q < c; ++q)
    if (!knn_simd::refine_column<dot_f32_scalar>(L, static_cast<double>(approx(sr, sc[q], srow[q])) + B, col0 + q,
                                                 xr, y, d, cnt, cap))
      break;
  return cnt;
}

}  // namespace

namespace knn_simd {
const Ops kScalarOps = {"scalar", merge_row_i8_scalar, merge_cols16_i8_scalar, refine_row_i8_scalar, dot_f32_scalar};
}  // namespace knn_simd

namespace {

// ---------------------------------------------------------------- run-time dispatch

bool avx2_usable() { return avx2_fma_usable(); }

const knn_simd::Ops* default_ops() {
#if defined(HILCORE_KNN_AVX2)
  if (avx2_usable()) return &knn_simd::kAvx2Ops;
#endif
  return &knn_simd::kScalarOps;
}

std::atomic<const knn_simd::Ops*> g_ops{nullptr};

const knn_simd::Ops& ops() {
  const knn_simd::Ops* o = g_ops.load(std::memory_order_acquire);
  if (o == nullptr) {
    o = default_ops();
    g_ops.store(o, std::memory_order_release);
  }
  return *o;
}

}  // namespace

const char* knn_cpu_path() { return ops().name; }

int knn_set_cpu_path(const char* name) {
  if (name == nullptr) return 1;
  if (std::strcmp(name, "auto") == 0) {
    g_ops.store(default_ops(), std::memory_order_release);
    return 0;
  }
  if (std::strcmp(name, "scalar") == 0) {
    g_ops.store(&knn_simd::kScalarOps, std::memory_order_release);
    return 0;
  }
  if (std::strcmp(name, "avx2") == 0) {
#if defined(HILCORE_KNN_AVX2)
    if (!avx2_usable()) return 2;
    g_ops.store(&knn_simd::kAvx2Ops, std::memory_order_release);
    return 0;
#else
    return 2;
#endif
  }
  return 1;
}

bool knn_cpu_path_available(const char* name) {
  if (name == nullptr) return false;
  if (std::strcmp(name, "scalar") == 0) return true;
  if (std::strcmp(name, "avx2") == 0) return avx2_usable();
  return false;
}

namespace {
}  // namespace

int knn_topk_merge_cpu(const float* S, int64_t b, int64_t c, int64_t row0, int64_t col0, float* best_sim,
                       int64_t* best_idx, int64_t n_rows, int64_t k, bool self_search, int num_threads) {
  HILCORE_CHECK_MSG(b >= 0 && c >= 0 && k >= 1 && row0 >= 0 && row0 + b <= n_rows && col0 >= 0,
                    values({{"b", b}, {"c", c}, {"k", k}, {"row0", row0}, {"col0", col0}, {"n_rows", n_rows}}));
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
  HILCORE_CHECK_MSG(b >= 0 && c >= 0 && k >= 1 && col0 >= 0,
                    values({{"b", b}, {"c", c}, {"k", k}, {"col0", col0}}));
  if (num_threads < 1) num_threads = 1;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (b * c > 32768)
  for (int64_t r = 0; r < b; ++r)
    merge_row(S + r * c, c, col0, best_sim + r * k, best_idx + r * k, k, self_search, row_ids[r]);
  return 0;
}

int knn_quantize_cpu(const float* x, int64_t n, int64_t d, int8_t* q, float* scale, float* xnorm, float* pnorm,
                     float* enorm, int num_threads) {
  HILCORE_CHECK_MSG(n >= 0 && d >= 1,
                    values({{"n", n}, {"d", d}}));
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
  HILCORE_CHECK_MSG(b >= 0 && c >= 0 && k >= 1 && row0 >= 0 && col0 >= 0,
                    values({{"b", b}, {"c", c}, {"k", k}, {"row0", row0}, {"col0", col0}}));
  if (num_threads < 1) num_threads = 1;
  const float* rs = row_scale + row0;
  const float* sc = col_scale + col0;
  const knn_simd::Ops& kern = ops();
  if (!columns) {
    HILCORE_CHECK_MSG(row0 + b <= n_rows,
                      values({{"b", b}, {"row0", row0}, {"n_rows", n_rows}}));
#pragma omp parallel for schedule(static) num_threads(num_threads) if (b * c > 32768)
    for (int64_t r = 0; r < b; ++r) {
      const int64_t row = row0 + r;
      const int32_t* srow = S + r * c;
      float* sim = best_sim + row * k;
      int64_t* idx = best_idx + row * k;
      kern.merge_row_i8(srow, c, col0, rs[r], sc, sim, idx, k, self_search ? row : kNoSelf);
    }
    return 0;
  }
  HILCORE_CHECK_MSG(col0 + c <= n_rows,
                    values({{"c", c}, {"col0", col0}, {"n_rows", n_rows}}));
  HILCORE_CHECK_MSG(!(self_search && row0 < col0 + c && col0 < row0 + b && b > 0 && c > 0),
                    "self-search column mode: the row block [row0, row0 + b) overlaps the column block "
                    "[col0, col0 + c), " + values({{"row0", row0}, {"b", b}, {"col0", col0}, {"c", c}}));
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
          kern.merge_cols16_i8(S, r0, std::min(b, r0 + kRowBlock), c, st * 16, row0, col0, rs, sc, best_sim, best_idx,
                          k, self_search);
#pragma omp for schedule(static)
    for (int64_t q = strips * 16; q < c; ++q) {  // the tail columns, one list each
      const int64_t g = col0 + q;
      BatchedList L(best_sim + g * k, best_idx + g * k, k, self_search ? g : kNoSelf);
      for (int64_t r = 0; r < b; ++r) L.offer(approx(rs[r], sc[q], S[r * c + q]), row0 + r);
      L.flush();
    }
  }
  return 0;
}

int knn_refine_i8_cpu(const int32_t* S, int64_t b, int64_t c, const int64_t* row_ids, int64_t col0,
                      const float* row_scale, const float* col_scale, const float* bound, const float* x,
                      const float* y, int64_t d, float* best_sim, int64_t* best_idx, int64_t k, bool self_search,
                      int64_t* counts, int64_t cap, int num_threads) {
  HILCORE_CHECK_MSG(b >= 0 && c >= 0 && k >= 1 && col0 >= 0 && d >= 1,
                    values({{"b", b}, {"c", c}, {"d", d}, {"k", k}, {"col0", col0}}));
  if (num_threads < 1) num_threads = 1;
  const float* sc = col_scale + col0;
  const knn_simd::Ops& kern = ops();
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads) if (b * c > 32768)
  for (int64_t r = 0; r < b; ++r) {
    if (counts[r] < 0) continue;  // overflowed earlier: left to the fp32 path
    const int64_t row = row_ids[r];
    const int64_t self = self_search ? row : kNoSelf;
    float* sim = best_sim + r * k;
    int64_t* idx = best_idx + r * k;
    counts[r] = kern.refine_row_i8(S + r * c, c, col0, row_scale[r], sc, static_cast<double>(bound[r]), x + row * d,
                                   y, d, sim, idx, k, self, counts[r], cap);
  }
  return 0;
}

int knn_rescore_cpu(const float* x, const float* y, int64_t n, int64_t m, int64_t d, const int64_t* cand_idx,
                    const float* cand_sim, int64_t kc, const float* bound, int64_t k, bool self_search,
                    const int64_t* self_ids, int64_t* out_idx, float* out_sim, uint8_t* certified,
                    int num_threads) {
  HILCORE_CHECK_MSG(n >= 0 && m >= 1 && d >= 1 && k >= 1 && kc >= k && kc <= m,
                    values({{"n", n}, {"m", m}, {"d", d}, {"k", k}, {"kc", kc}}));
  if (num_threads < 1) num_threads = 1;
  int bad = 0;
  float (*const dot)(const float*, const float*, int64_t) = ops().dot_f32;
#pragma omp parallel for schedule(dynamic, 64) num_threads(num_threads) reduction(| : bad)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* ci = cand_idx + i * kc;
    const float* cs = cand_sim + i * kc;
    const float* xi = x + i * d;
    bool ok = true;
    for (int64_t a = 0; a < kc; ++a) ok = ok && ci[a] >= 0 && ci[a] < m;
    if (!ok) {
      bad = 1;
      certified[i] = 0;
      continue;
    }
    const int64_t self = self_ids != nullptr ? self_ids[i] : (self_search ? i : kNoSelf);
    float* sim = out_sim + i * k;
    int64_t* idx = out_idx + i * k;
    for (int64_t t = 0; t < k; ++t) {
      sim[t] = -kInf;
      idx[t] = -1;
    }
    const bool has_self = self >= 0 && self < m;
    if (has_self) insert_first(sim, idx, k, dot(xi, y + self * d, d), self);  // always first
    TopList L(sim, idx, k, has_self ? self : kNoSelf);
    const double B = static_cast<double>(bound[i]);
    // Candidates in their order (approximate value desc): every column j not rescored yet has
    // approximate value <= cs[a], so exact(j) <= cs[a] + B; once that is below the list's k-th
    // value (strictly: a tie could be won by a lower index) no such column can enter.
    bool cert = false;
    int64_t a = 0;
    for (; a < kc; ++a) {
      if (static_cast<double>(cs[a]) + B < static_cast<double>(L.thr)) {
        cert = true;
        break;
      }
      const int64_t j = ci[a];
      if (j == self) continue;
      if (a + 2 < kc) {
        const char* nx = reinterpret_cast<const char*>(y + ci[a + 2] * d);
        __builtin_prefetch(nx, 0, 3);
        __builtin_prefetch(nx + 64, 0, 3);
      }
      L.offer(dot(xi, y + j * d, d), j);
    }
    // all kc rescored: every column was a candidate, or the last candidate's bound decides
    if (!cert) cert = kc == m || static_cast<double>(cs[kc - 1]) + B < static_cast<double>(L.thr);
    certified[i] = cert ? 1 : 0;
  }
  // checked after the parallel loop (no exception may leave it); the rows past a bad one are undefined
  HILCORE_CHECK_MSG(!bad, "cand_idx: expected every entry in [0, m), " + values({{"m", m}}));
  return 0;
}

int knn_refine_f32_cpu(const float* S, int64_t b, int64_t c, int64_t col0, const int64_t* self_ids,
                       const float* bound, const float* xq, const float* y, int64_t d, float* best_sim,
                       int64_t* best_idx, int64_t k, int64_t* counts, int num_threads) {
  HILCORE_CHECK_MSG(b >= 0 && c >= 0 && k >= 1 && col0 >= 0 && d >= 1,
                    values({{"b", b}, {"c", c}, {"d", d}, {"k", k}, {"col0", col0}}));
  if (num_threads < 1) num_threads = 1;
  float (*const dot)(const float*, const float*, int64_t) = ops().dot_f32;
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads) if (b * c > 32768)
  for (int64_t r = 0; r < b; ++r) {
    const int64_t self = self_ids != nullptr ? self_ids[r] : kNoSelf;
    TopList L(best_sim + r * k, best_idx + r * k, k, self);
    const float* srow = S + r * c;
    const float* xr = xq + r * d;
    const double B = static_cast<double>(bound[r]);
    int64_t cnt = 0;
    for (int64_t q = 0; q < c; ++q) {
      // dot(j) <= S[q] + B: only a column with S[q] + B >= the k-th value can enter
      if (static_cast<double>(srow[q]) + B < static_cast<double>(L.thr)) continue;
      const int64_t j = col0 + q;
      if (j == self) continue;
      bool listed = false;
      for (int64_t t = 0; t < k; ++t)
        if (L.idx[t] == j) {
          listed = true;
          break;
        }
      if (listed) continue;
      ++cnt;
      L.offer(dot(xr, y + j * d, d), j);
    }
    if (counts != nullptr) counts[r] += cnt;
  }
  return 0;
}

}  // namespace hilcore
