// Momentum update of a memory bank, sequential in batch order (docs/design.md).
#pragma once
#include <cstdint>

namespace hilcore {

// Layout: mem row-major [rows, slots, dim] (updated in place); x row-major
// [b, dim], rows already L2-normalised; targets [b] int64 in [0, rows).
// For i = 0..b-1 in order: s = argmax_s <mem[t_i, s], x_i> (the lowest s on
// ties; s = 0 when slots == 1), v = mu * mem[t_i, s] + (1 - mu) * x_i,
// mem[t_i, s] = v / max(||v||, 1e-12). Duplicated targets are therefore
// applied one after the other, exactly as a Python loop over the batch.
// Dots and norms accumulate in double.
// Returns 0; bad sizes or a target out of range (checked for the whole batch
// before anything is written) throw hilcore::KernelError naming it (kernels/common/check.h).
int memory_update_cpu(float* mem, int64_t rows, int64_t slots, int64_t dim, const float* x,
                      const int64_t* targets, int64_t b, double momentum);
int memory_update_cpu(double* mem, int64_t rows, int64_t slots, int64_t dim, const double* x,
                      const int64_t* targets, int64_t b, double momentum);

}  // namespace hilcore
