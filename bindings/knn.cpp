// hilcore._native kNN pieces: the running top-k merges of the blocked kNN
// (float32 tiles, gathered rows, int8 product tiles), int8 quantisation, and
// the exact rescoring + certification of int8 candidates.
#include <limits>

#include "common.h"
#include "cpu/cpu_features.h"
#include "cpu/knn_cpu.h"

namespace hilcore_bindings {

namespace {

std::string shape_str(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

void check_best(const py::array_t<float>& best_sim, const py::array_t<int64_t>& best_idx) {
  const int64_t n = best_sim.shape(0), k = best_sim.shape(1);
  if (best_idx.shape(0) != n || best_idx.shape(1) != k)
    throw py::value_error("best_idx: expected shape " + shape_str(n, k) + " like best_sim");
  if (k < 1) throw py::value_error("best_sim: expected at least one column (k >= 1)");
}

void check_col0(int64_t col0, int64_t c) {
  if (col0 < 0 || col0 > std::numeric_limits<int64_t>::max() - c)
    throw py::value_error("col0: expected a non-negative column offset, got " + std::to_string(col0));
}

void knn_topk_merge(const py::object& S_obj, int64_t row0, int64_t col0, const py::object& sim_obj,
                    const py::object& idx_obj, bool self_search) {
  auto S = expect_array<float>(S_obj, "S", 2, "float32");
  auto best_sim = expect_array<float>(sim_obj, "best_sim", 2, "float32", true);
  auto best_idx = expect_array<int64_t>(idx_obj, "best_idx", 2, "int64", true);
  const int64_t b = S.shape(0), c = S.shape(1), n = best_sim.shape(0), k = best_sim.shape(1);
  check_best(best_sim, best_idx);
  if (row0 < 0 || row0 + b > n)
    throw py::value_error("row0: tile rows [" + std::to_string(row0) + ", " + std::to_string(row0 + b) +
                          ") do not fit in " + std::to_string(n) + " rows");
  check_col0(col0, c);
  const float* s = S.data();
  float* bs = best_sim.mutable_data();
  int64_t* bi = best_idx.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::knn_topk_merge_cpu(s, b, c, row0, col0, bs, bi, n, k, self_search, nt);
  }
}

void knn_topk_merge_rows(const py::object& S_obj, const py::object& rows_obj, int64_t col0,
                         const py::object& sim_obj, const py::object& idx_obj, bool self_search) {
  auto S = expect_array<float>(S_obj, "S", 2, "float32");
  auto rows = expect_array<int64_t>(rows_obj, "row_ids", 1, "int64");
  auto best_sim = expect_array<float>(sim_obj, "best_sim", 2, "float32", true);
  auto best_idx = expect_array<int64_t>(idx_obj, "best_idx", 2, "int64", true);
  const int64_t b = S.shape(0), c = S.shape(1), k = best_sim.shape(1);
  check_best(best_sim, best_idx);
  if (rows.shape(0) != b)
    throw py::value_error("row_ids: expected " + std::to_string(b) + " entries (one per tile row), got " +
                          std::to_string(rows.shape(0)));
  if (best_sim.shape(0) != b)
    throw py::value_error("best_sim: expected " + std::to_string(b) + " rows (one per tile row), got " +
                          std::to_string(best_sim.shape(0)));
  check_col0(col0, c);
  const float* s = S.data();
  const int64_t* ri = rows.data();
  float* bs = best_sim.mutable_data();
  int64_t* bi = best_idx.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::knn_topk_merge_rows_cpu(s, b, c, ri, col0, bs, bi, k, self_search, nt);
  }
}

void knn_quantize(const py::object& x_obj, const py::object& q_obj, const py::object& scale_obj,
                  const py::object& xnorm_obj, const py::object& pnorm_obj, const py::object& enorm_obj) {
  auto x = expect_array<float>(x_obj, "x", 2, "float32");
  auto q = expect_array<int8_t>(q_obj, "q", 2, "int8", true);
  const int64_t n = x.shape(0), d = x.shape(1);
  if (d < 1) throw py::value_error("x: expected at least one column");
  if (q.shape(0) != n || q.shape(1) != d) throw py::value_error("q: expected shape " + shape_str(n, d) + " like x");
  py::array_t<float> outs[3];
  const char* names[3] = {"xnorm", "pnorm", "enorm"};
  const py::object* objs[3] = {&xnorm_obj, &pnorm_obj, &enorm_obj};
  auto scale = expect_array<float>(scale_obj, "scale", 1, "float32", true);
  if (scale.shape(0) != n) throw py::value_error("scale: expected " + std::to_string(n) + " entries");
  for (int t = 0; t < 3; ++t) {
    outs[t] = expect_array<float>(*objs[t], names[t], 1, "float32", true);
    if (outs[t].shape(0) != n)
      throw py::value_error(std::string(names[t]) + ": expected " + std::to_string(n) + " entries");
  }
  const float* xp = x.data();
  int8_t* qp = q.mutable_data();
  float* sp = scale.mutable_data();
  float *xn = outs[0].mutable_data(), *pn = outs[1].mutable_data(), *en = outs[2].mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::knn_quantize_cpu(xp, n, d, qp, sp, xn, pn, en, nt);
  }
}

void knn_topk_merge_i8(const py::object& S_obj, int64_t row0, int64_t col0, const py::object& rs_obj,
                       const py::object& cs_obj, const py::object& sim_obj, const py::object& idx_obj,
                       bool self_search, bool columns) {
  auto S = expect_array<int32_t>(S_obj, "S", 2, "int32");
  auto rs = expect_array<float>(rs_obj, "row_scale", 1, "float32");
  auto cs = expect_array<float>(cs_obj, "col_scale", 1, "float32");
  auto best_sim = expect_array<float>(sim_obj, "best_sim", 2, "float32", true);
  auto best_idx = expect_array<int64_t>(idx_obj, "best_idx", 2, "int64", true);
  const int64_t b = S.shape(0), c = S.shape(1), n = best_sim.shape(0), k = best_sim.shape(1);
  check_best(best_sim, best_idx);
  if (row0 < 0 || row0 + b > rs.shape(0))
    throw py::value_error("row0: tile rows [" + std::to_string(row0) + ", " + std::to_string(row0 + b) +
                          ") do not fit in row_scale of " + std::to_string(rs.shape(0)) + " entries");
  check_col0(col0, c);
  if (col0 + c > cs.shape(0))
    throw py::value_error("col0: tile columns [" + std::to_string(col0) + ", " + std::to_string(col0 + c) +
                          ") do not fit in col_scale of " + std::to_string(cs.shape(0)) + " entries");
  if (!columns && row0 + b > n)
    throw py::value_error("row0: tile rows [" + std::to_string(row0) + ", " + std::to_string(row0 + b) +
                          ") do not fit in " + std::to_string(n) + " rows of best_sim");
  if (columns && col0 + c > n)
    throw py::value_error("col0: tile columns [" + std::to_string(col0) + ", " + std::to_string(col0 + c) +
                          ") do not fit in " + std::to_string(n) + " rows of best_sim (column mode)");
  if (columns && self_search && b > 0 && c > 0 && row0 < col0 + c && col0 < row0 + b)
    throw py::value_error("columns: in self-search the column mode needs an off-diagonal tile (row and column "
                          "ranges disjoint)");
  const int32_t* s = S.data();
  const float *rp = rs.data(), *cp = cs.data();
  float* bs = best_sim.mutable_data();
  int64_t* bi = best_idx.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::knn_topk_merge_i8_cpu(s, b, c, row0, col0, rp, cp, bs, bi, n, k, self_search, columns, nt);
  }
}

void knn_refine_i8(const py::object& S_obj, const py::object& rows_obj, int64_t col0, const py::object& rs_obj,
                   const py::object& cs_obj, const py::object& bound_obj, const py::object& x_obj,
                   const py::object& y_obj, const py::object& sim_obj, const py::object& idx_obj, bool self_search,
                   const py::object& counts_obj, int64_t cap) {
  auto S = expect_array<int32_t>(S_obj, "S", 2, "int32");
  auto rows = expect_array<int64_t>(rows_obj, "row_ids", 1, "int64");
  auto rs = expect_array<float>(rs_obj, "row_scale", 1, "float32");
  auto cs = expect_array<float>(cs_obj, "col_scale", 1, "float32");
  auto bound = expect_array<float>(bound_obj, "bound", 1, "float32");
  auto x = expect_array<float>(x_obj, "x", 2, "float32");
  auto y = expect_array<float>(y_obj, "y", 2, "float32");
  auto best_sim = expect_array<float>(sim_obj, "best_sim", 2, "float32", true);
  auto best_idx = expect_array<int64_t>(idx_obj, "best_idx", 2, "int64", true);
  auto counts = expect_array<int64_t>(counts_obj, "counts", 1, "int64", true);
  const int64_t b = S.shape(0), c = S.shape(1), k = best_sim.shape(1), d = x.shape(1);
  check_best(best_sim, best_idx);
  for (auto* a : {&rs, &bound})
    if (a->shape(0) != b) throw py::value_error("row_scale/bound: expected " + std::to_string(b) + " entries");
  if (rows.shape(0) != b || counts.shape(0) != b || best_sim.shape(0) != b)
    throw py::value_error("row_ids: expected " + std::to_string(b) + " entries like counts and best_sim rows");
  check_col0(col0, c);
  if (col0 + c > cs.shape(0) || col0 + c > y.shape(0))
    throw py::value_error("col0: tile columns [" + std::to_string(col0) + ", " + std::to_string(col0 + c) +
                          ") do not fit in col_scale / y");
  if (y.shape(1) != d) throw py::value_error("y: expected " + std::to_string(d) + " columns like x");
  const int64_t* ri = rows.data();
  for (int64_t r = 0; r < b; ++r)
    if (ri[r] < 0 || ri[r] >= x.shape(0))
      throw py::value_error("row_ids: entry " + std::to_string(r) + " is not a row of x");
  const int32_t* sp = S.data();
  const float *rp = rs.data(), *cp = cs.data(), *bp = bound.data(), *xp = x.data(), *yp = y.data();
  float* bs = best_sim.mutable_data();
  int64_t* bi = best_idx.mutable_data();
  int64_t* cn = counts.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::knn_refine_i8_cpu(sp, b, c, ri, col0, rp, cp, bp, xp, yp, d, bs, bi, k, self_search, cn, cap,
                                      nt);
  }
}

py::int_ knn_rescore(const py::object& x_obj, const py::object& y_obj, const py::object& ci_obj,
                     const py::object& cs_obj, const py::object& bound_obj, bool self_search,
                     const py::object& oi_obj, const py::object& os_obj, const py::object& cert_obj,
                     const py::object& self_obj) {
  auto x = expect_array<float>(x_obj, "x", 2, "float32");
  auto y = expect_array<float>(y_obj, "y", 2, "float32");
  auto ci = expect_array<int64_t>(ci_obj, "cand_idx", 2, "int64");
  auto cs = expect_array<float>(cs_obj, "cand_sim", 2, "float32");
  auto bound = expect_array<float>(bound_obj, "bound", 1, "float32");
  auto oi = expect_array<int64_t>(oi_obj, "out_idx", 2, "int64", true);
  auto os = expect_array<float>(os_obj, "out_sim", 2, "float32", true);
  auto cert = expect_array<uint8_t>(cert_obj, "certified", 1, "uint8", true);
  const int64_t n = x.shape(0), d = x.shape(1), m = y.shape(0), kc = ci.shape(1), k = oi.shape(1);
  if (y.shape(1) != d) throw py::value_error("y: expected " + std::to_string(d) + " columns like x");
  if (m < 1) throw py::value_error("y: expected at least one row");
  py::array_t<int64_t> self_ids;
  const int64_t* sip = nullptr;
  if (!self_obj.is_none()) {
    self_ids = expect_array<int64_t>(self_obj, "self_ids", 1, "int64");
    if (self_ids.shape(0) != n) throw py::value_error("self_ids: expected " + std::to_string(n) + " entries");
    sip = self_ids.data();
  } else if (self_search && m != n) {
    throw py::value_error("y: self-search expects y to be x (same rows)");
  }
  if (ci.shape(0) != n) throw py::value_error("cand_idx: expected " + std::to_string(n) + " rows like x");
  if (cs.shape(0) != n || cs.shape(1) != kc)
    throw py::value_error("cand_sim: expected shape " + shape_str(n, kc) + " like cand_idx");
  if (bound.shape(0) != n) throw py::value_error("bound: expected " + std::to_string(n) + " entries");
  if (k < 1 || k > kc || kc > m)
    throw py::value_error("out_idx: expected 1 <= k <= candidates <= database rows, got k=" + std::to_string(k) +
                          ", candidates=" + std::to_string(kc) + ", rows=" + std::to_string(m));
  if (oi.shape(0) != n || os.shape(0) != n || os.shape(1) != k)
    throw py::value_error("out_sim: expected shape " + shape_str(n, k) + " like out_idx with " + std::to_string(n) +
                          " rows");
  if (cert.shape(0) != n) throw py::value_error("certified: expected " + std::to_string(n) + " entries");
  const float *xp = x.data(), *yp = y.data(), *csp = cs.data(), *bp = bound.data();
  const int64_t* cip = ci.data();
  int64_t* oip = oi.mutable_data();
  float* osp = os.mutable_data();
  uint8_t* cp = cert.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::knn_rescore_cpu(xp, yp, n, m, d, cip, csp, kc, bp, k, self_search, sip, oip, osp, cp, nt);
  }
  int64_t ncert = 0;
  for (int64_t i = 0; i < n; ++i) ncert += cp[i];
  return py::int_(ncert);
}

void knn_refine_f32(const py::object& S_obj, int64_t col0, const py::object& self_obj, const py::object& bound_obj,
                    const py::object& xq_obj, const py::object& y_obj, const py::object& sim_obj,
                    const py::object& idx_obj, const py::object& counts_obj) {
  auto S = expect_array<float>(S_obj, "S", 2, "float32");
  auto self_ids = expect_array<int64_t>(self_obj, "self_ids", 1, "int64");
  auto bound = expect_array<float>(bound_obj, "bound", 1, "float32");
  auto xq = expect_array<float>(xq_obj, "xq", 2, "float32");
  auto y = expect_array<float>(y_obj, "y", 2, "float32");
  auto best_sim = expect_array<float>(sim_obj, "best_sim", 2, "float32", true);
  auto best_idx = expect_array<int64_t>(idx_obj, "best_idx", 2, "int64", true);
  auto counts = expect_array<int64_t>(counts_obj, "counts", 1, "int64", true);
  const int64_t b = S.shape(0), c = S.shape(1), k = best_sim.shape(1), d = xq.shape(1);
  check_best(best_sim, best_idx);
  if (d < 1) throw py::value_error("xq: expected at least one column");
  if (xq.shape(0) != b || best_sim.shape(0) != b)
    throw py::value_error("xq: expected " + std::to_string(b) + " rows (one per tile row) like best_sim");
  for (auto* a : {&self_ids, &counts})
    if (a->shape(0) != b) throw py::value_error("self_ids/counts: expected " + std::to_string(b) + " entries");
  if (bound.shape(0) != b) throw py::value_error("bound: expected " + std::to_string(b) + " entries");
  check_col0(col0, c);
  if (col0 + c > y.shape(0))
    throw py::value_error("col0: tile columns [" + std::to_string(col0) + ", " + std::to_string(col0 + c) +
                          ") do not fit in y of " + std::to_string(y.shape(0)) + " rows");
  if (y.shape(1) != d) throw py::value_error("y: expected " + std::to_string(d) + " columns like xq");
  const float *sp = S.data(), *bp = bound.data(), *xp = xq.data(), *yp = y.data();
  const int64_t* si = self_ids.data();
  float* bs = best_sim.mutable_data();
  int64_t* bi = best_idx.mutable_data();
  int64_t* cn = counts.mutable_data();
  const int nt = num_threads();
  {
    py::gil_scoped_release release;  // a failed precondition throws hilcore::KernelError: ValueError
    hilcore::knn_refine_f32_cpu(sp, b, c, col0, si, bp, xp, yp, d, bs, bi, k, cn, nt);
  }
}

py::dict cpu_features() {
  const hilcore::CpuFeatures f = hilcore::cpu_features();
  py::dict d;
  d["arch"] = f.arch;
  d["avx2"] = f.avx2;
  d["fma"] = f.fma;
  d["avx512f"] = f.avx512f;
  d["avx512bw"] = f.avx512bw;
  d["avx512vnni"] = f.avx512vnni;
  d["avxvnni"] = f.avxvnni;
  py::list paths;
  for (const char* p : {"avx2", "scalar"})
    if (hilcore::knn_cpu_path_available(p)) paths.append(p);
  d["knn_paths"] = paths;
  d["knn_path"] = hilcore::knn_cpu_path();
  return d;
}

void knn_set_cpu_path(const std::string& name) {
  const int status = hilcore::knn_set_cpu_path(name.c_str());
  if (status == 1) throw py::value_error("name: expected 'auto', 'avx2' or 'scalar', got '" + name + "'");
  if (status == 2)
    throw py::value_error("name: the '" + name + "' kNN path is not available on this build and CPU (" +
                          std::string(hilcore::cpu_features().arch) + ")");
}

}  // namespace

void register_knn(py::module_& m) {
  m.def("cpu_features", &cpu_features,
        "The CPU's features as the kernels see them (arch, avx2, fma, avx512f, avx512bw, avx512vnni, avxvnni), "
        "the kNN row-kernel paths this build and CPU can run (knn_paths) and the one in use (knn_path).");
  m.def("knn_cpu_path", []() { return std::string(hilcore::knn_cpu_path()); },
        "The kNN row kernels in use: 'avx2' or 'scalar'.");
  m.def("knn_set_cpu_path", &knn_set_cpu_path, py::arg("name"),
        "Select the kNN row kernels: 'auto' (the fastest this CPU runs), 'avx2' or 'scalar' (for tests and "
        "benchmarks; every path returns the same bits).");
  m.def("knn_topk_merge", &knn_topk_merge, py::arg("S"), py::arg("row0"), py::arg("col0"), py::arg("best_sim"),
        py::arg("best_idx"), py::arg("self_search"),
        "Merge the similarity tile S [b, c] (rows row0.., columns col0..) into the sorted top-k lists "
        "best_sim/best_idx [N, k] (float32/int64, in place), key (sim desc, index asc); in self-search "
        "each row's own column ranks first.");
  m.def("knn_topk_merge_rows", &knn_topk_merge_rows, py::arg("S"), py::arg("row_ids"), py::arg("col0"),
        py::arg("best_sim"), py::arg("best_idx"), py::arg("self_search"),
        "As knn_topk_merge for gathered rows: tile row r (global index row_ids[r]) merges into best row r.");
  m.def("knn_quantize", &knn_quantize, py::arg("x"), py::arg("q"), py::arg("scale"), py::arg("xnorm"),
        py::arg("pnorm"), py::arg("enorm"),
        "Per-row int8 quantisation x_i ~ scale_i q_i (scale = max|x_i| / 127) into q [N, D] int8 and "
        "scale [N]; the norms of x_i, scale_i q_i and the residual, rounded up to float32.");
  m.def("knn_topk_merge_i8", &knn_topk_merge_i8, py::arg("S"), py::arg("row0"), py::arg("col0"),
        py::arg("row_scale"), py::arg("col_scale"), py::arg("best_sim"), py::arg("best_idx"),
        py::arg("self_search"), py::arg("columns"),
        "Merge the int32 product tile S [b, c] as approximate similarities (row_scale[i] * col_scale[j]) * S "
        "into the top-k lists of its rows (columns=False) or, read transposed in place, of its columns "
        "(columns=True).");
  m.def("knn_refine_i8", &knn_refine_i8, py::arg("S"), py::arg("row_ids"), py::arg("col0"), py::arg("row_scale"),
        py::arg("col_scale"), py::arg("bound"), py::arg("x"), py::arg("y"), py::arg("best_sim"),
        py::arg("best_idx"), py::arg("self_search"), py::arg("counts"), py::arg("cap"),
        "Second pass for uncertified rows: rescore every column of the int32 tile whose approximate value plus "
        "bound can reach the row's k-th value, and merge it; counts[r] = -1 once a row passes cap columns.");
  m.def("knn_rescore", &knn_rescore, py::arg("x"), py::arg("y"), py::arg("cand_idx"), py::arg("cand_sim"),
        py::arg("bound"), py::arg("self_search"), py::arg("out_idx"), py::arg("out_sim"), py::arg("certified"),
        py::arg("self_ids") = py::none(),
        "Exact float32 rescoring of the candidate lists, top-k into out_idx/out_sim, and the per-row "
        "certificate (1 when no column outside the candidates can enter the top-k); returns the number "
        "of certified rows. self_ids (int64 [N], optional): each row's own column (outside [0, M): none), "
        "instead of self_search's row i.");
  m.def("knn_refine_f32", &knn_refine_f32, py::arg("S"), py::arg("col0"), py::arg("self_ids"), py::arg("bound"),
        py::arg("xq"), py::arg("y"), py::arg("best_sim"), py::arg("best_idx"), py::arg("counts"),
        "Exact fallback of the float32-candidate path for gathered query rows xq: rescore (dot_f32) every "
        "column of the float32 GEMM tile S whose value plus bound can reach the row's k-th value, and merge "
        "it into best_sim/best_idx; counts[r] accumulates the rescored columns.");
}

}  // namespace hilcore_bindings
