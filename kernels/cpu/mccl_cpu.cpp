// Layout: samples in blocks of kRows, each block owned by one thread; for each
// cluster in order, the block's [kRows, slots] distance tile is computed (each
// slot row read once for the kRows samples) and folded into per-sample running
// statistics (forward) or gradient accumulators (backward). The forward and
// backward compute the tile with the same code, so the backward's nearest
// slots are exactly the forward's.
#include "cpu/mccl_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/check.h"

namespace hilcore {
namespace {
constexpr int kRows = 4;

// sq[q] = sum_k (x_q[k] - m[k])^2 for the kRows rows xr[q], from the differences.
inline void sqdist_rows(const float* const* xr, const float* m, int64_t dim, float* sq) {
  const float* x0 = xr[0];
  const float* x1 = xr[1];
  const float* x2 = xr[2];
  const float* x3 = xr[3];
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t k = 0; k < dim; ++k) {
    const float mk = m[k];
    const float e0 = x0[k] - mk, e1 = x1[k] - mk, e2 = x2[k] - mk, e3 = x3[k] - mk;
    s0 += e0 * e0;
    s1 += e1 * e1;
    s2 += e2 * e2;
    s3 += e3 * e3;
  }
  sq[0] = s0; sq[1] = s1; sq[2] = s2; sq[3] = s3;
}

// tile[q * slots + s] = d(x_q, M_cs) = sqrt(sq + eps) in float32, for the rows of the block.
inline void distance_tile(const float* const* xr, const float* cluster, int64_t slots, int64_t dim, float eps,
                          float* tile) {
  float sq[kRows];
  for (int64_t s = 0; s < slots; ++s) {
    sqdist_rows(xr, cluster + s * dim, dim, sq);
    for (int q = 0; q < kRows; ++q) tile[q * slots + s] = std::sqrt(sq[q] + eps);
  }
}

// The kRows row pointers of the block starting at r0; rows past b repeat row b - 1 (results discarded).
inline int block_rows(const float* x, int64_t b, int64_t dim, int64_t r0, const float** xr) {
  const int n = int(std::min<int64_t>(kRows, b - r0));
  for (int q = 0; q < kRows; ++q) xr[q] = x + (r0 + std::min(q, n - 1)) * dim;
  return n;
}
}  // namespace

int mccl_forward_cpu(const float* x, int64_t b, const float* mem, int64_t clusters, int64_t slots, int64_t dim,
                     double eps, double margin, float* loss, int64_t* cstar, float* pos, float* neg) {
  HILCORE_CHECK_MSG(b >= 0 && clusters >= 1 && slots >= 1 && dim >= 1,
                    "sizes: expected b >= 0 and clusters, slots, dim >= 1, got b = " + std::to_string(b) +
                        ", clusters = " + std::to_string(clusters) + ", slots = " + std::to_string(slots) +
                        ", dim = " + std::to_string(dim));
  const float epsf = float(eps);
#pragma omp parallel
  {
    std::vector<float> tile(kRows * slots);
#pragma omp for schedule(dynamic, 1)
    for (int64_t r0 = 0; r0 < b; r0 += kRows) {
      const float* xr[kRows];
      const int n = block_rows(x, b, dim, r0, xr);
      float best_d[kRows];
      int64_t best_c[kRows];
      double pos_sum[kRows], umax_best[kRows], neg_sum[kRows];
      for (int q = 0; q < kRows; ++q) {
        best_d[q] = std::numeric_limits<float>::infinity();
        best_c[q] = 0;
        pos_sum[q] = umax_best[q] = neg_sum[q] = 0.0;
      }
      for (int64_t c = 0; c < clusters; ++c) {
        distance_tile(xr, mem + c * slots * dim, slots, dim, epsf, tile.data());
        for (int q = 0; q < kRows; ++q) {
          const float* t = tile.data() + q * slots;
          float dmin = t[0];
          double usum = 0.0;
          for (int64_t s = 0; s < slots; ++s) {
            dmin = std::min(dmin, t[s]);
            usum += 1.0 / double(t[s]);
          }
          const double umax = 1.0 / double(dmin);
          if (dmin < best_d[q]) {  // strict: the lowest cluster wins ties
            neg_sum[q] += umax_best[q];  // the displaced c* (0 before the first cluster)
            umax_best[q] = umax;
            pos_sum[q] = usum;
            best_c[q] = c;
            best_d[q] = dmin;
          } else {
            neg_sum[q] += umax;
          }
        }
      }
      for (int q = 0; q < n; ++q) {
        const double p = pos_sum[q] / double(slots);
        const double ng = clusters > 1 ? neg_sum[q] / double(clusters - 1) : 0.0;
        loss[r0 + q] = float(-std::log(p / (p + ng + margin)));
        cstar[r0 + q] = best_c[q];
        if (pos) pos[r0 + q] = float(p);
        if (neg) neg[r0 + q] = float(ng);
      }
    }
  }
  return 0;
}

int mccl_backward_cpu(const float* x, int64_t b, const float* mem, int64_t clusters, int64_t slots, int64_t dim,
                      double eps, double margin, const int64_t* cstar, const float* pos, const float* neg,
                      const float* grad_loss, float* grad) {
  HILCORE_CHECK_MSG(b >= 0 && clusters >= 1 && slots >= 1 && dim >= 1,
                    "sizes: expected b >= 0 and clusters, slots, dim >= 1, got b = " + std::to_string(b) +
                        ", clusters = " + std::to_string(clusters) + ", slots = " + std::to_string(slots) +
                        ", dim = " + std::to_string(dim));
  for (int64_t i = 0; i < b; ++i)
    HILCORE_CHECK_MSG(cstar[i] >= 0 && cstar[i] < clusters,
                      "cstar: cluster ids must lie in [0, " + std::to_string(clusters) + "), got cstar[" +
                          std::to_string(i) + "] = " + std::to_string(cstar[i]));
  const float epsf = float(eps);
#pragma omp parallel
  {
    std::vector<float> tile(kRows * slots);
    std::vector<double> acc(kRows * dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t r0 = 0; r0 < b; r0 += kRows) {
      const float* xr[kRows];
      const int n = block_rows(x, b, dim, r0, xr);
      double cpos[kRows], cneg[kRows];
      for (int q = 0; q < kRows; ++q) {
        const int64_t i = r0 + std::min(q, n - 1);
        // loss = -log(pos) + log(pos + neg + margin)
        const double g = q < n ? double(grad_loss[i]) : 0.0;
        const double p = pos[i], total = double(pos[i]) + double(neg[i]) + margin;
        cpos[q] = g * (1.0 / total - 1.0 / p) / double(slots);
        cneg[q] = clusters > 1 ? g / total / double(clusters - 1) : 0.0;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t c = 0; c < clusters; ++c) {
        const float* cluster = mem + c * slots * dim;
        distance_tile(xr, cluster, slots, dim, epsf, tile.data());
        for (int q = 0; q < n; ++q) {
          const float* t = tile.data() + q * slots;
          const bool star = cstar[r0 + q] == c;
          int64_t s0 = 0, s1 = slots;
          if (!star) {  // only the nearest slot (the lowest on ties) of another cluster
            for (int64_t s = 1; s < slots; ++s)
              if (t[s] < t[s0]) s0 = s;
            s1 = s0 + 1;
          }
          const double coef = star ? cpos[q] : cneg[q];
          if (coef == 0.0) continue;
          double* a = acc.data() + q * dim;
          const float* xq = xr[q];
          for (int64_t s = s0; s < s1; ++s) {
            const double d = t[s];
            const double w = coef / (d * d * d);  // d(1/d)/dx = (M - x) / d^3
            const float* m = cluster + s * dim;
#pragma omp simd
            for (int64_t k = 0; k < dim; ++k) a[k] += w * double(m[k] - xq[k]);
          }
        }
      }
      for (int q = 0; q < n; ++q) {
        const double* a = acc.data() + q * dim;
        float* out = grad + (r0 + q) * dim;
        for (int64_t k = 0; k < dim; ++k) out[k] = float(a[k]);
      }
    }
  }
  return 0;
}

}  // namespace hilcore
