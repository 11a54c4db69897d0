#include "cpu/jaccard_cpu.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <utility>

#include "common/check.h"

namespace hilcore {

namespace {

// Build a CSR whose rows are produced independently (in parallel, any order):
// fn(i, scratch, idx_out, val_out) appends row i. Each thread makes its own
// scratch with make(); rows are then copied into place, so the result does
// not depend on the thread count. With a progress function (ticks), the
// threads count the rows they finish and the calling thread (OpenMP's thread
// 0), between its own rows, reports each block of rows passed (no barrier:
// the others go on meanwhile), then the whole pass after the loop; an
// exception of the function stops the pass (the rows left are skipped) and
// is rethrown here.
template <class Idx, class Make, class Fn>
void build_rows(int64_t n, int nt, const RowTicks& ticks, Make make, Fn fn, std::vector<int64_t>& indptr,
                std::vector<Idx>& idx, std::vector<float>& val) {
  const bool report = ticks.progress != nullptr && static_cast<bool>(ticks.progress->fn);
  const int64_t block = report && ticks.progress->block_rows > 0 ? ticks.progress->block_rows : n;
  std::atomic<int64_t> finished{0};
  std::atomic<bool> failed{false};
  std::exception_ptr failure;
  std::vector<std::vector<Idx>> tidx(nt);
  std::vector<std::vector<float>> tval(nt);
  std::vector<int64_t> start(n), len(n);
  std::vector<int> owner(n);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    auto scratch = make();
    std::vector<Idx>& I = tidx[t];
    std::vector<float>& V = tval[t];
    int64_t next = block;  // thread 0: the next block end to report
#pragma omp for schedule(dynamic, 32)
    for (int64_t i = 0; i < n; ++i) {
      if (report && failed.load(std::memory_order_relaxed)) continue;
      const int64_t s = static_cast<int64_t>(I.size());
      fn(i, scratch, I, V);
      owner[i] = t;
      start[i] = s;
      len[i] = static_cast<int64_t>(I.size()) - s;
      if (!report) continue;
      const int64_t done = finished.fetch_add(1, std::memory_order_relaxed) + 1;
      if (t == 0 && done >= next && done < n && !failed.load(std::memory_order_relaxed)) {
        next = (done / block + 1) * block;
        try {
          ticks.progress->fn(ticks.before + done / block * block, ticks.total);
        } catch (...) {
          failure = std::current_exception();
          failed.store(true, std::memory_order_relaxed);
        }
      }
    }
  }
  if (failure) std::rethrow_exception(failure);
  if (report) ticks.progress->fn(ticks.before + n, ticks.total);
  indptr.assign(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) indptr[i + 1] = indptr[i] + len[i];
  idx.resize(indptr[n]);
  val.resize(indptr[n]);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(tidx[owner[i]].begin() + start[i], len[i], idx.begin() + indptr[i]);
    std::copy_n(tval[owner[i]].begin() + start[i], len[i], val.begin() + indptr[i]);
  }
}

// round(k / 2) with ties to even, as Python's round() and np.around.
inline int64_t half_round_even(int64_t k) {
  const int64_t h = k / 2;
  if (k % 2 == 0) return h;
  return (h % 2 == 0) ? h : h + 1;  // h + 0.5 -> the even neighbour
}

// Fixed-width k-reciprocal sets: row i holds cnt[i] members.
struct RecipSets {
  int64_t width = 0;
  std::vector<int32_t> members;
  std::vector<int32_t> cnt;
};

// R(i, k) with m = min(k + 1, k1) ranking columns: j in rank[i, :m] with i in rank[j, :m].
RecipSets reciprocal_sets(const int64_t* rank, int64_t ld, int64_t n, int64_t m, int nt) {
  RecipSets R;
  R.width = m;
  R.members.assign(n * m, 0);
  R.cnt.assign(n, 0);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; ++i) {
    int32_t c = 0;
    for (int64_t a = 0; a < m; ++a) {
      const int64_t j = rank[i * ld + a];
      const int64_t* rj = rank + j * ld;
      bool back = false;
      for (int64_t b = 0; b < m; ++b) back |= (rj[b] == i);
      if (back) R.members[i * m + c++] = static_cast<int32_t>(j);
    }
    R.cnt[i] = c;
  }
  return R;
}

// The float32 operations below follow docs/design.md ("Summation orders") exactly, as the torch
// stages (hilcore/backend/torch/jaccard.py) do, so both return bitwise the same CSR. This file is
// compiled with -ffp-contract=off (no a * b + c fused into one rounding) and without -ffast-math.

// dot_rows: lane l of kDotLanes adds a[t] * b[t] for t = q * kDotLanes + l, q ascending, from 0;
// then the lanes fold in halves (lane l += lane l + w, w = 8, 4, 2, 1). The lane loop is what the
// compiler vectorises (one or more SIMD registers of lanes); it does not change the order.
constexpr int kDotLanes = 16;

inline float dot(const float* a, const float* b, int64_t d) {
  float acc[kDotLanes] = {};
  int64_t t = 0;
  for (; t + kDotLanes <= d; t += kDotLanes)
    for (int l = 0; l < kDotLanes; ++l) acc[l] += a[t + l] * b[t + l];
  for (int l = 0; t + l < d; ++l) acc[l] += a[t + l] * b[t + l];
  for (int w = kDotLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] = acc[l] + acc[l + w];
  return acc[0];
}

// exp_f32: float32 exp(z) from IEEE float64 operations only. z clamped to [-200, 100] (float32's
// exp is 0 / inf beyond), z = k ln2 + r with k = round-half-even(z / ln2) and ln2 = hi + lo, the
// Taylor polynomial of degree 11 in Horner form, times the exact 2^k, rounded once to float32.
constexpr double kInvLn2 = 0x1.71547652b82fep+0;
constexpr double kLn2Hi = 0x1.62e42fee00000p-1;
constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
constexpr double kExpTaylor[12] = {0x1.0000000000000p+0, 0x1.0000000000000p+0,  0x1.0000000000000p-1,
                                   0x1.5555555555555p-3, 0x1.5555555555555p-5,  0x1.1111111111111p-7,
                                   0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-16,
                                   0x1.71de3a556c734p-19, 0x1.27e4fb7789f5cp-22, 0x1.ae64567f544e4p-26};

inline float exp_f32(float z) {
  const double zd = std::min(std::max(static_cast<double>(z), -200.0), 100.0);
  // round-half-even(zd / ln2) as torch.round gives it: adding and removing 1.5 * 2^52 rounds to an
  // integer in the default rounding mode, exactly, for |v| < 2^51 (here |v| < 300); no libm call
  const double k = (zd * kInvLn2 + 0x1.8p52) - 0x1.8p52;
  const double r = (zd - k * kLn2Hi) - k * kLn2Lo;
  double p = r * kExpTaylor[11] + kExpTaylor[10];
  for (int c = 9; c >= 0; --c) p = p * r + kExpTaylor[c];
  const uint64_t bits = static_cast<uint64_t>(static_cast<int64_t>(k) + 1023) << 52;  // 2^k, exactly
  double two_k;
  std::memcpy(&two_k, &bits, sizeof two_k);
  return static_cast<float>(p * two_k);
}

// d = max(0, 1 - m / ((s_i + s_j) - m)) with the row masses s = sum_t V'[., t]: identical V' rows
// (m = s_i = s_j, the same sums in the same order) give exactly 0.
inline float jaccard_from_min_sum(float m, float si, float sj) {
  const float dist = 1.f - m / ((si + sj) - m);
  return dist < 0.f ? 0.f : dist;
}

struct ExpandScratch {
  std::vector<int64_t> in_r;  // == i when the column is in R(i, k1)
  std::vector<int64_t> in_e;  // == i when the column is in E(i)
  std::vector<int32_t> e;
  std::vector<float> w;
};

struct DenseScratch {
  std::vector<float> acc;
  std::vector<uint8_t> seen;
  std::vector<int32_t> touched;
  std::vector<int64_t> nbrs;
  std::vector<std::pair<int64_t, float>> kept;
};

DenseScratch dense_scratch(int64_t n) {
  DenseScratch s;
  s.acc.assign(n, 0.f);
  s.seen.assign(n, 0);
  return s;
}

}  // namespace

// ---- the stages (kernels/cuda/launchers.h has their CUDA twins) -------------------------------
void jaccard_cpu_expand(const float* x, int64_t n, int64_t d, const int64_t* rank, int64_t ld_rank, int64_t k1,
                        int nt, JaccardRows* v, std::vector<float>* mass, const RowTicks& ticks) {
  HILCORE_CHECK_MSG(v != nullptr && mass != nullptr, "the output rows and masses must be given");
  // the reciprocity of krecip_flags, as fixed-width sets: R(i, k1) and R(c, kh)
  const int64_t kh = half_round_even(k1);
  const RecipSets R1 = reciprocal_sets(rank, ld_rank, n, k1, nt);
  const RecipSets Rh = reciprocal_sets(rank, ld_rank, n, std::min(kh + 1, k1), nt);
  mass->assign(n, 0.f);
  float* const ms = mass->data();
  build_rows<int32_t>(
      n, nt, ticks,
      [&]() {
        ExpandScratch s;
        s.in_r.assign(n, -1);
        s.in_e.assign(n, -1);
        return s;
      },
      [&](int64_t i, ExpandScratch& s, std::vector<int32_t>& I, std::vector<float>& V) {
        // expand_count/fill + unique_count: E(i), distinct, sorted
        s.e.clear();
        const int32_t* ri = &R1.members[i * R1.width];
        const int32_t nri = R1.cnt[i];
        for (int32_t a = 0; a < nri; ++a) {
          s.in_r[ri[a]] = i;
          s.in_e[ri[a]] = i;
          s.e.push_back(ri[a]);
        }
        for (int32_t a = 0; a < nri; ++a) {
          const int32_t* rc = &Rh.members[static_cast<int64_t>(ri[a]) * Rh.width];
          const int32_t nrc = Rh.cnt[ri[a]];
          int32_t common = 0;
          for (int32_t b = 0; b < nrc; ++b) common += (s.in_r[rc[b]] == i);
          if (3 * common > 2 * nrc) {  // |R(c, kh) n R(i, k1)| > 2/3 |R(c, kh)|, exactly
            for (int32_t b = 0; b < nrc; ++b) {
              if (s.in_e[rc[b]] != i) {
                s.in_e[rc[b]] = i;
                s.e.push_back(rc[b]);
              }
            }
          }
        }
        std::sort(s.e.begin(), s.e.end());
        // unique_weights: softmax over E(i) of -(2 - 2 x_i.x_j): the logits lie in [-4, 0], no max
        // shift; the normaliser adds the weights in ascending column order, from 0
        const float* xi = x + i * d;
        s.w.resize(s.e.size());
        float sum = 0.f;
        for (size_t a = 0; a < s.e.size(); ++a) {
          s.w[a] = exp_f32(-(2.f - 2.f * dot(xi, x + static_cast<int64_t>(s.e[a]) * d, d)));
          sum += s.w[a];
        }
        float si = 0.f;
        for (size_t a = 0; a < s.e.size(); ++a) {
          I.push_back(s.e[a]);
          V.push_back(s.w[a] / sum);
          si += V.back();
        }
        ms[i] = si;
      },
      v->ptr, v->idx, v->val);
}

void jaccard_cpu_query_expansion(const JaccardRows& v, const int64_t* rank, int64_t n, int64_t ld_rank, int64_t k2,
                                 int nt, JaccardRows* q, std::vector<float>* mass, const RowTicks& ticks) {
  HILCORE_CHECK_MSG(static_cast<int64_t>(v.ptr.size()) == n + 1,
                    "v: expected " + std::to_string(n + 1) + " row offsets, got " + std::to_string(v.ptr.size()));
  HILCORE_CHECK_MSG(q != nullptr && mass != nullptr && static_cast<int64_t>(mass->size()) == n,
                    "the output rows and the n masses must be given");
  // V'[i] = (1/k2) sum_{n in rank[i, :k2]} V[n], the rows added in ascending order of n (from 0; rows
  // with the same first k2 neighbours get the same V'), then one float32 division by k2.
  float* const ms = mass->data();
  build_rows<int32_t>(
      n, nt, ticks, [&]() { return dense_scratch(n); },
      [&](int64_t i, DenseScratch& s, std::vector<int32_t>& I, std::vector<float>& V) {
        s.touched.clear();
        s.nbrs.assign(rank + i * ld_rank, rank + i * ld_rank + k2);
        std::sort(s.nbrs.begin(), s.nbrs.end());
        for (const int64_t r : s.nbrs) {
          for (int64_t p = v.ptr[r]; p < v.ptr[r + 1]; ++p) {
            const int32_t t = v.idx[p];
            if (!s.seen[t]) {
              s.seen[t] = 1;
              s.touched.push_back(t);
            }
            s.acc[t] += v.val[p];
          }
        }
        std::sort(s.touched.begin(), s.touched.end());
        const float kf = static_cast<float>(k2);
        float si = 0.f;
        for (int32_t t : s.touched) {
          I.push_back(t);
          V.push_back(s.acc[t] / kf);
          si += V.back();
          s.acc[t] = 0.f;
          s.seen[t] = 0;
        }
        ms[i] = si;
      },
      q->ptr, q->idx, q->val);
}

void jaccard_cpu_postings(const JaccardRows& q, int64_t n, JaccardRows* p) {
  HILCORE_CHECK_MSG(static_cast<int64_t>(q.ptr.size()) == n + 1,
                    "q: expected " + std::to_string(n + 1) + " row offsets, got " + std::to_string(q.ptr.size()));
  HILCORE_CHECK_MSG(p != nullptr, "the output postings must be given");
  // the columns of V', rows ascending within each column (p->idx holds row numbers)
  const int64_t nnz = q.ptr[n];
  p->ptr.assign(n + 1, 0);
  for (int64_t e = 0; e < nnz; ++e) ++p->ptr[q.idx[e] + 1];
  for (int64_t t = 0; t < n; ++t) p->ptr[t + 1] += p->ptr[t];
  p->idx.resize(nnz);
  p->val.resize(nnz);
  std::vector<int64_t> fill(p->ptr.begin(), p->ptr.end() - 1);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t e = q.ptr[i]; e < q.ptr[i + 1]; ++e) {
      const int64_t f = fill[q.idx[e]]++;
      p->idx[f] = static_cast<int32_t>(i);
      p->val[f] = q.val[e];
    }
  }
}

void jaccard_cpu_rows(const JaccardRows& q, const JaccardRows& p, const std::vector<float>& mass, int64_t n,
                      float max_distance, int nt, JaccardCsr* out, const RowTicks& ticks) {
  HILCORE_CHECK_MSG(static_cast<int64_t>(q.ptr.size()) == n + 1 && static_cast<int64_t>(p.ptr.size()) == n + 1,
                    "q, p: expected " + std::to_string(n + 1) + " offsets each, got " + std::to_string(q.ptr.size()) +
                        " and " + std::to_string(p.ptr.size()));
  HILCORE_CHECK_MSG(static_cast<int64_t>(mass.size()) == n && out != nullptr,
                    "mass: expected " + std::to_string(n) + " row masses and an output, got " +
                        std::to_string(mass.size()));
  // m(i, j) = sum_t min(V'[i, t], V'[j, t]) in float32, t ascending, from 0 (so m(i, j) and m(j, i)
  // are bit-identical); the partners of i (jaccard_partners) are the j it touches, its kept pairs
  // (jaccard_rows) those with m > 0 and d <= max_distance, and the diagonal
  build_rows<int64_t>(
      n, nt, ticks, [&]() { return dense_scratch(n); },
      [&](int64_t i, DenseScratch& s, std::vector<int64_t>& I, std::vector<float>& V) {
        s.touched.clear();
        s.kept.clear();
        for (int64_t e = q.ptr[i]; e < q.ptr[i + 1]; ++e) {
          const int32_t t = q.idx[e];
          const float vi = q.val[e];
          for (int64_t c = p.ptr[t]; c < p.ptr[t + 1]; ++c) {
            const int32_t j = p.idx[c];
            if (!s.seen[j]) {
              s.seen[j] = 1;
              s.touched.push_back(j);
            }
            s.acc[j] += std::min(vi, p.val[c]);
          }
        }
        s.kept.emplace_back(i, 0.f);  // the diagonal, always stored as exactly 0
        for (int32_t j : s.touched) {
          const float m = s.acc[j];
          s.acc[j] = 0.f;
          s.seen[j] = 0;
          if (j == i) continue;
          const float dist = jaccard_from_min_sum(m, mass[i], mass[j]);
          if (m > 0.f && dist <= max_distance) s.kept.emplace_back(j, dist);
        }
        std::sort(s.kept.begin(), s.kept.end(),
                  [](const std::pair<int64_t, float>& a, const std::pair<int64_t, float>& b) {
                    return a.first < b.first;
                  });
        for (const auto& kv : s.kept) {
          I.push_back(kv.first);
          V.push_back(kv.second);
        }
      },
      out->indptr, out->indices, out->data);
}

void jaccard_cpu(const float* x, int64_t n, int64_t d, const int64_t* rank, int64_t ld_rank, int64_t k1, int64_t k2,
                 float max_distance, int num_threads, JaccardCsr* out, const JaccardProgress* progress) {
  HILCORE_CHECK_MSG(n >= 1 && n <= INT32_MAX, "n = " + std::to_string(n) + ": expected 1 <= n < 2^31");
  HILCORE_CHECK_MSG(d >= 1, "d = " + std::to_string(d) + ": expected at least one feature column");
  HILCORE_CHECK_MSG(k1 >= 1 && k1 <= n && k1 <= ld_rank,
                    "k1 = " + std::to_string(k1) + ": expected 1 <= k1 <= min(n, ld_rank) = " +
                        std::to_string(std::min(n, ld_rank)));
  HILCORE_CHECK_MSG(k2 >= 1 && k2 <= k1,
                    "k2 = " + std::to_string(k2) + ": expected 1 <= k2 <= k1 = " + std::to_string(k1));
  HILCORE_CHECK_MSG(x != nullptr && rank != nullptr && out != nullptr, "x, rank and out must not be null");
  const int nt = num_threads < 1 ? 1 : num_threads;
  const double t0 = omp_get_wtime();
  const int64_t passes = k2 > 1 ? 3 : 2;  // the row passes: expansion, query expansion (k2 > 1), pairs
  auto ticks = [&](int64_t before) { return RowTicks{progress, before * n, passes * n}; };
  JaccardRows v, q, p;
  std::vector<float> mass;  // the row masses s_i of the rows of V' (of V while k2 = 1)
  jaccard_cpu_expand(x, n, d, rank, ld_rank, k1, nt, &v, &mass, ticks(0));
  const double t1 = omp_get_wtime();
  if (k2 > 1) {
    jaccard_cpu_query_expansion(v, rank, n, ld_rank, k2, nt, &q, &mass, ticks(1));
    std::vector<int64_t>().swap(v.ptr);  // V is no longer needed
    std::vector<int32_t>().swap(v.idx);
    std::vector<float>().swap(v.val);
  } else {
    std::swap(q, v);
  }
  const double t2 = omp_get_wtime();
  jaccard_cpu_postings(q, n, &p);
  const double t3 = omp_get_wtime();
  jaccard_cpu_rows(q, p, mass, n, max_distance, nt, out, ticks(passes - 1));
  const double t4 = omp_get_wtime();
  out->seconds[0] = t1 - t0;
  out->seconds[1] = t2 - t1;
  out->seconds[2] = t3 - t2;
  out->seconds[3] = t4 - t3;
}

void jaccard_dot_rows(const float* a, const float* b, int64_t m, int64_t d, float* out) {
  for (int64_t r = 0; r < m; ++r) out[r] = dot(a + r * d, b + r * d, d);
}

void jaccard_exp_f32(const float* z, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_f32(z[i]);
}

}  // namespace hilcore
