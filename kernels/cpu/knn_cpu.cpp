#include "cpu/knn_cpu.h"

#include <omp.h>

#include <limits>

namespace hilcore {

namespace {

constexpr int64_t kNoSelf = std::numeric_limits<int64_t>::min();

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

// Merge columns [q0, q1) of one tile row; thr/thr_idx is the current k-th key.
inline void merge_span(const float* srow, int64_t q0, int64_t q1, int64_t col0, float* sim, int64_t* idx,
                       int64_t k, int64_t self_idx) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float thr = idx[k - 1] == self_idx ? kInf : sim[k - 1];
  int64_t thr_idx = idx[k - 1];
  for (int64_t q = q0; q < q1; ++q) {
    const float v = srow[q];
    if (v < thr) continue;  // the common case: one compare
    const int64_t j = col0 + q;
    if (v > thr || j < thr_idx) {
      insert_sorted(sim, idx, k, v, j, self_idx);
      thr = idx[k - 1] == self_idx ? kInf : sim[k - 1];
      thr_idx = idx[k - 1];
    }
  }
}

}  // namespace

int knn_topk_merge_cpu(const float* S, int64_t b, int64_t c, int64_t row0, int64_t col0, float* best_sim,
                       int64_t* best_idx, int64_t n_rows, int64_t k, bool self_search, int num_threads) {
  if (b < 0 || c < 0 || k < 1 || row0 < 0 || row0 + b > n_rows || col0 < 0) return 1;
  if (num_threads < 1) num_threads = 1;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (b * c > 32768)
  for (int64_t r = 0; r < b; ++r) {
    const int64_t row = row0 + r;
    const float* srow = S + r * c;
    float* sim = best_sim + row * k;
    int64_t* idx = best_idx + row * k;
    const int64_t self_idx = self_search ? row : kNoSelf;
    const int64_t qs = self_search ? row - col0 : -1;  // the self column in this tile
    if (self_search && qs >= 0 && qs < c) {
      merge_span(srow, 0, qs, col0, sim, idx, k, self_idx);
      insert_first(sim, idx, k, srow[qs], row);
      merge_span(srow, qs + 1, c, col0, sim, idx, k, self_idx);
    } else {
      merge_span(srow, 0, c, col0, sim, idx, k, self_idx);
    }
  }
  return 0;
}

}  // namespace hilcore
