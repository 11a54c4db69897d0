// hilcore._native: mccl_forward / mccl_backward (multi-centre contrastive loss, CPU, float32).
#include <string>

#include "common.h"
#include "cpu/mccl_cpu.h"

namespace hilcore_bindings {
namespace {

using f32 = py::array_t<float>;
using i64 = py::array_t<int64_t>;

void check_sizes(const f32& x, const f32& mem, double eps, double margin) {
  if (mem.shape(0) < 1 || mem.shape(1) < 1 || mem.shape(2) < 1)
    throw py::value_error("memory: expected a non-empty [C, S, D] array");
  if (x.shape(1) != mem.shape(2))
    throw py::value_error("x: expected " + std::to_string(mem.shape(2)) + " columns like memory, got " +
                          std::to_string(x.shape(1)));
  if (!(eps > 0.0)) throw py::value_error("eps: expected a positive number, got " + std::to_string(eps));
  if (!(margin >= 0.0)) throw py::value_error("margin: expected a number >= 0, got " + std::to_string(margin));
}

i64 expect_vector_i64(const py::object& obj, const char* name, int64_t n) {
  auto a = expect_array<int64_t>(obj, name, 1, "int64");
  if (a.shape(0) != n)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(n) + " entries, got " +
                          std::to_string(a.shape(0)));
  return a;
}

f32 expect_vector_f32(const py::object& obj, const char* name, int64_t n) {
  auto a = expect_array<float>(obj, name, 1, "float32");
  if (a.shape(0) != n)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(n) + " entries, got " +
                          std::to_string(a.shape(0)));
  return a;
}

py::tuple mccl_forward(const py::object& x_obj, const py::object& mem_obj, double eps, double margin) {
  auto x = expect_array<float>(x_obj, "x", 2, "float32");
  auto mem = expect_array<float>(mem_obj, "memory", 3, "float32");
  check_sizes(x, mem, eps, margin);
  const int64_t b = x.shape(0), c = mem.shape(0), s = mem.shape(1), d = mem.shape(2);
  f32 loss(b), pos(b), neg(b);
  i64 cstar(b);
  const float* xp = x.data();
  const float* mp = mem.data();
  float* lp = loss.mutable_data();
  float* pp = pos.mutable_data();
  float* np_ = neg.mutable_data();
  int64_t* cp = cstar.mutable_data();
  {
    py::gil_scoped_release nogil;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::mccl_forward_cpu(xp, b, mp, c, s, d, eps, margin, lp, cp, pp, np_);
  }
  return py::make_tuple(loss, cstar, pos, neg);
}

f32 mccl_backward(const py::object& x_obj, const py::object& mem_obj, const py::object& cstar_obj,
                  const py::object& pos_obj, const py::object& neg_obj, const py::object& g_obj, double eps,
                  double margin) {
  auto x = expect_array<float>(x_obj, "x", 2, "float32");
  auto mem = expect_array<float>(mem_obj, "memory", 3, "float32");
  check_sizes(x, mem, eps, margin);
  const int64_t b = x.shape(0), c = mem.shape(0), s = mem.shape(1), d = mem.shape(2);
  auto cstar = expect_vector_i64(cstar_obj, "cstar", b);
  auto pos = expect_vector_f32(pos_obj, "pos", b);
  auto neg = expect_vector_f32(neg_obj, "neg", b);
  auto g = expect_vector_f32(g_obj, "grad_loss", b);
  f32 grad({b, d});
  const float* xp = x.data();
  const float* mp = mem.data();
  const int64_t* cp = cstar.data();
  const float* pp = pos.data();
  const float* np_ = neg.data();
  const float* gp = g.data();
  float* out = grad.mutable_data();
  {
    py::gil_scoped_release nogil;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::mccl_backward_cpu(xp, b, mp, c, s, d, eps, margin, cp, pp, np_, gp, out);
  }
  return grad;
}

}  // namespace

void register_mccl(py::module_& m) {
  m.def("mccl_forward", &mccl_forward, py::arg("x"), py::arg("memory"), py::arg("eps"), py::arg("margin"),
        "(loss, cstar, pos, neg), each [B] (cstar int64, the rest float32): the per-sample MCCL of the unit rows "
        "x [B, D] against memory [C, S, D] (float32, C-contiguous), d = sqrt(||x - M||^2 + eps), "
        "loss = -log(pos / (pos + neg + margin)).");
  m.def("mccl_backward", &mccl_backward, py::arg("x"), py::arg("memory"), py::arg("cstar"), py::arg("pos"),
        py::arg("neg"), py::arg("grad_loss"), py::arg("eps"), py::arg("margin"),
        "dL/dx [B, D] float32 for the upstream per-sample gradients grad_loss [B], given mccl_forward's cstar, pos "
        "and neg; recomputes the distances one cluster at a time.");
}

}  // namespace hilcore_bindings
