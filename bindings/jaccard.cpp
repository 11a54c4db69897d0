// hilcore._native.jaccard: sparse k-reciprocal Jaccard distance from a ranking.
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "cpu/jaccard_cpu.h"

namespace hilcore_bindings {

namespace {

// Hand a vector to NumPy without copying; the array owns it.
template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule base(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
                        owned->data(), base);
}

// The progress function of jaccard_cpu from a Python callable (None: none): called on the calling
// thread between its rows, the GIL taken only for the call (an exception it raises ends the run).
hilcore::JaccardProgress progress_of(const py::object& progress, int64_t block_rows) {
  hilcore::JaccardProgress prog;
  if (progress.is_none()) return prog;
  if (!PyCallable_Check(progress.ptr()))
    throw py::type_error("progress: expected a callable (done, total) or None, got " +
                         std::string(py::str(py::type::of(progress).attr("__name__"))));
  if (block_rows < 1) throw py::value_error("block_rows: expected >= 1, got " + std::to_string(block_rows));
  py::function f = py::reinterpret_borrow<py::function>(progress);
  prog.fn = [f](int64_t done, int64_t total) {
    py::gil_scoped_acquire gil;
    f(done, total);
  };
  prog.block_rows = block_rows;
  return prog;
}

py::tuple jaccard(const py::object& x_obj, const py::object& rank_obj, int64_t k1, int64_t k2,
                  double max_distance, const py::object& progress, int64_t block_rows) {
  auto x = expect_array<float>(x_obj, "x", 2, "float32");
  auto rank = expect_array<int64_t>(rank_obj, "rank", 2, "int64");
  const int64_t n = x.shape(0), d = x.shape(1);
  if (n < 1 || d < 1) throw py::value_error("x: expected a non-empty [N, D] array");
  if (n > INT32_MAX) throw py::value_error("x: at most 2^31 - 1 rows are supported");
  if (rank.shape(0) != n)
    throw py::value_error("rank: expected " + std::to_string(n) + " rows like x, got " +
                          std::to_string(rank.shape(0)));
  if (k1 < 1 || k1 > n || k1 > rank.shape(1))
    throw py::value_error("k1: expected 1 <= k1 <= min(N, rank columns) = " +
                          std::to_string(std::min<int64_t>(n, rank.shape(1))) + ", got " + std::to_string(k1));
  if (k2 < 1 || k2 > k1)
    throw py::value_error("k2: expected 1 <= k2 <= k1 = " + std::to_string(k1) + ", got " + std::to_string(k2));
  if (!(max_distance >= 0)) throw py::value_error("max_distance: expected a number >= 0 (inf keeps every pair)");
  const int64_t ld = rank.shape(1);
  const int64_t* r = rank.data();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < k1; ++a) {
      const int64_t j = r[i * ld + a];
      if (j < 0 || j >= n)
        throw py::value_error("rank: entry [" + std::to_string(i) + ", " + std::to_string(a) + "] = " +
                              std::to_string(j) + " is not a row index in [0, " + std::to_string(n) + ")");
    }
  const float* xp = x.data();
  const float md = static_cast<float>(max_distance);  // kept iff d <= md in float32, like torch/NumPy
  const int nt = num_threads();
  const hilcore::JaccardProgress prog = progress_of(progress, block_rows);  // (released with the GIL held)
  hilcore::JaccardCsr out;
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::jaccard_cpu(xp, n, d, r, ld, k1, k2, md, nt, &out, &prog);
  }
  py::tuple seconds = py::make_tuple(out.seconds[0], out.seconds[1], out.seconds[2], out.seconds[3]);
  return py::make_tuple(to_numpy(std::move(out.indptr)), to_numpy(std::move(out.indices)),
                        to_numpy(std::move(out.data)), seconds);
}

py::array_t<float> dot_rows(const py::object& a_obj, const py::object& b_obj) {
  auto a = expect_array<float>(a_obj, "a", 2, "float32");
  auto b = expect_array<float>(b_obj, "b", 2, "float32");
  if (a.shape(0) != b.shape(0) || a.shape(1) != b.shape(1))
    throw py::value_error("b: expected the shape of a, [" + std::to_string(a.shape(0)) + ", " +
                          std::to_string(a.shape(1)) + "]");
  py::array_t<float> out(a.shape(0));
  hilcore::jaccard_dot_rows(a.data(), b.data(), a.shape(0), a.shape(1), out.mutable_data());
  return out;
}

py::array_t<float> exp_f32(const py::object& z_obj) {
  auto z = expect_array<float>(z_obj, "z", 1, "float32");
  py::array_t<float> out(z.shape(0));
  hilcore::jaccard_exp_f32(z.data(), z.shape(0), out.mutable_data());
  return out;
}

}  // namespace

void register_jaccard(py::module_& m) {
  m.def("jaccard_dot_rows", &dot_rows, py::arg("a"), py::arg("b"),
        "Row-wise float32 dot products of two [m, D] float32 arrays in the Jaccard stages' order "
        "(docs/design.md, 'Summation orders').");
  m.def("jaccard_exp_f32", &exp_f32, py::arg("z"),
        "float32 exp of a 1-D float32 array as the Jaccard weights compute it (float64 operations only).");
  m.def("jaccard", &jaccard, py::arg("x"), py::arg("rank"), py::arg("k1"), py::arg("k2"), py::arg("max_distance"),
        py::arg("progress") = py::none(), py::arg("block_rows") = 4096,
        "Sparse k-reciprocal Jaccard distance. x: float32 [N, D] L2-normalised; rank: int64 [N, >=k1] self-search "
        "ranking (self first). Returns (indptr int64 [N+1], indices int64 [nnz], data float32 [nnz], "
        "seconds per stage (reciprocal+weights, query expansion, inverted index, jaccard)). progress: None or "
        "a callable progress(done, total), called on the calling thread each time another block_rows rows "
        "of a row pass (expansion, query expansion when k2 > 1, pairs) are finished and after each pass, "
        "done counting the rows over the passes (total = passes * N); the result is the same with or without it.");
}

}  // namespace hilcore_bindings
