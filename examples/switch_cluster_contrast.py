"""Switch a cluster-contrast training loop to hilcore.compat, and check that nothing but the speed changes.

A small model is trained for a few epochs on synthetic ReID-like features with
the compat drop-ins, and every step is repeated with the plain version on the
same inputs:

- "before": the pipeline as cluster-contrast writes it, with the
  plain-PyTorch ``ClusterMemory`` of ``clustercontrast/models/cm.py`` written
  out below (its update a per-sample Python loop inside the autograd
  backward), scikit-learn's DBSCAN, and the widely used
  ``compute_jaccard_distance`` written out step by step with its dense matrices
  and dtypes (``hilcore.ref.compat_jaccard``, standing in for ``faiss_rerank``);
- "after": the same loop with the import lines changed to ``hilcore.compat``.

Every epoch the pseudo labels must be identical, with the fixed eps (0.6) and
with an eps set from the matrix as many pipelines do (the mean of its smallest
0.16 % upper-triangle non-zero entries, where the original's tiny positives
count), and every iteration the loss,
the gradient reaching the features and the memory after backward must agree
to 1e-6 (the plain memory starts each step from the compat one's state, so
rounding does not accumulate into a different hardest sample); the script
exits non-zero otherwise. Runs on CPU in a few seconds:

    python examples/switch_cluster_contrast.py
    python examples/switch_cluster_contrast.py --use-hard --epochs 3
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import autograd, nn


# ------------------------------------------------------------------ before: plain PyTorch (cm.py, written out)
class PlainCM(autograd.Function):
    """logits = x @ m.T; backward: the gradient, then m[y] <- normalize(mu m[y] + (1 - mu) x), sample by sample."""

    @staticmethod
    def forward(ctx, inputs, targets, features, momentum, use_hard):
        ctx.features, ctx.momentum, ctx.use_hard = features, momentum, use_hard
        ctx.save_for_backward(inputs, targets)
        return inputs.mm(features.t())

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, targets = ctx.saved_tensors
        m, mu = ctx.features, ctx.momentum
        grad_inputs = grad_outputs.mm(m)
        if ctx.use_hard:  # each class once, with its least similar sample
            by_class: dict[int, list[int]] = {}
            for i, y in enumerate(targets.tolist()):
                by_class.setdefault(y, []).append(i)
            for y, members in by_class.items():
                sims = [float(inputs[i] @ m[y]) for i in members]
                x = inputs[members[int(np.argmin(sims))]]
                m[y] = mu * m[y] + (1.0 - mu) * x
                m[y] /= m[y].norm()
        else:
            for x, y in zip(inputs, targets):
                m[y] = mu * m[y] + (1.0 - mu) * x
                m[y] /= m[y].norm()
        return grad_inputs, None, None, None, None


class PlainClusterMemory(nn.Module):
    def __init__(self, num_features, num_samples, temp=0.05, momentum=0.2, use_hard=False):
        super().__init__()
        self.temp, self.momentum, self.use_hard = temp, momentum, use_hard
        self.register_buffer("features", torch.zeros(num_samples, num_features))

    def forward(self, inputs, targets):
        inputs = F.normalize(inputs, dim=1)
        outputs = PlainCM.apply(inputs, targets, self.features, self.momentum, self.use_hard)
        return F.cross_entropy(outputs / self.temp, targets)


def plain_jaccard(features, k1=30, k2=6, print_flag=False):
    from hilcore.ref.compat_jaccard import jaccard_dense  # the original's arithmetic, dense, row by row

    return jaccard_dense(features, k1, k2)


def percentile_eps(dist, fraction=1.6e-3):
    """eps from the distance matrix, as SpCL-style pipelines set it: the mean of the smallest ``fraction`` of
    the non-zero upper-triangle entries."""
    tri = np.triu(dist, 1)
    tri = np.sort(tri[np.nonzero(tri)], axis=None)
    return tri[:np.round(fraction * tri.size).astype(int)].mean()


# ------------------------------------------------------------------ the training loop, checked step by step
def cluster_centres(features, labels):
    ids = sorted(set(labels.tolist()) - {-1})
    return torch.stack([features[torch.from_numpy(labels == i)].mean(0) for i in ids])


def train(model, images, epochs, iters, use_hard, backend, seed=7):
    """The cluster-contrast epoch with the compat drop-ins (extract, Jaccard + DBSCAN, memory from the centres,
    P x K batches), and at every step the plain version on the same inputs; returns the largest differences."""
    from sklearn.cluster import DBSCAN as SkDBSCAN

    from hilcore.compat import DBSCAN, ClusterMemory, compute_jaccard_distance  # the "after" imports

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    worst = dict(loss=0.0, grad=0.0, memory=0.0)
    for epoch in range(epochs):
        with torch.no_grad():
            feats = F.normalize(model(images), dim=1)  # extract_features returns normalised features
        rerank = compute_jaccard_distance(feats, k1=20, k2=6, print_flag=False)
        plain_rerank = plain_jaccard(feats, k1=20, k2=6)
        labels = DBSCAN(eps=0.6, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(rerank)
        plain_labels = SkDBSCAN(eps=0.6, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(plain_rerank)
        if not np.array_equal(labels, plain_labels):
            raise AssertionError(f"epoch {epoch}: pseudo labels differ from the plain pipeline's")
        eps, plain_eps = percentile_eps(rerank), percentile_eps(plain_rerank)  # the percentile-eps variant
        by_eps = DBSCAN(eps=eps, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(rerank)
        plain_by_eps = SkDBSCAN(eps=plain_eps, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(
            plain_rerank)
        if eps != plain_eps or not np.array_equal(by_eps, plain_by_eps):
            raise AssertionError(f"epoch {epoch}: percentile eps {eps} vs {plain_eps}, or its labels, differ")
        n_cluster = len(set(labels.tolist()) - {-1})
        print(f"epoch {epoch}: {n_cluster} clusters, {(labels == -1).sum()} noise, labels identical; "
              f"percentile eps {eps:.4f}: {len(set(by_eps.tolist()) - {-1})} clusters, identical")
        memory = ClusterMemory(feats.shape[1], n_cluster, temp=0.05, momentum=0.2, use_hard=use_hard,
                               backend=backend)
        memory.features = F.normalize(cluster_centres(feats, labels), dim=1)
        plain = PlainClusterMemory(feats.shape[1], n_cluster, temp=0.05, momentum=0.2, use_hard=use_hard)
        kept = np.flatnonzero(labels >= 0)
        for _ in range(iters):
            # P x K: 8 pseudo identities x 4 images drawn with repeats (duplicate targets in every batch)
            ids = torch.randperm(n_cluster, generator=g)[:8].tolist()
            batch = np.concatenate([kept[labels[kept] == i][torch.randint(0, int((labels[kept] == i).sum()), (4,),
                                                                          generator=g).numpy()] for i in ids])
            x, y = images[batch], torch.from_numpy(labels[batch]).long()
            f = model(x)
            f.retain_grad()
            plain.features = memory.features.clone()  # the plain memory starts the step where compat's is
            f_plain = f.detach().clone().requires_grad_()
            loss_plain = plain(f_plain, y)
            loss_plain.backward()

            loss = memory(f, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            worst["loss"] = max(worst["loss"], abs(float(loss.detach()) - float(loss_plain.detach())))
            worst["grad"] = max(worst["grad"], float((f.grad - f_plain.grad).abs().max()))
            worst["memory"] = max(worst["memory"], float((memory.features - plain.features).abs().max()))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--use-hard", action="store_true")
    ap.add_argument("--backend", default="auto", help="hilcore backend of the compat memory update")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args(argv)

    from hilcore.synthetic import reid_features

    torch.manual_seed(0)
    x, _, _ = reid_features(40, 12, dim=96, seed=1)
    images = torch.from_numpy(x)
    model = nn.Sequential(nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 64))
    with torch.no_grad():  # start near the identity map: the first clustering already finds the identities
        model[0].weight.copy_(torch.eye(96) + 0.01 * torch.randn(96, 96))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.eye(64, 96) + 0.01 * torch.randn(64, 96))
    worst = train(model, images, args.epochs, args.iters, args.use_hard, args.backend)
    print(f"{args.epochs * args.iters} iterations: max |loss diff| {worst['loss']:.2e}, "
          f"max |grad diff| {worst['grad']:.2e}, max |memory diff| {worst['memory']:.2e}")
    if max(worst.values()) > args.tol:
        print(f"FAIL: the compat pipeline differs from the plain one by more than {args.tol}", file=sys.stderr)
        return 1
    print("OK: same labels, losses, gradients and memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
