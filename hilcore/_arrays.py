"""Array families and input validation shared by every public op.

Public functions accept NumPy arrays, torch tensors (CPU or CUDA) and CuPy
arrays. Internally every backend works on torch tensors; results go back to
the caller's family with :func:`to_family`. Validation errors are
``ValueError``/``TypeError`` that name the argument and say what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Family:
    """Where an input came from: ``"numpy"``, ``"torch"`` or ``"cupy"``, and its device."""

    kind: str
    device: torch.device

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def _numpy_view(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` as an array torch can wrap: native byte order, non-negative strides that are multiples of
    the item size, aligned and writeable (a private C-contiguous copy when ``a`` is none of these)."""
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{name}: expected a real (bool/integer/float) array, got complex dtype {a.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array (bool/integer/float), got dtype {a.dtype}")
    dtype = a.dtype
    if kind == "f" and dtype.itemsize > 8:  # long double: torch has no such dtype; float64 holds our range
        dtype = np.dtype(np.float64)
    if not dtype.isnative:  # big-endian arrays (e.g. written on another machine, or '>f4' on purpose)
        dtype = dtype.newbyteorder("=")
    if (dtype != a.dtype or not a.flags.writeable or not a.flags.aligned
            or any(s < 0 or s % a.itemsize for s in a.strides)):
        # read-only arrays are copied too: torch cannot wrap them without a warning, and a copy keeps the
        # caller's memory out of reach of any in-place step
        a = np.array(a, dtype=dtype, order="C", copy=True)
    return a


def as_tensor(a, name: str) -> tuple[torch.Tensor, Family]:
    """Zero-copy view of ``a`` as a torch tensor, and the family to return results in.

    Accepts any strides (negative NumPy strides, non-contiguous torch), either byte order, read-only
    NumPy arrays (copied) and anything with ``__array__``. Torch tensors keep autograd; callers that
    need no gradient detach.
    """
    if isinstance(a, torch.Tensor):
        if a.device.type == "meta":
            raise ValueError(f"{name}: a meta tensor holds no values (shape {tuple(a.shape)}); pass a tensor with data")
        if a.layout != torch.strided:
            raise TypeError(f"{name}: expected a dense tensor, got layout {a.layout} "
                            f"(a sparse tensor: call .to_dense() first)")
        if a.is_complex():
            raise TypeError(f"{name}: expected a real tensor, got complex dtype {a.dtype}")
        return a, Family("torch", a.device)
    if isinstance(a, np.ndarray):
        return torch.from_numpy(_numpy_view(a, name)), Family("numpy", torch.device("cpu"))
    if _is_cupy(a):
        t = torch.from_dlpack(a)
        return t, Family("cupy", t.device)
    if isinstance(a, (list, tuple)) or (hasattr(a, "__array__") and not isinstance(a, (str, bytes))):
        try:
            arr = np.asarray(a)
        except (ValueError, TypeError) as e:
            raise TypeError(f"{name}: expected a rectangular numeric array, got a {type(a).__name__} that NumPy "
                            f"cannot convert ({e})") from None
        return torch.from_numpy(_numpy_view(arr, name)), Family("numpy", torch.device("cpu"))
    raise TypeError(f"{name}: expected a NumPy array, torch tensor or CuPy array, got {type(a).__name__}")


def to_family(t: torch.Tensor, fam: Family):
    """Return ``t`` in the caller's family (NumPy for NumPy input, CuPy for CuPy input)."""
    if fam.kind == "numpy":
        return t.detach().cpu().numpy()
    if fam.kind == "cupy":
        import cupy

        return cupy.from_dlpack(t.detach())
    return t


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# A float32 row norm inside [_NORM_LO, _NORM_HI] is exact to rounding (no square of a dominant entry
# under- or overflows); rows outside it (or non-finite) are normalised again, scaled by their max-abs first.
_NORM_LO, _NORM_HI = 1e-15, 1e15


def _rows_message(mask: torch.Tensor) -> tuple[int, list]:
    rows = torch.nonzero(mask.reshape(mask.shape[0], -1).any(dim=1)).flatten()
    return int(rows.numel()), rows[:5].tolist()


def features(x, name: str = "x", *, normalize: bool = True) -> tuple[torch.Tensor, Family]:
    """Validate a feature matrix ``[N, D]`` and return it as contiguous float32 torch (detached).

    Rows are L2-normalised when ``normalize`` (every op works on cosine
    similarity; unnormalised input is accepted and normalised here), in a way
    that cannot underflow or overflow: rows whose float32 norm is not safely
    inside the float32 range are scaled by their largest absolute entry first
    (in float64), so rows of magnitude 1e-30 or 1e30 (and float64 rows beyond
    the float32 range) come out unit-norm. Raises on wrong rank, non-floating
    dtype, empty input, NaN/Inf and (when normalising) all-zero rows.
    """
    t, fam = as_tensor(x, name)
    t = t.detach()  # no gradient flows through a validated feature matrix
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, D] (one row per image), got shape {tuple(t.shape)}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype (float16/bfloat16/float32/float64), got {t.dtype}")
    n, d = t.shape
    if n == 0:
        raise ValueError(f"{name}: expected at least one row, got shape {tuple(t.shape)}")
    if d == 0:
        raise ValueError(f"{name}: expected at least one feature column, got shape {tuple(t.shape)}")
    src = t
    t = t.to(torch.float32).contiguous()
    private = t.data_ptr() != src.data_ptr()
    # One pass for the common case; NaN/Inf entries, overflowing or underflowing rows all land in `odd`.
    norms = torch.linalg.vector_norm(t, dim=1)
    odd = ~((norms >= _NORM_LO) & (norms <= _NORM_HI))
    if bool(odd.any()):
        rows = torch.nonzero(odd).flatten()
        s = src[rows].to(torch.float64)
        scale = s.abs().amax(dim=1)
        nonfinite = ~torch.isfinite(scale)  # amax propagates NaN; Inf stays Inf
        if bool(nonfinite.any()):
            bad = rows[nonfinite]
            raise ValueError(f"{name}: {bad.numel()} row(s) contain NaN or Inf (first rows: {bad[:5].tolist()})")
        if normalize:
            zero = scale == 0
            if bool(zero.any()):
                bad = rows[zero]
                raise ValueError(f"{name}: {bad.numel()} row(s) are all zeros and cannot be L2-normalised "
                                 f"(first rows: {bad[:5].tolist()})")
            u = s / scale.unsqueeze(1)
            fixed = (u / torch.linalg.vector_norm(u, dim=1, keepdim=True)).to(torch.float32)
            norms[rows] = 1.0
        else:
            fixed = s.to(torch.float32)
            if not bool(torch.isfinite(fixed).all()):
                bad = rows[~torch.isfinite(fixed).all(dim=1)]
                raise ValueError(f"{name}: row(s) {bad[:5].tolist()} hold values beyond the float32 range "
                                 f"(|v| > 3.4e38)")
        if not private:
            t, private = t.clone(), True
        t[rows] = fixed
    if normalize:
        norms = norms.unsqueeze(1)
        # normalise in place when the conversion above already made a private copy
        t = t.div_(norms) if private else t / norms
    return t, fam


def unit_rows(t: torch.Tensor, name: str) -> torch.Tensor:
    """Differentiable ``t / ||t||`` along the last dimension that cannot underflow or overflow.

    Each row is divided by its largest absolute entry (a constant for autograd: the result does not
    depend on it) before the norm. float16/bfloat16 rows are computed in float32. All-zero rows
    raise ``ValueError`` naming ``name`` (as :func:`features` does); NaN/Inf must be rejected before.
    """
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    if t.numel() == 0:
        return t
    scale = t.detach().abs().amax(dim=-1, keepdim=True)
    zero = scale == 0
    if bool(zero.any()):
        k, rows = _rows_message(zero)
        raise ValueError(f"{name}: {k} row(s) are all zeros and cannot be L2-normalised (first rows: {rows})")
    u = t / scale
    return u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)


_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64) + tuple(
    getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n))


def int_vector(a, name: str, n: int, device: torch.device, *, what: str, noun: str, per: str) -> torch.Tensor:
    """Validate a 1-D integer array of ``n`` entries and return it as int64 on ``device``.

    Errors read "{name}: expected a 1-D array of {what}", "... an integer dtype
    ({what})" and "{name}: expected {n} {noun} ({per}), got ...".
    """
    t, _ = as_tensor(a, name)
    t = t.detach()
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D array of {what}, got shape {tuple(t.shape)}")
    if t.dtype not in _INT_DTYPES:
        raise TypeError(f"{name}: expected an integer dtype ({what}), got {t.dtype}")
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} {noun} ({per}), got {t.shape[0]}")
    if t.dtype == getattr(torch, "uint64", None):  # torch has no max/compare for uint64: read the bits as int64
        t = t.view(torch.int64)  # values >= 2**63 read as negative
        if bool((t < 0).any()):
            big = int(np.asarray(t[t < 0][:1].cpu().numpy()).view(np.uint64)[0])
            raise ValueError(f"{name}: expected {what} below 2**63, got {big}")
    return t.to(device=device, dtype=torch.int64)


def features_like(y, ref: torch.Tensor, name: str, ref_name: str) -> torch.Tensor:
    """:func:`features` for a second matrix that must share ``ref``'s device and column count."""
    t, _ = features(y, name)
    if t.device != ref.device:
        raise ValueError(f"{name}: expected the same device as {ref_name} ({ref.device}), got {t.device}")
    if t.shape[1] != ref.shape[1]:
        raise ValueError(f"{name}: expected {ref.shape[1]} columns like {ref_name}, got shape {tuple(t.shape)}")
    return t


#: The largest integer argument the kernels take (int64, with room for a + 1); larger counts are refused, or
#: clamped where the answer cannot change (a DBSCAN min_samples above every neighbourhood).
MAX_INT = 2 ** 62


def positive_int(v, name: str, *, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    return int(v)


def nonneg_float(v, name: str) -> float:
    if isinstance(v, (str, bytes, bool)):  # float("0.5") / float(True) would pass silently
        raise TypeError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}") from None
    if not np.isfinite(f) or f < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {v}")
    return f


#: k1 / k2 above the number of rows are clamped to it (a small data set with the default k1 = 30), but only
#: up to this value: a far larger one is a typo or a unit mistake, and its clamped run is O(N^3).
MAX_CLAMPED_K = 1000


def ranking_length(v, name: str, n: int, *, limit_name: str = "N (the number of rows)") -> int:
    """Validate k1/k2-style lengths: an integer >= 1; values above ``n`` are clamped to ``n`` when they are
    at most :data:`MAX_CLAMPED_K`, and rejected beyond it."""
    k = positive_int(v, name)
    if k > n:
        if k > MAX_CLAMPED_K:
            raise ValueError(f"{name}: expected {name} <= {limit_name} = {n} (values up to {MAX_CLAMPED_K} are "
                             f"clamped to it), got {k}")
        k = n
    return k


# ---------------------------------------------------------------------------------------------- distances
#: elements of one block of a dense distance matrix scanned at a time (bounds every temporary to a few
#: times this, never N x N)
DENSE_BLOCK_ELEMS = 1 << 22

SYMMETRIZE = (None, "max", "min")


def distance_values(data: torch.Tensor, name: str) -> None:
    """Floating-point, no NaN, no negative entries (``data`` any shape)."""
    if not torch.is_floating_point(data):
        raise TypeError(f"{name}: expected floating-point distances, got {data.dtype}")
    if data.numel() == 0:
        return
    bad = ~(data >= 0)  # NaN and negative entries, one pass
    if bool(bad.any()):
        if bool(torch.isnan(data).any()):
            raise ValueError(f"{name}: contains NaN distances")
        raise ValueError(f"{name}: contains negative distances (min {float(data.min())}); expected >= 0")


def csr_structure(indptr: torch.Tensor, indices: torch.Tensor, nnz_data: int, n: int, name: str,
                  what: str = "column") -> int:
    """Check a compressed sparse structure in O(nnz): ``indptr`` ``[n + 1]`` starting at 0, non-decreasing,
    ending at nnz <= len(indices) == len(data); ``indices`` (the first nnz) in ``[0, n)``. Returns nnz."""
    if indptr.dim() != 1 or indptr.numel() != n + 1:
        raise ValueError(f"{name}: expected an indptr of {n + 1} offsets for {n} rows, got shape {tuple(indptr.shape)}")
    if indices.dim() != 1:
        raise ValueError(f"{name}: expected 1-D indices, got shape {tuple(indices.shape)}")
    if int(indptr[0]) != 0:
        raise ValueError(f"{name}: expected indptr[0] = 0, got {int(indptr[0])}")
    nnz = int(indptr[-1])
    if nnz > indices.numel() or nnz > nnz_data:
        raise ValueError(f"{name}: indptr ends at {nnz}, but only {indices.numel()} indices and {nnz_data} values "
                         f"are stored")
    step = indptr[1:] - indptr[:-1]
    if n and bool((step < 0).any()):
        r = int(torch.nonzero(step < 0).flatten()[0])
        raise ValueError(f"{name}: indptr must be non-decreasing; indptr[{r}] = {int(indptr[r])} > "
                         f"indptr[{r + 1}] = {int(indptr[r + 1])}")
    idx = indices[:nnz]
    out = (idx < 0) | (idx >= n)
    if nnz and bool(out.any()):
        p = int(torch.nonzero(out).flatten()[0])
        r = int(torch.searchsorted(indptr, torch.tensor(p, dtype=indptr.dtype, device=indptr.device), right=True)) - 1
        raise ValueError(f"{name}: stored entry {p} (row {r}) has {what} index {int(idx[p])}, expected one in "
                         f"[0, {n})")
    return nnz


def _dense_block(a, r0: int, r1: int, eps: float, symmetrize, name: str, lib, check: bool = True):
    """Rows ``r0:r1`` of the dense matrix ``a`` (NumPy or torch): their values checked, the symmetry of
    ``a <= eps`` against columns ``r0:r1`` checked (or combined), and ``(block, keep)``."""
    blk = a[r0:r1]
    if check:
        distance_values(torch.from_numpy(blk) if lib is np else blk, name)
    keep = blk <= eps  # compared in the input's own dtype (see dbscan._cut)
    if symmetrize is None and not check:
        return blk, keep
    mirror = a[:, r0:r1].T
    keep_t = mirror <= eps
    if symmetrize is None:
        diff = keep != keep_t
        if bool(diff.any()):
            r, c = (np.nonzero(diff) if lib is np else torch.nonzero(diff, as_tuple=True))
            i, j = int(r[0]) + r0, int(c[0])
            if not bool(keep[i - r0, j]):
                i, j = j, i
            raise ValueError(f"{name}: expected a symmetric distance matrix; d[{i}, {j}] = {float(a[i, j]):.6g} "
                             f"is within eps = {eps:g} but d[{j}, {i}] = {float(a[j, i]):.6g} is not "
                             f"(pass symmetrize='max' or 'min' to cluster max(d, d.T) or min(d, d.T))")
        return blk, keep
    if symmetrize == "max":
        return lib.maximum(blk, mirror), keep & keep_t
    return lib.minimum(blk, mirror), keep | keep_t


def dense_distance_rows(t: torch.Tensor, eps: float, name: str, symmetrize=None):
    """The entries ``<= eps`` of a dense ``[N, N]`` distance matrix as CSR ``(indptr, indices, data)``
    (int64, int64, float32; data in the input's dtype), scanned in row blocks.

    On the way: NaN/negative values raise, and the eps-neighbour relation is checked symmetric block by
    block against the mirrored columns (``symmetrize``: see :func:`symmetric_neighbours`). No temporary
    is larger than a block; on the CPU a counting pass sizes the output first, so the peak is the
    output plus a few blocks.
    """
    if symmetrize not in SYMMETRIZE:
        raise ValueError(f"symmetrize: expected None, 'max' or 'min', got {symmetrize!r}")
    if not torch.is_floating_point(t):
        raise TypeError(f"{name}: expected floating-point distances, got {t.dtype}")
    n = t.shape[0]
    rows = max(1, DENSE_BLOCK_ELEMS // max(n, 1))
    if t.device.type == "cpu" and t.dtype != torch.bfloat16:
        a = t.numpy()  # a view: the scan runs in NumPy, whose nonzero sizes its output exactly
        counts = np.zeros(n, dtype=np.int64)
        for r0 in range(0, n, rows):
            _, keep = _dense_block(a, r0, min(n, r0 + rows), eps, symmetrize, name, np)
            counts[r0:r0 + rows] = keep.sum(axis=1)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int64)
        data = np.empty(int(indptr[-1]), dtype=a.dtype)
        for r0 in range(0, n, rows):
            blk, keep = _dense_block(a, r0, min(n, r0 + rows), eps, symmetrize, name, np, check=False)
            r, c = np.nonzero(keep)
            lo, hi = indptr[r0], indptr[min(n, r0 + rows)]
            indices[lo:hi] = c
            data[lo:hi] = blk[r, c]
            del r, c, keep, blk
        return torch.from_numpy(indptr), torch.from_numpy(indices), torch.from_numpy(data)
    counts, cols, vals = [], [], []
    for r0 in range(0, n, rows):
        blk, keep = _dense_block(t, r0, min(n, r0 + rows), eps, symmetrize, name, torch)
        r, c = torch.nonzero(keep, as_tuple=True)
        counts.append(keep.sum(dim=1))
        cols.append(c)
        vals.append(blk[r, c])
    dev = t.device
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    if n:
        torch.cumsum(torch.cat(counts), 0, out=indptr[1:])
    indices = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.int64, device=dev)
    data = torch.cat(vals) if vals else torch.zeros(0, dtype=t.dtype, device=dev)
    return indptr, indices, data


def _entry(indptr, indices, data, i: int, j: int) -> str:
    """``d[i, j]`` of a CSR (host tensors) as text: its value(s), or 'not stored'."""
    lo, hi = int(indptr[i]), int(indptr[i + 1])
    hit = torch.nonzero(indices[lo:hi] == j).flatten()
    if hit.numel() == 0:
        return "not stored"
    return ", ".join(f"{float(data[lo + int(h)]):.6g}" for h in hit[:3])


def _first_asymmetric_cpu(ip, ix, n):
    """scipy: the neighbour pattern (canonical CSR of kept entries) and its transpose; the first (i, j) in
    the pattern whose mirror is not, or None when symmetric."""
    import scipy.sparse as sp

    e = sp.csr_matrix((np.ones(ix.shape[0], dtype=np.int8), ix, ip), shape=(n, n))
    e.sum_duplicates()  # sorted, duplicate-free (a pair stored twice is one neighbour)
    e.data[:] = 1
    et = e.T.tocsr()  # O(nnz + N) counting transpose, sorted indices
    if np.array_equal(e.indptr, et.indptr) and np.array_equal(e.indices, et.indices):
        return e, et, None
    diff = (e - et).tocoo()
    one = diff.data > 0  # in e, not in e.T: d[i, j] <= eps but not d[j, i]
    k = np.flatnonzero(one)
    order = np.lexsort((diff.col[k], diff.row[k]))[0]
    return e, et, (int(diff.row[k][order]), int(diff.col[k][order]))


def symmetric_neighbours(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, n: int, eps: float,
                         symmetrize, name: str, describe=None):
    """Check (or make) the eps-neighbour relation of a CSR distance matrix symmetric.

    A pair is a neighbour when its entry is stored and ``<= eps`` (compared in ``data``'s dtype).
    ``describe(i, j)`` gives an entry's value as text for the error (default: looked up in the CSR). DBSCAN's labels are defined (and equal scikit-learn's) only when ``d[i, j] <= eps`` exactly
    when ``d[j, i] <= eps``. ``symmetrize=None`` raises ``ValueError`` naming the first offending pair;
    ``"max"`` clusters ``max(d, d.T)`` (a pair is a neighbour when both directions are within eps; an
    entry not stored counts as +inf), ``"min"`` clusters ``min(d, d.T)`` (either direction). Costs
    O(nnz + N) on the CPU (a counting transpose), a sort of the kept pairs on a GPU.
    Returns the (possibly new) ``(indptr, indices, data)``.
    """
    if symmetrize not in SYMMETRIZE:
        raise ValueError(f"symmetrize: expected None, 'max' or 'min', got {symmetrize!r}")
    dev = data.device
    kept = data <= eps
    if dev.type == "cpu":
        ip = indptr.to(torch.int64)
        counts = torch.zeros(n + 1, dtype=torch.int64)
        if n:
            rows = torch.repeat_interleave(torch.arange(n), ip[1:] - ip[:-1])
            counts[1:] = torch.cumsum(torch.bincount(rows[kept], minlength=n), 0)
        kix = indices[kept].to(torch.int64).numpy()
        e, et, bad = _first_asymmetric_cpu(counts.numpy(), kix, n)
        if bad is None:
            return indptr, indices, data
        if symmetrize is None:
            _raise_asymmetric(indptr, indices, data, bad, eps, name, describe)
        p = e.multiply(et) if symmetrize == "max" else (e + et)
        p = p.tocsr()
        p.sum_duplicates()
        return (torch.from_numpy(p.indptr.astype(np.int64)), torch.from_numpy(p.indices.astype(np.int64)),
                torch.zeros(p.indices.shape[0], dtype=torch.float32))
    return _symmetric_sorted(indptr, indices, data, n, kept, symmetrize, eps, name, describe)


def _symmetric_sorted(indptr, indices, data, n: int, kept, symmetrize, eps, name, describe):
    """:func:`symmetric_neighbours` on any device (the GPU path): sorted pair keys of the pattern and of
    its mirror image."""
    dev = data.device
    rows = torch.repeat_interleave(torch.arange(n, device=dev), indptr[1:] - indptr[:-1])
    r, c = rows[kept], indices[kept].to(torch.int64)
    fwd = torch.unique(r * n + c)
    bwd = torch.unique(c * n + r)
    if torch.equal(fwd, bwd):
        return indptr, indices, data
    if symmetrize is None:
        pos = torch.searchsorted(bwd, fwd).clamp(max=max(bwd.numel() - 1, 0))
        miss = bwd[pos] != fwd if bwd.numel() else torch.ones_like(fwd, dtype=torch.bool)
        k = int(fwd[torch.nonzero(miss).flatten()[0]])
        _raise_asymmetric(indptr.cpu(), indices.cpu(), data.cpu(), (k // n, k % n), eps, name, describe)
    if symmetrize == "max":
        pos = torch.searchsorted(bwd, fwd).clamp(max=max(bwd.numel() - 1, 0))
        keys = fwd[bwd[pos] == fwd] if bwd.numel() else fwd[:0]
    else:
        keys = torch.unique(torch.cat([fwd, bwd]))
    u, v = keys // n, keys % n
    new_ptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    if n:
        new_ptr[1:] = torch.cumsum(torch.bincount(u, minlength=n), 0)
    return new_ptr, v, torch.zeros(v.numel(), dtype=torch.float32, device=dev)


def _raise_asymmetric(indptr, indices, data, pair, eps, name, describe=None):
    i, j = pair
    desc = describe or (lambda a, b: _entry(indptr, indices, data, a, b))
    raise ValueError(f"{name}: expected a symmetric distance matrix; d[{i}, {j}] = {desc(i, j)} "
                     f"is within eps = {eps:g} but d[{j}, {i}] = {desc(j, i)} is not "
                     f"(pass symmetrize='max' or 'min' to cluster max(d, d.T) or min(d, d.T))")
