// Host driver of kernels/cuda/jaccard_table.h: the last Jaccard stage, row by
// row, with the same table code as the CUDA kernels (jaccard_partners,
// jaccard_rows). Built and run by tests/test_jaccard_table.py (g++, and nvcc
// when present, which compiles the header's __host__ __device__ path).
//
//   jaccard_table_test IN OUT SEED [undersize]
//
// IN (little-endian): int64 n, int64 nnz, float32 max_distance, int64 q_ptr[n+1],
// int32 q_idx[nnz], float32 q_val[nnz] (V' as CSR, columns ascending per row).
// OUT: int64 n, int64 nnz_out, int64 indptr[n+1], int32 indices[nnz_out],
// float32 data[nnz_out], int64 bound[n], int64 partners[n], int64 slots[n],
// int64 status[n], int64 shared_rows[2], uint64 layout.
// status: 0 ok, 1 the partners pass overflowed, 2 the rows pass overflowed.
// SEED orders the work the way a warp's lanes could: each postings list is
// split across 32 "lanes" (entries lane, lane + 32, ...) and the lanes run in
// a random order (odd SEED), or the list's entries are inserted in a random
// permutation (even SEED). "undersize" gives every table kMinSlots slots, to
// drive the overflow path. `layout` hashes where the keys landed, so a test
// can see that the order moved them while the results stayed bit-identical.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "cuda/jaccard_table.h"
#include "cuda/launchers.h"

namespace jt = hilcore::jtable;

namespace {

struct HostKeys {
  int32_t* k;
  int32_t load(uint32_t h) const { return k[h]; }
  int32_t cas(uint32_t h, int32_t e, int32_t d) const {
    const int32_t old = k[h];
    if (old == e) k[h] = d;
    return old;
  }
};

struct HostVals {
  float* v;
  void add(int64_t h, float c) const { v[h] += c; }
};

template <class T>
void read_into(FILE* f, std::vector<T>& v, size_t count) {
  v.resize(count);
  if (count && std::fread(v.data(), sizeof(T), count, f) != count) {
    std::fprintf(stderr, "short read\n");
    std::exit(3);
  }
}

template <class T>
void write_all(FILE* f, const T* p, size_t count) {
  if (count) std::fwrite(p, sizeof(T), count, f);
}

// Run fn(b0, b1, step) over one postings list [lo, hi) in the order SEED asks for.
template <class Fn>
bool run_list(std::mt19937_64& rng, uint64_t seed, int64_t lo, int64_t hi, Fn fn) {
  if (seed % 2 == 1) {
    int lanes[32];
    std::iota(lanes, lanes + 32, 0);
    std::shuffle(lanes, lanes + 32, rng);
    for (int l : lanes)
      if (!fn(lo + l, hi, static_cast<int64_t>(32))) return false;
    return true;
  }
  std::vector<int64_t> perm(static_cast<size_t>(hi - lo));
  std::iota(perm.begin(), perm.end(), lo);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t b : perm)
    if (!fn(b, b + 1, static_cast<int64_t>(1))) return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s IN OUT SEED [undersize]\n", argv[0]);
    return 2;
  }
  const uint64_t seed = std::strtoull(argv[3], nullptr, 10);
  const bool undersize = argc > 4 && std::strcmp(argv[4], "undersize") == 0;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 2;
  int64_t n = 0, nnz = 0;
  float max_distance = 0.f;
  if (std::fread(&n, 8, 1, in) != 1 || std::fread(&nnz, 8, 1, in) != 1 || std::fread(&max_distance, 4, 1, in) != 1)
    return 3;
  std::vector<int64_t> q_ptr;
  std::vector<int32_t> q_idx;
  std::vector<float> q_val;
  read_into(in, q_ptr, static_cast<size_t>(n + 1));
  read_into(in, q_idx, static_cast<size_t>(nnz));
  read_into(in, q_val, static_cast<size_t>(nnz));
  std::fclose(in);

  // postings: the transpose of V', rows ascending within a column (as the Python layer's stable sort)
  std::vector<int64_t> p_ptr(static_cast<size_t>(n + 1), 0);
  for (int64_t p = 0; p < nnz; ++p) ++p_ptr[q_idx[p] + 1];
  for (int64_t t = 0; t < n; ++t) p_ptr[t + 1] += p_ptr[t];
  std::vector<int32_t> p_row(static_cast<size_t>(nnz));
  std::vector<float> p_val(static_cast<size_t>(nnz));
  {
    std::vector<int64_t> fill(p_ptr.begin(), p_ptr.end() - 1);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t p = q_ptr[i]; p < q_ptr[i + 1]; ++p) {
        const int64_t f = fill[q_idx[p]]++;
        p_row[f] = static_cast<int32_t>(i);
        p_val[f] = q_val[p];
      }
  }

  std::mt19937_64 rng(seed);
  std::vector<int64_t> indptr(static_cast<size_t>(n + 1), 0), bound(n), partners(n), slots(n), status(n, 0);
  std::vector<int32_t> indices;
  std::vector<float> data;
  int64_t shared_rows[2] = {0, 0};  // rows whose table fits the kernels' shared-memory regions: partners, rows pass
  uint64_t layout = 0;
  std::vector<int32_t> keys;
  std::vector<float> vals;
  for (int64_t i = 0; i < n; ++i) {
    // 1. bound (jaccard_slots)
    int64_t summed = 0;
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1]; ++a) summed += p_ptr[q_idx[a] + 1] - p_ptr[q_idx[a]];
    const int64_t cap_bound = undersize ? jt::kMinSlots : jt::capacity_for(jt::partner_bound(summed, n));
    bound[i] = cap_bound;
    shared_rows[0] += jt::fits(cap_bound, hilcore::cuda::kJaccardPartnersSmemSlots) ? 1 : 0;

    // 2. partners pass (jaccard_partners): keys only
    keys.assign(static_cast<size_t>(cap_bound), jt::kEmpty);
    HostKeys hk{keys.data()};
    int64_t cnt = 0;
    bool ok = true;
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1] && ok; ++a) {
      const int32_t t = q_idx[a];
      ok = run_list(rng, seed, p_ptr[t], p_ptr[t + 1], [&](int64_t b0, int64_t b1, int64_t step) {
        const int64_t c = jt::insert_list(hk, cap_bound, p_row.data(), b0, b1, step);
        if (c == jt::kOverflow) return false;
        cnt += c;
        return true;
      });
    }
    if (!ok) {
      status[i] = 1;
      indptr[i + 1] = static_cast<int64_t>(indices.size());
      continue;
    }
    partners[i] = cnt;
    const int64_t cap = undersize ? jt::kMinSlots : jt::capacity_for(cnt);
    slots[i] = cap;
    shared_rows[1] += jt::fits(cap, hilcore::cuda::kJaccardRowsSmemSlots) ? 1 : 0;

    // 3. rows pass (jaccard_rows): build in ascending t, then the kept pairs in slot order
    keys.assign(static_cast<size_t>(cap), jt::kEmpty);
    vals.assign(static_cast<size_t>(cap), 0.f);
    HostKeys rk{keys.data()};
    HostVals rv{vals.data()};
    for (int64_t a = q_ptr[i]; a < q_ptr[i + 1] && ok; ++a) {
      const int32_t t = q_idx[a];
      const float vi = q_val[a];
      ok = run_list(rng, seed, p_ptr[t], p_ptr[t + 1], [&](int64_t b0, int64_t b1, int64_t step) {
        return jt::accumulate_list(rk, rv, cap, vi, p_row.data(), p_val.data(), b0, b1, step);
      });
    }
    if (!ok) {
      status[i] = 2;
      indptr[i + 1] = static_cast<int64_t>(indices.size());
      continue;
    }
    std::vector<std::pair<int32_t, float>> kept;
    int64_t present = 0;
    for (int64_t s = 0; s < cap; ++s) {
      const int32_t j = keys[s];
      if (j == jt::kEmpty) continue;
      ++present;
      layout = layout * 1000003u + static_cast<uint64_t>(s) * 31u + static_cast<uint64_t>(j);
      if (jt::find(rk, cap, j) != s) {  // every key is found where it was put
        std::fprintf(stderr, "row %lld: key %d not found at its slot\n", static_cast<long long>(i), j);
        return 4;
      }
      float d;
      if (jt::keep_pair(i, j, vals[s], max_distance, &d)) kept.emplace_back(j, d);
    }
    if (present != cnt) {  // both passes insert the same keys
      std::fprintf(stderr, "row %lld: %lld keys, %lld partners\n", static_cast<long long>(i),
                   static_cast<long long>(present), static_cast<long long>(cnt));
      return 4;
    }
    std::sort(kept.begin(), kept.end(),
              [](const std::pair<int32_t, float>& x, const std::pair<int32_t, float>& y) { return x.first < y.first; });
    for (const auto& kv : kept) {
      indices.push_back(kv.first);
      data.push_back(kv.second);
    }
    indptr[i + 1] = static_cast<int64_t>(indices.size());
  }

  FILE* out = std::fopen(argv[2], "wb");
  if (!out) return 2;
  const int64_t nnz_out = static_cast<int64_t>(indices.size());
  write_all(out, &n, 1);
  write_all(out, &nnz_out, 1);
  write_all(out, indptr.data(), indptr.size());
  write_all(out, indices.data(), indices.size());
  write_all(out, data.data(), data.size());
  write_all(out, bound.data(), bound.size());
  write_all(out, partners.data(), partners.size());
  write_all(out, slots.data(), slots.size());
  write_all(out, status.data(), status.size());
  write_all(out, shared_rows, 2);
  write_all(out, &layout, 1);
  std::fclose(out);
  return 0;
}
