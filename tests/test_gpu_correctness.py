"""Point 5 of the GPU issue, checkable without a GPU: IEEE products whatever the caller's TF32
setting, the CUDA driver/toolkit check, the driver's set_device."""
import pytest
import torch

import hilcore.backend.cuda.driver as drv
from hilcore._precision import ieee_fp32


def _legacy_state():
    return torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()


@pytest.mark.parametrize("prec", ["high", "medium", "highest", "allow_tf32"])
def test_ieee_fp32_legacy_api_restored(prec):
    old = _legacy_state()
    try:
        if prec == "allow_tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
        else:
            torch.set_float32_matmul_precision(prec)
        before = _legacy_state()
        with ieee_fp32():
            assert _legacy_state() == (False, "highest")
        assert _legacy_state() == before
    finally:
        torch.set_float32_matmul_precision(old[1])
        torch.backends.cuda.matmul.allow_tf32 = old[0]


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9")
def test_ieee_fp32_new_api_restored():
    m = torch.backends.cuda.matmul
    old = m.fp32_precision
    try:
        m.fp32_precision = "tf32"
        with ieee_fp32():
            assert m.fp32_precision == "ieee"
        assert m.fp32_precision == "tf32"  # still readable through the caller's API
    finally:
        m.fp32_precision = old


def test_torch_knn_under_tf32_setting_is_exact():
    from hilcore.backend.torch.knn import knn
    x = torch.nn.functional.normalize(torch.randn(37, 19, dtype=torch.float64), dim=1)
    ref = torch.argsort(-(x @ x.T), dim=1, stable=True)[:, :5]
    old = _legacy_state()
    try:
        torch.set_float32_matmul_precision("medium")
        idx, sim = knn(x.float(), 5)
        assert torch.get_float32_matmul_precision() == "medium"  # the caller's setting is back
    finally:
        torch.set_float32_matmul_precision(old[1])
        torch.backends.cuda.matmul.allow_tf32 = old[0]
    assert torch.equal(idx[:, 0], torch.arange(37))
    torch.testing.assert_close(sim.double(), torch.gather(x @ x.T, 1, idx), rtol=0, atol=1e-6)
    assert (idx == ref).float().mean() > 0.99


def test_version_problem():
    assert drv.version_problem(12080, 12080) is None
    assert drv.version_problem(13000, 12040) is None
    msg = drv.version_problem(12020, 13000)
    assert msg and "12.2" in msg and "13.0" in msg and "older" in msg
    assert "no CUDA driver" in drv.version_problem(0, 12040)
    assert "could not be queried" in drv.version_problem(-1, 12040)


def test_driver_problem_makes_cuda_unavailable(monkeypatch):
    import hilcore._dispatch as dispatch

    class Fake:
        def has_cuda(self):
            return True

        def cuda_versions(self):
            return 12020, 13000

    monkeypatch.setattr(dispatch, "native_module", lambda: Fake())
    drv.driver_problem.cache_clear()
    try:
        assert "older than the CUDA 13.0 toolkit" in drv.driver_problem()
        if hasattr(dispatch, "_why_not"):
            why = dispatch._why_not("cuda", torch.device("cuda", 0))
            assert why and "older" in why
    finally:
        drv.driver_problem.cache_clear()


def test_setup_sets_the_device(monkeypatch):
    import hilcore.train.distributed as D

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: calls[-1].index if calls else 0)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert D.setup("cuda:1") == torch.device("cuda", 1)
    assert calls == [torch.device("cuda", 1)]


def test_jaccard_workspace_counts_torch_cached_memory(monkeypatch):
    """The CUDA Jaccard workspace sees the caching allocator's reserved-but-free blocks."""
    import hilcore.backend.cuda.jaccard as cj

    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev=None: 7 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 3 * gib)
    assert cj.default_workspace(torch.device("cuda", 0)) == (gib + 4 * gib) // 4
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 0)
    assert cj.default_workspace(torch.device("cuda", 0)) == gib // 4
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (0, 80 * gib))
    assert cj.default_workspace(torch.device("cuda", 0)) == 64 << 20
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (100 * gib, 180 * gib))
    assert cj.default_workspace(torch.device("cuda", 0)) == cj.DEFAULT_WORKSPACE_BYTES
