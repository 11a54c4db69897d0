// DBSCAN on a sparse precomputed distance matrix, as union-find.
#pragma once
#include <cstdint>

namespace hilcore {

// Layout: CSR [n, n]: indptr [n+1] (non-decreasing, indptr[0] = 0),
// indices [indptr[n]] in [0, n), data [indptr[n]] float32 distances.
// Neighbourhood of i (scikit-learn's count): every stored entry of row i with
// data <= eps (compared in float32, like scikit-learn on a float32 matrix;
// stored zeros count), the diagonal only when it is stored so, a repeated
// entry each time. Core iff that count >= min_samples. Clusters: connected components
// of core points over core-core edges, numbered in order of their smallest
// core index; a border point takes the smallest label among its core
// neighbours (scanning its own row), the rest get -1. On a symmetric matrix
// this equals scikit-learn's DBSCAN(metric="precomputed") on the dense matrix.
// Output: labels [n] int64. Returns 0; a violated
// precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int dbscan_cpu(const int64_t* indptr, const int64_t* indices, const float* data, int64_t n, float eps,
               int64_t min_samples, int64_t* labels, int num_threads);

}  // namespace hilcore
