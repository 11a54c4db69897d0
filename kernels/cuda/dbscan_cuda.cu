// DBSCAN on CSR distances: core counts, union-find over core-core edges,
// labels numbered by smallest core index, the border rule of docs/design.md.
//
// Union-find invariant: parent[x] <= x for every x, at all times. Hooking
// always puts the larger root under the smaller (atomicCAS on the root, so a
// root is hooked at most once), and path halving only replaces a parent by
// one of its ancestors. Hence the root of a component is its smallest member,
// i.e. its smallest core index. Parent loads go through L2 (__ldcg) so a
// thread never spins on a stale L1 copy of a root that someone else hooked.
#include "common/check.h"
#include "cuda/common_cuda.cuh"
#include "cuda/launchers.h"

namespace hilcore {
namespace cuda {

using namespace detail;

namespace {

__device__ __forceinline__ bool is_neighbour(int64_t i, int64_t j, float dist, float eps) {
  return j != i && dist <= eps;
}

__global__ void core_kernel(const int64_t* __restrict__ indptr, const int64_t* __restrict__ indices,
                            const float* __restrict__ data, int64_t n, float eps, int64_t min_samples,
                            uint8_t* __restrict__ core) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    int64_t cnt = 0;  // scikit-learn's count: every stored entry within eps, the diagonal only when stored so
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) cnt += data[p] <= eps ? 1 : 0;
    core[i] = cnt >= min_samples ? 1 : 0;
  }
}

__global__ void init_kernel(int64_t n, int32_t* __restrict__ parent) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) parent[i] = static_cast<int32_t>(i);
}

// Root of x with path halving. Writes only to non-roots (a node that is not a
// root never becomes one again), never racing the CAS that hooks a root.
__device__ __forceinline__ int32_t find_root(int32_t* parent, int32_t x) {
  while (true) {
    const int32_t p = __ldcg(parent + x);
    if (p == x) return x;
    const int32_t gp = __ldcg(parent + p);
    if (gp == p) return p;
    __stcg(parent + x, gp);  // gp is an ancestor of x: still in its tree, and gp <= p <= x
    x = gp;
  }
}

__device__ __forceinline__ void unite(int32_t* parent, int32_t a, int32_t b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    if (a > b) {
      const int32_t t = a;
      a = b;
      b = t;
    }
    // hook root b (larger) under a (smaller); fails if b was hooked meanwhile
    if (atomicCAS(parent + b, b, a) == b) return;
  }
}

// Thread per row; every stored core-core edge (both directions are harmless).
__global__ void union_kernel(const int64_t* __restrict__ indptr, const int64_t* __restrict__ indices,
                             const float* __restrict__ data, int64_t n, float eps, const uint8_t* __restrict__ core,
                             int32_t* parent) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    if (!core[i]) continue;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      const int64_t j = indices[p];
      if (is_neighbour(i, j, data[p], eps) && core[j]) unite(parent, static_cast<int32_t>(i), static_cast<int32_t>(j));
    }
  }
}

__global__ void root_kernel(int64_t n, const uint8_t* __restrict__ core, int32_t* parent, int32_t* __restrict__ root) {
  for (int64_t i = thread_id(); i < n; i += thread_count())
    root[i] = core[i] ? find_root(parent, static_cast<int32_t>(i)) : -1;
}

__global__ void labels_kernel(const int64_t* __restrict__ indptr, const int64_t* __restrict__ indices,
                              const float* __restrict__ data, int64_t n, float eps, const uint8_t* __restrict__ core,
                              const int32_t* __restrict__ root, const int64_t* __restrict__ root_cum,
                              int64_t* __restrict__ labels) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    if (core[i]) {
      labels[i] = root_cum[root[i]] - 1;
      continue;
    }
    int64_t best = -1;  // smallest label among core neighbours
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      const int64_t j = indices[p];
      if (!is_neighbour(i, j, data[p], eps) || !core[j]) continue;
      const int64_t l = root_cum[root[j]] - 1;
      if (best < 0 || l < best) best = l;
    }
    labels[i] = best;
  }
}

}  // namespace

int dbscan_core(const Distances& g, int64_t min_samples, uint8_t* core, void* stream) {
  HILCORE_CHECK_MSG(min_samples >= 1, values({{"min_samples", min_samples}}));
  if (g.n <= 0) return 0;
  core_kernel<<<grid_for(g.n, kBlock), kBlock, 0, as_stream(stream)>>>(g.indptr, g.indices, g.data, g.n, g.eps,
                                                                       min_samples, core);
  return launch_status();
}

int dbscan_components(const Distances& g, const uint8_t* core, int32_t* parent, int32_t* root, void* stream) {
  if (g.n <= 0) return 0;
  const unsigned grid = grid_for(g.n, kBlock);
  cudaStream_t s = as_stream(stream);
  init_kernel<<<grid, kBlock, 0, s>>>(g.n, parent);
  int st = launch_status();
  if (st) return st;
  union_kernel<<<grid, kBlock, 0, s>>>(g.indptr, g.indices, g.data, g.n, g.eps, core, parent);
  st = launch_status();
  if (st) return st;
  root_kernel<<<grid, kBlock, 0, s>>>(g.n, core, parent, root);
  return launch_status();
}

int dbscan_labels(const Distances& g, const uint8_t* core, const int32_t* root, const int64_t* root_cum,
                  int64_t* labels, void* stream) {
  if (g.n <= 0) return 0;
  labels_kernel<<<grid_for(g.n, kBlock), kBlock, 0, as_stream(stream)>>>(g.indptr, g.indices, g.data, g.n, g.eps,
                                                                         core, root, root_cum, labels);
  return launch_status();
}

}  // namespace cuda
}  // namespace hilcore
