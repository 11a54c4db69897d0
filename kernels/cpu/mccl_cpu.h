// Multi-centre contrastive loss (MCCL, docs/design.md) on CPU: forward and backward,
// streaming over the clusters (no [B, C, S] buffer).
#pragma once
#include <cstdint>

namespace hilcore {

// Layout: x [b, dim] float32 row-major, rows already L2-normalised; mem
// [clusters, slots, dim] float32 row-major. Per sample, in float32 like the
// torch path: d_cs = sqrt(sum_k (x_k - M_csk)^2 + eps) (direct differences);
// c* = the cluster of the overall nearest slot (strict <: the lowest (c, s)
// wins ties); pos = mean_s 1/d_{c*s}; neg = mean_{c != c*} 1/min_s d_cs (0 when
// clusters == 1); loss = -log(pos / (pos + neg + margin)). pos, neg and the
// loss are accumulated in double.
// Outputs: loss [b], cstar [b] int64, and pos, neg [b] when not null (what
// mccl_backward_cpu needs). Returns 0; a violated
// precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int mccl_forward_cpu(const float* x, int64_t b, const float* mem, int64_t clusters, int64_t slots, int64_t dim,
                     double eps, double margin, float* loss, int64_t* cstar, float* pos, float* neg);

// dL/dx [b, dim] (written to grad) for upstream per-sample gradients
// grad_loss [b], given the forward's cstar, pos and neg. Recomputes the
// distances one cluster at a time: grad = sum_s w_cs (M_cs - x), w = coef / d^3,
// with coef = g (1/total - 1/pos) / slots on every slot of c* and
// coef = g / total / (clusters - 1) on the nearest slot (lowest s on ties) of
// every other cluster; total = pos + neg + margin. Accumulated in double from
// the differences (no cancellation when x sits on a slot).
// Returns 0; a violated precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int mccl_backward_cpu(const float* x, int64_t b, const float* mem, int64_t clusters, int64_t slots, int64_t dim,
                      double eps, double margin, const int64_t* cstar, const float* pos, const float* neg,
                      const float* grad_loss, float* grad);

}  // namespace hilcore
