// BRST on CPU: one pass over the B x C similarity tiles giving the row arg-max
// (ties: lower column) and the column max over all rows.
#pragma once
#include <cstdint>

namespace hilcore {

// xb [M, D] and protos [C, D] float32 row-major, rows L2-normalised. Every similarity is the sequential
// fused multiply-add over the D columns in order (brst_tile.h), on every CPU path.
// Outputs: best [M] int64, best_sim [M] float32, col_max [C] float32.
// Returns 0 on success, nonzero on bad sizes.
int brst_cpu(const float* xb, int64_t m, const float* protos, int64_t c, int64_t d,
             int64_t* best, float* best_sim, float* col_max);

// The register tile in use ("avx2" or "portable"), and the choice of it ("auto", "avx2", "portable"):
// 0 ok, 1 unknown name, 2 not supported by this CPU. Both give the same bits.
const char* brst_cpu_path();
int brst_set_cpu_path(const char* name);

}  // namespace hilcore
