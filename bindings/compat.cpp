// hilcore._native.compat_*: the kernels of hilcore.compat (the widely used dense Jaccard arithmetic; the rows of
// a dense precomputed distance matrix within eps).
#include <cstdlib>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "cpu/compat_cpu.h"
#include "cpu/jaccard_cpu.h"

namespace hilcore_bindings {

namespace {

// An uninitialised [n, n] array in memory from malloc, not NumPy's allocator. NumPy asks for transparent huge
// pages on large arrays (madvise); where THP is "madvise" (many VMs) a fresh N x N matrix then often cannot reuse
// the memory the previous epoch's matrix just freed (no free 2 MB blocks) and faults in pages the host has to
// back first: at N = 12,000 (576 MB) 0.2 s or 0.95 s for the same write, alternating from call to call on this
// project's VM; small pages from the freed memory take 0.2 s every time. The values are the same either way.
py::array plain_pages_matrix(int64_t n, const py::dtype& dt) {
  const size_t bytes = static_cast<size_t>(n) * static_cast<size_t>(n) * static_cast<size_t>(dt.itemsize());
  void* buf = std::malloc(bytes > 0 ? bytes : 1);
  if (buf == nullptr) throw std::bad_alloc();
  py::capsule base(buf, [](void* p) { std::free(p); });
  const py::ssize_t item = dt.itemsize();
  return py::array(dt, {static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(n)},
                   {static_cast<py::ssize_t>(n) * item, item}, buf, base);
}

template <typename T>
py::array_t<T> owned_array(std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule base(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
                        owned->data(), base);
}

py::array dense_jaccard(const py::object& indptr_obj, const py::object& indices_obj, const py::object& vals_obj,
                        int64_t n, bool half) {
  auto indptr = expect_array<int64_t>(indptr_obj, "indptr", 1, "int64");
  auto indices = expect_array<int64_t>(indices_obj, "indices", 1, "int64");
  auto vals = expect_array<float>(vals_obj, "vals", 1, "float32");
  if (n < 0 || indptr.shape(0) != n + 1) throw py::value_error("indptr: expected length n + 1");
  const int64_t* ip = indptr.data();
  if (ip[0] != 0) throw py::value_error("indptr: expected indptr[0] == 0");
  for (int64_t i = 0; i < n; ++i)
    if (ip[i + 1] < ip[i]) throw py::value_error("indptr: expected non-decreasing offsets");
  const int64_t nnz = ip[n];
  if (indices.shape(0) != nnz || vals.shape(0) != nnz)
    throw py::value_error("indices/vals: expected indptr[n] entries each");
  const int64_t* ix = indices.data();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = ip[i]; p < ip[i + 1]; ++p)
      if (ix[p] < 0 || ix[p] >= n || (p > ip[i] && ix[p] <= ix[p - 1]))
        throw py::value_error("indices: expected strictly ascending columns in [0, n) per row");
  py::array out = plain_pages_matrix(n, half ? py::dtype("float16") : py::dtype("float32"));
  void* op = out.mutable_data();
  const float* vp = vals.data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::compat_dense_jaccard(ip, ix, vp, n, half, op, nt);
  }
  return out;
}

// kind (0 float32, 1 float64, 2 float16) and row stride (elements) of a 2-D array of contiguous rows
std::pair<int, int64_t> dense_layout(const py::array& x) {
  if (x.ndim() != 2) throw py::value_error("x: expected a 2-D array");
  int kind;
  const std::string dt = py::str(x.dtype());
  if (dt == "float32") kind = 0;
  else if (dt == "float64") kind = 1;
  else if (dt == "float16") kind = 2;
  else throw py::value_error("x: expected float16, float32 or float64, got " + dt);
  const int64_t item = x.itemsize(), rows = x.shape(0), n = x.shape(1);
  if (rows > 0 && n > 0 && (x.strides(1) != item || x.strides(0) % item != 0 || x.strides(0) / item < n))
    throw py::value_error("x: expected rows of contiguous elements");
  return {kind, rows > 0 && n > 0 ? x.strides(0) / item : n};
}

py::tuple query_expansion(const py::object& indptr_obj, const py::object& indices_obj, const py::object& vals_obj,
                          const py::object& rank_obj, bool half) {
  auto indptr = expect_array<int64_t>(indptr_obj, "indptr", 1, "int64");
  auto indices = expect_array<int64_t>(indices_obj, "indices", 1, "int64");
  auto vals = expect_array<float>(vals_obj, "vals", 1, "float32");
  auto rank = expect_array<int64_t>(rank_obj, "rank", 2, "int64");
  const int64_t n = indptr.shape(0) - 1, k2 = rank.shape(1);
  if (n < 0 || rank.shape(0) != n || k2 < 1)
    throw py::value_error("rank: expected [n, k2 >= 1] with n = len(indptr) - 1");
  const int64_t* ip = indptr.data();
  const int64_t* ix = indices.data();
  const int64_t* rp = rank.data();
  if (ip[0] != 0 || indices.shape(0) != ip[n] || vals.shape(0) != ip[n])
    throw py::value_error("indptr: expected indptr[0] == 0 and indptr[n] == len(indices) == len(vals)");
  for (int64_t i = 0; i < n; ++i) {
    if (ip[i + 1] < ip[i]) throw py::value_error("indptr: expected non-decreasing offsets");
    for (int64_t p = ip[i]; p < ip[i + 1]; ++p)
      if (ix[p] < 0 || ix[p] >= n) throw py::value_error("indices: expected columns in [0, n)");
  }
  for (int64_t p = 0; p < n * k2; ++p)
    if (rp[p] < 0 || rp[p] >= n) throw py::value_error("rank: expected row indices in [0, n)");
  std::vector<int64_t> qptr, qidx;
  std::vector<float> qval;
  const float* vp = vals.data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;
    hilcore::compat_query_expansion(ip, ix, vp, rp, n, k2, half, &qptr, &qidx, &qval, nt);
  }
  return py::make_tuple(owned_array(std::move(qptr)), owned_array(std::move(qidx)), owned_array(std::move(qval)));
}

int csr_symmetric(const py::object& indptr_obj, const py::object& indices_obj) {
  auto indptr = expect_array<int64_t>(indptr_obj, "indptr", 1, "int64");
  auto indices = expect_array<int64_t>(indices_obj, "indices", 1, "int64");
  const int64_t n = indptr.shape(0) - 1;
  const int64_t* ip = indptr.data();
  const int64_t* ix = indices.data();
  if (n < 0 || ip[0] != 0 || ip[n] != indices.shape(0))
    throw py::value_error("indptr: expected indptr[0] == 0 and indptr[n] == len(indices)");
  for (int64_t i = 0; i < n; ++i)
    if (ip[i + 1] < ip[i]) throw py::value_error("indptr: expected non-decreasing offsets");
  for (int64_t p = 0; p < ip[n]; ++p)
    if (ix[p] < 0 || ix[p] >= n) throw py::value_error("indices: expected columns in [0, n)");
  const int nt = num_threads();
  py::gil_scoped_release release;
  return hilcore::csr_symmetric(ip, ix, n, nt);
}

py::tuple dense_eps_rows(const py::array& x, double eps) {
  if (x.ndim() != 2 || x.shape(0) != x.shape(1)) throw py::value_error("x: expected a square [N, N] array");
  const int64_t n = x.shape(0);
  const auto [kind, ld] = dense_layout(x);
  if (!(eps >= 0)) throw py::value_error("eps: expected a number >= 0");
  std::vector<int64_t> indptr, indices;
  py::array_t<uint64_t> prints(n);
  int64_t bad = -1;
  const void* xp = x.data();
  uint64_t* pp = prints.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::dense_eps_rows(xp, kind, n, ld, eps, &indptr, &indices, &bad, pp, nt);
  }
  if (bad >= 0) return py::make_tuple(py::none(), py::none(), bad, py::none());
  return py::make_tuple(owned_array(std::move(indptr)), owned_array(std::move(indices)), -1, prints);
}

py::array_t<uint64_t> row_fingerprints(const py::array& x) {
  const auto [kind, ld] = dense_layout(x);
  const int64_t rows = x.shape(0), n = x.shape(1);
  py::array_t<uint64_t> out(rows);
  const void* xp = x.data();
  uint64_t* op = out.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;
    hilcore::row_fingerprints(xp, kind, rows, n, ld, op, nt);
  }
  return out;
}

py::tuple expansion_sets(const py::object& rank_obj, int64_t k1) {
  auto rank = expect_array<int64_t>(rank_obj, "rank", 2, "int64");
  const int64_t n = rank.shape(0), ld = rank.shape(1);
  if (n >= (int64_t{1} << 31)) throw py::value_error("rank: expected fewer than 2^31 rows");
  if (k1 < 1 || k1 > n || k1 > ld)
    throw py::value_error("k1: expected 1 <= k1 <= min(N, rank columns) = " + std::to_string(std::min(n, ld)) +
                          ", got " + std::to_string(k1));
  const int64_t* r = rank.data();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < k1; ++a)
      if (r[i * ld + a] < 0 || r[i * ld + a] >= n)
        throw py::value_error("rank: entry [" + std::to_string(i) + ", " + std::to_string(a) + "] is not a row "
                              "index in [0, " + std::to_string(n) + ")");
  hilcore::JaccardRows e;
  const int nt = num_threads();
  {
    py::gil_scoped_release release;
    hilcore::jaccard_cpu_expansion_sets(r, n, ld, k1, nt, &e);
  }
  std::vector<int64_t> idx(e.idx.begin(), e.idx.end());
  return py::make_tuple(owned_array(std::move(e.ptr)), owned_array(std::move(idx)));
}

}  // namespace

void register_compat(py::module_& m) {
  m.def("compat_dense_jaccard", &dense_jaccard, py::arg("indptr"), py::arg("indices"), py::arg("vals"), py::arg("n"),
        py::arg("half"),
        "The widely used compute_jaccard_distance's dense [n, n] matrix from its V' (CSR, columns ascending): "
        "float32 (half=False) or float16 (half=True) arithmetic, operation by operation.");
  m.def("compat_dense_eps_rows", &dense_eps_rows, py::arg("x"), py::arg("eps"),
        "(indptr, indices, -1): the entries x[i, j] <= eps (float64 compare) of a dense square float16/32/64 "
        "matrix, row by row, and the rows' fingerprints (uint64 [N], compat_row_fingerprints'); (None, None, row, "
        "None) when that row is the first with a NaN, inf or negative value.");
  m.def("compat_row_fingerprints", &row_fingerprints, py::arg("x"),
        "uint64 [rows]: a fingerprint of each row's bits (kernels/cpu/compat_cpu.h, row_fingerprints) of a 2-D "
        "float16/32/64 array of contiguous rows.");
  m.def("compat_query_expansion", &query_expansion, py::arg("indptr"), py::arg("indices"), py::arg("vals"),
        py::arg("rank"), py::arg("half"),
        "(qptr, qidx, qval): the widely used code's np.mean(V[rank[i, :k2]], axis=0) as CSR, zeros dropped "
        "(kernels/cpu/compat_cpu.h, compat_query_expansion).");
  m.def("compat_csr_symmetric", &csr_symmetric, py::arg("indptr"), py::arg("indices"),
        "1 when {(i, j): j in row i, j != i} is symmetric, 0 when not, -1 when a row is not strictly ascending.");
  m.def("compat_expansion_sets", &expansion_sets, py::arg("rank"), py::arg("k1"),
        "(indptr, indices) int64: the k-reciprocal expanded sets E(i) of a self-search ranking [N, >= k1] "
        "(sorted per row; the sets of hilcore's Jaccard stage 1).");
}

}  // namespace hilcore_bindings
