// hilcore._native: brst_scan (row arg-max + column max, CPU).
#include "common.h"

#include "cpu/brst_cpu.h"

namespace hilcore_bindings {
namespace {

using f32 = py::array_t<float>;
using i64 = py::array_t<int64_t>;

py::tuple brst_scan(const f32& xb, const f32& protos) {
  check_array(xb, "xb", 2);
  check_array(protos, "protos", 2);
  const int64_t m = xb.shape(0), d = xb.shape(1), c = protos.shape(0);
  if (protos.shape(1) != d) throw py::value_error("protos: expected as many columns as xb");
  if (c == 0) throw py::value_error("protos: expected at least one prototype");
  i64 best(m);
  f32 best_sim(m), col_max(c);
  int st;
  {
    py::gil_scoped_release nogil;
    st = hilcore::brst_cpu(xb.data(), m, protos.data(), c, d, best.mutable_data(), best_sim.mutable_data(),
                           col_max.mutable_data());
  }
  check_status(st, "brst_cpu");
  return py::make_tuple(best, best_sim, col_max);
}

}  // namespace

void register_brst(py::module_& m) {
  m.def("brst_scan", &brst_scan, py::arg("xb"), py::arg("protos"),
        "(best [M] int64, best_sim [M] float32, col_max [C] float32) over xb @ protos.T, ties to the lower column");
}
}  // namespace hilcore_bindings
