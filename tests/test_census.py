"""Launch/sync census of the GPU code path of ``subcluster`` (issue 9, point 2).

TorchDispatchMode counts the ATen ops (views excluded: they launch nothing) and
the host syncs; a counter on Triton's launch entry counts kernel launches (the
interpreter's own tensor copies inside a launch are not counted). CPU tensors
with TRITON_INTERPRET=1 run exactly the op sequence the GPU path issues.
Budget per ``subcluster`` call: <= 400 ops + launches, <= 10 syncs, at two
cluster counts and sizes (all n_init runs of all clusters advance together, so
the counts do not grow with N or the number of clusters).
"""
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("no GPU and TRITON_INTERPRET is not 1", allow_module_level=True)

from census import census  # noqa: E402

from hilcore import centers  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def blobs(c, per, d=16, seed=0):
    rng = np.random.default_rng(seed)
    cen = rng.standard_normal((c, d))
    lab = np.repeat(np.arange(c), per)
    x = cen[lab] + 0.3 * rng.standard_normal((len(lab), d))
    return torch.from_numpy(x.astype(np.float32)).to(DEVICE), torch.from_numpy(lab).to(DEVICE)


@pytest.mark.parametrize("c,per", [(6, 40), (24, 25)])
def test_subcluster_triton_launch_and_sync_budget(c, per):
    x, lab = blobs(c, per)
    want = centers.subcluster(x, lab, backend="torch")
    with census() as get:
        got = centers.subcluster(x, lab, backend="triton")
    n = get()
    assert n.launches > 0  # the Triton kernels did the work
    assert n.ops + n.launches <= 400, n
    assert n.syncs <= 10, n
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # and the same answer as the torch backend


def test_census_counts_what_it_sees():
    """The counter itself: known ops, a sync, a view, a launch."""
    import triton
    import triton.language as tl

    @triton.jit
    def _copy(a_ptr, b_ptr, N, B: tl.constexpr):
        o = tl.arange(0, B)
        tl.store(b_ptr + o, tl.load(a_ptr + o, mask=o < N), mask=o < N)

    a = torch.arange(5.0, device=DEVICE)
    b = torch.empty_like(a)
    with census() as get:
        c = a + 1  # add
        c.view(5, 1)  # view: not an op
        bool((c > 2).any())  # gt, any, _local_scalar_dense (sync)
        _copy[(1,)](a, b, 5, B=8)
    n = get()
    assert n.ops == 4 and n.views == 1 and n.syncs == 1 and n.launches == 1, n
