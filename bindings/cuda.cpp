// Bindings of the CUDA launchers (kernels/cuda/launchers.h), one file per op: this one registers
// them all, the argument structs Python builds and the version query; bindings/cuda_jaccard.cpp
// and bindings/cuda_dbscan.cpp hold the entry points. Compiled by the host C++ compiler: no CUDA
// headers here. Device buffers cross as integer addresses (torch's tensor.data_ptr()), grouped in
// the structs of bindings/cuda_common.h; the stream as an integer
// (torch.cuda.current_stream().cuda_stream). hilcore/backend/cuda/*.py own the allocation and the
// scans between count and fill passes; this layer checks sizes (ValueError), a launcher's failed
// precondition reaches Python as ValueError naming it, a CUDA error as RuntimeError.
#ifdef HILCORE_WITH_CUDA

#include "cuda_common.h"

namespace hilcore_bindings {

using namespace cuda_bind;

namespace {

void register_structs(py::module_& m) {
  py::class_<Rows>(m, "CudaRows", "Sparse rows on the device: addresses of ptr (int64 [n+1]), idx (int32), val "
                                  "(float32; 0 when the rows carry none).")
      .def(py::init([](ptr_t ptr, ptr_t idx, ptr_t val) { return Rows{ptr, idx, val}; }), py::arg("ptr"),
           py::arg("idx"), py::arg("val") = 0)
      .def_readonly("ptr", &Rows::ptr)
      .def_readonly("idx", &Rows::idx)
      .def_readonly("val", &Rows::val);
  py::class_<Ranking>(m, "CudaRanking", "A kNN ranking on the device: rank (int64 [n, ld_rank]), k1, kh1.")
      .def(py::init([](ptr_t rank, int64_t n, int64_t ld_rank, int k1, int kh1) {
             return Ranking{rank, n, ld_rank, k1, kh1};
           }),
           py::arg("rank"), py::arg("n"), py::arg("ld_rank"), py::arg("k1"), py::arg("kh1"))
      .def_readonly("rank", &Ranking::rank)
      .def_readonly("n", &Ranking::n)
      .def_readonly("ld_rank", &Ranking::ld_rank)
      .def_readonly("k1", &Ranking::k1)
      .def_readonly("kh1", &Ranking::kh1);
  py::class_<TableLaunch>(m, "CudaTableLaunch", "One launch of the last Jaccard stage: the listed rows ids (int64 "
                                                "[m]) and the hash-table regions of its warps.")
      .def(py::init([](ptr_t ids, int64_t m, bool shared, int64_t region_slots, int64_t regions, ptr_t keys,
                       ptr_t vals) { return TableLaunch{ids, m, shared, region_slots, regions, keys, vals}; }),
           py::arg("ids"), py::arg("m"), py::arg("shared"), py::arg("region_slots"), py::arg("regions") = 0,
           py::arg("scratch_keys") = 0, py::arg("scratch_vals") = 0)
      .def_readonly("ids", &TableLaunch::ids)
      .def_readonly("m", &TableLaunch::m)
      .def_readonly("shared", &TableLaunch::shared)
      .def_readonly("region_slots", &TableLaunch::region_slots)
      .def_readonly("regions", &TableLaunch::regions)
      .def_readonly("scratch_keys", &TableLaunch::scratch_keys)
      .def_readonly("scratch_vals", &TableLaunch::scratch_vals);
  py::class_<PairStaging>(m, "CudaPairStaging", "Where the fill pass stages each listed row's kept pairs.")
      .def(py::init([](int64_t row0, ptr_t offsets, ptr_t kept, ptr_t idx, ptr_t val) {
             return PairStaging{row0, offsets, kept, idx, val};
           }),
           py::arg("row0"), py::arg("offsets"), py::arg("kept"), py::arg("idx"), py::arg("val"))
      .def_readonly("row0", &PairStaging::row0)
      .def_readonly("offsets", &PairStaging::offsets)
      .def_readonly("kept", &PairStaging::kept)
      .def_readonly("idx", &PairStaging::idx)
      .def_readonly("val", &PairStaging::val);
  py::class_<Distances>(m, "CudaDistances", "CSR distances on the device and the DBSCAN radius eps (float32).")
      .def(py::init([](ptr_t indptr, ptr_t indices, ptr_t data, int64_t n, float eps) {
             return Distances{indptr, indices, data, n, eps};
           }),
           py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("n"), py::arg("eps"))
      .def_readonly("indptr", &Distances::indptr)
      .def_readonly("indices", &Distances::indices)
      .def_readonly("data", &Distances::data)
      .def_readonly("n", &Distances::n)
      .def_readonly("eps", &Distances::eps);
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def(
      "cuda_versions", []() { return py::make_tuple(hc::driver_version(), hc::runtime_version_built()); },
      "(driver version at run time, CUDART_VERSION at build time), 1000 * major + 10 * minor; driver 0: none.");
  register_structs(m);
  cuda_bind::register_jaccard(m);
  cuda_bind::register_dbscan(m);
}

}  // namespace hilcore_bindings

#endif  // HILCORE_WITH_CUDA
