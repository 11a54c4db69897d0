// The register tile of the BRST scan (brst_cpu.cpp): kTileRows rows of B against one packed panel of
// kTilePanel prototypes, every similarity the sequential fused multiply-add over the columns in order,
// s_0 = 0, s_{q+1} = fma(x_q, p_q, s_q) (one rounding per column). That definition does not depend on
// the tiling, the thread count or the instruction set: the AVX2 + FMA tile (x86/brst_avx2.cpp) and the
// portable tile (std::fma) give the same bits.
#pragma once
#include <cstdint>

namespace hilcore {
namespace brst_tile {

constexpr int64_t kTileRows = 6;
constexpr int64_t kTilePanel = 16;

// rows: kTileRows row pointers (d floats each); panel: [d][kTilePanel] prototypes, column q of
// prototype j at panel[q * kTilePanel + j]; out: [kTileRows][kTilePanel].
using TileFn = void (*)(const float* const* rows, const float* panel, int64_t d, float* out);

void tile_portable(const float* const* rows, const float* panel, int64_t d, float* out);
#if defined(HILCORE_KNN_AVX2)
void tile_avx2(const float* const* rows, const float* panel, int64_t d, float* out);
#endif

}  // namespace brst_tile
}  // namespace hilcore
