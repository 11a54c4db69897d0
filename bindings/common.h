// Shared helpers for the binding layer: input checks that raise Python
// errors naming the argument, and the per-op registration hooks.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace hilcore_bindings {
namespace py = pybind11;

int num_threads();

void register_knn(py::module_& m);
void register_jaccard(py::module_& m);
void register_dbscan(py::module_& m);
void register_subcluster(py::module_& m);
void register_memory(py::module_& m);
void register_brst(py::module_& m);
void register_mccl(py::module_& m);
void register_compat(py::module_& m);
#ifdef HILCORE_WITH_CUDA
void register_cuda(py::module_& m);
#endif

// CHECK_*-style validation: raise ValueError naming the argument.
template <typename T>
inline void check_array(const py::array_t<T>& a, const char* name, int ndim) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) +
                          "-D array, got " + std::to_string(a.ndim()) + "-D");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
}

// `obj` as a C-contiguous ndim-D NumPy array of exactly dtype T (optionally writeable),
// else ValueError naming the argument.
template <typename T>
inline py::array_t<T> expect_array(const py::object& obj, const char* name, int ndim, const char* dtype_name,
                            bool writeable = false) {
  if (!py::isinstance<py::array>(obj))
    throw py::value_error(std::string(name) + ": expected a NumPy array, got " +
                          std::string(py::str(obj.get_type().attr("__name__"))));
  if (!py::isinstance<py::array_t<T>>(obj))
    throw py::value_error(std::string(name) + ": expected dtype " + dtype_name + ", got " +
                          std::string(py::str(obj.attr("dtype"))));
  auto a = py::reinterpret_borrow<py::array_t<T>>(obj);
  check_array(a, name, ndim);
  if (writeable && !a.writeable()) throw py::value_error(std::string(name) + ": expected a writeable array");
  return a;
}

// Optional row ids into an n-row array (`None`: every row, in order): the checked int64 ids in `holder`,
// their pointer (nullptr for None) and their count in `m` (n for None); ValueError naming `rows` otherwise.
inline const int64_t* optional_row_ids(const py::object& rows_obj, int64_t n, py::array_t<int64_t>& holder,
                                       int64_t& m) {
  m = n;
  if (rows_obj.is_none()) return nullptr;
  holder = expect_array<int64_t>(rows_obj, "rows", 1, "int64");
  m = holder.shape(0);
  const int64_t* idx = holder.data();
  for (int64_t r = 0; r < m; ++r)
    if (idx[r] < 0 || idx[r] >= n)
      throw py::value_error("rows: expected row ids in [0, " + std::to_string(n) + "), got rows[" +
                            std::to_string(r) + "] = " + std::to_string(idx[r]));
  return idx;
}

inline void check_status(int status, const char* what) {
  if (status != 0)
    throw std::runtime_error(std::string(what) + " failed with status " + std::to_string(status));
}

}  // namespace hilcore_bindings
