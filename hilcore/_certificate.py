"""The arithmetic of the exact-kNN certificate, written once for every kNN (native, Triton, distributed).

Every exact kNN of hilcore takes candidates from a fast approximate product
(float32 GEMM, TF32/bf16 GEMM, int8 GEMM, float16 tensor cores, another
library), rescores them with a reference product and *certifies* each row: no
column left out of the candidates can beat (or tie) the row's k-th rescored
value. The certificate needs, per row i, a number ``B_i`` with

    |rescored_ij - approximate_ij| <= B_i     for every column j,

so that every column outside the candidates (approximate value <= c_i, the
smallest candidate value) has ``rescored_ij <= c_i + B_i``. This module holds
the pieces of ``B_i`` and nothing else: error coefficients of dot products
(float32 or float64 sums, inputs rounded to TF32 / bf16 or not), rigorous
upper bounds of row norms, the float32 round-up of a bound, and the bounds of
the quantised candidate passes (int8, float16). All error terms are relative to
``||x_i|| ||y_j||`` (Cauchy-Schwarz), so only norms enter.

Conventions (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1):
``u`` the unit roundoff (float32 ``2^-24``, float64 ``2^-53``),
``gamma(n, u) = n u / (1 - n u)``; a dot product of length n summed in any
order in precision u is within ``gamma(n, u) sum_t |x_t y_t|`` of the exact one.

It imports nothing from hilcore (the leaf layer of ``pyproject.toml``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: unit roundoff of float32 and float64
U32 = 2.0**-24
U64 = 2.0**-53
#: relative error of an input rounded to TF32 (10 explicit mantissa bits), truncated or rounded to nearest
TF32_ROUNDING = 2.0**-10
#: relative error of an input rounded to bfloat16 (7 explicit mantissa bits), truncated or rounded to nearest
BF16_ROUNDING = 2.0**-7
#: float32 rounding of a kernel's threshold ``c_i + B_i``: at most 2^-23 relative of a value <= ||x_i|| NY + B_i;
#: ``THRESHOLD_SLACK * (||x_i|| NY + 1)`` covers it (B_i < 1 whenever a row can be certified)
THRESHOLD_SLACK = 2.0**-22
#: absolute slack for underflow of products and partial sums (float32 subnormals)
UNDERFLOW_SLACK = 1e-6
#: worst tensor-core accumulation, relative per operand: every step adds exact float16 products to a float32
#: accumulator with at most 2^-22 relative truncation of the largest operand (measured hardware: 2^-23,
#: Fasi et al., PeerJ CS 2021); 2 D operands in all, each <= ||p_i|| ||p_j||; 1 % of margin
TENSOR_CORE_PER_DIM = 2.02 * 2.0**-22
#: int8 candidates a_ij = fl(fl(s_i s_j) fl(q_i . q_j)): three float32 roundings of the exact p_i . p_j
INT8_PRODUCT_ERROR = 4.0 * U32


def gamma(n: int, u: float = U32) -> float:
    """``n u / (1 - n u)``: relative error of an n-term dot product summed in any order in precision u."""
    if n * u >= 1.0:
        return math.inf
    return n * u / (1.0 - n * u)


def product_error(u_in: float) -> float:
    """Relative error of a product of two inputs each rounded with relative error ``u_in``: (1+u)^2 - 1."""
    return 2.0 * u_in + u_in * u_in


def dot_error(d: int, u_in: float = 0.0, u: float = U32) -> float:
    """Coefficient ``c`` with ``|computed x . y - x . y| <= c ||x|| ||y||`` for a length-``d`` dot product.

    The inputs are first rounded with relative error ``u_in`` (0: float32 inputs as they are; TF32 /
    bfloat16 GEMM modes: :data:`TF32_ROUNDING` / :data:`BF16_ROUNDING`), the products and sums are done
    in precision ``u``, in any order and with or without fused multiply-adds (``gamma(d + 1)`` covers a
    nonzero initial accumulator as well)."""
    if u_in == 0.0:
        return gamma(d + 1, u)
    return product_error(u_in) + gamma(d + 1, u) * (1.0 + u_in) ** 2


def matmul_input_rounding(device_type: str) -> float:
    """The input rounding a float32 ``torch.mm`` on ``device_type`` may apply under the caller's settings.

    ``torch.set_float32_matmul_precision("high")`` or ``torch.backends.cuda.matmul.allow_tf32`` (CUDA)
    allow TF32, ``"medium"`` bfloat16; ``"highest"`` keeps IEEE float32 (0). The per-backend API
    (``fp32_precision``) is read where the legacy one refuses."""
    try:
        mode = torch.get_float32_matmul_precision()
        tf32 = device_type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:  # state set through the per-backend API only
        prec = getattr(torch.backends.cuda.matmul if device_type == "cuda" else
                       getattr(getattr(torch.backends, "mkldnn", None), "matmul", None), "fp32_precision", "ieee")
        mode, tf32 = {"tf32": "high", "bf16": "medium"}.get(prec, "highest"), False
    if mode == "medium":
        return BF16_ROUNDING
    if mode == "high" or tf32:
        return TF32_ROUNDING
    return 0.0


def round_up_f32(v):
    """The smallest float32 >= each float64 value of ``v`` (NumPy array or torch tensor; same family back)."""
    if isinstance(v, torch.Tensor):
        v = v.to(torch.float64)
        f = v.to(torch.float32)
        up = torch.nextafter(f, torch.full_like(f, math.inf))
        return torch.where(f.to(torch.float64) < v, up, f)
    v = np.asarray(v, dtype=np.float64)
    f = v.astype(np.float32)
    low = f.astype(np.float64) < v
    f[low] = np.nextafter(f[low], np.float32(np.inf))
    return f


def norms_up(a: torch.Tensor, block_elems: int = 1 << 22) -> torch.Tensor:
    """Upper bounds (float64 tensor ``[N]``, on ``a``'s device) of the row norms of ``a [N, D]``.

    The squares of float32 entries are exact in float64 (no underflow even for rows far below 2^-63, whose
    float32 squares would vanish); their float64 sum, in any order, is within ``gamma(D, U64)`` of the
    exact sum, so ``sqrt(sum / (1 - gamma))`` nudged up is an upper bound. Rows are converted a block at a
    time (the float64 copy stays small); a tiny absolute term keeps every bound positive."""
    n, d = a.shape
    g = gamma(max(d, 1), U64)
    sq = torch.empty(n, dtype=torch.float64, device=a.device)
    step = max(1, block_elems // max(d, 1))
    for r in range(0, n, step):
        sq[r:r + step] = a[r:r + step].to(torch.float64).square().sum(dim=1)
    return torch.sqrt(sq / (1.0 - g)) * (1.0 + 2.0**-50) + 2.0**-1000


def norms_up_from_f32_squares(sq: torch.Tensor, d: int) -> torch.Tensor:
    """Upper bounds (float64) of the norms whose float32 sums of ``d`` squares are ``sq``.

    Each float32 square and sum adds relative error: ``|fl - exact| <= gamma(d + 1) exact``. A row whose
    squares underflow is not covered beyond :data:`UNDERFLOW_SLACK` (the callers add it)."""
    g = gamma(d + 1)
    return torch.sqrt(sq.to(torch.float64) * (1.0 + 2.0 * g)) * (1.0 + 2.0**-50)


def gemm_bound(d: int, xn, big_y: float, u_in: float = 0.0, rescore_u: float = U32, threshold: bool = False):
    """B_i for candidates from a float32 GEMM (inputs rounded with ``u_in``) rescored in precision ``rescore_u``.

    ``xn`` ``[N]`` upper bounds of ``||x_i||`` (NumPy or torch float64), ``big_y`` of ``max_j ||y_j||``:
    ``|gemm_ij - t_ij| <= dot_error(d, u_in) ||x_i|| NY`` and ``|rescored_ij - t_ij| <=
    dot_error(d, 0, rescore_u) ||x_i|| NY``, plus ``d 2^-120`` for underflow and, with ``threshold``,
    :data:`THRESHOLD_SLACK` for a kernel that rounds ``c_i + B_i`` to float32 and :data:`UNDERFLOW_SLACK`.
    Returned as float64 in ``xn``'s family, not yet rounded up (:func:`round_up_f32` does that)."""
    xy = xn * float(big_y)
    b = (dot_error(d, u_in) + dot_error(d, 0.0, rescore_u)) * xy + d * 2.0**-120
    if threshold:
        b = b + THRESHOLD_SLACK * (xy + 1.0) + UNDERFLOW_SLACK
    return b * (1.0 + 1e-12)  # the float64 evaluation of b itself


def quantized_bound(d: int, xn, pn, en, big_x: float, big_p: float, big_e: float, cand_error: float,
                    threshold: bool = False):
    """B_i for candidates ``a_ij`` computed from quantised rows ``p = x - e`` (int8 or float16), rescored in float32.

    ``x_i . x_j - p_i . p_j = x_i . e_j + e_i . p_j``, so ``|t_ij - p_i . p_j| <= ||x_i|| EN + ||e_i|| NP``;
    the candidate pass adds ``cand_error ||p_i|| NP`` (int8: :data:`INT8_PRODUCT_ERROR`; float16 tensor
    cores: ``TENSOR_CORE_PER_DIM * d``) and the float32 rescoring ``gamma(d) ||x_i|| NX``. ``xn, pn, en``:
    per-row norm upper bounds (float64, NumPy or torch); ``big_*``: the database's maxima.
    With ``threshold`` a kernel's float32 rounding of ``c_i + B_i`` is covered too. Not yet rounded up."""
    b = (xn * big_e + en * big_p + cand_error * pn * big_p + gamma(d) * xn * big_x + UNDERFLOW_SLACK)
    if threshold:
        b = b + THRESHOLD_SLACK * (pn * big_p + 1.0)
    return b * (1.0 + 1e-12)
