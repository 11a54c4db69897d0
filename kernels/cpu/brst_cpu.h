// BRST on CPU: one pass over the B x C similarity tiles giving the row arg-max
// (ties: lower column) and the column max over all rows.
#pragma once
#include <cstdint>

namespace hilcore {

// xb [M, D] and protos [C, D] float32 row-major, rows L2-normalised.
// Outputs: best [M] int64, best_sim [M] float32, col_max [C] float32.
// Returns 0 on success, nonzero on bad sizes.
int brst_cpu(const float* xb, int64_t m, const float* protos, int64_t c, int64_t d,
             int64_t* best, float* best_sim, float* col_max);

}  // namespace hilcore
