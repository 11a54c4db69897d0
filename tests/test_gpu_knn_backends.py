"""The faiss-GPU and cuVS kNN backends: availability, and their glue against exact kNN.

Neither library exists here: with the modules absent the backends must report
why they cannot run; with a small fake ``faiss`` / ``cuvs`` put in
``sys.modules`` (brute force on CPU torch tensors, ties handed out to the
*higher* index first, optionally TF32-rounded inputs) the glue code runs for
real: argument conversion, the self-first rule when duplicates push a row out
of its own candidates, the fp32 rescoring and certificate (Triton kernels in the
interpreter), the fp32 fallback of uncertified rows. Results are compared with a
float64 brute-force kNN (exactly on tie data).
"""
import importlib
import sys
import types

import numpy as np
import pytest
import torch

import hilcore
from hilcore import _dispatch

pytest.importorskip("triton")
from test_triton_knn import brute_knn, check, duplicated, tie_rows, unit_rows  # noqa: E402

INTERP = "triton" in hilcore.backends("cpu")
needs_interp = pytest.mark.skipif(not INTERP, reason="needs TRITON_INTERPRET=1 (conftest sets it on CPU)")


def _really_installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ------------------------------------------------------------------ fakes
def _tf32(v: torch.Tensor) -> torch.Tensor:
    """Truncate float32 to 10 explicit mantissa bits, as a TF32 GEMM may."""
    return (v.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


def _search(db, q, k, tf32):
    """Brute-force inner products (float64 sums of the possibly TF32 inputs, rounded once), best first,
    equal values to the HIGHER index first (hilcore's rule is the opposite: the glue must fix it)."""
    q, db = torch.as_tensor(q), torch.as_tensor(db)
    if tf32:
        q, db = _tf32(q), _tf32(db)
    s = (q.double() @ db.double().T).float()
    vals, order = torch.sort(s.flip(1), dim=1, descending=True, stable=True)
    return vals[:, :k].contiguous(), (s.shape[1] - 1 - order[:, :k]).contiguous()


def fake_faiss(*, torch_io=True, tf32=False, gpu=True, log=None):
    """sys.modules entries of a tiny faiss with GpuIndexFlatIP (and faiss.contrib.torch_utils when torch_io)."""
    log = [] if log is None else log
    faiss = types.ModuleType("faiss")

    class StandardGpuResources:
        pass

    class GpuIndexFlatConfig:
        def __init__(self):
            self.device, self.useFloat16 = 0, True  # the glue must switch float16 off

    class GpuIndexFlatIP:
        def __init__(self, res, d, cfg):
            assert isinstance(res, StandardGpuResources) and isinstance(cfg, GpuIndexFlatConfig)
            assert cfg.useFloat16 is False and cfg.device == 0
            self.d, self.db = d, None

        def _check(self, a):
            assert isinstance(a, torch.Tensor if torch_io else np.ndarray), type(a)
            assert a.dtype in (torch.float32, np.float32) and a.shape[1] == self.d
            return a

        def add(self, y):
            self.db = self._check(y)
            log.append(("add", tuple(y.shape)))

        def search(self, q, k):
            v, i = _search(self.db, self._check(q), k, tf32)
            log.append(("search", tuple(q.shape), k))
            return (v, i) if torch_io else (v.numpy(), i.numpy())

    faiss.GpuIndexFlatConfig = GpuIndexFlatConfig
    if gpu:
        faiss.StandardGpuResources, faiss.GpuIndexFlatIP = StandardGpuResources, GpuIndexFlatIP
        faiss.get_num_gpus = lambda: 1
    mods = {"faiss": faiss}
    if torch_io:
        contrib = types.ModuleType("faiss.contrib")
        contrib.torch_utils = types.ModuleType("faiss.contrib.torch_utils")
        faiss.contrib = contrib
        mods.update({"faiss.contrib": contrib, "faiss.contrib.torch_utils": contrib.torch_utils})
    else:
        mods.update({"faiss.contrib": None, "faiss.contrib.torch_utils": None})  # import fails
    return mods


def fake_cuvs(*, tf32=False, log=None):
    """sys.modules entries of a tiny cuvs.neighbors.brute_force (outputs as NumPy arrays, like device arrays)."""
    log = [] if log is None else log
    cuvs = types.ModuleType("cuvs")
    neighbors = types.ModuleType("cuvs.neighbors")
    bf = types.ModuleType("cuvs.neighbors.brute_force")

    def build(dataset, metric="sqeuclidean", metric_arg=2.0, resources=None):
        assert metric == "inner_product" and isinstance(dataset, torch.Tensor)
        log.append(("build", tuple(dataset.shape)))
        return {"db": dataset}

    def search(index, queries, k, neighbors=None, distances=None, resources=None, prefilter=None):
        v, i = _search(index["db"], queries, k, tf32)
        log.append(("search", tuple(queries.shape), k))
        return v.numpy(), i.numpy().astype(np.int64)

    bf.build, bf.search = build, search
    neighbors.brute_force, cuvs.neighbors = bf, neighbors
    return {"cuvs": cuvs, "cuvs.neighbors": neighbors, "cuvs.neighbors.brute_force": bf}


def _install(monkeypatch, mods):
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


KINDS = ("faiss_gpu", "faiss_gpu_numpy", "cuvs")


def _run(monkeypatch, kind, x, k, y=None, *, tf32=False):
    log = []
    if kind == "cuvs":
        _install(monkeypatch, fake_cuvs(tf32=tf32, log=log))
        from hilcore.backend.cuvs.knn import knn as fn
    else:
        _install(monkeypatch, fake_faiss(torch_io=kind == "faiss_gpu", tf32=tf32, log=log))
        from hilcore.backend.faiss.knn import knn_gpu as fn
    xt = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    yt = None if y is None else torch.nn.functional.normalize(torch.from_numpy(y), dim=1)
    stats: dict = {}
    idx, sim = fn(xt, k, yt, info=stats)
    assert log and log[-1][0] == "search", log  # the library was asked
    m = len(x) if y is None else len(y)
    import hilcore.backend.triton.knn as tknn
    assert log[-1][2] == min(m, tknn.candidates(k))  # k + margin candidates, never more than the columns
    assert idx.dtype == torch.int64 and sim.dtype == torch.float32 and idx.device == xt.device
    return idx, sim, stats


# ------------------------------------------------------------------ availability
@pytest.mark.skipif(_really_installed("faiss") or _really_installed("cuvs"), reason="faiss / cuvs installed here")
def test_absent_libraries_are_unavailable_with_the_reason():
    cuda = torch.device("cuda")
    assert "faiss is not installed" in _dispatch._why_not("faiss_gpu", cuda)
    assert "cuvs is not installed" in _dispatch._why_not("cuvs", cuda)
    for b, lib in (("faiss_gpu", "faiss"), ("cuvs", "cuvs")):
        with pytest.raises(hilcore.BackendUnavailable, match=rf"knn: backend '{b}' cannot run: {lib} is not installed"):
            _dispatch.resolve("knn", b, "cuda")
        with pytest.raises(hilcore.BackendUnavailable, match=rf"knn: backend '{b}' cannot run"):
            hilcore.knn(np.eye(4, dtype=np.float32), 2, backend=b)
        assert b in hilcore.capabilities()["knn"] and b not in hilcore.capabilities("cpu")["knn"]
        assert b not in hilcore.backends("cpu") and b not in hilcore.backends("cuda")
        for order in _dispatch.AUTO_ORDER.values():
            assert b not in order


def test_fake_libraries_make_the_backends_available_on_a_gpu_only(monkeypatch):
    _install(monkeypatch, {**fake_faiss(), **fake_cuvs()})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_dispatch, "has_triton", lambda: True)
    for b in ("faiss_gpu", "cuvs"):
        assert _dispatch._why_not(b, torch.device("cuda")) is None
        assert _dispatch.resolve("knn", b, "cuda").label == b
        assert "needs CUDA tensors" in _dispatch._why_not(b, torch.device("cpu"))
        assert _dispatch.resolve("knn", "auto", "cuda").backend not in ("faiss_gpu", "cuvs")  # auto never picks them
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _dispatch._why_not("faiss_gpu", torch.device("cuda")) == "no CUDA device is present"
    assert _dispatch._why_not("cuvs", torch.device("cuda")) == "no CUDA device is present"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _install(monkeypatch, fake_faiss(gpu=False))  # faiss-cpu: no GPU index
    assert "no GPU support" in _dispatch._why_not("faiss_gpu", torch.device("cuda"))
    monkeypatch.setattr(_dispatch, "has_triton", lambda: False)
    assert "triton is not installed" in _dispatch._why_not("cuvs", torch.device("cuda"))


def test_faiss_without_gpu_support_raises_a_clear_import_error(monkeypatch):
    _install(monkeypatch, fake_faiss(gpu=False))
    from hilcore.backend.faiss.knn import knn_gpu
    with pytest.raises(ImportError, match="GpuIndexFlatIP"):
        knn_gpu(torch.eye(3), 1)


# ------------------------------------------------------------------ the glue, exact
@needs_interp
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,d,k", [(157, 40, 7), (60, 33, 1), (9, 12, 5), (70, 16, 30)])
def test_random_rows_match_exact_knn(monkeypatch, kind, n, d, k):
    x = unit_rows(n, d, seed=n + k)
    idx, sim, st = _run(monkeypatch, kind, x, k)
    check(idx, sim, x, k, exact=False)
    assert st["rows"] == n and 0 <= st["uncertified_rows"] <= n
    if n > 2 * st["candidates"]:
        assert st["uncertified_rows"] <= n // 10, st  # well-separated rows: nearly all certified
    y = unit_rows(n + 13, d, seed=3)
    idx, sim, _ = _run(monkeypatch, kind, x, k, y)
    check(idx, sim, x, k, y, exact=False)


@needs_interp
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 3, 8])
def test_ties_and_duplicates_are_exact_self_first_lower_index(monkeypatch, kind, k):
    """Products exact multiples of 1/4; 24 copies of one row (more than the candidates, so the fake's
    higher-index-first ties push low rows out of their own candidate lists)."""
    x = duplicated(tie_rows(61, 8, seed=k), seed=k)
    x[:24] = x[5]
    idx, sim, st = _run(monkeypatch, kind, x, k)
    check(idx, sim, x, k, exact=True)
    assert st["uncertified_rows"] > 0 or k == 1  # ties at the k-th value cannot be certified
    y = duplicated(tie_rows(47, 8, seed=k + 1), seed=2)
    idx, sim, _ = _run(monkeypatch, kind, x, k, y)
    check(idx, sim, x, k, y, exact=True)


@needs_interp
@pytest.mark.parametrize("kind", ["faiss_gpu", "cuvs"])
def test_tf32_candidates_stay_exact(monkeypatch, kind):
    """A library that rounds its inputs to TF32: the bound still holds; near ties fall back to fp32."""
    rng = np.random.default_rng(5)
    base = unit_rows(1, 48, 1)[0]
    near = base[None, :] + 3e-4 * rng.standard_normal((40, 48)).astype(np.float32)
    x = np.concatenate([near / np.linalg.norm(near, axis=1, keepdims=True), unit_rows(50, 48, 2)]).astype(np.float32)
    idx, sim, st = _run(monkeypatch, kind, x, 4, tf32=True)
    check(idx, sim, x, 4, exact=False)
    assert st["uncertified_rows"] > 0
    import hilcore.backend.triton.knn as tknn
    i32, s32 = tknn.knn(torch.nn.functional.normalize(torch.from_numpy(x), dim=1), 4, precision="fp32")
    _, _, full = brute_knn(x, 4)
    for r, a in zip(*np.nonzero(idx.numpy() != i32.numpy())):  # only float32 near-ties may differ
        assert abs(full[r, idx[r, a]] - full[r, i32[r, a]]) <= 1e-5


@needs_interp
def test_bad_candidates_are_not_trusted(monkeypatch):
    """Candidates out of order, repeated or out of range: those rows are answered by the fp32 kernel."""
    import hilcore.backend.triton.knn as tknn
    x = torch.nn.functional.normalize(torch.from_numpy(unit_rows(40, 16, 9)), dim=1)
    kc = tknn.candidates(3)
    ci = torch.stack([torch.randperm(40, generator=torch.Generator().manual_seed(i))[:kc] for i in range(40)])
    cv = torch.sort(torch.rand(40, kc), dim=1, descending=True).values  # values unrelated to the columns
    ci[0, 1] = ci[0, 0]
    ci[1, 2] = 99
    cv[2] = cv[2].flip(0)
    st: dict = {}
    idx, sim = tknn.rescore_candidates(x, x, 3, ci, cv, True, info=st)
    check(idx, sim, x.numpy(), 3, exact=False)
    assert st["uncertified_rows"] == 40  # no row's candidate values are within the bound of the truth
    with pytest.raises(ValueError, match="cand_idx, cand_sim: expected shape"):
        tknn.rescore_candidates(x, x, 3, ci[:, :4], cv[:, :4], True)


# ------------------------------------------------------------------ the benchmark's columns
@needs_interp
def test_bench_knn_backend_columns_check_and_skip_with_the_reason():
    """benchmarks/bench_knn.py --device cuda, run here on a tiny CPU input (Triton in the interpreter):
    every column is checked against the fp32 kernel, a column that cannot run is kept with its reason."""
    import argparse

    pytest.importorskip("psutil")
    from benchmarks.bench_knn import GPU_COLUMNS, bench_backends

    res = bench_backends(argparse.Namespace(sizes=[150], dim=32, k=5, repeats=1, seed=0, quick=False), "cpu")
    (row,) = res["rows"]
    assert set(row["columns"]) == set(GPU_COLUMNS) == {"triton", "triton_fp32", "torch", "faiss_gpu", "cuvs"}
    for name in ("faiss_gpu", "cuvs"):  # not installed here (and a CPU input): skipped, saying why
        assert "cannot run" in row["columns"][name]["skipped"]
    for name in ("triton", "triton_fp32", "torch"):
        c = row["columns"][name]
        assert c["check_vs_fp32"]["sim_ok"] and c["check_vs_fp32"]["idx_equal_fraction"] >= 0.999, (name, c)
        assert c["median_s"] > 0 and len(c["s"]) == 1
    assert row["columns"]["triton"]["stats"]["precision"] == "fp16"


@pytest.mark.parametrize("backend", ["faiss_gpu", "cuvs"])
def test_installed_library_on_a_gpu_matches_exact_knn(backend):
    """Only where the real library and a GPU exist (benchmarks/device_check.sh runs this file)."""
    why = _dispatch._why_not(backend, torch.device("cuda"))
    if why is not None:
        pytest.skip(f"{backend}: {why}")
    x = duplicated(tie_rows(300, 24, seed=1), seed=1)
    idx, sim = hilcore.knn(torch.from_numpy(x).cuda(), 9, backend=backend)
    check(idx, sim, x, 9, exact=True)
    x = unit_rows(2000, 96, seed=2)
    idx, sim = hilcore.knn(torch.from_numpy(x).cuda(), 30, backend=backend)
    check(idx, sim, x, 30, exact=False)
