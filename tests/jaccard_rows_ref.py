"""Reference for the last Jaccard stage from the formulas (docs/design.md), shared by
tests/test_jaccard_table.py (host) and tests/test_cuda.py (GPU): m(i, j) as a float32
accumulator walked in ascending t, the table sizes the CUDA kernels must pick, and
synthetic V' matrices with the awkward cases (empty rows, duplicate rows, zero weights,
rows with more partners than a shared-memory table holds)."""
import numpy as np


def capacity(count):
    cap = 32
    while cap < 2 * count:
        cap <<= 1
    return cap


def postings(q_ptr, q_idx, q_val, n):
    rows = np.repeat(np.arange(n), np.diff(q_ptr))
    order = np.argsort(q_idx, kind="stable")
    p_ptr = np.concatenate([[0], np.cumsum(np.bincount(q_idx, minlength=n))]).astype(np.int64)
    return p_ptr, rows[order], q_val[order]


def reference(q_ptr, q_idx, q_val, max_distance):
    """Per row: (kept columns ascending, float32 distances, distinct partners, summed postings sizes).
    m(i, j) is a float32 accumulator walked in ascending t (one add per postings list)."""
    n = q_ptr.size - 1
    p_ptr, p_row, p_val = postings(q_ptr, q_idx, q_val, n)
    md = np.float32(max_distance)
    rows = []
    for i in range(n):
        acc = np.zeros(n, np.float32)
        touched = np.zeros(n, bool)
        summed = 0
        for a in range(q_ptr[i], q_ptr[i + 1]):
            t = q_idx[a]
            lo, hi = p_ptr[t], p_ptr[t + 1]
            js = p_row[lo:hi]
            acc[js] = acc[js] + np.minimum(q_val[a], p_val[lo:hi])
            touched[js] = True
            summed += hi - lo
        js = np.flatnonzero(touched)
        m = acc[js]
        d = np.maximum(np.float32(1) - m / (np.float32(2) - m), np.float32(0))
        diag = js == i
        keep = diag | ((m > 0) & (d <= md))
        rows.append((js[keep], np.where(diag, np.float32(0), d)[keep].astype(np.float32), js.size, summed))
    return rows


def assert_bitwise(out, ref):
    n = len(ref)
    for i in range(n):
        lo, hi = out["indptr"][i], out["indptr"][i + 1]
        np.testing.assert_array_equal(out["indices"][lo:hi], ref[i][0], err_msg=f"row {i} columns")
        assert out["data"][lo:hi].view(np.uint32).tolist() == ref[i][1].view(np.uint32).tolist(), f"row {i} bits"


def synthetic(n=3000, seed=0, hub=1300):
    """Random V' rows: empty rows, exact duplicate rows, zero weights (m can be 0), and a hub
    column held by `hub` rows, whose rows have more partners than any shared-memory table holds."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 9, n)
    sizes[rng.random(n) < 0.1] = 0  # rows with no support, hence no partners
    cols, vals = [], []
    for i in range(n):
        c = np.sort(rng.choice(n, sizes[i], replace=False)) if sizes[i] else np.zeros(0, np.int64)
        v = rng.random(c.size).astype(np.float32) * np.float32(0.3)
        v[rng.random(c.size) < 0.05] = 0  # a softmax weight that underflowed
        cols.append(c)
        vals.append(v)
    for i in rng.choice(n, hub, replace=False):
        if sizes[i] == 0:
            continue
        c = np.union1d(cols[i], [0])
        v = np.concatenate([vals[i], [np.float32(0.05)]])[np.argsort(np.concatenate([cols[i], [0]]), kind="stable")]
        cols[i], vals[i] = c, v.astype(np.float32)[:c.size]
    for dst, src in zip(rng.choice(n, n // 10, replace=False), rng.integers(0, n, n // 10)):
        cols[dst], vals[dst] = cols[src].copy(), vals[src].copy()  # duplicate rows
    q_ptr = np.concatenate([[0], np.cumsum([c.size for c in cols])]).astype(np.int64)
    q_idx = np.concatenate(cols).astype(np.int32) if q_ptr[-1] else np.zeros(0, np.int32)
    q_val = np.concatenate(vals).astype(np.float32) if q_ptr[-1] else np.zeros(0, np.float32)
    return q_ptr, q_idx, q_val
