// The register tiles of the BRST scan (brst_cpu.cpp): a few rows of B against packed panels of kTilePanel
// prototypes, every similarity the sequential fused multiply-add over the columns in order,
// s_0 = 0, s_{q+1} = fma(x_q, p_q, s_q) (one rounding per column). That definition does not depend on
// the tiling, the thread count or the instruction set: the AVX-512 tile (x86/brst_avx512.cpp), the
// AVX2 + FMA tile (x86/brst_avx2.cpp) and the portable tile (std::fma) give the same bits.
#pragma once
#include <cstdint>

namespace hilcore {
namespace brst_tile {

constexpr int64_t kTileRows = 6;     // rows of the AVX2 and portable tiles (one panel)
constexpr int64_t kTilePanel = 16;   // prototypes of a packed panel
constexpr int64_t kAvx512Rows = 12;  // rows of the AVX-512 tile (two consecutive panels)
constexpr int64_t kMaxTileRows = 12;
constexpr int64_t kMaxTilePanels = 2;

// rows: the tile's row pointers (d floats each); panel: the tile's consecutive packed panels, each
// [d][kTilePanel], column q of prototype j of a panel at panel[q * kTilePanel + j], the next panel
// d * kTilePanel floats further; out: [rows][panels * kTilePanel].
using TileFn = void (*)(const float* const* rows, const float* panel, int64_t d, float* out);

// kTileRows x one panel
void tile_portable(const float* const* rows, const float* panel, int64_t d, float* out);
#if defined(HILCORE_KNN_AVX2)
void tile_avx2(const float* const* rows, const float* panel, int64_t d, float* out);
// kAvx512Rows x two panels
void tile_avx512(const float* const* rows, const float* panel, int64_t d, float* out);
#endif

}  // namespace brst_tile
}  // namespace hilcore
