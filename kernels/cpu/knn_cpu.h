// Blocked exact kNN on CPU: the running top-k merges of similarity tiles (the
// products are GEMMs done by the caller, one tile at a time), and the pieces
// of the exact int8-candidate path (quantise, merge int8 tiles, rescore and
// certify).
#pragma once
#include <cstdint>

namespace hilcore {

// Run-time choice of the SIMD row kernels (int8 tile merges, the float32 dot
// products of the rescoring). "avx2" (x86_64 with AVX2 + FMA: the kernels of
// x86/knn_avx2.cpp, built with those flags alone) or "scalar" (portable C++,
// every other CPU). The default is the fastest the CPU supports (CPUID).
// Every path returns the same bits.
const char* knn_cpu_path();
// Select "auto", "avx2" or "scalar". Returns 0, 1 for an unknown name, 2 when
// the path is not built or the CPU lacks its instructions.
int knn_set_cpu_path(const char* name);
// Whether `name` ("avx2", "scalar") can run on this build and CPU.
bool knn_cpu_path_available(const char* name);

// Merge a tile of similarities into the per-row sorted top-k lists.
//
// Layout: S is row-major [b, c] (row stride c); S[r, q] is the similarity of
// query row0 + r with database column col0 + q. best_sim / best_idx are
// row-major [n_rows, k], each row kept sorted by the key (sim desc, idx asc),
// initialised by the caller to (-inf, -1). When self_search is true, the
// element whose column equals its row is ranked first (an infinite key) and
// stored with its computed similarity.
// Preconditions: 0 <= row0, row0 + b <= n_rows, k >= 1, S finite.
// Returns 0; a violated precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int knn_topk_merge_cpu(const float* S, int64_t b, int64_t c, int64_t row0, int64_t col0,
                       float* best_sim, int64_t* best_idx, int64_t n_rows, int64_t k,
                       bool self_search, int num_threads);

// As knn_topk_merge_cpu for a gathered set of rows: tile row r merges into
// best row r ([b, k]) and its own index (for self_search) is row_ids[r].
int knn_topk_merge_rows_cpu(const float* S, int64_t b, int64_t c, const int64_t* row_ids, int64_t col0,
                            float* best_sim, int64_t* best_idx, int64_t k, bool self_search, int num_threads);

// Symmetric per-row int8 quantisation of x [n, d] (row-major):
//   scale[i] = max_t |x_it| / 127,  q_i = round(127 x_i / max_t |x_it|) in [-127, 127],
//   p_i = scale[i] q_i,  e_i = x_i - p_i,
// and the norms ||x_i||, ||p_i||, ||e_i|| computed in float64 and rounded UP
// to float32 (each stored value is >= the exact norm). A zero row gets scale 0.
// Returns 0; a violated precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int knn_quantize_cpu(const float* x, int64_t n, int64_t d, int8_t* q, float* scale, float* xnorm,
                     float* pnorm, float* enorm, int num_threads);

// Merge a tile of int8 products S [b, c] (int32, row-major) into running
// top-k lists of approximate similarities a = (row_scale * col_scale) * S
// (float32, this exact evaluation order, so a(i, j) == a(j, i) bit for bit).
// row_scale is indexed by the global row (row0 + r), col_scale by the global
// column (col0 + q).
// columns == false: tile row r merges into list row0 + r (as knn_topk_merge_cpu).
// columns == true: tile column q merges into list col0 + q with candidates
// row0 + r (the transposed tile, read in place in 16-column strips); in
// self-search the two index ranges must then be disjoint (an off-diagonal tile).
// Preconditions: the destination lists fit in n_rows, k >= 1.
// Returns 0; a violated precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int knn_topk_merge_i8_cpu(const int32_t* S, int64_t b, int64_t c, int64_t row0, int64_t col0,
                          const float* row_scale, const float* col_scale, float* best_sim, int64_t* best_idx,
                          int64_t n_rows, int64_t k, bool self_search, bool columns, int num_threads);

// Exact rescoring and certification of candidate lists.
//
// cand_idx / cand_sim [n, kc] (row-major): each row's kc candidates sorted by
// (approximate sim desc, idx asc); every column not listed has approximate sim
// <= cand_sim[i, kc - 1] (the last entry); bound[i] must bound |exact -
// approximate| for row i against every column (see hilcore/backend/native/knn.py).
// "Exact" is the float32 dot product x_i . y_j of knn_simd::Ops::dot_f32 (32
// partial sums, the same bits on every CPU path). For each row the own column
// (if any) is rescored and put first, then the candidates are rescored in their
// order into the top-k list (exact desc, idx asc) until the next candidate's
// approximate value + bound[i] is below the list's k-th value (strict): no
// column not rescored can then enter, and certified[i] = 1. Rows that rescore
// all kc candidates are certified when kc == m or cand_sim[i, kc - 1] +
// bound[i] < their k-th value, else certified[i] = 0 (their list is then the
// top-k of the candidates). The first k are written to out_idx / out_sim [n, k].
// Preconditions: 1 <= k <= kc <= m, candidate indices in [0, m).
// Returns 0; a violated precondition throws hilcore::KernelError naming it (kernels/common/check.h).
// self_ids (may be nullptr) gives each row's own column explicitly (any value outside [0, m), e.g.
// -2^62, for a row whose own column is not in y): then self_search is ignored. Otherwise the own column
// of row i is i in self-search (y is x) and none outside it. certified[i] is also 1 when the row's k-th
// entry is its own column (k = 1).
int knn_rescore_cpu(const float* x, const float* y, int64_t n, int64_t m, int64_t d, const int64_t* cand_idx,
                    const float* cand_sim, int64_t kc, const float* bound, int64_t k, bool self_search,
                    const int64_t* self_ids, int64_t* out_idx, float* out_sim, uint8_t* certified,
                    int num_threads);

// Exact fallback of the float32-candidate path for gathered rows: xq [b, d] are the query rows, tile
// row r of the float32 GEMM tile S [b, c] (columns col0.. of y) is row r of xq, whose sorted top-k
// list best_sim/best_idx row r already holds its rescored top-k (values knn_simd::Ops::dot_f32) and
// whose own column is self_ids[r] (nullptr or a value outside y: none). Every column j with
// double(S[r, j]) + bound[r] >= the list's current k-th value, not the row itself and not listed yet,
// is rescored (dot_f32(xq_r, y_j)) and offered to the list; the others cannot enter, since bound[r]
// bounds |dot_f32 - S| for every column. counts[r] (may be nullptr) accumulates the rescored columns.
int knn_refine_f32_cpu(const float* S, int64_t b, int64_t c, int64_t col0, const int64_t* self_ids,
                       const float* bound, const float* xq, const float* y, int64_t d, float* best_sim,
                       int64_t* best_idx, int64_t k, int64_t* counts, int num_threads);

// Second pass for rows that failed certification (gathered: tile row r is
// global row row_ids[r]; its sorted top-k list is best_sim/best_idx row r,
// already holding the rescored top-k). Every column j of the int32 tile S
// [b, c] (columns col0..) whose approximate value a = (row_scale[r] *
// col_scale[j]) * S[r, j] satisfies a + bound[r] >= the list's current k-th
// value, and that is not listed yet, is rescored exactly (x_row . y_j, as in
// knn_rescore_cpu) and offered to the list. The rest cannot enter: their
// exact value is <= a + bound[r] < the k-th value. counts[r] accumulates the
// rescored columns; past cap it is set to -1 and the row is skipped from then
// on (the caller recomputes it in fp32).
int knn_refine_i8_cpu(const int32_t* S, int64_t b, int64_t c, const int64_t* row_ids, int64_t col0,
                      const float* row_scale, const float* col_scale, const float* bound, const float* x,
                      const float* y, int64_t d, float* best_sim, int64_t* best_idx, int64_t k, bool self_search,
                      int64_t* counts, int64_t cap, int num_threads);

}  // namespace hilcore
