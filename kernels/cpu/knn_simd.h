// Internal to the CPU kNN: the per-row pieces that have a SIMD variant, and
// the running top-k list they share. Included by knn_cpu.cpp (generic flags)
// and by x86/knn_avx2.cpp (compiled with -mavx2 -mfma); picked at run time
// (knn_cpu_path / knn_set_cpu_path in knn_cpu.h).
//
// Everything defined here is in an anonymous namespace on purpose: each
// translation unit gets its own copy compiled with its own flags, so the
// linker can never hand the generic code an AVX2-compiled inline function
// (the usual way a "dispatched" build still dies with SIGILL).
#pragma once
#include <cstdint>

namespace hilcore {
namespace knn_simd {

// One set of kernels. `self` is the list's own index, or kNoSelf outside self-search.
struct Ops {
  const char* name;
  // Merge one int32 tile row (columns col0..col0+c) as approximate similarities
  // (sr * sc[q]) * S[q] into its sorted list; the self column, when in the tile, first.
  void (*merge_row_i8)(const int32_t* srow, int64_t c, int64_t col0, float sr, const float* sc, float* sim,
                       int64_t* idx, int64_t k, int64_t self);
  // Column mode, one strip of 16 columns [q0, q0 + 16) of the tile S [b, c]: tile rows
  // [r0, r1) are offered (as candidates row0 + r) to the lists of columns col0 + q0 + l.
  void (*merge_cols16_i8)(const int32_t* S, int64_t r0, int64_t r1, int64_t c, int64_t q0, int64_t row0,
                          int64_t col0, const float* rs, const float* sc, float* best_sim, int64_t* best_idx,
                          int64_t k, bool self_search);
  // Second pass of one uncertified row (knn_refine_i8_cpu): every column q of the int32 tile row
  // (columns col0..) with double((sr * sc[q]) * S[q]) + B >= the list's current k-th value, not
  // the row itself and not listed yet, is rescored (dot_f32 of xr and y row col0 + q, d terms) and
  // offered. Returns cnt plus the rescored columns, or -1 once that passes cap.
  int64_t (*refine_row_i8)(const int32_t* srow, int64_t c, int64_t col0, float sr, const float* sc, double B,
                           const float* xr, const float* y, int64_t d, float* sim, int64_t* idx, int64_t k,
                           int64_t self, int64_t cnt, int64_t cap);
  // float32 dot product: 32 partial sums s_l = fma(a_t, b_t, s_l) over t = l (mod 32) for the
  // first 32 * floor(d / 32) terms, then 8 more sums for the next multiple of 8, reduced as a
  // fixed tree, then the tail by fma. Every variant gives the same bits.
  float (*dot_f32)(const float* a, const float* b, int64_t d);
};

extern const Ops kScalarOps;
#if defined(HILCORE_KNN_AVX2)
extern const Ops kAvx2Ops;  // x86/knn_avx2.cpp
#endif

namespace {

constexpr int64_t kNoSelf = INT64_MIN;
constexpr float kInf = __builtin_inff();

// Insert (v, j) into the sorted row (sim, idx) of length k, known to beat the
// last entry. self_idx is the row's own index (never displaced), or kNoSelf.
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

// A TopList fed in batches: an offered (v, j) that beats the k-th key as of the last flush is kept
// in a small buffer; flush() sorts the buffer and merges it into the list in place from the end
// (the list's last slots are the only ones that move), then refreshes the k-th key. The list then
// holds the k best of everything offered under (v desc, j asc), the self entry pinned first, which
// is what offering one at a time gives: the same bits, but an insertion no longer shifts up to k
// entries, so long candidate lists (k of several hundred) cost little more than short ones.
// Every offer must be followed by a flush() before the list is read or insert_first() is called.
struct BatchedList {
  static constexpr int kBatch = 32;
  TopList L;
  float bv[kBatch];
  int64_t bj[kBatch];
  int nb = 0;

  BatchedList() = default;
  BatchedList(float* s, int64_t* i, int64_t kk, int64_t self) : L(s, i, kk, self) {}
  float thr() const { return L.thr; }
  inline void offer(float v, int64_t j) {
    if (v < L.thr) return;
    if (v > L.thr || j < L.thr_idx) {
      bv[nb] = v;
      bj[nb] = j;
      if (++nb == kBatch) flush();
    }
  }
  static bool beats(float v, int64_t j, float w, int64_t q) { return v > w || (v == w && j < q); }
  void flush() {
    if (nb == 0) return;
    for (int a = 1; a < nb; ++a) {  // insertion sort, best first
      const float v = bv[a];
      const int64_t j = bj[a];
      int p = a;
      for (; p > 0 && beats(v, j, bv[p - 1], bj[p - 1]); --p) {
        bv[p] = bv[p - 1];
        bj[p] = bj[p - 1];
      }
      bv[p] = v;
      bj[p] = j;
    }
    float* sim = L.sim;
    int64_t* idx = L.idx;
    const int64_t lo = idx[0] == L.self_idx ? 1 : 0;  // the self entry stays first
    int64_t i = L.k - 1;  // last list entry still in the running
    int b = nb - 1;       // last buffer entry still in the running
    for (int t = 0; t < nb && b >= 0; ++t) {  // drop the nb worst of list [lo, k) + buffer
      if (i >= lo && !beats(sim[i], idx[i], bv[b], bj[b]))
        --i;
      else
        --b;
    }
    for (int64_t w = L.k - 1; b >= 0; --w) {  // merge from the end; w > i while the buffer lasts
      if (i >= lo && !beats(sim[i], idx[i], bv[b], bj[b])) {
        sim[w] = sim[i];
        idx[w] = idx[i];
        --i;
      } else {
        sim[w] = bv[b];
        idx[w] = bj[b];
        --b;
      }
    }
    nb = 0;
    L.refresh();
  }
};

// approximate similarity of an int8 product: (s_a * s_b) * float(S), this order
inline float approx(float sa, float sb, int32_t s) { return (sa * sb) * static_cast<float>(s); }

// One column of the second pass (Ops::refine_row_i8), in the TU's own flags and dot product.
// Returns false when the row went past cap (cnt = -1).
template <float (*Dot)(const float*, const float*, int64_t)>
inline bool refine_column(TopList& L, double a_plus_b, int64_t j, const float* xr, const float* y, int64_t d,
                          int64_t& cnt, int64_t cap) {
  // exact(j) <= approx + B: only a column with approx + B >= the k-th key can enter
  if (a_plus_b < static_cast<double>(L.thr) || j == L.self_idx) return true;
  for (int64_t t = 0; t < L.k; ++t)
    if (L.idx[t] == j) return true;  // listed
  if (++cnt > cap) {
    cnt = -1;
    return false;
  }
  L.offer(Dot(xr, y + j * d, d), j);
  return true;
}

}  // namespace
}  // namespace knn_simd
}  // namespace hilcore
