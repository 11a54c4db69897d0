"""Triton momentum memory update against the per-sample loop reference and the torch backend."""
from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

import hilcore
from hilcore.memory import ClusterMemory, InstanceMemory, MultiCenterMemory, cluster_contrast_loss
from hilcore.ref import memory as ref

TRITON_OK = "triton" in hilcore.backends("cpu") and importlib.util.find_spec("hilcore.backend.triton.memory") is not None
pytestmark = pytest.mark.skipif(not TRITON_OK, reason="triton cannot run here (no GPU and no TRITON_INTERPRET=1)")

MOMENTA = (0.0, 0.1, 1.0)
TOL = 2e-6  # float32 kernel against the float64 loop


def _batch(b, r, d, seed):
    """A batch whose targets repeat: drawn from the first few rows only."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g)
    y = torch.randint(0, max(1, min(r, b // 3 + 1)), (b,), generator=g)
    return x, y


def _check(mem, x, y, want):
    """Update ``mem`` with triton, a deep copy with torch; both must match ``want`` (the loop)."""
    twin = copy.deepcopy(mem)
    before = mem.features.clone()
    mem.update(x, y, backend="triton")
    twin.update(x, y, backend="torch")
    got = mem.features.numpy()
    assert mem.features.dtype == torch.float32 and mem.features.shape == before.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    np.testing.assert_allclose(got, twin.features.numpy(), rtol=0, atol=TOL)
    untouched = np.ones(before.shape[0], dtype=bool)
    untouched[y.numpy()] = False
    assert torch.equal(mem.features[torch.from_numpy(untouched)], before[torch.from_numpy(untouched)])


@pytest.mark.parametrize("momentum", MOMENTA)
@pytest.mark.parametrize("b,c,d", [(1, 1, 3), (7, 5, 16), (12, 7, 32), (12, 3, 5)])
def test_cluster_update(b, c, d, momentum):
    mem = ClusterMemory.from_centers(torch.randn(c, d), momentum=momentum)
    x, y = _batch(b, c, d, seed=b + c + d)
    want = ref.update(mem.features.numpy(), x.numpy(), y.numpy(), momentum)
    _check(mem, x, y, want)


@pytest.mark.parametrize("momentum", MOMENTA + (0.5,))
@pytest.mark.parametrize("b,c,s,d", [(1, 1, 1, 4), (12, 4, 3, 16), (11, 7, 2, 32), (12, 2, 3, 7)])
def test_multi_update(b, c, s, d, momentum):
    mem = MultiCenterMemory.from_tensor(torch.randn(c, s, d), momentum=momentum)
    x, y = _batch(b, c, d, seed=1 + b + c)
    want = ref.update_multi(mem.features.numpy(), x.numpy(), y.numpy(), momentum)
    _check(mem, x, y, want)


def test_multi_update_moves_nearest_slot_of_each_occurrence():
    # cluster 0: slots e0, e1, e2; samples near e1 then near e2: each occurrence moves its own nearest slot
    m = torch.zeros(2, 3, 8)
    m[0, 0, 0] = m[0, 1, 1] = m[0, 2, 2] = 1.0
    m[1, :, 3] = 1.0  # cluster 1: all slots equal, ties go to slot 0
    mem = MultiCenterMemory.from_tensor(m, momentum=0.5)
    before = mem.features.clone()
    x = torch.zeros(3, 8)
    x[0, 1] = x[1, 2] = x[2, 3] = 1.0
    x[0, 4] = x[1, 5] = x[2, 6] = 0.1
    mem.update(x, torch.tensor([0, 0, 1]), backend="triton")
    f = mem.features
    assert torch.equal(f[0, 0], before[0, 0])
    assert not torch.equal(f[0, 1], before[0, 1]) and not torch.equal(f[0, 2], before[0, 2])
    assert not torch.equal(f[1, 0], before[1, 0])
    assert torch.equal(f[1, 1:], before[1, 1:])
    want = ref.update_multi(before.numpy(), x.numpy(), [0, 0, 1], 0.5)
    np.testing.assert_allclose(f.numpy(), want, rtol=0, atol=TOL)


@pytest.mark.parametrize("momentum", MOMENTA)
def test_instance_update(momentum):
    mem = InstanceMemory.from_features(torch.randn(7, 12), torch.tensor([0, 0, 1, -1, 1, 2, 2]), momentum=momentum)
    idx = torch.tensor([3, 6, 3, 0, 3, 6, 1, 3, 5, 5, 0, 3])
    x = torch.randn(12, 12)
    want = ref.update(mem.features.numpy(), x.numpy(), idx.numpy(), momentum)
    _check(mem, x, idx, want)
    assert mem.labels.tolist() == [0, 0, 1, -1, 1, 2, 2]


def test_duplicates_are_sequential_not_averaged():
    mem = ClusterMemory.from_centers(torch.tensor([[1.0, 0.0]]), momentum=0.5)
    mem.update(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0]), backend="triton")
    v = 0.5 * np.array([1, 1]) / np.sqrt(2) + 0.5 * np.array([0, 1])
    np.testing.assert_allclose(mem.features[0].numpy(), v / np.linalg.norm(v), rtol=0, atol=1e-6)


def test_float64_goes_through_torch_and_validation():
    mem = ClusterMemory.from_centers(torch.randn(5, 8), dtype=torch.float64)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 1, 4, 0, 1])
    want = ref.update(mem.features.numpy(), x.numpy(), y.numpy(), mem.momentum)
    mem.update(x, y, backend="triton")
    assert mem.features.dtype == torch.float64
    np.testing.assert_allclose(mem.features.numpy(), want, rtol=0, atol=1e-12)
    mem32 = ClusterMemory.from_centers(torch.randn(5, 8))
    before = mem32.features.clone()
    with pytest.raises(ValueError, match=r"targets: .*\[0, 5\)"):
        mem32.update(x, torch.tensor([0, 5, 1, 1, 1, 1]), backend="triton")
    mem32.update(torch.empty(0, 8), torch.empty(0, dtype=torch.int64), backend="triton")
    assert torch.equal(mem32.features, before)
    from hilcore.backend.triton.memory import update
    with pytest.raises(TypeError, match="float16"):
        update(torch.zeros(2, 1, 4, dtype=torch.float16), torch.zeros(1, 4, dtype=torch.float16),
               torch.tensor([0]), 0.1)


def test_update_before_backward_is_caught():
    mem = ClusterMemory.from_centers(torch.randn(4, 8))
    x = torch.randn(3, 8, requires_grad=True)
    y = torch.tensor([0, 1, 1])
    loss = cluster_contrast_loss(x, mem, y)
    mem.update(x.detach(), y, backend="triton")
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()
