// hilcore._native: cluster_centers and kmeans_segments (CPU).
#include "common.h"

#include <vector>

#include "cpu/subcluster_cpu.h"

namespace hilcore_bindings {
namespace {

using f32 = py::array_t<float>;
using f64 = py::array_t<double>;
using i64 = py::array_t<int64_t>;

f32 cluster_centers(const f32& x, const i64& labels, int64_t c) {
  check_array(x, "x", 2);
  check_array(labels, "labels", 1);
  const int64_t n = x.shape(0), d = x.shape(1);
  if (labels.shape(0) != n) throw py::value_error("labels: expected one label per row of x");
  if (c <= 0) throw py::value_error("c: expected at least one cluster");
  f32 out({c, d});
  int st;
  {
    py::gil_scoped_release nogil;
    st = hilcore::cluster_centers_cpu(x.data(), n, d, labels.data(), c, out.mutable_data());
  }
  check_status(st, "cluster_centers_cpu");
  return out;
}

py::tuple kmeans_segments(const f32& xm, const i64& starts, const i64& sizes, int64_t k, int64_t iters,
                          const f64& u, bool bounded, const py::object& rows_obj, const py::object& out_obj,
                          const py::object& out_ids_obj) {
  check_array(xm, "xm", 2);
  check_array(starts, "starts", 1);
  check_array(sizes, "sizes", 1);
  check_array(u, "u", 3);
  const int64_t n = xm.shape(0), d = xm.shape(1), e = starts.shape(0);
  int64_t m = n;
  i64 rows;
  const int64_t* idx = optional_row_ids(rows_obj, n, rows, m);
  if (sizes.shape(0) != e) throw py::value_error("sizes: expected as many entries as starts");
  if (u.shape(0) != e || u.shape(2) != k) throw py::value_error("u: expected shape [E, runs, k]");
  const int64_t runs = u.shape(1);
  f32 cen;
  const int64_t* cen_rows = nullptr;
  i64 out_ids;
  if (out_obj.is_none() != out_ids_obj.is_none()) throw py::value_error("out, out_ids: pass both or neither");
  if (out_obj.is_none()) {
    cen = f32({e, k, d});
  } else {
    cen = expect_array<float>(out_obj, "out", 3, "float32", true);
    if (cen.shape(1) != k || cen.shape(2) != d) throw py::value_error("out: expected shape [C, k, D]");
    out_ids = expect_array<int64_t>(out_ids_obj, "out_ids", 1, "int64");
    if (out_ids.shape(0) != e) throw py::value_error("out_ids: expected one row of out per segment");
    cen_rows = out_ids.data();
    std::vector<char> taken(static_cast<size_t>(cen.shape(0)), 0);  // segments run in parallel: one row each
    for (int64_t s = 0; s < e; ++s) {
      if (cen_rows[s] < 0 || cen_rows[s] >= cen.shape(0))
        throw py::value_error("out_ids: expected rows of out in [0, " + std::to_string(cen.shape(0)) + "), got " +
                              std::to_string(cen_rows[s]));
      if (taken[cen_rows[s]]++)
        throw py::value_error("out_ids: expected distinct rows of out (segments are written in parallel), row " +
                              std::to_string(cen_rows[s]) + " appears twice");
    }
  }
  i64 cnt({e, k}), first({e, k}), evals(e);
  int st;
  {
    py::gil_scoped_release nogil;
    st = hilcore::kmeans_segments_cpu(xm.data(), m, d, starts.data(), sizes.data(), e, k, runs, iters, u.data(),
                                      bounded, cen.mutable_data(), cnt.mutable_data(), first.mutable_data(),
                                      evals.mutable_data(), idx, cen_rows);
  }
  check_status(st, "kmeans_segments_cpu");
  return py::make_tuple(cen, cnt, first, evals);
}

}  // namespace

void register_subcluster(py::module_& m) {
  m.def("cluster_centers", &cluster_centers, py::arg("x"), py::arg("labels"), py::arg("c"),
        "[C, D] float32 mean of the rows of each cluster (labels -1 ignored)");
  m.def("kmeans_segments", &kmeans_segments, py::arg("xm"), py::arg("starts"), py::arg("sizes"), py::arg("k"),
        py::arg("iters"), py::arg("u"), py::arg("bounded") = true, py::arg("rows") = py::none(),
        py::arg("out") = py::none(), py::arg("out_ids") = py::none(),
        "Batched k-means inside row segments; returns (centres [E,k,D], counts [E,k], first position [E,k], "
        "distance evaluations [E]); bounded=False runs the plain Lloyd loop (same results, every distance); "
        "rows: int64 row ids into xm, the members (segments are ranges of them), read in place; out [C, k, D] "
        "float32 and out_ids [E]: segment s's centres written to out[out_ids[s]] (returned as the centres)");
}
}  // namespace hilcore_bindings
