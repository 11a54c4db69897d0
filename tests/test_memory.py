"""Memory banks: sequential momentum updates against the per-sample loop reference, logits, the loss."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import hilcore
from hilcore.memory import (ClusterMemory, InstanceMemory, MultiCenterMemory, cluster_contrast_loss,
                            occurrence)
from hilcore.ref import memory as ref

memory_module = importlib.import_module("hilcore.memory")
BACKENDS = list(hilcore.capabilities("cpu")["memory.update"])
DTYPES = (torch.float32, torch.float64)
TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def _batch(b, c, d, seed=0, dup=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g)
    # few clusters: duplicates (and triplicates...) of targets in the batch
    y = torch.randint(0, max(1, min(c, b // 3 + 1) if dup else c), (b,), generator=g)
    return x, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,c,d", [(1, 1, 3), (19, 5, 16), (99, 13, 33)])
@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.0, 1.0])
def test_cluster_update_matches_loop(backend, dtype, b, c, d, momentum):
    centres = torch.randn(c, d)
    x, y = _batch(b, c, d)
    mem = ClusterMemory.from_centers(centres, momentum=momentum, dtype=dtype)
    want = ref.update(mem.features.numpy(), x.numpy(), y.numpy(), momentum)
    mem.update(x, y, backend=backend)
    assert mem.features.dtype == dtype and mem.features.shape == (c, d)
    np.testing.assert_allclose(mem.features.numpy(), want, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,c,s,d", [(1, 1, 1, 4), (19, 4, 10, 16), (99, 7, 3, 33)])
def test_multi_update_matches_loop(backend, dtype, b, c, s, d):
    multi = torch.randn(c, s, d)
    x, y = _batch(b, c, d, seed=1)
    mem = MultiCenterMemory.from_tensor(multi, momentum=0.2, dtype=dtype)
    want = ref.update_multi(mem.features.numpy(), x.numpy(), y.numpy(), 0.2)
    mem.update(x, y, backend=backend)
    np.testing.assert_allclose(mem.features.numpy(), want, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_update_repeated_centre_updates_lowest_slot(backend):
    # a cluster whose slots all repeat the centre: ties go to slot 0, then slot 0 differs from the rest
    c = torch.randn(1, 1, 8).expand(2, 5, 8).clone()
    mem = MultiCenterMemory.from_tensor(c, momentum=0.5, dtype=torch.float64)
    before = mem.features.clone()
    x = torch.randn(1, 8, dtype=torch.float64)
    mem.update(x, torch.tensor([1]), backend=backend)
    assert not torch.equal(mem.features[1, 0], before[1, 0])
    assert torch.equal(mem.features[1, 1:], before[1, 1:])
    assert torch.equal(mem.features[0], before[0])


def test_duplicates_are_sequential_not_averaged():
    mem = ClusterMemory.from_centers(torch.tensor([[1.0, 0.0]]), momentum=0.5, dtype=torch.float64)
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    mem.update(x, torch.tensor([0, 0]), backend="torch")
    # one step: (1, 1)/sqrt2; second: normalize(0.5*(1,1)/sqrt2 + 0.5*(0,1))
    v = 0.5 * np.array([1, 1]) / np.sqrt(2) + 0.5 * np.array([0, 1])
    np.testing.assert_allclose(mem.features[0].numpy(), v / np.linalg.norm(v), atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_instance_update_and_labels(backend):
    feats = torch.randn(30, 12)
    labels = torch.randint(-1, 4, (30,))
    mem = InstanceMemory.from_features(feats, labels, momentum=0.3)
    assert torch.equal(mem.labels, labels)
    idx = torch.tensor([3, 7, 3, 29, 0, 3])
    x = torch.randn(6, 12)
    want = ref.update(mem.features.numpy(), x.numpy(), idx.numpy(), 0.3)
    mem.update(x, idx, backend=backend)
    np.testing.assert_allclose(mem.features.numpy(), want, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="instance ids"):
        mem.update(x[:1], torch.tensor([30]), backend=backend)


def test_occurrence():
    t = torch.tensor([4, 1, 4, 4, 0, 1, 7])
    assert occurrence(t).tolist() == [0, 0, 1, 2, 0, 1, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_validation(backend):
    mem = ClusterMemory.from_centers(torch.randn(5, 8))
    before = mem.features.clone()
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match=r"targets: .*\[0, 5\)"):
        mem.update(x, torch.tensor([0, 5, 1]), backend=backend)
    with pytest.raises(ValueError, match="noise"):
        mem.update(x, torch.tensor([0, -1, 1]), backend=backend)
    with pytest.raises(TypeError, match="targets: expected an integer dtype"):
        mem.update(x, torch.tensor([0.0, 1.0, 2.0]), backend=backend)
    with pytest.raises(ValueError, match="targets: expected 3 ids"):
        mem.update(x, torch.tensor([0, 1]), backend=backend)
    with pytest.raises(ValueError, match="x: expected 8 feature columns"):
        mem.update(torch.randn(3, 7), torch.tensor([0, 1, 2]), backend=backend)
    with pytest.raises(ValueError, match="NaN"):
        mem.update(torch.full((3, 8), float("nan")), torch.tensor([0, 1, 2]), backend=backend)
    assert torch.equal(mem.features, before)  # nothing written on a rejected call
    mem.update(torch.empty(0, 8), torch.empty(0, dtype=torch.int64), backend=backend)  # empty batch: no-op
    assert torch.equal(mem.features, before)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="momentum"):
        ClusterMemory(8, 3, momentum=1.5)
    with pytest.raises(ValueError, match="temp"):
        ClusterMemory(8, 3, temp=0)
    with pytest.raises(ValueError, match="all-zero"):
        ClusterMemory.from_centers(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[C, S, D\]"):
        MultiCenterMemory.from_tensor(torch.randn(3, 4))
    with pytest.raises(TypeError, match="dtype"):
        ClusterMemory(8, 3, dtype=torch.float16)


def test_state_dict_round_trip():
    mem = MultiCenterMemory.from_tensor(torch.randn(4, 3, 8))
    mem.update(torch.randn(5, 8), torch.tensor([0, 1, 1, 3, 0]))
    sd = mem.state_dict()
    assert set(sd) == {"features"}
    other = MultiCenterMemory(8, 4, 3)
    other.load_state_dict(sd)
    assert torch.equal(other.features, mem.features)
    inst = InstanceMemory.from_features(torch.randn(6, 8), torch.tensor([0, 0, 1, -1, 1, 2]))
    assert set(inst.state_dict()) == {"features", "labels"}


def test_logits():
    centres = torch.randn(6, 10)
    mem = ClusterMemory.from_centers(centres, temp=0.1)
    x = torch.randn(4, 10)
    xn = x / x.norm(dim=1, keepdim=True)
    cn = centres / centres.norm(dim=1, keepdim=True)
    torch.testing.assert_close(mem.logits(x), xn @ cn.T / 0.1)
    multi = torch.randn(6, 3, 10)
    mm = MultiCenterMemory.from_tensor(multi, temp=0.1)
    mn = multi / multi.norm(dim=2, keepdim=True)
    want = torch.stack([(xn @ mn[:, s].T) for s in range(3)], 2).max(2).values / 0.1
    torch.testing.assert_close(mm.logits(x), want)


def test_cluster_contrast_loss_values_and_grad():
    centres = torch.randn(6, 10, dtype=torch.float64)
    mem = ClusterMemory.from_centers(centres, temp=0.05, dtype=torch.float64)
    x = torch.randn(5, 10, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 5, 2, 2, 1])
    loss = cluster_contrast_loss(x, mem, y)
    xn = x.detach() / x.detach().norm(dim=1, keepdim=True)
    lg = xn @ mem.features.T / 0.05
    want = (torch.logsumexp(lg, 1) - lg[torch.arange(5), y]).mean()
    torch.testing.assert_close(loss.detach(), want)
    before = mem.features.clone()
    loss.backward()
    assert x.grad is not None and mem.features.grad is None
    assert torch.equal(mem.features, before)  # backward never touches the memory
    assert torch.autograd.gradcheck(lambda z: cluster_contrast_loss(z, mem, y), (x.detach().requires_grad_(),))
    # multi-centre memory and raw tensors
    mm = MultiCenterMemory.from_tensor(torch.randn(6, 3, 10), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: cluster_contrast_loss(z, mm, y, reduction="none"),
                                    (x.detach().requires_grad_(),))
    per = cluster_contrast_loss(x, mem.features, y, temp=0.05, reduction="none")
    assert per.shape == (5,)
    torch.testing.assert_close(per.mean().detach(), want)


def test_update_before_backward_is_caught():
    mem = ClusterMemory.from_centers(torch.randn(4, 8))
    x = torch.randn(3, 8, requires_grad=True)
    y = torch.tensor([0, 1, 1])
    loss = cluster_contrast_loss(x, mem, y)
    mem.update(x.detach(), y)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_loss_validation():
    mem = ClusterMemory.from_centers(torch.randn(4, 8))
    with pytest.raises(ValueError, match="targets"):
        cluster_contrast_loss(torch.randn(2, 8), mem, torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="memory"):
        cluster_contrast_loss(torch.randn(2, 8), "mem", torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        cluster_contrast_loss(torch.randn(2, 8), mem, torch.tensor([0, 1]), reduction="max")
