// hilcore._native.dbscan: DBSCAN (union-find) on sparse precomputed distances.
#include "common.h"
#include "cpu/dbscan_cpu.h"

namespace hilcore_bindings {

namespace {

py::array_t<int64_t> dbscan(const py::object& indptr_obj, const py::object& indices_obj, const py::object& data_obj,
                            int64_t n, double eps, int64_t min_samples) {
  auto indptr = expect_array<int64_t>(indptr_obj, "indptr", 1, "int64");
  auto indices = expect_array<int64_t>(indices_obj, "indices", 1, "int64");
  auto data = expect_array<float>(data_obj, "data", 1, "float32");
  if (n < 0) throw py::value_error("n: expected n >= 0, got " + std::to_string(n));
  if (!(eps >= 0)) throw py::value_error("eps: expected a number >= 0");
  if (min_samples < 1) throw py::value_error("min_samples: expected >= 1, got " + std::to_string(min_samples));
  if (indptr.shape(0) != n + 1)
    throw py::value_error("indptr: expected length n + 1 = " + std::to_string(n + 1) + ", got " +
                          std::to_string(indptr.shape(0)));
  const int64_t* ip = indptr.data();
  if (ip[0] != 0) throw py::value_error("indptr: expected indptr[0] == 0");
  for (int64_t i = 0; i < n; ++i)
    if (ip[i + 1] < ip[i]) throw py::value_error("indptr: expected non-decreasing offsets (row " + std::to_string(i) + ")");
  const int64_t nnz = ip[n];
  if (indices.shape(0) < nnz || data.shape(0) < nnz)
    throw py::value_error("indices/data: expected at least indptr[n] = " + std::to_string(nnz) + " entries, got " +
                          std::to_string(indices.shape(0)) + " and " + std::to_string(data.shape(0)));
  const int64_t* ix = indices.data();
  for (int64_t p = 0; p < nnz; ++p)
    if (ix[p] < 0 || ix[p] >= n)
      throw py::value_error("indices: entry " + std::to_string(p) + " = " + std::to_string(ix[p]) +
                            " is not a column in [0, " + std::to_string(n) + ")");
  py::array_t<int64_t> labels(n);
  int64_t* lp = labels.mutable_data();
  const float* dp = data.data();
  const float e = static_cast<float>(eps);  // compared in float32, like scikit-learn on a float32 matrix
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::dbscan_cpu(ip, ix, dp, n, e, min_samples, lp, nt);
  }
  return labels;
}

}  // namespace

void register_dbscan(py::module_& m) {
  m.def("dbscan", &dbscan, py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("n"), py::arg("eps"),
        py::arg("min_samples"),
        "DBSCAN on CSR distances (int64 indptr [n+1], int64 indices, float32 data): core when the stored entries "
        "d <= eps of the row (the diagonal when stored so, a repeated entry each time) number min_samples; "
        "union-find over core-core edges; labels int64 [n], -1 for noise.");
}

}  // namespace hilcore_bindings
