// Sparse k-reciprocal Jaccard distance on the GPU (semantics: docs/design.md).
//
// Pipeline (the Python layer allocates and scans between passes):
//   krecip_flags      thread per (i, c): reciprocity flags for R(i, k1), R(i, kh)
//   expand_*          thread per row: R(i, k1) + qualifying R(c, kh), with repeats
//   unique_*          warp per row: distinct sorted E(i) + softmax weights V[i]
//   query_expansion_* thread per row: V'[i] = mean of V over rank[i, :k2]
//   jaccard_*         warp per row: m(i, .) in a per-row open-addressing table,
//                     walking supp(i) in ascending t, one postings list per step
// Determinism: no float atomics. In jaccard_build each j occurs once per
// postings list, so a table slot gets one add per t, and __syncwarp between
// t's orders them: m(i, j) is summed in ascending t, the same sequence of
// float adds that builds m(j, i).
#include <cfloat>
#include <climits>

#include "cuda/common_cuda.cuh"
#include "cuda/launchers.h"

namespace hilcore {
namespace cuda {

using namespace detail;

const char* error_string(int status) { return cudaGetErrorString(static_cast<cudaError_t>(status)); }

namespace {

// ---- reciprocity flags --------------------------------------------------------
// Layout: rank [n, ld] int64; f1 [n, k1], fh [n, kh1] uint8.
__global__ void krecip_flags_kernel(const int64_t* __restrict__ rank, int64_t n, int64_t ld, int k1, int kh1,
                                    uint8_t* __restrict__ f1, uint8_t* __restrict__ fh) {
  const int64_t total = n * k1;
  for (int64_t e = thread_id(); e < total; e += thread_count()) {
    const int64_t i = e / k1;
    const int c = static_cast<int>(e - i * k1);
    const int64_t j = rank[i * ld + c];
    const int64_t* rj = rank + j * ld;
    int pos = k1;  // position of i in rank[j, :k1], k1 if absent
    for (int c2 = 0; c2 < k1; ++c2) {
      if (rj[c2] == i) {
        pos = c2;
        break;
      }
    }
    f1[e] = pos < k1 ? 1 : 0;
    if (c < kh1) fh[i * kh1 + c] = (pos < kh1) ? 1 : 0;
  }
}

// ---- expansion (raw, with repeats) --------------------------------------------
__device__ __forceinline__ bool in_r1(const int64_t* ri, const uint8_t* fi, int k1, int64_t y) {
  for (int c = 0; c < k1; ++c)
    if (ri[c] == y && fi[c]) return true;
  return false;
}

// FILL = false: raw_count[i] = raw size; FILL = true: write at raw_ptr[i].
template <bool FILL>
__global__ void expand_kernel(const int64_t* __restrict__ rank, int64_t n, int64_t ld, int k1, int kh1,
                              const uint8_t* __restrict__ f1, const uint8_t* __restrict__ fh,
                              int64_t* __restrict__ raw_count, const int64_t* __restrict__ raw_ptr,
                              int32_t* __restrict__ raw) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const int64_t* ri = rank + i * ld;
    const uint8_t* fi = f1 + i * k1;
    int64_t out = FILL ? raw_ptr[i] : 0;
    int64_t cnt = 0;
    for (int c = 0; c < k1; ++c) {
      if (!fi[c]) continue;
      if (FILL) raw[out + cnt] = static_cast<int32_t>(ri[c]);
      ++cnt;
    }
    for (int c = 0; c < k1; ++c) {
      if (!fi[c]) continue;
      const int64_t cc = ri[c];
      const int64_t* rc = rank + cc * ld;
      const uint8_t* fc = fh + cc * kh1;
      int size = 0, inter = 0;  // |R(cc, kh)|, |R(cc, kh) n R(i, k1)|
      for (int c2 = 0; c2 < kh1; ++c2) {
        if (!fc[c2]) continue;
        ++size;
        if (in_r1(ri, fi, k1, rc[c2])) ++inter;
      }
      // inter > 2/3 size, in integers (equivalent to the float test for any size)
      if (3 * inter > 2 * size) {
        for (int c2 = 0; c2 < kh1; ++c2) {
          if (!fc[c2]) continue;
          if (FILL) raw[out + cnt] = static_cast<int32_t>(rc[c2]);
          ++cnt;
        }
      }
    }
    if (!FILL) raw_count[i] = cnt;
  }
}

// ---- unique + weights -----------------------------------------------------------
__global__ void unique_count_kernel(const int64_t* __restrict__ raw_ptr, const int32_t* __restrict__ raw,
                                    int64_t n, uint8_t* __restrict__ first, int64_t* __restrict__ e_count) {
  const int lane = lane_id();
  for (int64_t i = warp_id(); i < n; i += warp_count()) {
    const int64_t rs = raw_ptr[i], re = raw_ptr[i + 1];
    int64_t cnt = 0;
    for (int64_t p = rs + lane; p < re; p += kWarp) {
      const int32_t v = raw[p];
      uint8_t f = 1;
      for (int64_t q = rs; q < p; ++q) {
        if (raw[q] == v) {
          f = 0;
          break;
        }
      }
      first[p] = f;
      cnt += f;
    }
    cnt = warp_sum_i64(cnt);
    if (lane == 0) e_count[i] = cnt;
  }
}

__global__ void unique_weights_kernel(const float* __restrict__ x, int64_t n, int64_t d,
                                      const int64_t* __restrict__ raw_ptr, const int32_t* __restrict__ raw,
                                      const uint8_t* __restrict__ first, const int64_t* __restrict__ e_ptr,
                                      int32_t* __restrict__ e_idx, float* __restrict__ e_val) {
  const int lane = lane_id();
  for (int64_t i = warp_id(); i < n; i += warp_count()) {
    const int64_t rs = raw_ptr[i], re = raw_ptr[i + 1];
    const int64_t es = e_ptr[i], ee = e_ptr[i + 1];
    // sorted position of each distinct value = number of distinct values below it
    for (int64_t p = rs + lane; p < re; p += kWarp) {
      if (!first[p]) continue;
      const int32_t v = raw[p];
      int64_t pos = 0;
      for (int64_t q = rs; q < re; ++q) pos += (first[q] && raw[q] < v) ? 1 : 0;
      e_idx[es + pos] = v;
    }
    __syncwarp();
    // s_j = -(2 - 2 x_i.x_j); every lane holds the same dot after warp_sum
    const float* xi = x + i * d;
    float smax = -FLT_MAX;
    for (int64_t e = es; e < ee; ++e) {
      const float* xj = x + static_cast<int64_t>(e_idx[e]) * d;
      float acc = 0.f;
      for (int64_t k = lane; k < d; k += kWarp) acc = fmaf(xi[k], xj[k], acc);
      acc = warp_sum(acc);
      const float s = -(2.f - 2.f * acc);
      if (lane == 0) e_val[e] = s;
      smax = fmaxf(smax, s);
    }
    __syncwarp();
    float sum = 0.f;
    for (int64_t e = es + lane; e < ee; e += kWarp) {
      const float w = expf(e_val[e] - smax);
      e_val[e] = w;
      sum += w;
    }
    sum = warp_sum(sum);
    for (int64_t e = es + lane; e < ee; e += kWarp) e_val[e] = e_val[e] / sum;
    __syncwarp();
  }
}

// ---- local query expansion -------------------------------------------------------
// First position in sorted a[lo, hi) with a[pos] > v (upper bound).
__device__ __forceinline__ int64_t upper_bound(const int32_t* a, int64_t lo, int64_t hi, int32_t v) {
  while (lo < hi) {
    const int64_t mid = lo + ((hi - lo) >> 1);
    if (a[mid] <= v) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Stateless k2-way merge: the next union element after `cur` is the minimum
// over the k2 lists of their first element > cur (binary search each).
template <bool FILL>
__global__ void query_expansion_kernel(const int64_t* __restrict__ e_ptr, const int32_t* __restrict__ e_idx,
                                       const float* __restrict__ e_val, const int64_t* __restrict__ rank,
                                       int64_t n, int64_t ld, int k2, int64_t* __restrict__ q_count,
                                       const int64_t* __restrict__ q_ptr, int32_t* __restrict__ q_idx,
                                       float* __restrict__ q_val) {
  const float den = static_cast<float>(k2);
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const int64_t* ri = rank + i * ld;
    const int64_t out = FILL ? q_ptr[i] : 0;
    int64_t cnt = 0;
    int32_t cur = -1;
    while (true) {
      int32_t nxt = INT_MAX;
      for (int a = 0; a < k2; ++a) {
        const int64_t nb = ri[a];
        const int64_t lo = e_ptr[nb], hi = e_ptr[nb + 1];
        const int64_t pos = upper_bound(e_idx, lo, hi, cur);
        if (pos < hi && e_idx[pos] < nxt) nxt = e_idx[pos];
      }
      if (nxt == INT_MAX) break;
      if (FILL) {
        float s = 0.f;  // sum in column order a = 0 .. k2-1, then / k2
        for (int a = 0; a < k2; ++a) {
          const int64_t nb = ri[a];
          const int64_t lo = e_ptr[nb], hi = e_ptr[nb + 1];
          const int64_t pos = upper_bound(e_idx, lo, hi, nxt) - 1;
          if (pos >= lo && e_idx[pos] == nxt) s += e_val[pos];
        }
        q_idx[out + cnt] = nxt;
        q_val[out + cnt] = s / den;
      }
      ++cnt;
      cur = nxt;
    }
    if (!FILL) q_count[i] = cnt;
  }
}

// ---- sparse Jaccard ----------------------------------------------------------------
__device__ __forceinline__ uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

__global__ void jaccard_slots_kernel(const int64_t* __restrict__ q_ptr, const int32_t* __restrict__ q_idx,
                                     const int64_t* __restrict__ p_ptr, int64_t n, int64_t* __restrict__ slots) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    int64_t b = 0;
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1]; ++a) {
      const int32_t t = q_idx[a];
      b += p_ptr[t + 1] - p_ptr[t];
    }
    if (b > n) b = n;  // distinct partners <= n
    int64_t cap = 32;
    while (cap < 2 * b) cap <<= 1;
    slots[i] = cap;
  }
}

// Warp per row. Table of row r: keys/vals [w_off[r], w_off[r+1]), a power of
// two, keys -1 = empty; linear probing; a key is claimed with atomicCAS.
__global__ void jaccard_build_kernel(const int64_t* __restrict__ q_ptr, const int32_t* __restrict__ q_idx,
                                     const float* __restrict__ q_val, const int64_t* __restrict__ p_ptr,
                                     const int32_t* __restrict__ p_row, const float* __restrict__ p_val,
                                     int64_t row0, int64_t rows, const int64_t* __restrict__ w_off,
                                     int32_t* keys, float* vals) {
  const int lane = lane_id();
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const int64_t i = row0 + r;
    int32_t* K = keys + w_off[r];
    float* V = vals + w_off[r];
    const uint32_t mask = static_cast<uint32_t>(w_off[r + 1] - w_off[r]) - 1u;
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1]; ++a) {  // ascending t
      const int32_t t = q_idx[a];
      const float vi = q_val[a];
      for (int64_t b = p_ptr[t] + lane; b < p_ptr[t + 1]; b += kWarp) {
        const int32_t j = p_row[b];
        const float c = fminf(vi, p_val[b]);
        uint32_t h = mix32(static_cast<uint32_t>(j)) & mask;
        while (true) {
          const int32_t k = __ldcg(K + h);  // L2: coherent with the CASes of other lanes
          if (k == j) break;
          if (k == -1) {
            const int32_t old = atomicCAS(K + h, -1, j);
            if (old == -1 || old == j) break;
          }
          h = (h + 1u) & mask;
        }
        V[h] += c;  // j is unique in this postings list: no other lane touches slot h now
      }
      __syncwarp();  // orders this t's adds before the next t's
    }
  }
}

__device__ __forceinline__ bool keep_pair(int64_t i, int32_t j, float m, float max_distance, float* d) {
  if (j == i) {
    *d = 0.f;
    return true;
  }
  if (!(m > 0.f)) return false;
  const float q = m / (2.f - m);
  const float v = fmaxf(1.f - q, 0.f);
  *d = v;
  return v <= max_distance;
}

__global__ void jaccard_count_kernel(int64_t row0, int64_t rows, const int64_t* __restrict__ w_off,
                                     const int32_t* __restrict__ keys, const float* __restrict__ vals,
                                     float max_distance, int64_t* __restrict__ kept) {
  const int lane = lane_id();
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const int64_t i = row0 + r;
    int64_t cnt = 0;
    for (int64_t s = w_off[r] + lane; s < w_off[r + 1]; s += kWarp) {
      const int32_t j = keys[s];
      float d;
      if (j >= 0 && keep_pair(i, j, vals[s], max_distance, &d)) ++cnt;
    }
    cnt = warp_sum_i64(cnt);
    if (lane == 0) kept[r] = cnt;
  }
}

__global__ void jaccard_fill_kernel(int64_t row0, int64_t rows, const int64_t* __restrict__ w_off,
                                    const int32_t* __restrict__ keys, const float* __restrict__ vals,
                                    float max_distance, const int64_t* __restrict__ k_off,
                                    int64_t* __restrict__ out_idx, float* __restrict__ out_val) {
  const int lane = lane_id();
  const unsigned below = (1u << lane) - 1u;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const int64_t i = row0 + r;
    int64_t base = k_off[r];
    // table sizes are multiples of 32: every lane runs the same iterations
    for (int64_t s0 = w_off[r]; s0 < w_off[r + 1]; s0 += kWarp) {
      const int64_t s = s0 + lane;
      const int32_t j = keys[s];
      float d = 0.f;
      const bool k = j >= 0 && keep_pair(i, j, vals[s], max_distance, &d);
      const unsigned bal = __ballot_sync(kFull, k);
      if (k) {
        const int64_t o = base + __popc(bal & below);
        out_idx[o] = j;
        out_val[o] = d;
      }
      base += __popc(bal);
    }
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------------
int krecip_flags(const int64_t* rank, int64_t n, int64_t ld_rank, int k1, int kh1, uint8_t* f1, uint8_t* fh,
                 void* stream) {
  if (n <= 0) return 0;
  krecip_flags_kernel<<<grid_for(n * k1, kBlock), kBlock, 0, as_stream(stream)>>>(rank, n, ld_rank, k1, kh1, f1,
                                                                                   fh);
  return launch_status();
}

int expand_count(const int64_t* rank, int64_t n, int64_t ld_rank, int k1, int kh1, const uint8_t* f1,
                 const uint8_t* fh, int64_t* raw_count, void* stream) {
  if (n <= 0) return 0;
  expand_kernel<false><<<grid_for(n, kBlock), kBlock, 0, as_stream(stream)>>>(rank, n, ld_rank, k1, kh1, f1, fh,
                                                                              raw_count, nullptr, nullptr);
  return launch_status();
}

int expand_fill(const int64_t* rank, int64_t n, int64_t ld_rank, int k1, int kh1, const uint8_t* f1,
                const uint8_t* fh, const int64_t* raw_ptr, int32_t* raw, void* stream) {
  if (n <= 0) return 0;
  expand_kernel<true><<<grid_for(n, kBlock), kBlock, 0, as_stream(stream)>>>(rank, n, ld_rank, k1, kh1, f1, fh,
                                                                             nullptr, raw_ptr, raw);
  return launch_status();
}

int unique_count(const int64_t* raw_ptr, const int32_t* raw, int64_t n, uint8_t* first, int64_t* e_count,
                 void* stream) {
  if (n <= 0) return 0;
  unique_count_kernel<<<grid_for(n, kWarpsPerBlock), kBlock, 0, as_stream(stream)>>>(raw_ptr, raw, n, first,
                                                                                     e_count);
  return launch_status();
}

int unique_weights(const float* x, int64_t n, int64_t d, const int64_t* raw_ptr, const int32_t* raw,
                   const uint8_t* first, const int64_t* e_ptr, int32_t* e_idx, float* e_val, void* stream) {
  if (n <= 0) return 0;
  unique_weights_kernel<<<grid_for(n, kWarpsPerBlock), kBlock, 0, as_stream(stream)>>>(x, n, d, raw_ptr, raw,
                                                                                       first, e_ptr, e_idx, e_val);
  return launch_status();
}

int query_expansion_count(const int64_t* e_ptr, const int32_t* e_idx, const int64_t* rank, int64_t n,
                          int64_t ld_rank, int k2, int64_t* q_count, void* stream) {
  if (n <= 0) return 0;
  query_expansion_kernel<false><<<grid_for(n, kBlock), kBlock, 0, as_stream(stream)>>>(
      e_ptr, e_idx, nullptr, rank, n, ld_rank, k2, q_count, nullptr, nullptr, nullptr);
  return launch_status();
}

int query_expansion_fill(const int64_t* e_ptr, const int32_t* e_idx, const float* e_val, const int64_t* rank,
                         int64_t n, int64_t ld_rank, int k2, const int64_t* q_ptr, int32_t* q_idx, float* q_val,
                         void* stream) {
  if (n <= 0) return 0;
  query_expansion_kernel<true><<<grid_for(n, kBlock), kBlock, 0, as_stream(stream)>>>(
      e_ptr, e_idx, e_val, rank, n, ld_rank, k2, nullptr, q_ptr, q_idx, q_val);
  return launch_status();
}

int jaccard_slots(const int64_t* q_ptr, const int32_t* q_idx, const int64_t* p_ptr, int64_t n, int64_t* slots,
                  void* stream) {
  if (n <= 0) return 0;
  jaccard_slots_kernel<<<grid_for(n, kBlock), kBlock, 0, as_stream(stream)>>>(q_ptr, q_idx, p_ptr, n, slots);
  return launch_status();
}

int jaccard_build(const int64_t* q_ptr, const int32_t* q_idx, const float* q_val, const int64_t* p_ptr,
                  const int32_t* p_row, const float* p_val, int64_t row0, int64_t rows, const int64_t* w_off,
                  int32_t* keys, float* vals, void* stream) {
  if (rows <= 0) return 0;
  jaccard_build_kernel<<<grid_for(rows, kWarpsPerBlock), kBlock, 0, as_stream(stream)>>>(
      q_ptr, q_idx, q_val, p_ptr, p_row, p_val, row0, rows, w_off, keys, vals);
  return launch_status();
}

int jaccard_count(int64_t row0, int64_t rows, const int64_t* w_off, const int32_t* keys, const float* vals,
                  float max_distance, int64_t* kept, void* stream) {
  if (rows <= 0) return 0;
  jaccard_count_kernel<<<grid_for(rows, kWarpsPerBlock), kBlock, 0, as_stream(stream)>>>(row0, rows, w_off, keys,
                                                                                         vals, max_distance, kept);
  return launch_status();
}

int jaccard_fill(int64_t row0, int64_t rows, const int64_t* w_off, const int32_t* keys, const float* vals,
                 float max_distance, const int64_t* k_off, int64_t* out_idx, float* out_val, void* stream) {
  if (rows <= 0) return 0;
  jaccard_fill_kernel<<<grid_for(rows, kWarpsPerBlock), kBlock, 0, as_stream(stream)>>>(
      row0, rows, w_off, keys, vals, max_distance, k_off, out_idx, out_val);
  return launch_status();
}

}  // namespace cuda
}  // namespace hilcore
