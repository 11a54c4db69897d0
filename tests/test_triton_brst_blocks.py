"""The Triton BRST scan at the block shapes its GPU launcher picks, run in the interpreter.

The interpreter normally gets small blocks (one numpy call per block op); here
``_blocks`` is forced to the GPU configuration (the one benchmarks/gpu_static.py
compiles), and the row arg-max / column max are compared with a float64 reference
on odd sizes, exact ties (duplicate prototypes, rows of +-0.5 entries) and a
prototype count that is not a multiple of the tile.
"""
import numpy as np
import pytest
import torch

import hilcore

pytestmark = pytest.mark.skipif("triton" not in hilcore.backends("cpu"),
                                reason="needs triton with TRITON_INTERPRET=1 (conftest sets it)")


def _ref(xb, protos):
    s = xb.double() @ protos.double().T
    best = torch.tensor([int(np.flatnonzero(r == r.max())[0]) for r in s.numpy()], dtype=torch.int64)
    return best, s.max(dim=1).values, s.max(dim=0).values


def _exact_rows(n, d, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return torch.from_numpy(x)


@pytest.mark.parametrize("m,c,d", [(1, 1, 16), (70, 33, 40), (131, 65, 72)])
def test_scan_at_gpu_blocks_matches_reference(monkeypatch, m, c, d):
    import hilcore.backend.triton.brst as tb

    gpu = tb._blocks(d, False)
    assert gpu != tb._blocks(d, True)  # the configuration under test is not the interpreter's
    monkeypatch.setattr(tb, "_blocks", lambda d_, interpret: gpu)
    g = torch.Generator().manual_seed(m + c)
    cases = [(torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1),
              torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=1))]
    pe = _exact_rows(c, d, seed=c)
    cases.append((_exact_rows(m, d, seed=m), torch.cat([pe, pe])))  # every prototype twice: ties
    for case, (xb, protos) in enumerate(cases):
        best, best_sim, col_max = tb.row_argmax_col_max(xb, protos)
        rb, rs, rc = _ref(xb, protos)
        torch.testing.assert_close(best, rb, rtol=0, atol=0)
        torch.testing.assert_close(best_sim.double(), rs, rtol=0, atol=1e-6)
        torch.testing.assert_close(col_max.double(), rc, rtol=0, atol=1e-6)
        if case == 1:  # a tie between a prototype and its copy goes to the lower column
            assert bool((best < c).all())
