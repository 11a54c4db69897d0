// Segments are independent: OpenMP hands whole segments (all runs) to threads,
// so every number below is computed in one fixed order per segment and the
// result does not depend on the thread count.
#include "cpu/subcluster_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace hilcore {
namespace {

inline float dot(const float* a, const float* b, int64_t d) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < d; ++k) s += a[k] * b[k];
  return s;
}

// Nearest of k centres (score ||c||^2 - 2 x.c, first minimum wins).
inline int64_t nearest(const float* xr, const float* cen, const float* cc, int64_t k, int64_t d) {
  int64_t best = 0;
  float bs = std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < k; ++j) {
    const float s = cc[j] - 2.f * dot(xr, cen + j * d, d);
    if (s < bs) { bs = s; best = j; }
  }
  return best;
}

struct Run {
  std::vector<float> cen;
  std::vector<int64_t> cnt, first;
  double inertia;
};

void one_run(const float* x, const float* xx, int64_t n, int64_t d, int64_t k, int64_t iters, const double* u,
             int64_t pos0, Run& out) {
  std::vector<float> cen(k * d), cc(k);
  auto pick_uniform = [&](double uu) {
    return std::min(static_cast<int64_t>(std::floor(uu * static_cast<double>(n))), n - 1);
  };
  // k-means++ seeding, one candidate per step
  int64_t j0 = pick_uniform(u[0]);
  std::memcpy(cen.data(), x + j0 * d, sizeof(float) * d);
  std::vector<float> mind2(n, std::numeric_limits<float>::infinity());
  std::vector<double> cs(n);
  for (int64_t t = 1; t < k; ++t) {
    const float* c = cen.data() + (t - 1) * d;
    const float ccn = dot(c, c, d);
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      float d2 = xx[i] + ccn - 2.f * dot(x + i * d, c, d);
      d2 = std::max(d2, 0.f);
      mind2[i] = std::min(mind2[i], d2);
      acc += static_cast<double>(mind2[i]);
      cs[i] = acc;
    }
    int64_t j;
    if (acc > 0) {
      const double target = u[t] * acc;
      j = std::upper_bound(cs.begin(), cs.end(), target) - cs.begin();  // first cs > target
      j = std::min(j, n - 1);
    } else {
      j = pick_uniform(u[t]);
    }
    std::memcpy(cen.data() + t * d, x + j * d, sizeof(float) * d);
  }
  // Lloyd
  std::vector<int64_t> a(n, -1), prev(n, -1), cnt(k);
  std::vector<double> sums(k * d);
  auto assign = [&]() {
    for (int64_t j = 0; j < k; ++j) cc[j] = dot(cen.data() + j * d, cen.data() + j * d, d);
    for (int64_t i = 0; i < n; ++i) a[i] = nearest(x + i * d, cen.data(), cc.data(), k, d);
  };
  for (int64_t it = 0; it < iters; ++it) {
    assign();
    if (it > 0 && a == prev) break;
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(cnt.begin(), cnt.end(), 0);
    for (int64_t i = 0; i < n; ++i) {
      double* s = sums.data() + a[i] * d;
      const float* xr = x + i * d;
      for (int64_t q = 0; q < d; ++q) s[q] += static_cast<double>(xr[q]);
      ++cnt[a[i]];
    }
    for (int64_t j = 0; j < k; ++j)
      if (cnt[j] > 0)
        for (int64_t q = 0; q < d; ++q)
          cen[j * d + q] = static_cast<float>(sums[j * d + q] / static_cast<double>(cnt[j]));
    prev = a;
  }
  assign();
  std::fill(cnt.begin(), cnt.end(), 0);
  std::vector<int64_t> first(k, std::numeric_limits<int64_t>::max());
  double inertia = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = a[i];
    float d2 = xx[i] + cc[j] - 2.f * dot(x + i * d, cen.data() + j * d, d);
    inertia += static_cast<double>(std::max(d2, 0.f));
    ++cnt[j];
    first[j] = std::min(first[j], pos0 + i);
  }
  for (int64_t j = 0; j < k; ++j)
    if (cnt[j] == 0) inertia = std::numeric_limits<double>::infinity();
  out.cen = std::move(cen);
  out.cnt = std::move(cnt);
  out.first = std::move(first);
  out.inertia = inertia;
}

}  // namespace

int cluster_centers_cpu(const float* x, int64_t n, int64_t d, const int64_t* labels, int64_t c, float* out) {
  if (n < 0 || d <= 0 || c <= 0) return 1;
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= c || labels[i] < -1) return 2;
  std::vector<int64_t> cnt(c, 0);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0) ++cnt[labels[i]];
  constexpr int64_t kColBlock = 64;  // each thread owns a band of columns for all rows
  const int64_t nb = (d + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t q0 = b * kColBlock, q1 = std::min(d, q0 + kColBlock), w = q1 - q0;
    std::vector<double> s(c * w, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] < 0) continue;
      double* sr = s.data() + labels[i] * w;
      const float* xr = x + i * d + q0;
      for (int64_t q = 0; q < w; ++q) sr[q] += static_cast<double>(xr[q]);
    }
    for (int64_t j = 0; j < c; ++j)
      for (int64_t q = 0; q < w; ++q)
        out[j * d + q0 + q] = cnt[j] ? static_cast<float>(s[j * w + q] / static_cast<double>(cnt[j])) : 0.f;
  }
  return 0;
}

int kmeans_segments_cpu(const float* xm, int64_t m, int64_t d, const int64_t* starts, const int64_t* sizes,
                        int64_t e, int64_t k, int64_t runs, int64_t iters, const double* u, float* cen,
                        int64_t* cnt, int64_t* first) {
  if (m < 0 || d <= 0 || e < 0 || k <= 0 || runs <= 0 || iters <= 0) return 1;
  for (int64_t s = 0; s < e; ++s)
    if (sizes[s] <= k || starts[s] < 0 || starts[s] + sizes[s] > m) return 2;
  std::vector<float> xx(m);
  for (int64_t i = 0; i < m; ++i) xx[i] = dot(xm + i * d, xm + i * d, d);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t s = 0; s < e; ++s) {
    Run best, cur;
    best.inertia = std::numeric_limits<double>::infinity();
    for (int64_t r = 0; r < runs; ++r) {
      one_run(xm + starts[s] * d, xx.data() + starts[s], sizes[s], d, k, iters, u + (s * runs + r) * k,
              starts[s], cur);
      if (cur.inertia < best.inertia || r == 0) std::swap(best, cur);  // strict: ties keep the earlier run
    }
    std::memcpy(cen + s * k * d, best.cen.data(), sizeof(float) * k * d);
    const bool ok = std::isfinite(best.inertia);
    for (int64_t j = 0; j < k; ++j) {
      cnt[s * k + j] = ok ? best.cnt[j] : 0;
      first[s * k + j] = best.first[j];
    }
  }
  return 0;
}

}  // namespace hilcore
