// hilcore._native.memory_update: the sequential momentum update of a memory bank, in place.
#include <string>

#include "common.h"
#include "cpu/memory_cpu.h"

namespace hilcore_bindings {

namespace {

template <typename T>
void memory_update_typed(py::array mem_obj, py::array x_obj, const py::array_t<int64_t>& targets, double momentum) {
  auto mem = py::reinterpret_borrow<py::array_t<T>>(mem_obj);
  auto x = py::reinterpret_borrow<py::array_t<T>>(x_obj);
  check_array(mem, "memory", 3);
  check_array(x, "x", 2);
  check_array(targets, "targets", 1);
  if (!mem.writeable()) throw py::value_error("memory: expected a writeable array");
  const int64_t rows = mem.shape(0), slots = mem.shape(1), dim = mem.shape(2), b = x.shape(0);
  if (x.shape(1) != dim)
    throw py::value_error("x: expected " + std::to_string(dim) + " columns like memory, got " +
                          std::to_string(x.shape(1)));
  if (targets.shape(0) != b)
    throw py::value_error("targets: expected " + std::to_string(b) + " ids (one per row of x), got " +
                          std::to_string(targets.shape(0)));
  if (!(momentum >= 0.0 && momentum <= 1.0))
    throw py::value_error("momentum: expected a number in [0, 1], got " + std::to_string(momentum));
  T* m = mem.mutable_data();
  const T* xp = x.data();
  const int64_t* t = targets.data();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::memory_update_cpu(m, rows, slots, dim, xp, t, b, momentum);
  }
}

void memory_update(const py::object& mem_obj, const py::object& x_obj, const py::object& t_obj, double momentum) {
  if (!py::isinstance<py::array>(mem_obj)) throw py::value_error("memory: expected a NumPy array");
  if (!py::isinstance<py::array>(x_obj)) throw py::value_error("x: expected a NumPy array");
  if (!py::isinstance<py::array_t<int64_t>>(t_obj)) throw py::value_error("targets: expected an int64 NumPy array");
  auto mem = py::reinterpret_borrow<py::array>(mem_obj);
  auto x = py::reinterpret_borrow<py::array>(x_obj);
  auto t = py::reinterpret_borrow<py::array_t<int64_t>>(t_obj);
  if (py::isinstance<py::array_t<float>>(mem_obj)) {
    if (!py::isinstance<py::array_t<float>>(x_obj)) throw py::value_error("x: expected float32 like memory");
    memory_update_typed<float>(mem, x, t, momentum);
  } else if (py::isinstance<py::array_t<double>>(mem_obj)) {
    if (!py::isinstance<py::array_t<double>>(x_obj)) throw py::value_error("x: expected float64 like memory");
    memory_update_typed<double>(mem, x, t, momentum);
  } else {
    throw py::value_error("memory: expected dtype float32 or float64, got " + std::string(py::str(mem.dtype())));
  }
}

}  // namespace

void register_memory(py::module_& m) {
  m.def("memory_update", &memory_update, py::arg("memory"), py::arg("x"), py::arg("targets"), py::arg("momentum"),
        "In-place momentum update of memory [R, S, D] (float32/float64, C-contiguous) with the unit rows x [B, D] "
        "(same dtype) and targets [B] (int64): per sample in batch order, the slot of row targets[i] with the "
        "largest dot product (lowest on ties) becomes normalize(mu * m + (1 - mu) * x).");
}

}  // namespace hilcore_bindings
