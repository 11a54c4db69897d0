#include "cpu/dbscan_cpu.h"

#include <omp.h>

#include <string>
#include <vector>

#include "common/check.h"

namespace hilcore {

namespace {

inline int64_t find_root(std::vector<int64_t>& parent, int64_t a) {
  int64_t r = a;
  while (parent[r] != r) r = parent[r];
  while (parent[a] != r) {  // path compression
    const int64_t next = parent[a];
    parent[a] = r;
    a = next;
  }
  return r;
}

}  // namespace

int dbscan_cpu(const int64_t* indptr, const int64_t* indices, const float* data, int64_t n, float eps,
               int64_t min_samples, int64_t* labels, int num_threads) {
  HILCORE_CHECK_MSG(n >= 0, "n = " + std::to_string(n) + ": expected a number of points >= 0");
  HILCORE_CHECK_MSG(min_samples >= 1, "min_samples = " + std::to_string(min_samples) + ": expected >= 1");
  const int nt = num_threads < 1 ? 1 : num_threads;

  // core points: the stored entries within eps, the diagonal only when stored so, a repeated entry each time
  // (scikit-learn's neighbourhood size)
  std::vector<uint8_t> core(n, 0);
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 4096)
  for (int64_t i = 0; i < n; ++i) {
    int64_t cnt = 0;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) cnt += (data[p] <= eps);
    core[i] = cnt >= min_samples;
  }

  // union core-core edges; the smaller root becomes the parent, so every root
  // is the smallest index of its component
  std::vector<int64_t> parent(n);
  for (int64_t i = 0; i < n; ++i) parent[i] = i;
  for (int64_t i = 0; i < n; ++i) {
    if (!core[i]) continue;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      const int64_t j = indices[p];
      if (j == i || !core[j] || !(data[p] <= eps)) continue;
      const int64_t a = find_root(parent, i), b = find_root(parent, j);
      if (a < b) parent[b] = a;
      else if (b < a) parent[a] = b;
    }
  }

  // clusters numbered by their smallest core index (the root, scanned ascending)
  std::vector<int64_t> root_label(n, -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = -1;
    if (!core[i]) continue;
    const int64_t r = find_root(parent, i);
    if (root_label[r] < 0) root_label[r] = next++;
    labels[i] = root_label[r];
  }
  // border points: the smallest label among core neighbours
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 4096)
  for (int64_t i = 0; i < n; ++i) {
    if (core[i]) continue;
    int64_t best = -1;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      const int64_t j = indices[p];
      if (j == i || !core[j] || !(data[p] <= eps)) continue;
      const int64_t l = labels[j];
      if (best < 0 || l < best) best = l;
    }
    labels[i] = best;
  }
  return 0;
}

}  // namespace hilcore
