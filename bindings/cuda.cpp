// Bindings of the CUDA launchers (kernels/cuda/launchers.h). Compiled by the
// host C++ compiler: no CUDA headers here. Device buffers cross as integer
// addresses (torch's tensor.data_ptr()), the stream as an integer
// (torch.cuda.current_stream().cuda_stream). hilcore/backend/cuda/*.py own
// the allocation and the scans between count and fill passes; this layer
// checks sizes (ValueError) and turns a CUDA error into a RuntimeError.
#ifdef HILCORE_WITH_CUDA

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "common.h"
#include "cuda/launchers.h"

namespace hilcore_bindings {
namespace {

namespace hc = hilcore::cuda;
using ptr_t = std::uintptr_t;

template <typename T>
T* P(ptr_t p) {
  return reinterpret_cast<T*>(p);
}
inline void* S(ptr_t s) { return reinterpret_cast<void*>(s); }

void check_cuda(int status, const char* what) {
  if (status != 0)
    throw std::runtime_error(std::string(what) + ": CUDA error " + std::to_string(status) + " (" +
                             hc::error_string(status) + ")");
}

void need(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

void check_n(int64_t n) {
  need(n > 0, "n: expected at least one row, got " + std::to_string(n));
  need(n < std::numeric_limits<int32_t>::max(),
       "n: the CUDA kernels index rows with int32, got n = " + std::to_string(n));
}

void check_ptr(ptr_t p, const char* name) {
  if (p == 0) throw py::value_error(std::string(name) + ": null device pointer");
}

void check_rank(int64_t n, int64_t ld, int k1) {
  check_n(n);
  need(k1 >= 1 && k1 <= n, "k1: expected 1 <= k1 <= n = " + std::to_string(n) + ", got " + std::to_string(k1));
  need(ld >= k1, "ld_rank: expected >= k1 = " + std::to_string(k1) + ", got " + std::to_string(ld));
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def(
      "cuda_versions", []() { return py::make_tuple(hc::driver_version(), hc::runtime_version_built()); },
      "(driver version at run time, CUDART_VERSION at build time), 1000 * major + 10 * minor; driver 0: none.");
  m.def(
      "cuda_krecip_flags",
      [](ptr_t rank, int64_t n, int64_t ld, int k1, int kh1, ptr_t f1, ptr_t fh, ptr_t stream) {
        check_rank(n, ld, k1);
        need(kh1 >= 1 && kh1 <= k1, "kh1: expected 1 <= kh1 <= k1, got " + std::to_string(kh1));
        check_ptr(rank, "rank");
        check_ptr(f1, "f1");
        check_ptr(fh, "fh");
        check_cuda(hc::krecip_flags(P<const int64_t>(rank), n, ld, k1, kh1, P<uint8_t>(f1), P<uint8_t>(fh), S(stream)),
                   "krecip_flags");
      },
      py::arg("rank"), py::arg("n"), py::arg("ld_rank"), py::arg("k1"), py::arg("kh1"), py::arg("f1"), py::arg("fh"),
      py::arg("stream"), "Reciprocity flags f1 [n, k1] and fh [n, kh1] (uint8) of a kNN ranking.");

  m.def(
      "cuda_expand",
      [](ptr_t rank, int64_t n, int64_t ld, int k1, int kh1, ptr_t f1, ptr_t fh, ptr_t raw_count, ptr_t raw_ptr,
         ptr_t raw, ptr_t stream) {
        check_rank(n, ld, k1);
        need(kh1 >= 1 && kh1 <= k1, "kh1: expected 1 <= kh1 <= k1, got " + std::to_string(kh1));
        check_ptr(rank, "rank");
        check_ptr(f1, "f1");
        check_ptr(fh, "fh");
        if (raw_count != 0) {
          check_cuda(hc::expand_count(P<const int64_t>(rank), n, ld, k1, kh1, P<const uint8_t>(f1),
                                      P<const uint8_t>(fh), P<int64_t>(raw_count), S(stream)),
                     "expand_count");
        } else {
          check_ptr(raw_ptr, "raw_ptr");
          check_ptr(raw, "raw");
          check_cuda(hc::expand_fill(P<const int64_t>(rank), n, ld, k1, kh1, P<const uint8_t>(f1), P<const uint8_t>(fh),
                                     P<const int64_t>(raw_ptr), P<int32_t>(raw), S(stream)),
                     "expand_fill");
        }
      },
      py::arg("rank"), py::arg("n"), py::arg("ld_rank"), py::arg("k1"), py::arg("kh1"), py::arg("f1"), py::arg("fh"),
      py::arg("raw_count"), py::arg("raw_ptr"), py::arg("raw"), py::arg("stream"),
      "Expanded k-reciprocal sets with repeats: count pass (raw_count != 0) or fill pass (raw_ptr, raw).");

  m.def(
      "cuda_unique_count",
      [](ptr_t raw_ptr, ptr_t raw, int64_t n, ptr_t first, ptr_t e_count, ptr_t stream) {
        check_n(n);
        check_ptr(raw_ptr, "raw_ptr");
        check_ptr(e_count, "e_count");
        check_cuda(hc::unique_count(P<const int64_t>(raw_ptr), P<const int32_t>(raw), n, P<uint8_t>(first),
                                    P<int64_t>(e_count), S(stream)),
                   "unique_count");
      },
      py::arg("raw_ptr"), py::arg("raw"), py::arg("n"), py::arg("first"), py::arg("e_count"), py::arg("stream"));

  m.def(
      "cuda_unique_weights",
      [](ptr_t x, int64_t n, int64_t d, ptr_t raw_ptr, ptr_t raw, ptr_t first, ptr_t e_ptr, ptr_t e_idx, ptr_t e_val,
         ptr_t stream) {
        check_n(n);
        need(d > 0, "d: expected at least one feature column, got " + std::to_string(d));
        check_ptr(x, "x");
        check_ptr(raw_ptr, "raw_ptr");
        check_ptr(e_ptr, "e_ptr");
        check_cuda(hc::unique_weights(P<const float>(x), n, d, P<const int64_t>(raw_ptr), P<const int32_t>(raw),
                                      P<const uint8_t>(first), P<const int64_t>(e_ptr), P<int32_t>(e_idx),
                                      P<float>(e_val), S(stream)),
                   "unique_weights");
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("raw_ptr"), py::arg("raw"), py::arg("first"), py::arg("e_ptr"),
      py::arg("e_idx"), py::arg("e_val"), py::arg("stream"));

  m.def(
      "cuda_query_expansion",
      [](ptr_t e_ptr, ptr_t e_idx, ptr_t e_val, ptr_t rank, int64_t n, int64_t ld, int k2, ptr_t q_count, ptr_t q_ptr,
         ptr_t q_idx, ptr_t q_val, ptr_t stream) {
        check_n(n);
        need(k2 >= 1 && k2 <= ld, "k2: expected 1 <= k2 <= ld_rank, got " + std::to_string(k2));
        check_ptr(e_ptr, "e_ptr");
        check_ptr(rank, "rank");
        if (q_count != 0) {
          check_cuda(hc::query_expansion_count(P<const int64_t>(e_ptr), P<const int32_t>(e_idx), P<const int64_t>(rank),
                                               n, ld, k2, P<int64_t>(q_count), S(stream)),
                     "query_expansion_count");
        } else {
          check_ptr(q_ptr, "q_ptr");
          check_cuda(hc::query_expansion_fill(P<const int64_t>(e_ptr), P<const int32_t>(e_idx), P<const float>(e_val),
                                              P<const int64_t>(rank), n, ld, k2, P<const int64_t>(q_ptr),
                                              P<int32_t>(q_idx), P<float>(q_val), S(stream)),
                     "query_expansion_fill");
        }
      },
      py::arg("e_ptr"), py::arg("e_idx"), py::arg("e_val"), py::arg("rank"), py::arg("n"), py::arg("ld_rank"),
      py::arg("k2"), py::arg("q_count"), py::arg("q_ptr"), py::arg("q_idx"), py::arg("q_val"), py::arg("stream"),
      "Local query expansion: count pass (q_count != 0) or fill pass (q_ptr, q_idx, q_val).");

  m.def(
      "cuda_jaccard_slots",
      [](ptr_t q_ptr, ptr_t q_idx, ptr_t p_ptr, int64_t n, ptr_t slots, ptr_t stream) {
        check_n(n);
        check_ptr(q_ptr, "q_ptr");
        check_ptr(p_ptr, "p_ptr");
        check_ptr(slots, "slots");
        check_cuda(hc::jaccard_slots(P<const int64_t>(q_ptr), P<const int32_t>(q_idx), P<const int64_t>(p_ptr), n,
                                     P<int64_t>(slots), S(stream)),
                   "jaccard_slots");
      },
      py::arg("q_ptr"), py::arg("q_idx"), py::arg("p_ptr"), py::arg("n"), py::arg("slots"), py::arg("stream"));

  m.def(
      "cuda_jaccard_smem_slots",
      []() {
        int64_t partners = 0, rows = 0;
        check_cuda(hc::jaccard_smem_slots(&partners, &rows), "jaccard_smem_slots");
        return py::make_tuple(partners, rows);
      },
      "Largest table (slots) a warp keeps in shared memory on the current device: (partners pass, rows pass); "
      "larger tables go to global memory.");

  m.def(
      "cuda_jaccard_partners",
      [](ptr_t q_ptr, ptr_t q_idx, ptr_t p_ptr, ptr_t p_row, ptr_t ids, int64_t m, ptr_t bound_slots, bool shared,
         int64_t regions, int64_t region_slots, ptr_t scratch, ptr_t partners, ptr_t slots, ptr_t err, ptr_t stream) {
        need(m >= 0, "m: expected >= 0, got " + std::to_string(m));
        check_ptr(q_ptr, "q_ptr");
        check_ptr(p_ptr, "p_ptr");
        check_ptr(ids, "ids");
        check_ptr(bound_slots, "bound_slots");
        check_ptr(partners, "partners");
        check_ptr(slots, "slots");
        check_ptr(err, "err");
        need(region_slots >= 32 && (region_slots & (region_slots - 1)) == 0,
             "region_slots: expected a power of two >= 32, got " + std::to_string(region_slots));
        if (!shared) {
          need(regions > 0 && regions % 8 == 0, "regions: expected a positive multiple of 8, got " +
                                                    std::to_string(regions));
          check_ptr(scratch, "scratch");
        }
        check_cuda(hc::jaccard_partners(P<const int64_t>(q_ptr), P<const int32_t>(q_idx), P<const int64_t>(p_ptr),
                                        P<const int32_t>(p_row), P<const int64_t>(ids), m,
                                        P<const int64_t>(bound_slots), shared ? 1 : 0, regions, region_slots,
                                        P<int32_t>(scratch), P<int64_t>(partners), P<int64_t>(slots), P<int>(err),
                                        S(stream)),
                   "jaccard_partners");
      },
      py::arg("q_ptr"), py::arg("q_idx"), py::arg("p_ptr"), py::arg("p_row"), py::arg("ids"), py::arg("m"),
      py::arg("bound_slots"), py::arg("shared"), py::arg("regions"), py::arg("region_slots"), py::arg("scratch"),
      py::arg("partners"), py::arg("slots"), py::arg("err"), py::arg("stream"),
      "Exact distinct partners per listed row and the table size of its rows pass.");

  m.def(
      "cuda_jaccard_rows",
      [](ptr_t q_ptr, ptr_t q_idx, ptr_t q_val, ptr_t p_ptr, ptr_t p_row, ptr_t p_val, ptr_t ids, int64_t m,
         ptr_t slots, bool shared, int64_t regions, int64_t region_slots, ptr_t scratch_keys, ptr_t scratch_vals,
         float max_distance, int64_t row0, ptr_t st_off, ptr_t kept, ptr_t st_idx, ptr_t st_val, ptr_t err,
         ptr_t stream) {
        need(m >= 0 && row0 >= 0, "m, row0: expected >= 0");
        check_ptr(q_ptr, "q_ptr");
        check_ptr(p_ptr, "p_ptr");
        check_ptr(ids, "ids");
        check_ptr(slots, "slots");
        check_ptr(st_off, "st_off");
        check_ptr(kept, "kept");
        check_ptr(err, "err");
        need(region_slots >= 32 && (region_slots & (region_slots - 1)) == 0,
             "region_slots: expected a power of two >= 32, got " + std::to_string(region_slots));
        if (!shared) {
          need(regions > 0 && regions % 8 == 0, "regions: expected a positive multiple of 8, got " +
                                                    std::to_string(regions));
          check_ptr(scratch_keys, "scratch_keys");
          check_ptr(scratch_vals, "scratch_vals");
        }
        check_cuda(hc::jaccard_rows(P<const int64_t>(q_ptr), P<const int32_t>(q_idx), P<const float>(q_val),
                                    P<const int64_t>(p_ptr), P<const int32_t>(p_row), P<const float>(p_val),
                                    P<const int64_t>(ids), m, P<const int64_t>(slots), shared ? 1 : 0, regions,
                                    region_slots, P<int32_t>(scratch_keys), P<float>(scratch_vals), max_distance,
                                    row0, P<const int64_t>(st_off), P<int64_t>(kept), P<int32_t>(st_idx),
                                    P<float>(st_val), P<int>(err), S(stream)),
                   "jaccard_rows");
      },
      py::arg("q_ptr"), py::arg("q_idx"), py::arg("q_val"), py::arg("p_ptr"), py::arg("p_row"), py::arg("p_val"),
      py::arg("ids"), py::arg("m"), py::arg("slots"), py::arg("shared"), py::arg("regions"), py::arg("region_slots"),
      py::arg("scratch_keys"), py::arg("scratch_vals"), py::arg("max_distance"), py::arg("row0"), py::arg("st_off"),
      py::arg("kept"), py::arg("st_idx"), py::arg("st_val"), py::arg("err"), py::arg("stream"),
      "Fused build/count/fill of the listed rows' Jaccard pairs into the staging buffers.");

  m.def(
      "cuda_dbscan_core",
      [](ptr_t indptr, ptr_t indices, ptr_t data, int64_t n, float eps, int64_t min_samples, ptr_t core, ptr_t stream) {
        check_n(n);
        need(min_samples >= 1, "min_samples: expected >= 1, got " + std::to_string(min_samples));
        need(eps >= 0, "eps: expected >= 0");
        check_ptr(indptr, "indptr");
        check_ptr(core, "core");
        check_cuda(hc::dbscan_core(P<const int64_t>(indptr), P<const int64_t>(indices), P<const float>(data), n, eps,
                                   min_samples, P<uint8_t>(core), S(stream)),
                   "dbscan_core");
      },
      py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("n"), py::arg("eps"), py::arg("min_samples"),
      py::arg("core"), py::arg("stream"));

  m.def(
      "cuda_dbscan_components",
      [](ptr_t indptr, ptr_t indices, ptr_t data, int64_t n, float eps, ptr_t core, ptr_t parent, ptr_t root,
         ptr_t stream) {
        check_n(n);
        check_ptr(indptr, "indptr");
        check_ptr(core, "core");
        check_ptr(parent, "parent");
        check_ptr(root, "root");
        check_cuda(hc::dbscan_components(P<const int64_t>(indptr), P<const int64_t>(indices), P<const float>(data), n,
                                         eps, P<const uint8_t>(core), P<int32_t>(parent), P<int32_t>(root), S(stream)),
                   "dbscan_components");
      },
      py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("n"), py::arg("eps"), py::arg("core"),
      py::arg("parent"), py::arg("root"), py::arg("stream"));

  m.def(
      "cuda_dbscan_labels",
      [](ptr_t indptr, ptr_t indices, ptr_t data, int64_t n, float eps, ptr_t core, ptr_t root, ptr_t root_cum,
         ptr_t labels, ptr_t stream) {
        check_n(n);
        check_ptr(indptr, "indptr");
        check_ptr(core, "core");
        check_ptr(root, "root");
        check_ptr(root_cum, "root_cum");
        check_ptr(labels, "labels");
        check_cuda(hc::dbscan_labels(P<const int64_t>(indptr), P<const int64_t>(indices), P<const float>(data), n, eps,
                                     P<const uint8_t>(core), P<const int32_t>(root), P<const int64_t>(root_cum),
                                     P<int64_t>(labels), S(stream)),
                   "dbscan_labels");
      },
      py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("n"), py::arg("eps"), py::arg("core"),
      py::arg("root"), py::arg("root_cum"), py::arg("labels"), py::arg("stream"));
}

}  // namespace hilcore_bindings

#endif  // HILCORE_WITH_CUDA
