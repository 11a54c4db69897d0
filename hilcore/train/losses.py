"""Loss terms of the HIL step that sit on top of hilcore's memory ops.

* :func:`mccl_two_heads` -- docs/design.md's MCCL rule for the driver: the loss of
  each head against its memory, averaged over the samples whose two heads
  pick the same nearest cluster ``c*`` (0 when none agree).
* :func:`neighbour_consistency_loss` -- each sample is pulled towards its
  ``k`` nearest entries of an instance memory: with
  ``p = softmax(normalize(x) @ M.T / temp)`` the loss is
  ``-mean_{j in N_k(q)} log p_j``, where ``N_k(q)`` are the ``k`` rows of
  ``M`` most similar to the query vector ``q`` (for the sample's own modality
  ``q`` is its own memory row, so ``N_k`` holds the sample itself; across
  modalities ``q`` is the detached feature). Neighbours are found without
  gradient; only ``x`` receives one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import hilcore


def mccl_two_heads(x_a, x_b, mem_a, mem_b, weights=(0.5, 0.5)):
    """MCCL over the samples whose heads agree on ``c*``.

    Args:
        x_a, x_b: ``[B, D_a]``, ``[B, D_b]`` the two heads' features of the same samples.
        mem_a, mem_b: the heads' multi-centre memories (the same clusters, ``[C, S, D_a]`` / ``[C, S, D_b]``).
        weights: ``(w_a, w_b)``; (0.5, 0.5) averages the heads, the release uses (1, 0.5).

    Returns:
        ``(loss, agree)``: the scalar ``mean over agreeing samples of w_a l_a + w_b l_b`` (a zero that
        still carries the graph when no sample agrees; the release's mean over an empty set is NaN) and
        the share of agreeing samples.
    """
    wa, wb = (float(w) for w in weights)
    la, ca = hilcore.mccl_loss(x_a, mem_a, reduction="none", return_nearest=True)
    lb, cb = hilcore.mccl_loss(x_b, mem_b, reduction="none", return_nearest=True)
    agree = ca == cb
    n = int(agree.sum())
    if n == 0:
        return (la.sum() + lb.sum()) * 0.0, 0.0
    return ((wa * la + wb * lb) * agree).sum() / n, n / agree.numel()


def neighbour_consistency_loss(x, bank: torch.Tensor, query: torch.Tensor, k: int, temp: float):
    """``-mean_j log softmax(normalize(x) @ bank.T / temp)_j`` over the ``k`` rows of ``bank`` nearest to ``query``.

    Args:
        x: ``[B, D]`` features (differentiable).
        bank: ``[N, D]`` unit rows (an instance memory's ``features``; read without gradient).
        query: ``[B, D]`` vectors whose neighbours in ``bank`` are the targets.
        k: neighbours per sample (clamped to N).
        temp: softmax temperature.
    """
    if x.dim() != 2 or bank.dim() != 2 or x.shape[1] != bank.shape[1]:
        raise ValueError(f"x, bank: expected [B, D] and [N, D] with the same D, got {tuple(x.shape)} and "
                         f"{tuple(bank.shape)}")
    k = max(1, min(int(k), bank.shape[0]))
    bank = bank.detach()
    with torch.no_grad():
        q = F.normalize(query.detach().to(bank.dtype), dim=1)
        nbr = (q @ bank.T).topk(k, dim=1).indices                     # [B, k]
    logp = F.log_softmax(F.normalize(x.to(bank.dtype), dim=1) @ bank.T / temp, dim=1)
    return -logp.gather(1, nbr).mean()
