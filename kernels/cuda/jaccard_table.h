// Per-row hash tables of the sparse Jaccard stage, shared by the CUDA kernels
// (kernels/cuda/jaccard_cuda.cu) and a host unit test (tests/native/
// jaccard_table_test.cpp, built by tests/test_jaccard_table.py with g++ and,
// when present, nvcc). Under nvcc every function is __host__ __device__;
// under a plain C++ compiler they are ordinary inline functions.
//
// Row i of the last stage accumulates m(i, j) = sum_t min(V'[i, t], V'[j, t])
// over the partners j of i (the rows of the postings lists of the columns t
// in supp(i)). The table of a row is open addressing with linear probing over
// `cap` slots, cap a power of two; key kEmpty = free. Sizing:
//   partner_bound   sum over t in supp(i) of |postings(t)|, clamped to n: at
//                   least the number of distinct partners;
//   capacity_for    the power of two >= max(kMinSlots, 2 * count): a load
//                   factor <= 1/2 when `count` keys go in.
// The kernels first count the distinct partners of each row exactly (a
// keys-only table sized by the bound), then build the row's table sized by
// that count, so the load factor is between 1/4 and 1/2 (or the row is
// smaller than kMinSlots / 2).
//
// Summation order: the value of a key starts at +0.0f when it is inserted and
// gets one float add per postings list it occurs in, the lists taken in
// ascending t. A key occurs at most once per postings list, so the order in
// which the entries of one list are inserted (which lane, which thread
// schedule) changes where keys land, never a sum: m(i, j) is the same
// sequence of float adds as a dense accumulator walked in ascending t, and
// the same as m(j, i).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define HC_TABLE_FN __host__ __device__ __forceinline__
// The templates call the table policy's load/cas/add, which are __device__ in
// the kernels and host-only in the host test: no cross-space check per instance.
#define HC_TABLE_TEMPLATE _Pragma("nv_exec_check_disable")
#else
#define HC_TABLE_FN inline
#define HC_TABLE_TEMPLATE
#endif

namespace hilcore {
namespace jtable {

constexpr int32_t kEmpty = -1;
constexpr int64_t kMinSlots = 32;  // a multiple of the warp width: every lane scans the same number of slots
constexpr int64_t kOverflow = -1;  // insert into a table with no free slot left

HC_TABLE_FN uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// The power of two >= max(kMinSlots, 2 * count) (count >= 0).
HC_TABLE_FN int64_t capacity_for(int64_t count) {
  int64_t cap = kMinSlots;
  while (cap < 2 * count) cap <<= 1;
  return cap;
}

// Upper bound on the distinct partners of a row: the summed postings sizes, at most n.
HC_TABLE_FN int64_t partner_bound(int64_t summed_postings, int64_t n) {
  return summed_postings < n ? summed_postings : n;
}

// Does a table of `cap` slots fit a region of `region_slots` (a shared-memory region)?
HC_TABLE_FN bool fits(int64_t cap, int64_t region_slots) { return cap <= region_slots; }

HC_TABLE_FN uint32_t home_slot(int32_t key, int64_t cap) {
  return mix32(static_cast<uint32_t>(key)) & static_cast<uint32_t>(cap - 1);
}

// Insert `key` (or find it) in a table of `cap` slots; returns its slot, or
// kOverflow after `cap` probes without finding it or a free slot. *fresh = this
// call claimed the slot. Keys: an object with load(slot) -> int32 and
// cas(slot, expected, desired) -> the old value (atomicCAS on the device, a
// plain compare-and-set on the host). Concurrent inserts of distinct or equal
// keys are safe when cas is atomic: a slot is claimed once, and a lane that
// loses the race for a free slot to the same key finds it there.
HC_TABLE_TEMPLATE
template <class Keys>
HC_TABLE_FN int64_t insert(Keys& keys, int64_t cap, int32_t key, bool* fresh) {
  const uint32_t mask = static_cast<uint32_t>(cap - 1);
  uint32_t h = home_slot(key, cap);
  *fresh = false;
  for (int64_t probe = 0; probe < cap; ++probe) {
    int32_t k = keys.load(h);
    if (k == kEmpty) {
      k = keys.cas(h, kEmpty, key);
      if (k == kEmpty) {
        *fresh = true;
        return h;
      }
    }
    if (k == key) return h;
    h = (h + 1u) & mask;
  }
  return kOverflow;
}

// The slot of `key`, or -1 when it is not in the table (host-side lookups, tests).
HC_TABLE_TEMPLATE
template <class Keys>
HC_TABLE_FN int64_t find(Keys& keys, int64_t cap, int32_t key) {
  const uint32_t mask = static_cast<uint32_t>(cap - 1);
  uint32_t h = home_slot(key, cap);
  for (int64_t probe = 0; probe < cap; ++probe) {
    const int32_t k = keys.load(h);
    if (k == key) return h;
    if (k == kEmpty) return -1;
    h = (h + 1u) & mask;
  }
  return -1;
}

HC_TABLE_FN float min_value(float a, float b) { return b < a ? b : a; }  // fminf for non-NaN weights

// The pair (i, j) with accumulated m is stored: j == i (as 0), or m > 0 and
// d = max(0, 1 - m / (2 - m)) <= max_distance. *d receives the stored value.
HC_TABLE_FN bool keep_pair(int64_t i, int32_t j, float m, float max_distance, float* d) {
  if (j == i) {
    *d = 0.f;
    return true;
  }
  if (!(m > 0.f)) return false;
  const float q = m / (2.f - m);
  float v = 1.f - q;
  if (v < 0.f) v = 0.f;
  *d = v;
  return v <= max_distance;
}

// One lane's share of a postings list: entries b0, b0 + step, ... < b1.
// Keys-only pass (distinct partners): returns the number of keys this lane
// inserted fresh, or kOverflow.
HC_TABLE_TEMPLATE
template <class Keys>
HC_TABLE_FN int64_t insert_list(Keys& keys, int64_t cap, const int32_t* p_row, int64_t b0, int64_t b1,
                                int64_t step) {
  int64_t fresh_count = 0;
  for (int64_t b = b0; b < b1; b += step) {
    bool fresh;
    if (insert(keys, cap, p_row[b], &fresh) == kOverflow) return kOverflow;
    fresh_count += fresh ? 1 : 0;
  }
  return fresh_count;
}

// Accumulating pass: m(i, p_row[b]) += min(vi, p_val[b]) for this lane's
// entries of one postings list. vals[slot] must be +0.0f for a free slot.
// Returns false on overflow.
HC_TABLE_TEMPLATE
template <class Keys, class Vals>
HC_TABLE_FN bool accumulate_list(Keys& keys, Vals& vals, int64_t cap, float vi, const int32_t* p_row,
                                 const float* p_val, int64_t b0, int64_t b1, int64_t step) {
  for (int64_t b = b0; b < b1; b += step) {
    bool fresh;
    const int64_t h = insert(keys, cap, p_row[b], &fresh);
    if (h == kOverflow) return false;
    vals.add(h, min_value(vi, p_val[b]));  // the key is unique in this list: no other add to slot h now
  }
  return true;
}

}  // namespace jtable
}  // namespace hilcore
