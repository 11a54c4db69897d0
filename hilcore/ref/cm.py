"""Reference cluster-contrast memories: plain PyTorch with per-sample Python loops (the code hilcore.compat replaces).

Written from the description of cluster-contrast's memories: the loss is the
cross-entropy of ``normalize(x) @ m.T / temp`` (optionally weighted per sample
by ``ca`` and averaged), the gradient reaches ``x`` through the memory as it
is when backward runs, and after the gradient the memory moves:

- cluster memory: for i in batch order, ``m[y_i] <- (mu m[y_i] + (1 - mu) x_i) / ||.||``
  (``x_i`` the normalised sample);
- hard cluster memory: every class present in the batch moves once, towards
  its hardest sample, the one with the smallest ``<x_i, m[y]>`` (the first in
  batch order on ties);
- multi-centre memory ``[C, S, D]``: the logit of class c is the best slot's
  ``max_s <x, m[c, s]> / temp``, the gradient goes through that slot, and each
  sample in batch order moves the slot of its class most similar to it at
  that moment (the first on ties);
- instance memory: ``m[idx_i]`` moves like the cluster memory, by image index;
  its loss is ``-log max(softmax(x @ m.T / temp)[idx_i], 1e-8)``.

Each ``loop_*`` function takes the raw batch ``x`` (requires_grad or not) and
a memory tensor it updates in place, and returns the loss (differentiable in
``x``); the update happens inside ``loss.backward()``, as in the original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _LoopCM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xn, targets, mem, momentum, mode):
        ctx.mem, ctx.momentum, ctx.mode = mem, momentum, mode
        ctx.save_for_backward(xn, targets)
        if mode == "multi":
            c, s, d = mem.shape
            scores = xn.mm(mem.reshape(c * s, d).t()).view(xn.shape[0], c, s)
            out, ctx.slot = scores.max(dim=2)
            return out
        return xn.mm(mem.t())

    @staticmethod
    def backward(ctx, grad_out):
        xn, targets = ctx.saved_tensors
        mem, mu = ctx.mem, ctx.momentum
        grad = None
        if ctx.needs_input_grad[0]:
            if ctx.mode == "multi":
                grad = torch.zeros_like(xn)
                rows = torch.arange(mem.shape[0])
                for i in range(xn.shape[0]):  # sample i: through the slot its forward picked, per class
                    grad[i] = grad_out[i] @ mem[rows, ctx.slot[i]]
            else:
                grad = grad_out.mm(mem)
        ys = targets.tolist()
        if ctx.mode == "hard":
            members: dict[int, list[int]] = {}
            for i, y in enumerate(ys):
                members.setdefault(y, []).append(i)
            for y, idx in members.items():
                sims = [float(xn[i] @ mem[y]) for i in idx]
                i = idx[sims.index(min(sims))]  # first minimum
                v = mu * mem[y] + (1.0 - mu) * xn[i]
                mem[y] = v / v.norm()
        elif ctx.mode == "multi":
            for i, y in enumerate(ys):
                s = int(torch.argmax(mem[y] @ xn[i]))
                v = mu * mem[y, s] + (1.0 - mu) * xn[i]
                mem[y, s] = v / v.norm()
        else:
            for i, y in enumerate(ys):
                v = mu * mem[y] + (1.0 - mu) * xn[i]
                mem[y] = v / v.norm()
        return grad, None, None, None, None


def _weighted_ce(logits, targets, ca):
    if ca is None:
        return F.cross_entropy(logits, targets)
    return (F.cross_entropy(logits, targets, reduction="none") * ca).mean()


def loop_cluster_loss(x, targets, mem, temp=0.05, momentum=0.2, use_hard=False, ca=None):
    """Cluster memory ``mem`` ``[C, D]``: weighted CE of ``normalize(x) @ mem.T / temp``; the update runs in backward."""
    xn = F.normalize(x, dim=1)
    out = _LoopCM.apply(xn, targets, mem, float(momentum), "hard" if use_hard else "all")
    return _weighted_ce(out / temp, targets, ca)


def loop_multi_loss(x, targets, mem, temp=0.05, momentum=0.2, ca=None):
    """Multi-centre memory ``mem`` ``[C, S, D]``: CE of the best-slot logits; the update runs in backward."""
    xn = F.normalize(x, dim=1)
    out = _LoopCM.apply(xn, targets, mem, float(momentum), "multi")
    return _weighted_ce(out / temp, targets, ca)


def loop_instance_loss(x, indexes, mem, temp=0.05, momentum=0.2):
    """Instance memory ``mem`` ``[N, D]``: mean of ``-log max(p_i[idx_i], 1e-8)``; the update runs in backward."""
    xn = F.normalize(x, dim=1)
    sim = _LoopCM.apply(xn, indexes, mem, float(momentum), "all")
    p = F.softmax(sim / temp, dim=1)
    picked = torch.stack([p[i, int(j)] for i, j in enumerate(indexes.tolist())])
    return -picked.clamp_min(1e-8).log().mean()


@torch.no_grad()
def loop_update_em(mem, x, indexes, momentum):
    """No-grad instance update, sample by sample: ``m[j] <- (mu m[j] + (1 - mu) x) / ||.||`` (x as given)."""
    for xi, j in zip(x, indexes.tolist()):
        v = momentum * mem[j] + (1.0 - momentum) * xi
        mem[j] = v / v.norm()


def loop_soft_instance_loss(x, indexes, mem, temp=0.05, momentum=0.2):
    """The HIL release's ``cm.Memory`` loss: ``z = em(normalize(x)) / temp`` (the update in backward, per sample,
    renormalised), then ``mean_i -sum_c softmax(z_i / 10)_c log_softmax(z_i)_c``, written per sample."""
    xn = F.normalize(x, dim=1)
    z = _LoopCM.apply(xn, indexes, mem, float(momentum), "all") / temp
    terms = [-(F.softmax(z[i] / 10, dim=0) * F.log_softmax(z[i], dim=0)).sum() for i in range(z.shape[0])]
    return torch.stack(terms).mean()


@torch.no_grad()
def loop_update_em_raw(mem, x, indexes, momentum):
    """The HIL release's ``cm.Memory.updateEM``, sample by sample: ``m[j] <- mu m[j] + (1 - mu) x``, not
    renormalised."""
    for xi, j in zip(x, indexes.tolist()):
        mem[j] = momentum * mem[j] + (1.0 - momentum) * xi
