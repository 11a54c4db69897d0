// The CUDA DBSCAN passes (kernels/cuda/dbscan_cuda.cu): core flags, components, labels.
#ifdef HILCORE_WITH_CUDA

#include "cuda_common.h"

namespace hilcore_bindings {
namespace cuda_bind {

void register_dbscan(py::module_& m) {
  m.def(
      "cuda_dbscan_core",
      [](const Distances& dist, int64_t min_samples, ptr_t core, ptr_t stream) {
        need(min_samples >= 1, "min_samples: expected >= 1, got " + std::to_string(min_samples));
        check_ptr(core, "core");
        check_cuda(hc::dbscan_core(dist.get(), min_samples, P<uint8_t>(core), S(stream)), "dbscan_core");
      },
      py::arg("dist"), py::arg("min_samples"), py::arg("core"), py::arg("stream"),
      "core [n] (uint8): 1 iff a point has at least min_samples neighbours, itself included.");
  m.def(
      "cuda_dbscan_components",
      [](const Distances& dist, ptr_t core, ptr_t parent, ptr_t root, ptr_t stream) {
        check_ptr(core, "core");
        check_ptr(parent, "parent");
        check_ptr(root, "root");
        check_cuda(hc::dbscan_components(dist.get(), P<const uint8_t>(core), P<int32_t>(parent), P<int32_t>(root),
                                         S(stream)),
                   "dbscan_components");
      },
      py::arg("dist"), py::arg("core"), py::arg("parent"), py::arg("root"), py::arg("stream"),
      "root [n] (int32): the smallest core index of each core point's component, -1 for the rest.");
  m.def(
      "cuda_dbscan_labels",
      [](const Distances& dist, ptr_t core, ptr_t root, ptr_t root_cum, ptr_t labels, ptr_t stream) {
        check_ptr(core, "core");
        check_ptr(root, "root");
        check_ptr(root_cum, "root_cum");
        check_ptr(labels, "labels");
        check_cuda(hc::dbscan_labels(dist.get(), P<const uint8_t>(core), P<const int32_t>(root),
                                     P<const int64_t>(root_cum), P<int64_t>(labels), S(stream)),
                   "dbscan_labels");
      },
      py::arg("dist"), py::arg("core"), py::arg("root"), py::arg("root_cum"), py::arg("labels"), py::arg("stream"),
      "labels [n] (int64): clusters numbered by smallest core index, border points the smallest neighbouring "
      "core label, -1 noise.");
}

}  // namespace cuda_bind
}  // namespace hilcore_bindings

#endif  // HILCORE_WITH_CUDA
