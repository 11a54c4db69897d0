"""Progress per chunk of the Jaccard pipeline (issue 21, point 6): ``hil cluster --progress on`` moves
during the kNN and during the k-reciprocal stages, in rows.

* the k-reciprocal stages (native C++ and torch) report ``("stages", k * N + rows, passes * N)`` through
  :mod:`hilcore._progress` as the chunks of rows of their passes finish: the count only grows, is seen
  inside every pass, and ends at the total;
* the native reports come from the calling thread while the C++ call runs (an exception raised by the
  hook ends the call), one per block of rows at one thread, and change no bit of the result, at any
  thread count;
* ``hil cluster --progress on`` shows the passes' rows.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

import hilcore
from hilcore import _progress, cli
from hilcore.synthetic import reid_features

N = 120


@pytest.fixture(scope="module")
def x():
    return reid_features(20, n=N, dim=16, seed=3)[0]


def _need(backend: str) -> None:
    if backend not in hilcore.backends("cpu"):
        pytest.skip(f"{backend} is not built here")


@pytest.fixture
def one_thread():
    """One OpenMP thread (shared by torch and the extension): the calling thread finishes every row, so the
    native stages report at every block end."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def small_chunks(monkeypatch):
    """Blocks of 32 rows in the native passes; chunks of a few rows in the torch ones (k1 = 8, k2 = 3)."""
    from hilcore.backend.native import jaccard as native_jaccard
    from hilcore.stages import jaccard as stages

    monkeypatch.setattr(native_jaccard, "BLOCK_ROWS", 32)
    monkeypatch.setattr(stages, "CHUNK_ELEMENTS", 1024)   # (the expansion takes k1 * kk * k1 = 320 per row)


def _stage_reports(seen: list) -> list:
    """The ``("stages", done, total)`` reports after the stages' start."""
    assert ("stages", 0, 0) in seen
    after = seen[seen.index(("stages", 0, 0)) + 1:]
    assert all(stage == "stages" for stage, _, _ in after), after
    return [(done, total) for _, done, total in after]


def test_rows_pass_counts_over_the_passes():
    assert _progress.rows_pass("stages", 10, 0, 2) is None and not _progress.active()   # no hook, no reporter
    seen = []
    with _progress.reporting(lambda *r: seen.append(r)):
        assert _progress.active()
        for k in range(2):
            tick = _progress.rows_pass("stages", 10, k, 2)
            tick(4)
            tick(10)
    assert seen == [("stages", 4, 20), ("stages", 10, 20), ("stages", 14, 20), ("stages", 20, 20)]


@pytest.mark.parametrize("k2", [3, 1])
@pytest.mark.parametrize("backend", ["native", "torch"])
def test_jaccard_stages_report_their_rows_per_chunk(x, backend, k2, small_chunks, one_thread):
    _need(backend)
    want = hilcore.jaccard_distance(x, 8, k2, backend=backend, max_distance=0.9)
    seen = []
    with _progress.reporting(lambda *r: seen.append(r)):
        got = hilcore.jaccard_distance(x, 8, k2, backend=backend, max_distance=0.9)
    assert (want != got).nnz == 0 and np.array_equal(want.indices, got.indices)   # the reports change no bit
    reports = _stage_reports(seen)
    passes = {"native": 3, "torch": 4}[backend] - (k2 == 1)   # query expansion only when k2 > 1
    assert {t for _, t in reports} == {passes * N}
    done = [d for d, _ in reports]
    assert done == sorted(done) and done[-1] == passes * N                          # monotone, to the total
    for k in range(passes):                                                         # moving inside every pass
        assert any(k * N < d < (k + 1) * N for d in done), (k, done)
    if backend == "native":                                                         # one report per block
        assert done == [k * N + min(N, b) for k in range(passes) for b in range(32, N + 32, 32)]


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_jaccard_stage_reports_at_two_threads(x, backend, small_chunks):
    """At two threads the native reports come when the calling thread passes a block end: fewer perhaps,
    still multiples of the block (plus each pass's end), increasing to the total, and the same bits."""
    _need(backend)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = hilcore.jaccard_distance(x, 8, 3, backend=backend)
        seen = []
        with _progress.reporting(lambda *r: seen.append(r)):
            got = hilcore.jaccard_distance(x, 8, 3, backend=backend)
    finally:
        torch.set_num_threads(old)
    assert (want != got).nnz == 0 and np.array_equal(want.data.view(np.int32), got.data.view(np.int32))
    done = [d for d, _ in _stage_reports(seen)]
    passes = {"native": 3, "torch": 4}[backend]
    assert all(a < b for a, b in zip(done, done[1:])) and done[-1] == passes * N
    assert all(k * N in done for k in range(1, passes + 1))                         # every pass ends
    if backend == "native":
        assert all(d % N % 32 == 0 for d in done)


def test_native_and_torch_stages_agree_under_reports(x, small_chunks):
    _need("native")
    with _progress.reporting(lambda *r: None):
        a = hilcore.jaccard_distance(x, 8, 3, backend="native")
        b = hilcore.jaccard_distance(x, 8, 3, backend="torch")
    assert (a != b).nnz == 0 and np.array_equal(a.data.view(np.int32), b.data.view(np.int32))


def test_native_reports_come_from_the_calling_thread_while_the_call_runs(x, small_chunks, one_thread):
    _need("native")
    me, threads, seen = threading.get_ident(), set(), []

    class Stop(Exception):
        pass

    def hook(stage, done, total):
        threads.add(threading.get_ident())
        seen.append((stage, done, total))
        if stage == "stages" and 0 < done < total:
            raise Stop                                  # only reachable while the C++ passes still run

    with pytest.raises(Stop), _progress.reporting(hook):
        hilcore.jaccard_distance(x, 8, 3, backend="native")
    assert threads == {me} and seen[-1] == ("stages", 32, 3 * N)
    assert hilcore.jaccard_distance(x, 8, 3, backend="native").shape == (N, N)   # the next call runs as usual


@pytest.mark.parametrize("threads", [1, 2])
def test_native_blocks_of_rows_change_no_bit(x, threads):
    _need("native")
    from hilcore._dispatch import native_module

    nat = native_module()
    xn = torch.nn.functional.normalize(torch.from_numpy(x), dim=1).numpy()
    rank = np.ascontiguousarray(hilcore.knn(xn, 10, backend="native")[0], dtype=np.int64)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)   # the extension shares torch's OpenMP runtime
    try:
        want = nat.jaccard(xn, rank, 10, 4, math.inf)[:3]
        for block in (1, 7, 64, N, 10 ** 9):
            calls = []
            got = nat.jaccard(xn, rank, 10, 4, math.inf, lambda d, t: calls.append((d, t)), block)[:3]
            assert all(np.array_equal(u.view(np.uint8), v.view(np.uint8)) for u, v in zip(want, got)), block
            assert calls[-1] == (3 * N, 3 * N) and all(a < b for (a, _), (b, _) in zip(calls, calls[1:]))
            if threads == 1:                              # the calling thread passes every block end
                assert len(calls) == 3 * -(-N // block)
    finally:
        torch.set_num_threads(old)


def test_native_progress_arguments_are_checked(x):
    _need("native")
    from hilcore._dispatch import native_module

    nat = native_module()
    xn = torch.nn.functional.normalize(torch.from_numpy(x), dim=1).numpy()
    rank = np.ascontiguousarray(hilcore.knn(xn, 8, backend="native")[0], dtype=np.int64)
    with pytest.raises(TypeError, match="progress: expected a callable"):
        nat.jaccard(xn, rank, 8, 3, 1.0, 5, 32)
    with pytest.raises(ValueError, match="block_rows: expected >= 1, got 0"):
        nat.jaccard(xn, rank, 8, 3, 1.0, lambda d, t: None, 0)


@pytest.mark.parametrize("backend, passes", [("native", 3), ("torch", 4)])
def test_hil_cluster_progress_shows_the_jaccard_passes_rows(x, tmp_path, capsys, backend, passes, small_chunks,
                                                           one_thread):
    pytest.importorskip("tqdm")
    _need(backend)
    f = tmp_path / "f.npy"
    np.save(f, x)
    rc = cli.main(["cluster", str(f), "--k1", "8", "--k2", "3", "--progress", "on", "--backend", backend])
    err = capsys.readouterr().err
    assert rc == 0 and f"kNN rows {N}/{N} (100%)" in err
    for k in range(1, passes + 1):
        assert f"Jaccard pass {k}/{passes} rows {N}/{N} (100%)" in err
        assert any(f"Jaccard pass {k}/{passes} rows {r}/{N} " in err for r in range(1, N)), k   # inside the pass
    if backend == "native":
        assert "Jaccard pass 2/3 rows 64/120 (53%)" in err
