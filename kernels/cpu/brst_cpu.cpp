// BRST scan as a blocked GEMM with the arg-max fused in: the prototypes are packed once into panels of
// kTilePanel ([d][16], zero padded), each thread takes chunks of kChunkRows rows of B (read in place, or
// through a list of row ids: no gathered copy) and, panel group by panel group (the group stays in cache
// for the whole chunk), computes register tiles of similarities (brst_tile.h: 12 rows x 32 prototypes
// with AVX-512, 6 x 16 with AVX2 + FMA or portable code; sequential FMA over the columns, the same bits on
// every path) and folds each tile at once into the rows' running maximum (strictly larger replaces:
// panels and columns are visited in ascending order, so ties go to the lower column) and the thread's
// column maxima, merged at the end (max is order-independent: the result does not depend on the thread
// count). The [M, C] similarity matrix is never stored.
#include "cpu/brst_cpu.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "cpu/brst_tile.h"
#include "cpu/cpu_features.h"

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
constexpr int64_t kChunkRows = 96;  // a multiple of every tile's rows

// A register tile and its shape: rows of B by panels of kTilePanel prototypes.
struct Tile {
  brst_tile::TileFn fn;
  int64_t rows, panels;
  const char* name;
};
constexpr Tile kPortable{brst_tile::tile_portable, brst_tile::kTileRows, 1, "portable"};
#if defined(HILCORE_KNN_AVX2)
constexpr Tile kAvx2{brst_tile::tile_avx2, brst_tile::kTileRows, 1, "avx2"};
constexpr Tile kAvx512{brst_tile::tile_avx512, brst_tile::kAvx512Rows, 2, "avx512"};
#endif

bool avx2_usable() { return avx2_fma_usable(); }

bool avx512_usable() { return avx512f_usable(); }

int best_path() { return avx512_usable() ? 2 : avx2_usable() ? 1 : 0; }

std::atomic<int> g_path{-1};  // -1: not chosen yet, 0: portable, 1: avx2, 2: avx512

Tile tile_in_use() {
  int p = g_path.load(std::memory_order_relaxed);
  if (p < 0) {
    p = best_path();
    g_path.store(p, std::memory_order_relaxed);
  }
#if defined(HILCORE_KNN_AVX2)
  if (p == 2) return kAvx512;
  if (p == 1) return kAvx2;
#endif
  return kPortable;
}

// The prototypes packed into panels, in groups of `panels` consecutive panels (zero padded, 64-byte aligned).
struct Packed {
  std::vector<float> buf;
  const float* data;
  int64_t groups;
  Packed(const float* protos, int64_t c, int64_t d, int64_t panels) {
    const int64_t n_panels = (c + kTilePanel - 1) / kTilePanel;
    groups = (n_panels + panels - 1) / panels;
    buf.assign(groups * panels * d * kTilePanel + 16, 0.f);
    float* base = buf.data();
    base += (16 - (reinterpret_cast<uintptr_t>(base) / sizeof(float)) % 16) % 16;
    data = base;
    for (int64_t j = 0; j < c; ++j) {
      float* pj = base + (j / kTilePanel) * d * kTilePanel + j % kTilePanel;
      const float* src = protos + j * d;
      for (int64_t q = 0; q < d; ++q) pj[q * kTilePanel] = src[q];
    }
  }
};

// Rows r0 .. r1 of B (xb rows idx[r], or r without idx) against every prototype group: the rows' arg-max
// into best / best_sim, the column maxima into cmax.
void scan_chunk(const Tile& tk, const float* xb, const int64_t* idx, int64_t r0, int64_t r1, const Packed& pk,
                int64_t c, int64_t d, int64_t* best, float* best_sim, float* cmax) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t tw = tk.panels * kTilePanel;
  float out[brst_tile::kMaxTileRows * brst_tile::kMaxTilePanels * kTilePanel];
  float bs[kChunkRows];
  int64_t bi[kChunkRows];
  const float* rows[brst_tile::kMaxTileRows];
  for (int64_t r = 0; r < kChunkRows; ++r) { bs[r] = ninf; bi[r] = 0; }
  for (int64_t g = 0; g < pk.groups; ++g) {
    const float* panel = pk.data + g * tk.panels * d * kTilePanel;
    const int64_t j0 = g * tw, nj = std::min(tw, c - j0);
    for (int64_t t0 = r0; t0 < r1; t0 += tk.rows) {
      const int64_t nr = std::min(tk.rows, r1 - t0);
      for (int64_t r = 0; r < tk.rows; ++r) {
        const int64_t t = t0 + std::min(r, nr - 1);  // pad: repeat the last row
        rows[r] = xb + (idx ? idx[t] : t) * d;
      }
      tk.fn(rows, panel, d, out);
      for (int64_t r = 0; r < nr; ++r) {
        const float* s = out + r * tw;
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
}  // namespace

const char* brst_cpu_path() { return tile_in_use().name; }

int brst_set_cpu_path(const char* name) {
  if (std::strcmp(name, "portable") == 0) { g_path.store(0); return 0; }
  if (std::strcmp(name, "avx2") == 0) {
    if (!avx2_usable()) return 2;
    g_path.store(1);
    return 0;
  }
  if (std::strcmp(name, "avx512") == 0) {
    if (!avx512_usable()) return 2;
    g_path.store(2);
    return 0;
  }
  if (std::strcmp(name, "auto") == 0) { g_path.store(best_path()); return 0; }
  return 1;
}

bool brst_cpu_path_available(const char* name) {
  if (std::strcmp(name, "portable") == 0) return true;
  if (std::strcmp(name, "avx2") == 0) return avx2_usable();
  if (std::strcmp(name, "avx512") == 0) return avx512_usable();
  return false;
}

int brst_cpu(const float* xb, int64_t m, const float* protos, int64_t c, int64_t d,
             int64_t* best, float* best_sim, float* col_max, const int64_t* idx) {
  HILCORE_CHECK_MSG(m >= 0 && c > 0 && d > 0, values({{"m", m}, {"c", c}, {"d", d}}));
  const float ninf = -std::numeric_limits<float>::infinity();
  std::fill(col_max, col_max + c, ninf);
  const Tile tk = tile_in_use();
  const Packed pk(protos, c, d, tk.panels);
  const int64_t n_chunks = (m + kChunkRows - 1) / kChunkRows;
#pragma omp parallel
  {
    std::vector<float> cmax(pk.groups * tk.panels * kTilePanel, ninf);
#pragma omp for schedule(dynamic, 1)
    for (int64_t ch = 0; ch < n_chunks; ++ch)
      scan_chunk(tk, xb, idx, ch * kChunkRows, std::min(m, (ch + 1) * kChunkRows), pk, c, d, best, best_sim,
                 cmax.data());
#pragma omp critical
    for (int64_t j = 0; j < c; ++j) col_max[j] = std::max(col_max[j], cmax[j]);
  }
  return 0;
}

}  // namespace hilcore
