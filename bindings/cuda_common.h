// Shared by the CUDA bindings (bindings/cuda*.cpp): device addresses, the argument structs Python
// builds (hilcore._native.CudaRows, ...), and the checks that raise Python errors naming the argument.
// Compiled by the host C++ compiler: no CUDA headers here.
#pragma once
#ifdef HILCORE_WITH_CUDA

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "common.h"
#include "cuda/launchers.h"

namespace hilcore_bindings {
namespace cuda_bind {

namespace hc = hilcore::cuda;
using ptr_t = std::uintptr_t;  // a device address as Python holds it (tensor.data_ptr()), 0: none

template <typename T>
T* P(ptr_t p) {
  return reinterpret_cast<T*>(p);
}
inline void* S(ptr_t s) { return reinterpret_cast<void*>(s); }

// A launcher's CUDA error as RuntimeError naming the launcher.
inline void check_cuda(int status, const char* what) {
  if (status != 0)
    throw std::runtime_error(std::string(what) + ": CUDA error " + std::to_string(status) + " (" +
                             hc::error_string(status) + ")");
}

inline void need(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

inline void check_n(int64_t n) {
  need(n > 0, "n: expected at least one row, got " + std::to_string(n));
  need(n < std::numeric_limits<int32_t>::max(), "n: the CUDA kernels index rows with int32, got n = " +
                                                    std::to_string(n));
}

inline void check_ptr(ptr_t p, const char* name) {
  if (p == 0) throw py::value_error(std::string(name) + ": null device pointer");
}

// ---- the argument structs, as Python builds them (addresses as integers) ----------------------
// Each converts to its launchers.h twin.
struct Rows {  // hilcore._native.CudaRows(ptr, idx, val=0)
  ptr_t ptr = 0, idx = 0, val = 0;
  hc::DeviceRows get(const char* name) const {
    check_ptr(ptr, (std::string(name) + ".ptr").c_str());
    return {P<const int64_t>(ptr), P<int32_t>(idx), P<float>(val)};
  }
};

struct Ranking {  // hilcore._native.CudaRanking(rank, n, ld_rank, k1, kh1)
  ptr_t rank = 0;
  int64_t n = 0, ld_rank = 0;
  int k1 = 0, kh1 = 0;
  hc::Ranking get() const {
    check_n(n);
    check_ptr(rank, "ranking.rank");
    need(k1 >= 1 && k1 <= n, "ranking.k1: expected 1 <= k1 <= n = " + std::to_string(n) + ", got " +
                                 std::to_string(k1));
    need(ld_rank >= k1, "ranking.ld_rank: expected >= k1 = " + std::to_string(k1) + ", got " +
                            std::to_string(ld_rank));
    need(kh1 >= 1 && kh1 <= k1, "ranking.kh1: expected 1 <= kh1 <= k1, got " + std::to_string(kh1));
    return {P<const int64_t>(rank), n, ld_rank, k1, kh1};
  }
};

struct TableLaunch {  // hilcore._native.CudaTableLaunch(ids, m, shared, region_slots, regions=0, scratch_*=0)
  ptr_t ids = 0;
  int64_t m = 0;
  bool shared = true;
  int64_t region_slots = 0, regions = 0;
  ptr_t scratch_keys = 0, scratch_vals = 0;
  hc::TableLaunch get() const {
    need(m >= 0, "launch.m: expected >= 0, got " + std::to_string(m));
    check_ptr(ids, "launch.ids");
    return {P<const int64_t>(ids), m, shared, regions, region_slots, P<int32_t>(scratch_keys),
            P<float>(scratch_vals)};
  }
};

struct PairStaging {  // hilcore._native.CudaPairStaging(row0, offsets, kept, idx, val)
  int64_t row0 = 0;
  ptr_t offsets = 0, kept = 0, idx = 0, val = 0;
  hc::PairStaging get() const {
    check_ptr(offsets, "staging.offsets");
    check_ptr(kept, "staging.kept");
    return {row0, P<const int64_t>(offsets), P<int64_t>(kept), P<int32_t>(idx), P<float>(val)};
  }
};

struct Distances {  // hilcore._native.CudaDistances(indptr, indices, data, n, eps)
  ptr_t indptr = 0, indices = 0, data = 0;
  int64_t n = 0;
  float eps = 0.f;
  hc::Distances get() const {
    check_n(n);
    need(eps >= 0, "dist.eps: expected >= 0");
    check_ptr(indptr, "dist.indptr");
    return {P<const int64_t>(indptr), P<const int64_t>(indices), P<const float>(data), n, eps};
  }
};

void register_jaccard(py::module_& m);
void register_dbscan(py::module_& m);

}  // namespace cuda_bind
}  // namespace hilcore_bindings

#endif  // HILCORE_WITH_CUDA
