// BRST scan as a blocked GEMM with the arg-max fused in: the prototypes are packed once into panels of
// kTilePanel ([d][16], zero padded), each thread takes chunks of kChunkRows rows of B and, panel by
// panel (the panel stays in cache for the whole chunk), computes kTileRows x kTilePanel register tiles
// of similarities (brst_tile.h: sequential FMA over the columns, the same bits on every path) and folds
// each tile at once into the rows' running maximum (strictly larger replaces: panels and columns are
// visited in ascending order, so ties go to the lower column) and the thread's column maxima, merged at
// the end (max is order-independent: the result does not depend on the thread count). The [M, C]
// similarity matrix is never stored.
#include "cpu/brst_cpu.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "cpu/brst_tile.h"

namespace hilcore {
namespace brst_tile {

void tile_portable(const float* const* rows, const float* panel, int64_t d, float* out) {
  float acc[kTileRows][kTilePanel] = {};
  for (int64_t q = 0; q < d; ++q)
    for (int64_t r = 0; r < kTileRows; ++r) {
      const float a = rows[r][q];
      for (int64_t j = 0; j < kTilePanel; ++j) acc[r][j] = std::fma(a, panel[q * kTilePanel + j], acc[r][j]);
    }
  std::memcpy(out, acc, sizeof(acc));
}

}  // namespace brst_tile

namespace {
using brst_tile::kTilePanel;
using brst_tile::kTileRows;
constexpr int64_t kChunkRows = 8 * kTileRows;

bool avx2_usable() {
#if defined(HILCORE_KNN_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

std::atomic<int> g_path{-1};  // -1: not chosen yet, 0: portable, 1: avx2

brst_tile::TileFn tile_fn() {
  int p = g_path.load(std::memory_order_relaxed);
  if (p < 0) {
    p = avx2_usable() ? 1 : 0;
    g_path.store(p, std::memory_order_relaxed);
  }
#if defined(HILCORE_KNN_AVX2)
  if (p == 1) return brst_tile::tile_avx2;
#endif
  return brst_tile::tile_portable;
}
}  // namespace

const char* brst_cpu_path() { return tile_fn() == brst_tile::tile_portable ? "portable" : "avx2"; }

int brst_set_cpu_path(const char* name) {
  if (std::strcmp(name, "portable") == 0) { g_path.store(0); return 0; }
  if (std::strcmp(name, "avx2") == 0) {
    if (!avx2_usable()) return 2;
    g_path.store(1);
    return 0;
  }
  if (std::strcmp(name, "auto") == 0) { g_path.store(avx2_usable() ? 1 : 0); return 0; }
  return 1;
}

int brst_cpu(const float* xb, int64_t m, const float* protos, int64_t c, int64_t d,
             int64_t* best, float* best_sim, float* col_max) {
  HILCORE_CHECK_MSG(m >= 0 && c > 0 && d > 0, values({{"m", m}, {"c", c}, {"d", d}}));
  const float ninf = -std::numeric_limits<float>::infinity();
  std::fill(col_max, col_max + c, ninf);
  const brst_tile::TileFn tile = tile_fn();
  const int64_t n_panels = (c + kTilePanel - 1) / kTilePanel;
  std::vector<float> packed(n_panels * d * kTilePanel, 0.f);
  for (int64_t j = 0; j < c; ++j) {
    float* pj = packed.data() + (j / kTilePanel) * d * kTilePanel + j % kTilePanel;
    const float* src = protos + j * d;
    for (int64_t q = 0; q < d; ++q) pj[q * kTilePanel] = src[q];
  }
  const int64_t n_chunks = (m + kChunkRows - 1) / kChunkRows;
#pragma omp parallel
  {
    std::vector<float> cmax(c, ninf);
    float out[kTileRows * kTilePanel];
#pragma omp for schedule(dynamic, 1)
    for (int64_t ch = 0; ch < n_chunks; ++ch) {
      const int64_t r0 = ch * kChunkRows, r1 = std::min(m, r0 + kChunkRows);
      float bs[kChunkRows];
      int64_t bi[kChunkRows];
      for (int64_t r = 0; r < kChunkRows; ++r) { bs[r] = ninf; bi[r] = 0; }
      for (int64_t pnl = 0; pnl < n_panels; ++pnl) {
        const float* panel = packed.data() + pnl * d * kTilePanel;
        const int64_t j0 = pnl * kTilePanel, nj = std::min(kTilePanel, c - j0);
        for (int64_t t0 = r0; t0 < r1; t0 += kTileRows) {
          const int64_t nr = std::min(kTileRows, r1 - t0);
          const float* rows[kTileRows];
          for (int64_t r = 0; r < kTileRows; ++r) rows[r] = xb + (t0 + std::min(r, nr - 1)) * d;  // pad: repeat
          tile(rows, panel, d, out);
          for (int64_t r = 0; r < nr; ++r) {
            const float* s = out + r * kTilePanel;
            float& b = bs[t0 - r0 + r];
            int64_t& bj = bi[t0 - r0 + r];
            for (int64_t j = 0; j < nj; ++j) {
              if (s[j] > b) { b = s[j]; bj = j0 + j; }  // strict: the lower column keeps a tie
              if (s[j] > cmax[j0 + j]) cmax[j0 + j] = s[j];
            }
          }
        }
      }
      for (int64_t r = r0; r < r1; ++r) { best[r] = bi[r - r0]; best_sim[r] = bs[r - r0]; }
    }
#pragma omp critical
    for (int64_t j = 0; j < c; ++j) col_max[j] = std::max(col_max[j], cmax[j]);
  }
  return 0;
}

}  // namespace hilcore
