"""MCCL, native (C++/OpenMP) backend: loss, nearest cluster and x.grad against the torch path (float32)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hilcore import _dispatch
from hilcore.memory import MultiCenterMemory
from hilcore.mccl import DIST_EPS, MARGIN, mccl_loss
from hilcore.ref.mccl import mccl as ref_mccl

pytestmark = pytest.mark.skipif(not _dispatch.has_native(), reason="the hilcore._native extension is not built")


def _case(b, c, s, d, seed=0, *, on_slot=True, dup_slots=True):
    """Unit memory [C, S, D] and raw samples [B, D] (float32), with the awkward cases when the sizes allow:
    a cluster repeating one slot in all its slots, a slot duplicated in a later cluster (a tie between
    clusters: the lower must win), and samples sitting exactly on a slot (d = the guard)."""
    g = torch.Generator().manual_seed(seed)
    mem = torch.nn.functional.normalize(torch.randn(c, s, d, generator=g, dtype=torch.float64), dim=2)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    if dup_slots and c >= 2:
        mem[1] = mem[1, 0]  # every slot of cluster 1 the same
    if dup_slots and c >= 3:
        mem[c - 1, s - 1] = mem[0, 0]  # the same slot in cluster 0 and cluster C-1
    mem = mem.float()
    x = x.float()
    if on_slot and b >= 3:
        x[2] = 3.0 * mem[c - 1, s - 1]  # on a slot (the duplicated one when C >= 3: c* = 0)
    if on_slot and b >= 5 and c >= 2:
        x[4] = mem[1, 0]  # on cluster 1, whose slots all coincide
    return x, mem


def _run(x, mem, backend, g):
    xx = x.clone().requires_grad_()
    loss, cstar = mccl_loss(xx, mem, reduction="none", return_nearest=True, backend=backend)
    (loss * g).sum().backward()
    return loss.detach(), cstar, xx.grad


SHAPES = [(1, 1, 1, 4), (3, 2, 1, 5), (6, 1, 4, 9), (7, 5, 10, 24), (19, 9, 3, 33), (5, 3, 17, 20),
          (33, 40, 6, 130)]


@pytest.mark.parametrize("b,c,s,d", SHAPES)
def test_native_matches_torch(b, c, s, d):
    x, mem = _case(b, c, s, d, seed=b + c)
    g = torch.rand(b) + 0.1  # a non-uniform upstream gradient
    la, ca, ga = _run(x, mem, "torch", g)
    lb, cb, gb = _run(x, mem, "native", g)
    assert lb.dtype == torch.float32 and cb.dtype == torch.int64 and gb.dtype == torch.float32
    np.testing.assert_array_equal(cb.numpy(), ca.numpy())
    torch.testing.assert_close(lb, la, rtol=1e-4, atol=1e-5)
    # + 1e-8: with C = 1 the loss is ~1e-8 / pos (torch's float32 rounds pos + 1e-8 to pos, native's double
    # does not), so the gradient there is rounding noise of that size
    scale = float(ga.abs().max())
    torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-4 * scale + 1e-8)
    # and the loss against the float64 loop reference of docs/design.md
    want, want_c = ref_mccl(x.double().numpy(), mem.double().numpy())
    np.testing.assert_array_equal(cb.numpy(), want_c)
    np.testing.assert_allclose(lb.numpy(), want, rtol=2e-4, atol=2e-5)


def test_ties_and_special_samples():
    x, mem = _case(6, 4, 3, 16)
    loss, cstar = mccl_loss(x, mem, reduction="none", return_nearest=True, backend="native")
    assert int(cstar[2]) == 0  # on a slot that clusters 0 and 3 share: the lower cluster
    assert int(cstar[4]) == 1
    # on a slot: 1/d = 1/sqrt(DIST_EPS) = 1e4 dominates. Sample 4: pos ~ 1e4, neg small, loss ~ 0. Sample 2:
    # the shared slot gives 1e4 to pos (mean over cluster 0's 3 slots) and to neg (mean over the 3 others)
    assert torch.isfinite(loss).all() and float(loss[4]) < 1e-3
    assert abs(float(loss[2]) - np.log(2.0)) < 1e-2
    # C = 1: neg = 0, so the loss is -log(pos / (pos + 1e-8)) ~ 0 with a zero-free finite gradient
    one = mem[:1]
    xx = x.clone().requires_grad_()
    l1 = mccl_loss(xx, one, reduction="none", backend="native")
    l1.sum().backward()
    assert torch.isfinite(xx.grad).all()
    assert float(l1.detach().max()) < 1e-6


def test_reductions_and_memory_types():
    x, mem = _case(8, 5, 3, 12, seed=2)
    per = mccl_loss(x, mem, reduction="none", backend="native")
    assert per.shape == (8,)
    torch.testing.assert_close(mccl_loss(x, mem, backend="native"), per.mean())
    torch.testing.assert_close(mccl_loss(x, mem, reduction="sum", backend="native"), per.sum())
    mm = MultiCenterMemory.from_tensor(mem)
    torch.testing.assert_close(mccl_loss(x, mm, backend="native"), per.mean())
    # reduction gradients: sum of 'none' with g = 1 equals 'sum'; 'mean' is that over B
    xa = x.clone().requires_grad_()
    mccl_loss(xa, mem, reduction="sum", backend="native").backward()
    xb = x.clone().requires_grad_()
    mccl_loss(xb, mem, reduction="mean", backend="native").backward()
    xt = x.clone().requires_grad_()
    mccl_loss(xt, mem, reduction="sum", backend="torch").backward()
    torch.testing.assert_close(xb.grad * 8, xa.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(xa.grad, xt.grad, rtol=1e-3, atol=1e-4 * float(xt.grad.abs().max()))


def test_float64_input():
    x, mem = _case(5, 4, 2, 10, seed=7)
    x64, mem64 = x.double().requires_grad_(), mem.double()
    loss = mccl_loss(x64, mem64, reduction="none", backend="native")
    assert loss.dtype == torch.float64
    want, _ = ref_mccl(x64.detach().numpy(), mem64.numpy())
    np.testing.assert_allclose(loss.detach().numpy(), want, rtol=2e-4, atol=2e-5)
    loss.sum().backward()
    assert x64.grad.dtype == torch.float64


def test_memory_gets_no_gradient():
    x, mem = _case(4, 3, 2, 6)
    mem = mem.clone().requires_grad_()
    x.requires_grad_()
    mccl_loss(x, mem, backend="native").backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert mem.grad is None


def test_auto_and_availability():
    assert "native" in _dispatch.implemented("mccl_loss")
    # auto on CPU: native (measured faster than torch at B=128, C=500, S=10, D=1536)
    assert _dispatch.resolve("mccl_loss", "auto", torch.device("cpu")).backend == "native"
    x, mem = _case(4, 3, 2, 6)
    torch.testing.assert_close(mccl_loss(x, mem), mccl_loss(x, mem, backend="native"))


def test_binding_validation():
    nat = _dispatch.native_module()
    x, mem = _case(4, 3, 2, 6)
    xn = torch.nn.functional.normalize(x, dim=1).numpy()
    m = mem.numpy()
    with pytest.raises(ValueError, match="x: expected dtype float32"):
        nat.mccl_forward(xn.astype(np.float64), m, DIST_EPS, MARGIN)
    with pytest.raises(ValueError, match="memory: expected a 3-D"):
        nat.mccl_forward(xn, m[0], DIST_EPS, MARGIN)
    with pytest.raises(ValueError, match="x: expected 6 columns"):
        nat.mccl_forward(xn[:, :5].copy(), m, DIST_EPS, MARGIN)
    with pytest.raises(ValueError, match="x: expected a C-contiguous"):
        nat.mccl_forward(np.asfortranarray(xn), m, DIST_EPS, MARGIN)
    with pytest.raises(ValueError, match="eps"):
        nat.mccl_forward(xn, m, 0.0, MARGIN)
    loss, cstar, pos, neg = nat.mccl_forward(xn, m, DIST_EPS, MARGIN)
    g = np.ones(4, dtype=np.float32)
    with pytest.raises(ValueError, match="cstar: cluster ids"):
        nat.mccl_backward(xn, m, np.full(4, 3, dtype=np.int64), pos, neg, g, DIST_EPS, MARGIN)
    with pytest.raises(ValueError, match="grad_loss: expected 4 entries"):
        nat.mccl_backward(xn, m, cstar, pos, neg, g[:3].copy(), DIST_EPS, MARGIN)
    grad = nat.mccl_backward(xn, m, cstar, pos, neg, g, DIST_EPS, MARGIN)
    assert grad.shape == (4, 6) and grad.dtype == np.float32
