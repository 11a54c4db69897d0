// hilcore._native: one pybind11 module. Each op registers its functions from
// its own bindings/<op>.cpp; this file only ties them together.
#include <pybind11/pybind11.h>

#include "common.h"

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
  m.doc() = "hilcore native kernels (C++/OpenMP, and CUDA when built with it)";
  m.def("has_cuda", []() {
#ifdef HILCORE_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("num_threads", &hilcore_bindings::num_threads, "OpenMP threads used by the CPU kernels");
  hilcore_bindings::register_knn(m);
  hilcore_bindings::register_jaccard(m);
  hilcore_bindings::register_dbscan(m);
  hilcore_bindings::register_subcluster(m);
  hilcore_bindings::register_memory(m);
  hilcore_bindings::register_brst(m);
  hilcore_bindings::register_mccl(m);
  hilcore_bindings::register_compat(m);
#ifdef HILCORE_WITH_CUDA
  hilcore_bindings::register_cuda(m);
#endif
}
