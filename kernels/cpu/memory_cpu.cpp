#include "cpu/memory_cpu.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/check.h"

namespace hilcore {

namespace {

template <typename T>
int memory_update_impl(T* mem, int64_t rows, int64_t slots, int64_t dim, const T* x, const int64_t* targets,
                       int64_t b, double momentum) {
  HILCORE_CHECK_MSG_IN("memory_update_cpu", rows >= 1 && slots >= 1 && dim >= 1 && b >= 0,
                       "sizes: expected rows, slots, dim >= 1 and b >= 0, got rows = " + std::to_string(rows) +
                           ", slots = " + std::to_string(slots) + ", dim = " + std::to_string(dim) +
                           ", b = " + std::to_string(b));
  for (int64_t i = 0; i < b; ++i)
    HILCORE_CHECK_MSG_IN("memory_update_cpu", targets[i] >= 0 && targets[i] < rows,
                         "targets: ids must lie in [0, " + std::to_string(rows) + "), got targets[" +
                             std::to_string(i) + "] = " + std::to_string(targets[i]));
  const double mu = momentum, nu = 1.0 - momentum;
  for (int64_t i = 0; i < b; ++i) {
    const T* xi = x + i * dim;
    T* cluster = mem + targets[i] * slots * dim;
    int64_t best = 0;
    if (slots > 1) {
      double best_dot = 0.0;
      for (int64_t s = 0; s < slots; ++s) {
        const T* m = cluster + s * dim;
        double dot = 0.0;
        for (int64_t k = 0; k < dim; ++k) dot += double(m[k]) * double(xi[k]);
        if (s == 0 || dot > best_dot) {  // strict: the lowest slot wins ties
          best_dot = dot;
          best = s;
        }
      }
    }
    T* m = cluster + best * dim;
    double sq = 0.0;
    for (int64_t k = 0; k < dim; ++k) {
      const T v = T(mu * double(m[k]) + nu * double(xi[k]));  // rounded like the torch path
      m[k] = v;
      sq += double(v) * double(v);
    }
    const double inv = 1.0 / std::max(std::sqrt(sq), 1e-12);
    for (int64_t k = 0; k < dim; ++k) m[k] = T(double(m[k]) * inv);
  }
  return 0;
}

}  // namespace

int memory_update_cpu(float* mem, int64_t rows, int64_t slots, int64_t dim, const float* x,
                      const int64_t* targets, int64_t b, double momentum) {
  return memory_update_impl(mem, rows, slots, dim, x, targets, b, momentum);
}

int memory_update_cpu(double* mem, int64_t rows, int64_t slots, int64_t dim, const double* x,
                      const int64_t* targets, int64_t b, double momentum) {
  return memory_update_impl(mem, rows, slots, dim, x, targets, b, momentum);
}

}  // namespace hilcore
