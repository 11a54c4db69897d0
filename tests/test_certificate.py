"""The exact-kNN certificate's arithmetic (hilcore._certificate), checked against exact rational arithmetic.

Every kNN (native, Triton, distributed) builds its bound B_i from these pieces, so
each piece is tested to bound what it claims on adversarial and random data.
"""
from fractions import Fraction

import numpy as np
import pytest
import torch

from hilcore import _certificate as cert


def _exact_dot(a, b):
    return sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b))


def test_round_up_f32_is_the_smallest_float32_not_below():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.standard_normal(200) * 10.0 ** rng.integers(-30, 30, 200),
                        [0.0, 1.0, -1.0, 2.0**-149, 1e-46, float(np.float32(0.1))]])
    for fam in (np.asarray, torch.from_numpy):
        got = cert.round_up_f32(fam(v.copy()))
        g = np.asarray(got, dtype=np.float32)
        assert g.dtype == np.float32
        assert (g.astype(np.float64) >= v).all()
        below = np.nextafter(g, np.float32(-np.inf)).astype(np.float64)
        assert (below < v).all()  # nothing smaller is still >= v


def test_norm_bounds_are_upper_bounds_also_for_tiny_rows():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 300, generator=g)
    a[5] *= 2.0**-80  # float32 squares underflow: the float64 path keeps them
    a[6] = 0.0
    up = cert.norms_up(a)
    for i in range(a.shape[0]):
        exact = sum(Fraction(float(t)) ** 2 for t in a[i])
        assert Fraction(float(up[i])) ** 2 >= exact, i
    sq = (a[:4] * a[:4]).sum(dim=1)  # float32 sums of squares
    up32 = cert.norms_up_from_f32_squares(sq, 300)
    for i in range(4):
        assert Fraction(float(up32[i])) ** 2 >= sum(Fraction(float(t)) ** 2 for t in a[i])


@pytest.mark.parametrize("u_in", [0.0, cert.TF32_ROUNDING, cert.BF16_ROUNDING])
def test_dot_error_bounds_rounded_input_products(u_in):
    """Inputs truncated to 10 (TF32) / 7 (bf16) explicit mantissa bits, float32 products summed in a bad order:
    the error stays within dot_error(d, u_in) ||x|| ||y||."""
    g = torch.Generator().manual_seed(2)
    d = 257
    bits = {0.0: 23, cert.TF32_ROUNDING: 10, cert.BF16_ROUNDING: 7}[u_in]
    for t in range(6):
        x, y = torch.randn(d, generator=g), torch.randn(d, generator=g)
        if t % 2:
            y = x + 1e-3 * y  # large cancellation-free sum: the worst relative case
        mask = -(1 << (23 - bits))  # truncate the mantissa to `bits` explicit bits
        xr = (x.view(torch.int32) & mask).view(torch.float32)
        yr = (y.view(torch.int32) & mask).view(torch.float32)
        prods = (xr * yr).tolist()
        acc = np.float32(0.0)
        for p in sorted(prods, key=abs):  # one float32 addition at a time
            acc = np.float32(acc + np.float32(p))
        exact = _exact_dot(x.tolist(), y.tolist())
        nx = float(cert.norms_up(x[None])[0])
        ny = float(cert.norms_up(y[None])[0])
        assert abs(Fraction(float(acc)) - exact) <= Fraction(cert.dot_error(d, u_in)) * Fraction(nx) * Fraction(ny)


def test_matmul_input_rounding_follows_the_callers_setting():
    prev = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert cert.matmul_input_rounding("cpu") == 0.0
        torch.set_float32_matmul_precision("high")
        assert cert.matmul_input_rounding("cuda") == cert.TF32_ROUNDING
        torch.set_float32_matmul_precision("medium")
        assert cert.matmul_input_rounding("cpu") == cert.BF16_ROUNDING
    finally:
        torch.set_float32_matmul_precision(prev)


def test_gamma_and_bounds_grow_with_their_inputs():
    assert cert.gamma(10) == pytest.approx(10 * 2.0**-24, rel=1e-6)
    assert cert.gamma(2**25) == float("inf")
    xn = np.array([1.0, 2.0])
    b = cert.gemm_bound(64, xn, 1.0)
    assert (b > 0).all() and b[1] > b[0]
    assert (cert.gemm_bound(64, xn, 1.0, cert.TF32_ROUNDING) > b).all()
    assert (cert.gemm_bound(64, xn, 1.0, threshold=True) > b).all()
    q = cert.quantized_bound(64, xn, xn, 0 * xn, 1.0, 1.0, 0.0, cert.INT8_PRODUCT_ERROR)
    assert (q > cert.UNDERFLOW_SLACK).all()
