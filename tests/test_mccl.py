"""MCCL: the torch path against the loop reference and gradcheck; triton against the torch path."""
from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch

import hilcore
from hilcore.memory import MultiCenterMemory
from hilcore.mccl import mccl_loss
from hilcore.ref.mccl import mccl as ref_mccl

mccl_module = importlib.import_module("hilcore.mccl")
TRITON_OK = "triton" in hilcore.backends("cpu") and importlib.util.find_spec("hilcore.backend.triton.mccl") is not None
needs_triton = pytest.mark.skipif(not TRITON_OK, reason="triton cannot run here (no GPU and no TRITON_INTERPRET=1)")


def _case(b, c, s, d, seed=0, *, specials=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mem = torch.nn.functional.normalize(torch.randn(c, s, d, generator=g, dtype=torch.float64), dim=2)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    if specials and c >= 2:
        mem[1] = mem[1, 0]  # a cluster repeating its centre in every slot
    if specials and b >= 3:
        x[2] = 3.0 * mem[c - 1, s - 1]  # a sample equal (after normalisation) to a slot: d = guard
    return x.to(dtype), mem.to(dtype)


SHAPES = [(1, 1, 1, 4), (3, 2, 1, 5), (7, 5, 10, 24), (19, 9, 3, 33)]


@pytest.mark.parametrize("b,c,s,d", SHAPES)
def test_torch_matches_loop_reference(b, c, s, d):
    x, mem = _case(b, c, s, d, dtype=torch.float64)
    loss, cstar = mccl_loss(x, mem, reduction="none", return_nearest=True, backend="torch")
    want, want_c = ref_mccl(x.numpy(), mem.numpy())
    assert loss.dtype == torch.float64 and cstar.dtype == torch.int64
    np.testing.assert_array_equal(cstar.numpy(), want_c)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-6, atol=1e-9)
    x32, mem32 = x.float(), mem.float()
    l32 = mccl_loss(x32, mem32, reduction="none", backend="torch")
    np.testing.assert_allclose(l32.numpy(), want, rtol=2e-4, atol=2e-5)


def test_reductions_and_memory_module():
    x, mem = _case(6, 4, 3, 8)
    per = mccl_loss(x, mem, reduction="none", backend="torch")
    torch.testing.assert_close(mccl_loss(x, mem, backend="torch"), per.mean())
    torch.testing.assert_close(mccl_loss(x, mem, reduction="sum", backend="torch"), per.sum())
    mm = MultiCenterMemory.from_tensor(mem)
    torch.testing.assert_close(mccl_loss(x, mm, backend="torch"), per.mean())


def test_nearest_cluster_not_label():
    # x sits on cluster 2's slot: c* = 2, pos = mean over cluster 2's slots
    mem = torch.nn.functional.normalize(torch.randn(3, 2, 6, dtype=torch.float64), dim=2)
    x = mem[2, 1:2].clone()
    loss, cstar = mccl_loss(x, mem, reduction="none", return_nearest=True, backend="torch")
    assert cstar.tolist() == [2]
    assert float(loss) < 1e-3  # 1/d = 1e4 on the slot itself dominates


def test_gradcheck_torch_float64():
    for b, c, s, d in [(4, 3, 2, 6), (3, 1, 3, 5), (5, 4, 1, 7)]:
        x, mem = _case(b, c, s, d, seed=3, specials=False, dtype=torch.float64)
        x.requires_grad_()
        assert torch.autograd.gradcheck(lambda z: mccl_loss(z, mem, reduction="none", backend="torch"), (x,))


def test_memory_gets_no_gradient():
    x, mem = _case(4, 3, 2, 6)
    mem = mem.clone().requires_grad_()
    x.requires_grad_()
    mccl_loss(x, mem, backend="torch").backward()
    assert x.grad is not None and mem.grad is None


def test_validation():
    x, mem = _case(4, 3, 2, 6)
    with pytest.raises(ValueError, match="temp: MCCL has no temperature"):
        mccl_loss(x, mem, temp=0.05)
    with pytest.raises(ValueError, match="reduction"):
        mccl_loss(x, mem, reduction="avg")
    with pytest.raises(ValueError, match=r"\[C, S, D\]"):
        mccl_loss(x, mem[0])
    with pytest.raises(ValueError, match="x: expected 6 feature columns"):
        mccl_loss(torch.randn(4, 5), mem)
    with pytest.raises(ValueError, match="at least one sample"):
        mccl_loss(torch.randn(0, 6), mem)
    with pytest.raises(TypeError, match="memory"):
        mccl_loss(x, [1, 2])
    with pytest.raises(hilcore.BackendUnavailable):
        mccl_loss(x, mem, backend="cuda")


@needs_triton
@pytest.mark.parametrize("b,c,s,d", SHAPES + [(17, 3, 17, 20)])
def test_triton_matches_torch(b, c, s, d):
    x, mem = _case(b, c, s, d, seed=5)
    xa = x.clone().requires_grad_()
    la, ca = mccl_loss(xa, mem, reduction="none", return_nearest=True, backend="torch")
    g = torch.rand(b)  # a non-uniform upstream gradient
    (la * g).sum().backward()
    xb = x.clone().requires_grad_()
    lb, cb = mccl_loss(xb, mem, reduction="none", return_nearest=True, backend="triton")
    (lb * g).sum().backward()
    np.testing.assert_array_equal(cb.numpy(), ca.numpy())
    torch.testing.assert_close(lb.detach(), la.detach(), rtol=1e-4, atol=1e-5)
    scale = float(xa.grad.abs().max()) + 1e-12
    # + 1e-8: with C == 1 the whole gradient is O(MARGIN) = 1e-8, float32 rounding noise of 1 + 1e-8
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-3, atol=1e-4 * scale + 1e-8)
