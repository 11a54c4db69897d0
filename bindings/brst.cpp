// hilcore._native: brst_scan (row arg-max + column max, CPU).
#include "common.h"

#include "cpu/brst_cpu.h"

namespace hilcore_bindings {
namespace {

using f32 = py::array_t<float>;
using i64 = py::array_t<int64_t>;

py::tuple brst_scan(const f32& xb, const f32& protos, const py::object& rows_obj) {
  check_array(xb, "xb", 2);
  check_array(protos, "protos", 2);
  const int64_t n = xb.shape(0), d = xb.shape(1), c = protos.shape(0);
  if (protos.shape(1) != d) throw py::value_error("protos: expected as many columns as xb");
  if (c == 0) throw py::value_error("protos: expected at least one prototype");
  i64 rows;
  int64_t m = n;
  const int64_t* idx = optional_row_ids(rows_obj, n, rows, m);
  i64 best(m);
  f32 best_sim(m), col_max(c);
  int st;
  {
    py::gil_scoped_release nogil;
    st = hilcore::brst_cpu(xb.data(), m, protos.data(), c, d, best.mutable_data(), best_sim.mutable_data(),
                           col_max.mutable_data(), idx);
  }
  check_status(st, "brst_cpu");
  return py::make_tuple(best, best_sim, col_max);
}

}  // namespace

void register_brst(py::module_& m) {
  m.def("brst_cpu_path", []() { return std::string(hilcore::brst_cpu_path()); },
        "the BRST register tile in use: 'avx512', 'avx2' or 'portable' (same bits)");
  m.def("brst_cpu_paths", []() {
    py::list paths;
    for (const char* p : {"avx512", "avx2", "portable"})
      if (hilcore::brst_cpu_path_available(p)) paths.append(p);
    return paths;
  }, "the BRST register tiles this build and CPU can run, fastest first");
  m.def("brst_set_cpu_path", [](const std::string& name) {
    const int st = hilcore::brst_set_cpu_path(name.c_str());
    if (st == 1)
      throw py::value_error("name: expected 'auto', 'avx512', 'avx2' or 'portable', got '" + name + "'");
    if (st == 2)
      throw py::value_error("name: the '" + name + "' BRST tile needs " +
                            (name == "avx2" ? "AVX2 and FMA" : "AVX-512F with the zmm state enabled by the OS") +
                            "; this build and CPU have not");
  }, py::arg("name"), "choose the BRST register tile ('auto', 'avx512', 'avx2', 'portable'); for tests");
  m.def("brst_scan", &brst_scan, py::arg("xb"), py::arg("protos"), py::arg("rows") = py::none(),
        "(best [M] int64, best_sim [M] float32, col_max [C] float32) over xb[rows] @ protos.T (rows: int64 row "
        "ids, default every row of xb, read in place), ties to the lower column");
}
}  // namespace hilcore_bindings
