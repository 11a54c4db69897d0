// Sparse k-reciprocal Jaccard distance from a self-search kNN ranking.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace hilcore {

// Output CSR [n, n]: indptr [n+1], indices [nnz] (sorted per row), data [nnz].
struct JaccardCsr {
  std::vector<int64_t> indptr;
  std::vector<int64_t> indices;
  std::vector<float> data;
  double seconds[4] = {0, 0, 0, 0};  // reciprocal+weights, query expansion, inverted index, jaccard
};

// Sparse rows with int32 columns (V, V' and the postings of V'): row i at [ptr[i], ptr[i + 1]).
struct JaccardRows {
  std::vector<int64_t> ptr;
  std::vector<int32_t> idx;
  std::vector<float> val;
};

// Optional progress of jaccard_cpu's row passes (the expansion and weights, the query expansion when
// k2 > 1, the pairs): while a pass runs, the calling thread (OpenMP's thread 0, which takes rows like the
// others) calls `fn(done, total)` between its own rows each time the rows finished by all threads pass
// another multiple of `block_rows` (done = the rows of the earlier passes plus that multiple; the other
// threads do not wait), and once after the pass with its last row counted; total = passes * n, so done
// only grows and ends at total. The result does not depend on it. An empty fn: no call and no counting.
// An exception thrown by fn stops the pass (its remaining rows are skipped) and leaves jaccard_cpu
// (`out` unspecified).
struct JaccardProgress {
  std::function<void(int64_t done, int64_t total)> fn;
  int64_t block_rows = 0;  // <= 0: n (a report after each pass only)
};

// Layout: x row-major [n, d] float32 with L2-normalised rows; rank row-major
// [n, ld_rank] int64, row i holding i's neighbours best first (i itself at
// column 0), the first k1 columns used, every entry in [0, n), distinct per row.
// Semantics (docs/design.md): R(i, k) = {j in rank[i, :min(k+1, k1)] : i in
// rank[j, :min(k+1, k1)]}; expansion by R(c, round_half_even(k1/2)) for c in
// R(i, k1) when |R(c, kh) n R(i, k1)| > 2/3 |R(c, kh)|; V[i] = softmax of
// -(2 - 2 x_i.x_j) over the expanded set; V' = mean of V over rank[i, :k2];
// m(i, j) = sum_t min(V'[i, t], V'[j, t]) summed in ascending t, so that
// m(i, j) and m(j, i) are bit-identical; d = max(0, 1 - m / (s_i + s_j - m))
// with s_i = sum_t V'[i, t]. Every float32 sum follows the orders of
// docs/design.md ("Summation orders"), bitwise those of the torch stages,
// whatever the thread count.
// Kept: d <= max_distance (compared in float32) with m > 0; the diagonal is
// always stored as exactly 0. Memory O(n * support) plus O(n) per thread.
// Preconditions: 1 <= n < 2^31, d >= 1, 1 <= k2 <= k1 <= min(n, ld_rank); a violated one throws
// hilcore::KernelError naming it (kernels/common/check.h). Runs the four stages below in order and
// times them (out->seconds); `progress` (may be null) as above.
void jaccard_cpu(const float* x, int64_t n, int64_t d, const int64_t* rank, int64_t ld_rank, int64_t k1,
                 int64_t k2, float max_distance, int num_threads, JaccardCsr* out,
                 const JaccardProgress* progress = nullptr);

// Where a row pass reports: JaccardProgress's fn and block, and the rows of the passes before it.
struct RowTicks {
  const JaccardProgress* progress = nullptr;  // null or an empty fn: no reports
  int64_t before = 0;                         // rows finished by the earlier passes
  int64_t total = 0;                          // passes * n
};

// The stages of jaccard_cpu, one function each, named after the CUDA launchers they match
// (kernels/cuda/launchers.h); each reads the previous stage's output, `nt` threads; `ticks` (optional)
// reports the rows of the row passes 1, 2 and 4 (JaccardProgress).
// mass[i] = s_i, the sum of row i's values in ascending column order (V's after stage 1, V''s after 2).
// 1. krecip_flags + expand_count/fill + unique_count/weights: E(i) sorted, the softmax weights V.
void jaccard_cpu_expand(const float* x, int64_t n, int64_t d, const int64_t* rank, int64_t ld_rank, int64_t k1,
                        int nt, JaccardRows* v, std::vector<float>* mass, const RowTicks& ticks = {});
// 2. query_expansion_count/fill: V'[i] = (1/k2) sum of V over rank[i, :k2] (for k2 > 1; V' = V at k2 = 1).
void jaccard_cpu_query_expansion(const JaccardRows& v, const int64_t* rank, int64_t n, int64_t ld_rank, int64_t k2,
                                 int nt, JaccardRows* q, std::vector<float>* mass, const RowTicks& ticks = {});
// 3. the postings, the transpose of V' (the CUDA glue's stable sort): for each column t the rows holding t,
// ascending (p->idx holds row numbers), with their values.
void jaccard_cpu_postings(const JaccardRows& q, int64_t n, JaccardRows* p);
// 4. jaccard_slots + jaccard_partners (the count pass) + jaccard_rows (the fill pass): the kept pairs of
// every row, sorted by column, into out's CSR.
void jaccard_cpu_rows(const JaccardRows& q, const JaccardRows& p, const std::vector<float>& mass, int64_t n,
                      float max_distance, int nt, JaccardCsr* out, const RowTicks& ticks = {});

// The two float32 primitives of the weights, as jaccard_cpu computes them (for tests against the
// torch stages' dot_rows / exp_f32): out[r] = a[r] . b[r] for row-major [m, d] a and b; out[i] = exp(z[i]).
void jaccard_dot_rows(const float* a, const float* b, int64_t m, int64_t d, float* out);
void jaccard_exp_f32(const float* z, int64_t n, float* out);

}  // namespace hilcore
