// The CUDA k-reciprocal Jaccard stages (kernels/cuda/jaccard_cuda.cu): one named entry point per
// launcher, count and fill passes separate, arguments grouped in the structs of cuda_common.h.
#ifdef HILCORE_WITH_CUDA

#include "cuda_common.h"

namespace hilcore_bindings {
namespace cuda_bind {

namespace {

void region_check(const TableLaunch& t) {
  need(t.region_slots >= 32 && (t.region_slots & (t.region_slots - 1)) == 0,
       "launch.region_slots: expected a power of two >= 32, got " + std::to_string(t.region_slots));
  if (!t.shared) {
    need(t.regions > 0 && t.regions % 8 == 0,
         "launch.regions: expected a positive multiple of 8, got " + std::to_string(t.regions));
    check_ptr(t.scratch_keys, "launch.scratch_keys");
  }
}

void stages(py::module_& m) {
  m.def(
      "cuda_krecip_flags",
      [](const Ranking& r, ptr_t f1, ptr_t fh, ptr_t stream) {
        check_ptr(f1, "f1");
        check_ptr(fh, "fh");
        check_cuda(hc::krecip_flags(r.get(), P<uint8_t>(f1), P<uint8_t>(fh), S(stream)), "krecip_flags");
      },
      py::arg("ranking"), py::arg("f1"), py::arg("fh"), py::arg("stream"),
      "Reciprocity flags f1 [n, k1] and fh [n, kh1] (uint8) of a kNN ranking.");
  m.def(
      "cuda_expand_count",
      [](const Ranking& r, ptr_t f1, ptr_t fh, ptr_t raw_count, ptr_t stream) {
        check_ptr(f1, "f1");
        check_ptr(fh, "fh");
        check_ptr(raw_count, "raw_count");
        check_cuda(hc::expand_count(r.get(), P<const uint8_t>(f1), P<const uint8_t>(fh), P<int64_t>(raw_count),
                                    S(stream)),
                   "expand_count");
      },
      py::arg("ranking"), py::arg("f1"), py::arg("fh"), py::arg("raw_count"), py::arg("stream"),
      "Count pass of the expanded k-reciprocal sets (with repeats): raw_count [n].");
  m.def(
      "cuda_expand_fill",
      [](const Ranking& r, ptr_t f1, ptr_t fh, const Rows& raw, ptr_t stream) {
        check_ptr(f1, "f1");
        check_ptr(fh, "fh");
        check_ptr(raw.idx, "raw.idx");
        check_cuda(hc::expand_fill(r.get(), P<const uint8_t>(f1), P<const uint8_t>(fh), raw.get("raw"), S(stream)),
                   "expand_fill");
      },
      py::arg("ranking"), py::arg("f1"), py::arg("fh"), py::arg("raw"), py::arg("stream"),
      "Fill pass of the expanded sets into raw (ptr: the exclusive scan of raw_count).");
  m.def(
      "cuda_unique_count",
      [](const Rows& raw, int64_t n, ptr_t first, ptr_t e_count, ptr_t stream) {
        check_n(n);
        check_ptr(e_count, "e_count");
        check_cuda(hc::unique_count(raw.get("raw"), n, P<uint8_t>(first), P<int64_t>(e_count), S(stream)),
                   "unique_count");
      },
      py::arg("raw"), py::arg("n"), py::arg("first"), py::arg("e_count"), py::arg("stream"),
      "first[p] = 1 iff raw entry p is the first of its value in its row; e_count [n] distinct values per row.");
  m.def(
      "cuda_unique_weights",
      [](ptr_t x, int64_t n, int64_t d, const Rows& raw, ptr_t first, const Rows& e, ptr_t stream) {
        check_n(n);
        need(d > 0, "d: expected at least one feature column, got " + std::to_string(d));
        check_ptr(x, "x");
        check_cuda(hc::unique_weights(P<const float>(x), n, d, raw.get("raw"), P<const uint8_t>(first), e.get("e"),
                                      S(stream)),
                   "unique_weights");
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("raw"), py::arg("first"), py::arg("e"), py::arg("stream"),
      "E(i) sorted into e.idx and the softmax weights V into e.val (e.ptr: the scan of e_count).");
  m.def(
      "cuda_query_expansion_count",
      [](const Rows& e, const Ranking& r, int k2, ptr_t q_count, ptr_t stream) {
        check_ptr(q_count, "q_count");
        check_cuda(hc::query_expansion_count(e.get("e"), r.get(), k2, P<int64_t>(q_count), S(stream)),
                   "query_expansion_count");
      },
      py::arg("e"), py::arg("ranking"), py::arg("k2"), py::arg("q_count"), py::arg("stream"),
      "Count pass of the local query expansion V' = mean of V over rank[i, :k2]: q_count [n].");
  m.def(
      "cuda_query_expansion_fill",
      [](const Rows& e, const Ranking& r, int k2, const Rows& q, ptr_t stream) {
        check_cuda(hc::query_expansion_fill(e.get("e"), r.get(), k2, q.get("q"), S(stream)), "query_expansion_fill");
      },
      py::arg("e"), py::arg("ranking"), py::arg("k2"), py::arg("q"), py::arg("stream"),
      "Fill pass of the local query expansion into q (ptr: the scan of q_count).");
}

void pairs(py::module_& m) {
  m.def(
      "cuda_jaccard_slots",
      [](const Rows& q, const Rows& p, int64_t n, ptr_t slots, ptr_t stream) {
        check_n(n);
        check_ptr(slots, "slots");
        check_cuda(hc::jaccard_slots(q.get("q"), p.get("p"), n, P<int64_t>(slots), S(stream)), "jaccard_slots");
      },
      py::arg("q"), py::arg("p"), py::arg("n"), py::arg("slots"), py::arg("stream"),
      "Table size bound per row from the summed postings sizes of its support.");
  m.def(
      "cuda_jaccard_smem_slots",
      []() {
        int64_t partners = 0, rows = 0;
        check_cuda(hc::jaccard_smem_slots(&partners, &rows), "jaccard_smem_slots");
        return py::make_tuple(partners, rows);
      },
      "Largest table (slots) a warp keeps in shared memory on the current device: (count pass, fill pass); "
      "larger tables go to global memory.");
  m.def(
      "cuda_jaccard_rows_count",
      [](const Rows& q, const Rows& p, const TableLaunch& launch, ptr_t bound_slots, ptr_t partners, ptr_t slots,
         ptr_t err, ptr_t stream) {
        region_check(launch);
        check_ptr(bound_slots, "bound_slots");
        check_ptr(partners, "partners");
        check_ptr(slots, "slots");
        check_ptr(err, "err");
        check_cuda(hc::jaccard_rows_count(q.get("q"), p.get("p"), launch.get(), P<const int64_t>(bound_slots),
                                          P<int64_t>(partners), P<int64_t>(slots), P<int>(err), S(stream)),
                   "jaccard_rows_count");
      },
      py::arg("q"), py::arg("p"), py::arg("launch"), py::arg("bound_slots"), py::arg("partners"), py::arg("slots"),
      py::arg("err"), py::arg("stream"),
      "Count pass of the Jaccard rows: exact distinct partners per listed row and the table size of its fill pass.");
  m.def(
      "cuda_jaccard_rows_fill",
      [](const Rows& q, const Rows& p, const TableLaunch& launch, ptr_t slots, float max_distance,
         const PairStaging& staging, ptr_t err, ptr_t stream) {
        region_check(launch);
        if (!launch.shared) check_ptr(launch.scratch_vals, "launch.scratch_vals");
        need(staging.row0 >= 0, "staging.row0: expected >= 0, got " + std::to_string(staging.row0));
        check_ptr(slots, "slots");
        check_ptr(err, "err");
        check_cuda(hc::jaccard_rows_fill(q.get("q"), p.get("p"), launch.get(), P<const int64_t>(slots), max_distance,
                                         staging.get(), P<int>(err), S(stream)),
                   "jaccard_rows_fill");
      },
      py::arg("q"), py::arg("p"), py::arg("launch"), py::arg("slots"), py::arg("max_distance"), py::arg("staging"),
      py::arg("err"), py::arg("stream"),
      "Fill pass of the Jaccard rows: build, count and stage each listed row's kept pairs.");
}

}  // namespace

void register_jaccard(py::module_& m) {
  stages(m);
  pairs(m);
}

}  // namespace cuda_bind
}  // namespace hilcore_bindings

#endif  // HILCORE_WITH_CUDA
