// Sparse k-reciprocal Jaccard distance on the GPU (semantics: docs/design.md).
//
// Pipeline (the Python layer allocates and scans between passes):
//   krecip_flags      thread per (i, c): reciprocity flags for R(i, k1), R(i, kh)
//   expand_*          thread per row: R(i, k1) + qualifying R(c, kh), with repeats
//   unique_*          warp per row: distinct sorted E(i) + softmax weights V[i]
//   query_expansion_* thread per row: V'[i] = mean of V over rank[i, :k2]
//   jaccard_slots     thread per row: table size from the partner bound
//   jaccard_partners  warp per row: exact distinct partners (keys-only table);
//                     the count pass of the rows (launcher jaccard_rows_count)
//   jaccard_rows      warp per row: m(i, .) in a table sized by the partners,
//                     walking supp(i) in ascending t, one postings list per
//                     step, then the kept pairs written (build/count/fill fused);
//                     the fill pass (launcher jaccard_rows_fill)
// Determinism: no float atomics. In jaccard_rows each j occurs once per
// postings list, so a table slot gets one add per t, and __syncwarp between
// t's orders them: m(i, j) is summed in ascending t, the same sequence of
// float adds that builds m(j, i) (jaccard_table.h). Where a key lands in the
// table depends on the thread schedule; the kept pairs are written in slot
// order and the caller sorts each row by column, so the output does not.
#include <cfloat>
#include <climits>

#include "common/check.h"
#include "cuda/common_cuda.cuh"
#include "cuda/jaccard_table.h"
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
// Per-row tables: jaccard_table.h (sizing, probing, accumulation, the kept
// test), shared with a host unit test. Three kernels, one warp per row:
//   jaccard_slots     thread per row: capacity_for(partner bound)
//   jaccard_partners  keys-only table sized by the bound: exact distinct
//                     partners of the row and the capacity of its real table
//   jaccard_rows      build m(i, .) in a table sized by those partners, count
//                     and write the kept pairs: build, count and fill fused
// Both kernels give each warp a region of region_slots slots for its tables:
// <SHARED = true> in dynamic shared memory (kWarpsPerBlock regions per block;
// the caller groups rows by table size and passes that size, so small rows
// take little shared memory and many blocks fit an SM), <false> in global
// memory (scratch[warp * region_slots ...], exactly `regions` warps).
using jtable::kEmpty;

// Keys in shared memory: volatile loads, shared-memory atomicCAS.
struct SharedKeys {
  int32_t* k;
  __device__ __forceinline__ int32_t load(uint32_t h) const { return *(reinterpret_cast<volatile int32_t*>(k) + h); }
  __device__ __forceinline__ int32_t cas(uint32_t h, int32_t e, int32_t d) const { return atomicCAS(k + h, e, d); }
};
// Keys in global memory: loads from L2 (__ldcg), where the atomicCAS of the other lanes land.
struct GlobalKeys {
  int32_t* k;
  __device__ __forceinline__ int32_t load(uint32_t h) const { return __ldcg(k + h); }
  __device__ __forceinline__ int32_t cas(uint32_t h, int32_t e, int32_t d) const { return atomicCAS(k + h, e, d); }
};
// Values: plain adds. One add per slot per postings list, __syncwarp between lists.
struct Vals {
  float* v;
  __device__ __forceinline__ void add(int64_t h, float c) const { v[h] += c; }
};

template <bool SHARED>
struct KeysOf;
template <>
struct KeysOf<true> {
  using type = SharedKeys;
};
template <>
struct KeysOf<false> {
  using type = GlobalKeys;
};

template <bool SHARED>
__device__ __forceinline__ void clear_keys(int32_t* k, int64_t cap, int lane) {
  for (int64_t s = lane; s < cap; s += kWarp) {
    if (SHARED) k[s] = kEmpty; else __stcg(k + s, kEmpty);
  }
}

__global__ void jaccard_slots_kernel(const int64_t* __restrict__ q_ptr, const int32_t* __restrict__ q_idx,
                                     const int64_t* __restrict__ p_ptr, int64_t n, int64_t* __restrict__ slots) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    int64_t b = 0;
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1]; ++a) {
      const int32_t t = q_idx[a];
      b += p_ptr[t + 1] - p_ptr[t];
    }
    slots[i] = jtable::capacity_for(jtable::partner_bound(b, n));
  }
}

template <bool SHARED>
__global__ void jaccard_partners_kernel(
    const int64_t* __restrict__ q_ptr, const int32_t* __restrict__ q_idx, const int64_t* __restrict__ p_ptr,
    const int32_t* __restrict__ p_row, const int64_t* __restrict__ ids, int64_t m,
    const int64_t* __restrict__ bound_slots, int64_t region_slots, int32_t* scratch, int64_t* __restrict__ partners,
    int64_t* __restrict__ slots, int* __restrict__ err) {
  extern __shared__ int4 dyn_smem[];  // SHARED: kWarpsPerBlock regions of region_slots int32 keys
  const int lane = lane_id();
  const int64_t region = region_slots;
  int32_t* K = SHARED ? reinterpret_cast<int32_t*>(dyn_smem) + (threadIdx.x / kWarp) * region_slots
                      : scratch + warp_id() * region_slots;
  typename KeysOf<SHARED>::type keys{K};
  for (int64_t r = warp_id(); r < m; r += warp_count()) {
    const int64_t i = ids[r];
    const int64_t cap = bound_slots[i];
    if (!jtable::fits(cap, region)) {  // the caller's split is wrong: report, never overrun
      if (lane == 0) atomicOr(err, kErrCountRegion);
      continue;
    }
    clear_keys<SHARED>(K, cap, lane);
    __syncwarp();
    int64_t cnt = 0;
    bool bad = false;
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1] && !bad; ++a) {
      const int32_t t = q_idx[a];
      const int64_t c = jtable::insert_list(keys, cap, p_row, p_ptr[t] + lane, p_ptr[t + 1], kWarp);
      if (c == jtable::kOverflow) bad = true; else cnt += c;
    }
    cnt = warp_sum_i64(cnt);
    bad = __any_sync(kFull, bad);
    if (lane == 0) {
      partners[i] = cnt;
      slots[i] = jtable::capacity_for(cnt);
      if (bad) atomicOr(err, kErrCountFull);
    }
    __syncwarp();  // every lane is done with this table before it is cleared for the next row
  }
}

template <bool SHARED>
__global__ void jaccard_rows_kernel(
    const int64_t* __restrict__ q_ptr, const int32_t* __restrict__ q_idx, const float* __restrict__ q_val,
    const int64_t* __restrict__ p_ptr, const int32_t* __restrict__ p_row, const float* __restrict__ p_val,
    const int64_t* __restrict__ ids, int64_t m, const int64_t* __restrict__ slots, int64_t region_slots,
    int32_t* scratch_keys, float* scratch_vals, float max_distance, int64_t row0,
    const int64_t* __restrict__ st_off, int64_t* __restrict__ kept, int32_t* __restrict__ st_idx,
    float* __restrict__ st_val, int* __restrict__ err) {
  extern __shared__ int4 dyn_smem[];  // SHARED: kWarpsPerBlock key regions, then as many value regions
  const int lane = lane_id();
  const unsigned below = (1u << lane) - 1u;
  const int64_t region = region_slots;
  const int64_t w = (SHARED ? static_cast<int64_t>(threadIdx.x / kWarp) : warp_id()) * region_slots;
  int32_t* K = (SHARED ? reinterpret_cast<int32_t*>(dyn_smem) : scratch_keys) + w;
  float* V = (SHARED ? reinterpret_cast<float*>(dyn_smem) + kWarpsPerBlock * region_slots : scratch_vals) + w;
  typename KeysOf<SHARED>::type keys{K};
  Vals vals{V};
  for (int64_t r = warp_id(); r < m; r += warp_count()) {
    const int64_t i = ids[r];
    const int64_t cap = slots[i];
    if (!jtable::fits(cap, region)) {
      if (lane == 0) atomicOr(err, kErrFillRegion);
      continue;
    }
    for (int64_t s = lane; s < cap; s += kWarp) {
      if (SHARED) K[s] = kEmpty; else __stcg(K + s, kEmpty);
      V[s] = 0.f;
    }
    __syncwarp();
    // build: ascending t, one postings list per step
    bool bad = false;
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1]; ++a) {
      const int32_t t = q_idx[a];
      if (!bad)
        bad = !jtable::accumulate_list(keys, vals, cap, q_val[a], p_row, p_val, p_ptr[t] + lane, p_ptr[t + 1], kWarp);
      __syncwarp();  // orders this t's adds before the next t's
    }
    // count and fill: the kept pairs of the row, compacted in slot order at st_off[i - row0]
    const int64_t lo = st_off[i - row0], hi = st_off[i - row0 + 1];
    int64_t base = lo;
    for (int64_t s0 = 0; s0 < cap; s0 += kWarp) {  // cap is a multiple of 32: every lane runs the same iterations
      const int64_t s = s0 + lane;
      const int32_t j = keys.load(static_cast<uint32_t>(s));
      float d = 0.f;
      const bool k = j != kEmpty && jtable::keep_pair(i, j, V[s], max_distance, &d);
      const unsigned bal = __ballot_sync(kFull, k);
      if (k) {
        const int64_t o = base + __popc(bal & below);
        if (o < hi) {
          st_idx[o] = j;
          st_val[o] = d;
        } else {
          bad = true;
        }
      }
      base += __popc(bal);
    }
    bad = __any_sync(kFull, bad);
    if (lane == 0) {
      kept[i] = base - lo;
      if (bad) atomicOr(err, kErrFillStaging);
    }
    __syncwarp();
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------------
int krecip_flags(const Ranking& r, uint8_t* f1, uint8_t* fh, void* stream) {
  if (r.n <= 0) return 0;
  krecip_flags_kernel<<<grid_for(r.n * r.k1, kBlock), kBlock, 0, as_stream(stream)>>>(r.rank, r.n, r.ld_rank, r.k1,
                                                                                       r.kh1, f1, fh);
  return launch_status();
}

int expand_count(const Ranking& r, const uint8_t* f1, const uint8_t* fh, int64_t* raw_count, void* stream) {
  if (r.n <= 0) return 0;
  expand_kernel<false><<<grid_for(r.n, kBlock), kBlock, 0, as_stream(stream)>>>(
      r.rank, r.n, r.ld_rank, r.k1, r.kh1, f1, fh, raw_count, nullptr, nullptr);
  return launch_status();
}

int expand_fill(const Ranking& r, const uint8_t* f1, const uint8_t* fh, const DeviceRows& raw, void* stream) {
  if (r.n <= 0) return 0;
  expand_kernel<true><<<grid_for(r.n, kBlock), kBlock, 0, as_stream(stream)>>>(
      r.rank, r.n, r.ld_rank, r.k1, r.kh1, f1, fh, nullptr, raw.ptr, raw.idx);
  return launch_status();
}

int unique_count(const DeviceRows& raw, int64_t n, uint8_t* first, int64_t* e_count, void* stream) {
  if (n <= 0) return 0;
  unique_count_kernel<<<grid_for(n, kWarpsPerBlock), kBlock, 0, as_stream(stream)>>>(raw.ptr, raw.idx, n, first,
                                                                                     e_count);
  return launch_status();
}

int unique_weights(const float* x, int64_t n, int64_t d, const DeviceRows& raw, const uint8_t* first,
                   const DeviceRows& e, void* stream) {
  if (n <= 0) return 0;
  unique_weights_kernel<<<grid_for(n, kWarpsPerBlock), kBlock, 0, as_stream(stream)>>>(
      x, n, d, raw.ptr, raw.idx, first, e.ptr, e.idx, e.val);
  return launch_status();
}

int query_expansion_count(const DeviceRows& e, const Ranking& r, int k2, int64_t* q_count, void* stream) {
  HILCORE_CHECK_MSG(k2 >= 1 && k2 <= r.ld_rank, values({{"k2", k2}, {"ld_rank", r.ld_rank}}));
  if (r.n <= 0) return 0;
  query_expansion_kernel<false><<<grid_for(r.n, kBlock), kBlock, 0, as_stream(stream)>>>(
      e.ptr, e.idx, nullptr, r.rank, r.n, r.ld_rank, k2, q_count, nullptr, nullptr, nullptr);
  return launch_status();
}

int query_expansion_fill(const DeviceRows& e, const Ranking& r, int k2, const DeviceRows& q, void* stream) {
  HILCORE_CHECK_MSG(k2 >= 1 && k2 <= r.ld_rank, values({{"k2", k2}, {"ld_rank", r.ld_rank}}));
  if (r.n <= 0) return 0;
  query_expansion_kernel<true><<<grid_for(r.n, kBlock), kBlock, 0, as_stream(stream)>>>(
      e.ptr, e.idx, e.val, r.rank, r.n, r.ld_rank, k2, nullptr, q.ptr, q.idx, q.val);
  return launch_status();
}

int jaccard_slots(const DeviceRows& q, const DeviceRows& p, int64_t n, int64_t* slots, void* stream) {
  if (n <= 0) return 0;
  jaccard_slots_kernel<<<grid_for(n, kBlock), kBlock, 0, as_stream(stream)>>>(q.ptr, q.idx, p.ptr, n, slots);
  return launch_status();
}

// Global-memory instances run exactly `regions` warps (one scratch region each).
static unsigned region_grid(int64_t regions) {
  return static_cast<unsigned>((regions + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// What a launch of the last stage needs, in words: a region that is a power of two >= 32 (and, in
// shared memory, at most the pass's limit), a global launch of a positive multiple of 8 warps with
// its scratch. `func` is the launcher the error names.
static void check_launch(const char* func, const TableLaunch& t, int64_t max_shared_slots, bool needs_vals) {
  HILCORE_CHECK_MSG_IN(func, t.region_slots >= jtable::kMinSlots && (t.region_slots & (t.region_slots - 1)) == 0,
                       "region_slots: expected a power of two >= 32, " + values({{"region_slots", t.region_slots}}));
  if (t.shared) {
    HILCORE_CHECK_MSG_IN(func, t.region_slots <= max_shared_slots,
                         "a shared-memory region holds at most the pass's slots, " +
                             values({{"region_slots", t.region_slots}, {"max", max_shared_slots}}));
  } else {
    HILCORE_CHECK_MSG_IN(func, t.regions > 0 && t.regions % kWarpsPerBlock == 0,
                         "regions: expected a positive multiple of 8 warps, " + values({{"regions", t.regions}}));
    HILCORE_CHECK_MSG_IN(func, t.scratch_keys != nullptr && (!needs_vals || t.scratch_vals != nullptr),
                         "a global-memory launch needs its scratch buffers");
  }
}

// Dynamic shared memory of a block of the shared instance, opting in past the default 48 KiB.
template <class Kernel>
static int shared_launch_bytes(Kernel kernel, int64_t region_slots, int64_t slot_bytes, size_t* bytes) {
  *bytes = static_cast<size_t>(kWarpsPerBlock * region_slots * slot_bytes);
  if (*bytes > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(*bytes));
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  return 0;
}

int jaccard_smem_slots(int64_t* partners_slots, int64_t* rows_slots) {
  int dev = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return static_cast<int>(e);
  auto fit = [optin](int64_t cap, int64_t slot_bytes) {
    int64_t s = cap;
    while (s > jtable::kMinSlots && kWarpsPerBlock * s * slot_bytes > optin) s >>= 1;
    return kWarpsPerBlock * s * slot_bytes <= optin ? s : int64_t{0};
  };
  *partners_slots = fit(kJaccardPartnersSmemSlots, 4);
  *rows_slots = fit(kJaccardRowsSmemSlots, 8);
  return 0;
}

int jaccard_rows_count(const DeviceRows& q, const DeviceRows& p, const TableLaunch& t, const int64_t* bound_slots,
                       int64_t* partners, int64_t* slots, int* err, void* stream) {
  check_launch(__func__, t, kJaccardPartnersSmemSlots, false);
  if (t.m <= 0) return 0;
  if (t.shared) {
    size_t bytes = 0;
    const int st = shared_launch_bytes(jaccard_partners_kernel<true>, t.region_slots, 4, &bytes);
    if (st) return st;
    jaccard_partners_kernel<true><<<grid_for(t.m, kWarpsPerBlock), kBlock, bytes, as_stream(stream)>>>(
        q.ptr, q.idx, p.ptr, p.idx, t.ids, t.m, bound_slots, t.region_slots, nullptr, partners, slots, err);
  } else {
    jaccard_partners_kernel<false><<<region_grid(t.regions), kBlock, 0, as_stream(stream)>>>(
        q.ptr, q.idx, p.ptr, p.idx, t.ids, t.m, bound_slots, t.region_slots, t.scratch_keys, partners, slots, err);
  }
  return launch_status();
}

int jaccard_rows_fill(const DeviceRows& q, const DeviceRows& p, const TableLaunch& t, const int64_t* slots,
                      float max_distance, const PairStaging& out, int* err, void* stream) {
  check_launch(__func__, t, kJaccardRowsSmemSlots, true);
  HILCORE_CHECK_MSG(out.row0 >= 0 && out.offsets != nullptr && out.kept != nullptr,
                    "the staging needs row0 >= 0, its offsets and kept, " + values({{"row0", out.row0}}));
  if (t.m <= 0) return 0;
  if (t.shared) {
    size_t bytes = 0;
    const int st = shared_launch_bytes(jaccard_rows_kernel<true>, t.region_slots, 8, &bytes);
    if (st) return st;
    jaccard_rows_kernel<true><<<grid_for(t.m, kWarpsPerBlock), kBlock, bytes, as_stream(stream)>>>(
        q.ptr, q.idx, q.val, p.ptr, p.idx, p.val, t.ids, t.m, slots, t.region_slots, nullptr, nullptr, max_distance,
        out.row0, out.offsets, out.kept, out.idx, out.val, err);
  } else {
    jaccard_rows_kernel<false><<<region_grid(t.regions), kBlock, 0, as_stream(stream)>>>(
        q.ptr, q.idx, q.val, p.ptr, p.idx, p.val, t.ids, t.m, slots, t.region_slots, t.scratch_keys, t.scratch_vals,
        max_distance, out.row0, out.offsets, out.kept, out.idx, out.val, err);
  }
  return launch_status();
}

}  // namespace cuda
}  // namespace hilcore
