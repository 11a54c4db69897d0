"""Kernel errors in words: a violated kernel precondition names the kernel, the condition as written, the values
and the source line (kernels/common/check.h), and reaches Python as ValueError; the CUDA entry points are named
per pass and take argument structs, which the CPU model (tests/cuda_model.py) mirrors."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

from hilcore import _dispatch

nat = _dispatch.native_module()
pytestmark = pytest.mark.skipif(nat is None, reason="the native extension is not built")


def test_a_memory_target_out_of_range_names_the_condition_and_the_value():
    mem = np.zeros((4, 1, 3), np.float32)
    mem[:, 0, 0] = 1
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"memory_update_cpu: 'targets\[i\] >= 0 && targets\[i\] < rows' failed: "
                                         r"targets: ids must lie in \[0, 4\), got targets\[1\] = 9 "
                                         r"\(kernels/cpu/memory_cpu\.cpp:\d+\)"):
        nat.memory_update(mem, x, np.array([0, 9], np.int64), 0.5)
    assert np.all(mem[:, 0, 1:] == 0)  # checked for the whole batch before anything is written


def test_a_candidate_column_out_of_range_names_the_kernel_and_m():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ci = np.tile(np.arange(3, dtype=np.int64), (6, 1))
    ci[2, 1] = 6  # one past the last column
    cs = np.zeros((6, 3), np.float32)
    out_i, out_s = np.zeros((6, 2), np.int64), np.zeros((6, 2), np.float32)
    with pytest.raises(ValueError, match=r"knn_rescore_cpu: '!bad' failed: cand_idx: expected every entry in "
                                         r"\[0, m\), m = 6 \(kernels/cpu/knn_cpu\.cpp:\d+\)"):
        nat.knn_rescore(x, x, ci, cs, np.zeros(6, np.float32), True, out_i, out_s, np.zeros(6, np.uint8))


def test_no_kernel_error_is_a_bare_status_number():
    """No binding reports a kernel of this repository's own by a status code any more, except the two
    kernels whose sources another change owns (brst, subcluster: they keep check_status for now)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "bindings"
    users = sorted(p.name for p in root.glob("*.cpp") if "check_status(" in p.read_text())
    assert set(users) <= {"brst.cpp", "subcluster.cpp"}, users


@pytest.mark.skipif(nat is None or not nat.has_cuda(), reason="built without the CUDA kernels")
def test_the_cpu_model_has_every_cuda_entry_point_with_its_parameters():
    from cuda_model import NativeModel

    built = sorted(a for a in dir(nat) if a.startswith("cuda_") and a not in ("cuda_versions",))
    model = NativeModel()
    assert built == sorted(a for a in dir(model) if a.startswith("cuda_")), "model and bindings differ"
    assert "cuda_jaccard_rows_count" in built and "cuda_jaccard_rows_fill" in built  # named per pass
    assert not any(a in built for a in ("cuda_expand", "cuda_query_expansion", "cuda_jaccard_rows"))
    for name in built:
        doc = getattr(nat, name).__doc__.splitlines()[0]
        params = re.findall(r"(\w+): ", doc[doc.index("(") + 1:doc.index(") ->")])
        model_params = list(inspect.signature(getattr(model, name)).parameters)
        assert params == model_params, (name, params, model_params)
        assert len(params) <= 9, (name, params)  # argument structs, not a long list of raw addresses
    for struct in ("CudaRows", "CudaRanking", "CudaTableLaunch", "CudaPairStaging", "CudaDistances"):
        fields = [f.name for f in __import__("dataclasses").fields(getattr(NativeModel, struct))]
        obj = getattr(nat, struct)(*([1] * len(fields)))
        assert [getattr(obj, f) for f in fields] == [1] * len(fields), struct


@pytest.mark.skipif(nat is None or not nat.has_cuda(), reason="built without the CUDA kernels")
def test_a_bad_cuda_launch_argument_is_refused_naming_it():
    rows = nat.CudaRows(8, 8, 8)  # addresses are not read: the argument checks come first
    launch = nat.CudaTableLaunch(8, 1, False, 48, 8, 8, 8)
    with pytest.raises(ValueError, match=r"launch.region_slots: expected a power of two >= 32, got 48"):
        nat.cuda_jaccard_rows_count(rows, rows, launch, 8, 8, 8, 8, 0)
    with pytest.raises(ValueError, match=r"ranking.kh1: expected 1 <= kh1 <= k1, got 5"):
        nat.cuda_krecip_flags(nat.CudaRanking(8, 10, 4, 4, 5), 8, 8, 0)
