// hilcore._native.knn_topk_merge: the running top-k merge of the blocked kNN.
#include <limits>

#include "common.h"
#include "cpu/knn_cpu.h"

namespace hilcore_bindings {

namespace {

void knn_topk_merge(const py::object& S_obj, int64_t row0, int64_t col0, const py::object& sim_obj,
                    const py::object& idx_obj, bool self_search) {
  auto S = expect_array<float>(S_obj, "S", 2, "float32");
  auto best_sim = expect_array<float>(sim_obj, "best_sim", 2, "float32", true);
  auto best_idx = expect_array<int64_t>(idx_obj, "best_idx", 2, "int64", true);
  const int64_t b = S.shape(0), c = S.shape(1), n = best_sim.shape(0), k = best_sim.shape(1);
  if (best_idx.shape(0) != n || best_idx.shape(1) != k)
    throw py::value_error("best_idx: expected shape (" + std::to_string(n) + ", " + std::to_string(k) +
                          ") like best_sim");
  if (k < 1) throw py::value_error("best_sim: expected at least one column (k >= 1)");
  if (row0 < 0 || row0 + b > n)
    throw py::value_error("row0: tile rows [" + std::to_string(row0) + ", " + std::to_string(row0 + b) +
                          ") do not fit in " + std::to_string(n) + " rows");
  if (col0 < 0 || col0 > std::numeric_limits<int64_t>::max() - c)
    throw py::value_error("col0: expected a non-negative column offset, got " + std::to_string(col0));
  const float* s = S.data();
  float* bs = best_sim.mutable_data();
  int64_t* bi = best_idx.mutable_data();
  const int nt = num_threads();
  int status;
  {
    py::gil_scoped_release release;
    status = hilcore::knn_topk_merge_cpu(s, b, c, row0, col0, bs, bi, n, k, self_search, nt);
  }
  check_status(status, "knn_topk_merge_cpu");
}

}  // namespace

void register_knn(py::module_& m) {
  m.def("knn_topk_merge", &knn_topk_merge, py::arg("S"), py::arg("row0"), py::arg("col0"), py::arg("best_sim"),
        py::arg("best_idx"), py::arg("self_search"),
        "Merge the similarity tile S [b, c] (rows row0.., columns col0..) into the sorted top-k lists "
        "best_sim/best_idx [N, k] (float32/int64, in place), key (sim desc, index asc); in self-search "
        "each row's own column ranks first.");
}

}  // namespace hilcore_bindings
