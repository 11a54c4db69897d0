// BRST on CPU: one pass over the B x C similarity tiles giving the row arg-max
// (ties: lower column) and the column max over all rows.
#pragma once
#include <cstdint>

namespace hilcore {

// xb [M, D] and protos [C, D] float32 row-major, rows L2-normalised. Every similarity is the sequential
// fused multiply-add over the D columns in order (brst_tile.h), on every CPU path.
// idx: null (the rows of B are xb's rows 0..M-1) or M row ids into xb (row r of B is xb[idx[r]]; the
// caller checks them).
// Outputs: best [M] int64, best_sim [M] float32, col_max [C] float32.
// Returns 0 on success, nonzero on bad sizes.
int brst_cpu(const float* xb, int64_t m, const float* protos, int64_t c, int64_t d,
             int64_t* best, float* best_sim, float* col_max, const int64_t* idx = nullptr);

// The register tile in use ("avx512", "avx2" or "portable"), the choice of it ("auto", or one of those):
// 0 ok, 1 unknown name, 2 not supported by this CPU; and whether a tile can run here. All give the same bits.
const char* brst_cpu_path();
int brst_set_cpu_path(const char* name);
bool brst_cpu_path_available(const char* name);

}  // namespace hilcore
