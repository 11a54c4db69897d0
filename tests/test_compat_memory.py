"""hilcore.compat's cm.py memories against the per-sample loops they replace (hilcore/ref/cm.py).

Same inputs, same memory: the loss, the input gradient and the memory after
backward must match the loop to 1e-6 in float32, on every update backend that
runs here (torch, native, triton in the interpreter).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hilcore
from hilcore import compat
from hilcore.ref import cm as ref

BACKENDS = list(hilcore.capabilities("cpu")["memory.update"])
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _data(b, c, d, seed=0, n_ids=None, s=None):
    g = torch.Generator().manual_seed(seed)
    shape = (c, d) if s is None else (c, s, d)
    bank = F.normalize(torch.randn(shape, generator=g), dim=-1)
    x = 3.0 * torch.randn(b, d, generator=g)
    # few distinct targets: duplicates in the batch, applied one after the other
    y = torch.randint(0, n_ids or max(1, min(c, b // 3 + 1)), (b,), generator=g)
    return bank, x, y


def _close(got, want, dtype=torch.float32):
    assert got.dtype == want.dtype
    assert float((got.detach() - want.detach()).abs().max()) <= TOL[dtype], \
        float((got.detach() - want.detach()).abs().max())


def _run_compat(mem, x, y, **kw):
    xa = x.clone().requires_grad_()
    loss = mem(xa, y, **kw)
    loss.backward()
    return loss, xa.grad


def _run_loop(fn, x, y, bank, **kw):
    xb = x.clone().requires_grad_()
    loss = fn(xb, y, bank, **kw)
    loss.backward()
    return loss, xb.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_hard", [False, True])
@pytest.mark.parametrize("b,c,d", [(1, 1, 3), (19, 5, 16), (99, 13, 33), (64, 40, 8)])
def test_cluster_memory_matches_loop(backend, use_hard, b, c, d):
    bank, x, y = _data(b, c, d, seed=b + c)
    mem = compat.ClusterMemory(d, c, temp=0.05, momentum=0.2, use_hard=use_hard, backend=backend)
    mem.features = bank.clone()  # as cluster-contrast fills it
    loss, grad = _run_compat(mem, x, y)
    want_bank = bank.clone()
    want_loss, want_grad = _run_loop(ref.loop_cluster_loss, x, y, want_bank, temp=0.05, momentum=0.2,
                                     use_hard=use_hard)
    _close(loss, want_loss)
    _close(grad, want_grad)
    _close(mem.features, want_bank)
    assert not torch.equal(mem.features, bank)  # the update ran


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_hard", [False, True])
def test_cluster_memory_ca_and_training_momentum(backend, use_hard):
    bank, x, y = _data(48, 9, 20, seed=3)
    ca = torch.rand(48, generator=torch.Generator().manual_seed(1))
    mem = compat.ClusterMemory(20, 9, temp=0.07, momentum=0.2, use_hard=use_hard, backend=backend)
    mem.features = bank.clone()
    loss, grad = _run_compat(mem, x, y, ca=ca, training_momentum=0.6)
    want_bank = bank.clone()
    want_loss, want_grad = _run_loop(ref.loop_cluster_loss, x, y, want_bank, temp=0.07, momentum=0.6,
                                     use_hard=use_hard, ca=ca)
    _close(loss, want_loss)
    _close(grad, want_grad)
    _close(mem.features, want_bank)
    assert mem.momentum == 0.2  # training_momentum is per call
    # a one-element tensor momentum, as cm.py passes it
    mem.features = bank.clone()
    _run_compat(mem, x, y, ca=ca, training_momentum=torch.tensor([0.6]))
    _close(mem.features, want_bank)


def test_cluster_memory_hard_differs_and_takes_first_on_ties():
    bank, x, y = _data(60, 6, 12, seed=5)
    soft = compat.ClusterMemory(12, 6, use_hard=False)
    hard = compat.ClusterMemory(12, 6, use_hard=True)
    soft.features, hard.features = bank.clone(), bank.clone()
    _run_compat(soft, x, y)
    _run_compat(hard, x, y)
    assert float((soft.features - hard.features).abs().max()) > 1e-3
    # two samples equally dissimilar to m = e0: the first in batch order is the hardest
    m = torch.zeros(1, 4)
    m[0, 0] = 1.0
    xs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]])
    for order, sign in (([0, 1, 2], 1.0), ([0, 2, 1], -1.0)):
        mem = compat.ClusterMemory(4, 1, momentum=0.5, use_hard=True, backend="torch")
        mem.features = m.clone()
        _run_compat(mem, xs[order], torch.zeros(3, dtype=torch.int64))
        assert sign * float(mem.features[0, 1]) > 0.1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("b,c,s,d", [(1, 1, 1, 4), (19, 4, 10, 16), (70, 7, 3, 33)])
def test_multi_center_memory_matches_loop(backend, b, c, s, d):
    bank, x, y = _data(b, c, d, seed=b, s=s)
    mem = compat.MultiCenterClusterMemory(d, c, num_centers=s, temp=0.05, momentum=0.2, backend=backend)
    mem.features_d = bank.clone()
    loss, grad = _run_compat(mem, x, y)
    want_bank = bank.clone()
    want_loss, want_grad = _run_loop(ref.loop_multi_loss, x, y, want_bank, temp=0.05, momentum=0.2)
    _close(loss, want_loss)
    _close(grad, want_grad)
    _close(mem.features_d, want_bank)


@pytest.mark.parametrize("backend", BACKENDS)
def test_instance_memory_matches_loop(backend):
    n, d, b = 50, 24, 37
    bank, x, _ = _data(b, n, d, seed=7)
    idx = torch.randint(0, 12, (b,), generator=torch.Generator().manual_seed(2))  # repeated indexes
    mem = compat.Memory_wise_v3(d, n, 10, temp=0.05, momentum=0.3, backend=backend)
    mem.features = bank.clone()
    loss, grad = _run_compat(mem, x, idx)
    want_bank = bank.clone()
    want_loss, want_grad = _run_loop(ref.loop_instance_loss, x, idx, want_bank, temp=0.05, momentum=0.3)
    _close(loss, want_loss)
    _close(grad, want_grad)
    _close(mem.features, want_bank)
    # updateEM: the no-grad step the HIL trainer calls, raw (unnormalised) features
    mem.features = bank.clone()
    mem.updateEM(x, idx)
    want_bank = bank.clone()
    ref.loop_update_em(want_bank, x, idx, 0.3)
    _close(mem.features, want_bank)


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_forms_match_modules(backend):
    bank, x, y = _data(30, 7, 10, seed=11)
    xn = F.normalize(x, dim=1)
    for fn, hard in ((compat.cm, False), (compat.cm_hard, True)):
        f = bank.clone()
        xa = xn.clone().requires_grad_()
        out = fn(xa, y, f, 0.2, backend=backend)
        assert out.shape == (30, 7)
        torch.testing.assert_close(out, xn @ bank.T, rtol=0, atol=1e-6)
        out.sum().backward()
        want = bank.clone()
        xb = x.clone().requires_grad_()
        ref.loop_cluster_loss(xb, y, want, momentum=0.2, use_hard=hard).backward()
        _close(f, want)
        _close(xa.grad, bank.sum(0).expand(30, -1).contiguous())
    f = bank.clone()
    out = compat.em(xn.clone().requires_grad_(), y, f, 0.2, backend=backend)
    out.sum().backward()
    want = bank.clone()
    ref.loop_update_em(want, xn, y, 0.2)
    _close(f, want)


def test_shared_memory_two_forwards_one_backward():
    """HIL uses one memory for both modalities: two forwards, one backward, each grad through the memory as it is
    when its backward runs; the same as the loop."""
    bank, x, y = _data(40, 8, 16, seed=13)
    x2, y2 = 2 * torch.randn(24, 16), torch.randint(0, 8, (24,))
    mem = compat.ClusterMemory(16, 8)
    mem.features = bank.clone()
    xa, xa2 = x.clone().requires_grad_(), x2.clone().requires_grad_()
    (mem(xa, y) + mem(xa2, y2)).backward()
    want = bank.clone()
    xb, xb2 = x.clone().requires_grad_(), x2.clone().requires_grad_()
    (ref.loop_cluster_loss(xb, y, want) + ref.loop_cluster_loss(xb2, y2, want)).backward()
    _close(xa.grad, xb.grad)
    _close(xa2.grad, xb2.grad)
    _close(mem.features, want)


def test_float64_memory():
    bank, x, y = _data(33, 6, 12, seed=17)
    mem = compat.ClusterMemory(12, 6, use_hard=True, backend="torch")
    mem.features = bank.double()
    loss, grad = _run_compat(mem, x.double(), y)
    want = bank.double()
    want_loss, want_grad = _run_loop(ref.loop_cluster_loss, x.double(), y, want, use_hard=True)
    _close(loss, want_loss, torch.float64)
    _close(grad, want_grad, torch.float64)
    _close(mem.features, want, torch.float64)


def test_autocast_cpu_bfloat16():
    """Under autocast the features come in bfloat16; logits, loss and update stay in the memory's float32."""
    bank, x, y = _data(32, 6, 16, seed=19)
    lin = torch.nn.Linear(16, 16)
    mem = compat.ClusterMemory(16, 6)
    mem.features = bank.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = lin(x)
        assert f.dtype == torch.bfloat16
        loss = mem(f, y)
    assert loss.dtype == torch.float32 and mem.features.dtype == torch.float32
    f_ref = f.detach().float().requires_grad_()
    want = bank.clone()
    want_loss = ref.loop_cluster_loss(f_ref, y, want)
    loss.backward()
    want_loss.backward()
    _close(loss, want_loss)
    _close(mem.features, want)
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_state_dict_round_trip():
    bank, x, y = _data(20, 5, 8, seed=23)
    mem = compat.ClusterMemory(8, 5, num_centers=3)
    mem.features = bank.clone()
    mem.features_d = F.normalize(torch.randn(5, 3, 8), dim=2)
    _run_compat(mem, x, y)
    sd = mem.state_dict()
    assert set(sd) == {"features", "features_d"}
    other = compat.ClusterMemory(8, 5, num_centers=3)
    other.load_state_dict(sd)
    assert torch.equal(other.features, mem.features) and torch.equal(other.features_d, mem.features_d)
    # the loaded memory continues exactly like the original
    x2, y2 = torch.randn(9, 8), torch.randint(0, 5, (9,))
    _run_compat(mem, x2, y2)
    _run_compat(other, x2, y2)
    assert torch.equal(other.features, mem.features)
    inst = compat.Memory_wise_v3(8, 20)
    inst.features = F.normalize(torch.randn(20, 8), dim=1)
    inst.labels = (torch.arange(20) % 4).int()
    again = compat.Memory_wise_v3(8, 20)
    again.load_state_dict(inst.state_dict())
    assert torch.equal(again.features, inst.features) and torch.equal(again.labels, inst.labels)


def test_assigned_buffers_any_strides():
    bank, x, y = _data(25, 6, 10, seed=29)
    mem = compat.ClusterMemory(10, 6)
    mem.features = bank.T.contiguous().T  # a non-contiguous view: made contiguous, still a buffer
    assert not mem.features.is_contiguous()
    _run_compat(mem, x[:, :].T.contiguous().T, y)
    assert "features" in dict(mem.named_buffers())
    want = bank.clone()
    _run_loop(ref.loop_cluster_loss, x, y, want)
    _close(mem.features, want)


def test_bad_input():
    mem = compat.ClusterMemory(8, 4)
    mem.features = F.normalize(torch.randn(4, 8), dim=1)
    x = torch.randn(5, 8)
    with pytest.raises(ValueError, match="targets.*-1"):
        mem(x, torch.tensor([0, 1, -1, 2, 3]))
    with pytest.raises(ValueError, match=r"targets.*\[0, 4\)"):
        mem(x, torch.tensor([0, 1, 4, 2, 3]))
    with pytest.raises(ValueError, match="inputs.*8 feature columns"):
        mem(torch.randn(5, 7), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="inputs.*at least one"):
        mem(torch.randn(0, 8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="inputs.*NaN"):
        mem(torch.full((5, 8), float("nan")), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"ca: expected one weight per sample, shape \(5,\)"):
        mem(x, torch.zeros(5, dtype=torch.int64), ca=torch.ones(4))
    with pytest.raises(ValueError, match="training_momentum.*\\[0, 1\\]"):
        mem(x, torch.zeros(5, dtype=torch.int64), training_momentum=1.5)
    with pytest.raises(ValueError, match="momentum"):
        compat.ClusterMemory(8, 4, momentum=-0.1)
    with pytest.raises(ValueError, match="temp"):
        compat.ClusterMemory(8, 4, temp=0)
    with pytest.raises(ValueError, match="backend"):
        compat.ClusterMemory(8, 4, backend="cuda")
    mem.features = torch.randn(4, 8).half()
    with pytest.raises(TypeError, match="features.*float32 or float64.*float16"):
        mem(x, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"features.*\[C, D\]"):
        compat.cm(x, torch.zeros(5, dtype=torch.int64), torch.randn(4, 2, 8))
    with pytest.raises(ValueError, match="features_d"):
        compat.cm_d(x, torch.zeros(5, dtype=torch.int64), torch.randn(4, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("use_hard", [False, True])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cluster_memory_cuda_matches_cpu_loop(use_hard, backend):
    bank, x, y = _data(256, 500, 768, seed=31, n_ids=16)
    mem = compat.ClusterMemory(768, 500, use_hard=use_hard, backend=backend).cuda()
    mem.features = bank.cuda()
    xa = x.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = mem(xa.half(), y.cuda())
    loss.backward()
    want = bank.clone()
    xb = x.half().float().requires_grad_()
    want_loss = ref.loop_cluster_loss(xb, y, want, use_hard=use_hard)
    want_loss.backward()
    assert abs(float(loss) - float(want_loss)) <= 1e-4
    assert float((mem.features.cpu() - want).abs().max()) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_hard_picks_the_exact_argmin_on_near_ties(backend):
    """Samples whose similarities differ by less than float32 can resolve: the exact (float64) least similar wins."""
    import hilcore.compat as hc

    g = torch.Generator().manual_seed(37)
    c, d, k = 5, 64, 6
    bank = F.normalize(torch.randn(c, d, generator=g), dim=1)
    base = F.normalize(torch.randn(c, d, generator=g), dim=1)
    x, y = [], []
    for cls in range(c):
        for j in range(k):  # k copies of one sample, each nudged by one ulp in a few components
            v = base[cls].clone()
            idx = torch.randint(0, d, (3,), generator=g)
            v[idx] = torch.nextafter(v[idx], torch.where(torch.rand(3, generator=g) < 0.5, -1.0, 1.0))
            x.append(v)
            y.append(cls)
    x, y = torch.stack(x), torch.tensor(y)
    exact = (x.double() * bank[y].double()).sum(1)
    want = []
    for cls in range(c):
        members = torch.nonzero(y == cls).view(-1)
        want.append(int(members[torch.argmin(exact[members])]))  # first minimum
    got = hc._hardest(x, y, bank)
    assert got.tolist() == want
    assert hc._hardest(x, y, bank, (x @ bank.T).gather(1, y[:, None]).squeeze(1)).tolist() == want
    # through the module (forward similarities reused in backward): the memory moves towards those samples
    mem = compat.ClusterMemory(d, c, momentum=0.3, use_hard=True, backend=backend)
    mem.features = bank.clone()
    _run_compat(mem, x, y)
    expect = bank.clone()
    for cls, i in enumerate(want):
        v = 0.3 * expect[cls] + 0.7 * F.normalize(x[i], dim=0)
        expect[cls] = v / v.norm()
    _close(mem.features, expect)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hil_memory_soft_loss_and_raw_update_match_the_release_loop(backend):
    n, d, b = 40, 16, 29
    bank, x, _ = _data(b, n, d, seed=11)
    idx = torch.randint(0, 10, (b,), generator=torch.Generator().manual_seed(5))  # repeated indexes
    mem = compat.Memory(d, n, 10, temp=0.05, momentum=0.3, backend=backend)
    mem.features = bank.clone()
    loss, grad = _run_compat(mem, x, idx)
    want_bank = bank.clone()
    want_loss, want_grad = _run_loop(ref.loop_soft_instance_loss, x, idx, want_bank, temp=0.05, momentum=0.3)
    _close(loss, want_loss)
    _close(grad, want_grad)
    _close(mem.features, want_bank)
    # updateEM: no renormalisation (Memory_wise_v3's renormalises: the two differ)
    mem.features = bank.clone()
    mem.updateEM(x, idx)
    want_bank = bank.clone()
    ref.loop_update_em_raw(want_bank, x, idx, 0.3)
    _close(mem.features, want_bank)
    assert not torch.allclose(torch.linalg.vector_norm(mem.features[idx], dim=1), torch.ones(b))


def _release_state(c, d, n):
    """State dicts as the HIL release's memories save them (buffer names, shapes and dtypes of its cm.py)."""
    g = torch.Generator().manual_seed(0)
    return {
        "cluster": {"features": F.normalize(torch.randn(c, d, generator=g), dim=1),
                    "features_d": F.normalize(torch.randn(c, 10, d, generator=g), dim=2)},
        "wise": {"features": F.normalize(torch.randn(n, d, generator=g), dim=1),
                 "labels": torch.randint(-1, c, (n,), generator=g).int(),
                 "cam": torch.randint(0, 6, (n,), generator=g).int()},
        "memory": {"features": F.normalize(torch.randn(n, d, generator=g), dim=1),
                   "labels": torch.randint(-1, c, (n,), generator=g), "cam": torch.randint(0, 6, (n,), generator=g)},
    }


def test_load_state_dict_of_the_release_memories():
    c, d, n = 7, 12, 30
    st = _release_state(c, d, n)
    for mem in (compat.ClusterMemory(d, c), compat.ClusterMemory(d, c, num_centers=10),
                compat.ClusterMemory_shared(d, c)):
        mem.load_state_dict(st["cluster"])  # strict
        assert torch.equal(mem.features, st["cluster"]["features"])
        assert torch.equal(mem.features_d, st["cluster"]["features_d"])
        assert set(mem.state_dict()) == {"features", "features_d"}
    shared = compat.ClusterMemory_shared(d, c)
    assert shared.features_d.shape == (c, 10, d) and "features_d" in shared.state_dict()
    plain = compat.ClusterMemory(d, c)  # cluster-contrast's memory has no features_d: loads too
    plain.load_state_dict({"features": st["cluster"]["features"]})
    assert "features_d" not in plain.state_dict()
    plain.features_d = st["cluster"]["features_d"].clone()  # assigned as the release's trainer does: a buffer
    assert "features_d" in plain.state_dict() and "features_d" in dict(plain.named_buffers())
    wise = compat.Memory_wise_v3(d, n, c)
    wise.load_state_dict(st["wise"])
    assert wise.labels.dtype == torch.int32 and torch.equal(wise.labels, st["wise"]["labels"])
    inst = compat.Memory(d, n, c)
    inst.load_state_dict(st["memory"])
    assert inst.labels.dtype == torch.int64 and torch.equal(inst.cam, st["memory"]["cam"])
