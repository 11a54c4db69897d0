// Running top-k merge for the blocked exact kNN (the product itself is a BLAS
// GEMM done by the caller, one tile at a time).
#pragma once
#include <cstdint>

namespace hilcore {

// Merge a tile of similarities into the per-row sorted top-k lists.
//
// Layout: S is row-major [b, c] (row stride c); S[r, q] is the similarity of
// query row0 + r with database column col0 + q. best_sim / best_idx are
// row-major [n_rows, k], each row kept sorted by the key (sim desc, idx asc),
// initialised by the caller to (-inf, -1). When self_search is true, the
// element whose column equals its row is ranked first (an infinite key) and
// stored with its computed similarity.
// Preconditions: 0 <= row0, row0 + b <= n_rows, k >= 1, S finite.
// Returns 0, or 1 for bad sizes.
int knn_topk_merge_cpu(const float* S, int64_t b, int64_t c, int64_t row0, int64_t col0,
                       float* best_sim, int64_t* best_idx, int64_t n_rows, int64_t k,
                       bool self_search, int num_threads);

}  // namespace hilcore
