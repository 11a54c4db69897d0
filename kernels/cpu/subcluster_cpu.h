// Cluster centres and batched k-means sub-clustering on CPU.
#pragma once
#include <cstdint>

namespace hilcore {

// Segmented mean: out[c] = mean of x[i] over labels[i] == c (labels < 0 ignored),
// float64 sums. x [N, D], labels [N] int64 in [-1, C), out [C, D]. Clusters without
// members get zeros. Returns 0 on success.
int cluster_centers_cpu(const float* x, int64_t n, int64_t d, const int64_t* labels, int64_t c, float* out);

// k-means with k sub-clusters inside each of E segments of xm [M, D] (segment e is rows
// [starts[e], starts[e] + sizes[e]), sizes[e] > k). u [E, R, k] float64 seeding uniforms.
// Per segment: R runs of k-means++ seeding + at most `iters` Lloyd steps (semantics of
// hilcore.subcluster), the run with the lowest inertia without an empty sub-cluster wins
// (ties: earlier run). Outputs for the winner: cen [E, k, D], cnt [E, k] (all 0 when every
// run left an empty sub-cluster), first [E, k] = smallest row position (into xm) per
// sub-cluster; evals [E] = member-centre distances evaluated (seeding, Lloyd, inertia) over all runs.
// bounded: skip the distances that rigorous triangle-inequality bounds (with the float32 rounding
// bound of every score) prove cannot change an outcome, Elkan-style, and a segment small enough
// (n + 1 < 2 runs (k - 1)) computes its Gram matrix once, so its seedings and first Lloyd steps (the
// centres are rows) are look-ups of the same dot products; the outputs are bit for bit those of
// bounded = false, the plain loop. rows: null (the members are xm's m rows) or the m members' row ids
// into xm (checked by the caller), read in place: each segment's rows are gathered by the thread that
// runs it. cen_rows: null (segment s's centres go to cen[s]) or the row of cen [*, k, d] each segment's
// centres go to (checked by the caller). Returns 0 on success.
int kmeans_segments_cpu(const float* xm, int64_t m, int64_t d, const int64_t* starts, const int64_t* sizes,
                        int64_t e, int64_t k, int64_t runs, int64_t iters, const double* u, bool bounded,
                        float* cen, int64_t* cnt, int64_t* first, int64_t* evals, const int64_t* rows = nullptr,
                        const int64_t* cen_rows = nullptr);

}  // namespace hilcore
