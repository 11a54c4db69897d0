// Helpers shared by the .cu files: launch geometry, warp reductions, stream cast.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace hilcore {
namespace cuda {
namespace detail {

constexpr int kWarp = 32;
constexpr int kBlock = 256;               // threads per block everywhere
constexpr int kWarpsPerBlock = kBlock / kWarp;
constexpr unsigned kFull = 0xffffffffu;

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Blocks for `work` items of `per_block` each, capped (kernels use grid-stride loops).
inline unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t g = (work + per_block - 1) / per_block;
  const int64_t cap = 65535LL * 16;
  if (g > cap) g = cap;
  if (g < 1) g = 1;
  return static_cast<unsigned>(g);
}

__device__ __forceinline__ int64_t thread_id() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t thread_count() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
__device__ __forceinline__ int64_t warp_id() { return thread_id() / kWarp; }
__device__ __forceinline__ int64_t warp_count() { return thread_count() / kWarp; }
__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x) & (kWarp - 1); }

// Butterfly sums: every lane ends with the same bits (each step adds the same
// two operands in either order, and float addition is commutative).
__device__ __forceinline__ float warp_sum(float v) {
  for (int m = kWarp / 2; m > 0; m >>= 1) v += __shfl_xor_sync(kFull, v, m);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int m = kWarp / 2; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, m));
  return v;
}
__device__ __forceinline__ int64_t warp_sum_i64(int64_t v) {
  for (int m = kWarp / 2; m > 0; m >>= 1) v += __shfl_xor_sync(kFull, v, m);
  return v;
}

// Return value of a launcher: the launch error, if any.
inline int launch_status() { return static_cast<int>(cudaGetLastError()); }

}  // namespace detail
}  // namespace cuda
}  // namespace hilcore
