"""The ``hil`` command.

    hil cluster FEATURES [--k1 30 --k2 6 --eps 0.6 --min-samples 4 --backend auto --out labels.npy]
    hil make-features OUT.npy [--ids 300 --per-id 20 --dim 1536 --seed 0]
    hil bench [bench_cluster.py options]
    hil make-synthetic DIR [--ids 96 --imgs-per-cam 4 --size 64x32 --seed 0 --layout sysu|regdb]
    hil train --config FILE [section.key=value ...] [--output DIR] [--resume auto|never|PATH]
    hil eval CHECKPOINT --dataset sysu|regdb|synthetic --data-root DIR [--trials 10]
    hil extract --checkpoint CKPT --images DIR --modality rgb|ir --out F.npy [--config FILE] [--heads both]
    hil convert-checkpoint [--trust] IN [OUT]
    hil --version

``cluster`` reads features (``.npy``, or ``.pt``/``.pth`` holding a tensor or a
dict with a ``"features"``/``"feats"`` entry; one row per image), runs the
k-reciprocal Jaccard distance (kept up to ``eps``) and DBSCAN, and prints the
clusters, the noise and the time per stage. Errors in the input end the
command with exit status 2 and one line ``hil: error: ...`` on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

import numpy as np

from ._files import _FULL, FolderLockedError, WriteError, atomic_open, describe_os_error, save_npy, write_text

PROG = "hil"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _fail(msg: str) -> NoReturn:
    raise CLIError(msg)


#: Where an unexpected internal error should be reported.
ISSUE_TRACKER = "the hilcore issue tracker (include the command line, `hil --version` and the --debug traceback)"

# Errors that are the user's to fix: one line, exit status 2. Anything else is a bug in hilcore.
_USER_ERRORS = (CLIError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                FileExistsError, ValueError, TypeError, FolderLockedError)


def check_input_file(path: str, opt: str, *, allow_dir: bool = False) -> Path:
    """``path`` exists and is a readable file (or a folder when ``allow_dir``)."""
    p = Path(path)
    if not p.exists():
        _fail(f"{opt}: no such file: {path}")
    if p.is_dir() and not allow_dir:
        _fail(f"{opt}: is a directory, expected a file: {path}")
    if not os.access(p, os.R_OK):
        _fail(f"{opt}: not readable (permission denied): {path}")
    return p


def _writable_ancestor(p: Path, opt: str) -> None:
    """The nearest existing ancestor of ``p`` is a folder this process may create entries in."""
    a = p
    while not a.exists():
        if a.parent == a:
            break
        a = a.parent
    if a.exists() and not a.is_dir():
        _fail(f"{opt}: cannot create {p}: {a} is a file, not a folder")
    if not os.access(a, os.W_OK | os.X_OK):
        _fail(f"{opt}: cannot write into {a} (permission denied)")


def check_output_file(path: str, opt: str) -> Path:
    """``path`` can be written as a file: not a folder, and its folder exists or can be created."""
    p = Path(path)
    if p.is_dir():
        _fail(f"{opt}: {path} is a directory, expected a file path (e.g. {p / 'labels.npy'})")
    if p.exists() and not os.access(p, os.W_OK):
        _fail(f"{opt}: {path} exists and is not writable")
    _writable_ancestor(p.parent, opt)
    return p


def check_output_dir(path: str, opt: str) -> Path:
    """``path`` is a writable folder, or can be created as one."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        _fail(f"{opt}: {path} is a file, expected a folder")
    _writable_ancestor(p, opt)
    return p


def check_device(text, opt: str = "--device", *, allow_auto: bool = False) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (and ``auto`` when allowed) naming a device that exists here."""
    choices = ("auto, " if allow_auto else "") + "cpu, cuda or cuda:N"
    if not isinstance(text, str):
        _fail(f"{opt}: expected {choices}, got {text!r}")
    if allow_auto and text == "auto":
        return text
    ok = text in ("cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit())
    if not ok:
        _fail(f"{opt}: expected {choices}, got {text!r}")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(f"{opt} {text}: no CUDA device is available (torch {torch.__version__}, "
                  f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu")
        if ":" in text and int(text[5:]) >= torch.cuda.device_count():
            _fail(f"{opt} {text}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                  f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return text


def check_seed(v, opt: str = "--seed") -> None:
    """A random seed NumPy and torch both take: an integer in [0, 2**32 - 1]."""
    check_number(v, opt, 0, maximum=2 ** 32 - 1)


def check_number(v, opt: str, minimum, *, maximum=None) -> None:
    if v != v or v < minimum or (maximum is not None and v > maximum):   # (v != v: NaN)
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        _fail(f"{opt}: expected a number {rng}, got {v}")


# ---------------------------------------------------------------------------------------------- input


def load_features(path: str):
    """Features ``[N, D]`` from ``path`` as a NumPy array or torch tensor (not yet validated for NaN)."""
    p = check_input_file(path, "FEATURES")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        with open(p, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY":
            _fail(f"FEATURES: {path} is not a .npy file (no NumPy header)")
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            if "pickle" in str(e):
                _fail(f"FEATURES: {path} holds Python objects, expected a numeric array [N, D]")
            _fail(f"FEATURES: cannot read {path} as a .npy array ({e})")
        except Exception as e:  # noqa: BLE001 - any reader failure is a user-facing format error
            _fail(f"FEATURES: cannot read {path} as a .npy array ({type(e).__name__}: {e})")
    elif suffix in (".pt", ".pth"):
        import torch

        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            _fail(f"FEATURES: cannot read {path} as a torch file ({type(e).__name__}: {str(e).splitlines()[0]})")
        if isinstance(obj, dict):
            key = next((k for k in ("features", "feats") if k in obj), None)
            if key is None:
                _fail(f"FEATURES: {path} holds a dict without a 'features' or 'feats' entry "
                      f"(keys: {sorted(map(str, obj))[:8]})")
            obj = obj[key]
        if isinstance(obj, np.ndarray):
            arr = obj
        elif isinstance(obj, torch.Tensor):
            arr = obj.detach()
            if arr.layout != torch.strided:  # a sparse tensor: features are dense rows; densify (N x D)
                if arr.dim() != 2:
                    _fail(f"FEATURES: expected a 2-D array [N, D], got a sparse tensor of shape "
                          f"{tuple(arr.shape)} in {path}")
                arr = arr.to_dense()
            if arr.is_complex():
                _fail(f"FEATURES: expected real floating-point features, got dtype {arr.dtype} in {path}")
        else:
            _fail(f"FEATURES: {path} holds a {type(obj).__name__}, expected a tensor or a dict with 'features'")
    else:
        _fail(f"FEATURES: unsupported file type {p.suffix or '(none)'!r} for {path}; expected .npy or .pt")
    return arr


def check_features(arr, path: str):
    """Shape, dtype and NaN checks with messages that name the file; returns the array."""
    shape = tuple(arr.shape)
    if len(shape) != 2:
        _fail(f"FEATURES: expected a 2-D array [N, D] (one row per image), got shape {shape} in {path}")
    if shape[0] == 0 or shape[1] == 0:
        _fail(f"FEATURES: expected at least one row and one column, got shape {shape} in {path}")
    kind = str(arr.dtype)
    floating = arr.is_floating_point() if hasattr(arr, "detach") else arr.dtype.kind == "f"
    if not floating:
        _fail(f"FEATURES: expected floating-point features, got dtype {kind} in {path}")
    if hasattr(arr, "detach"):
        import torch

        finite = torch.isfinite(arr).all(dim=1).numpy()
    else:
        finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        _fail(f"FEATURES: {bad.size} row(s) contain NaN or Inf in {path} (first rows: {bad[:5].tolist()})")
    # max-abs, not the norm: the float32 norm of a row of 1e-30s underflows to 0
    peak = arr.abs().amax(dim=1).numpy() if hasattr(arr, "detach") else np.abs(arr).max(axis=1)
    if (peak == 0).any():
        bad = np.flatnonzero(peak == 0)
        _fail(f"FEATURES: {bad.size} row(s) are all zeros in {path} (first rows: {bad[:5].tolist()})")
    return arr


# ---------------------------------------------------------------------------------------------- commands


class _NoBar:
    """The progress display without tqdm (the 'train' extra): nothing is shown."""

    def set_postfix_str(self, *_):
        pass

    def set_description_str(self, *_):
        pass

    def update(self, *_):
        pass

    def refresh(self):
        pass

    def close(self):
        pass


def show_progress(choice: str, long_run: bool = True) -> bool:
    """``--progress``: ``on`` always, ``off`` never, ``auto`` on a terminal (never into a redirected log) for
    runs long enough to wait for."""
    return choice == "on" or (choice == "auto" and long_run and sys.stderr.isatty())


class _Steps:
    """A progress line of named steps whose elapsed time keeps moving while a step runs (a background refresh
    every 0.5 s), with the chunks of the running step when it reports them (:mod:`hilcore._progress`):
    ``hil cluster: 0/3 steps [00:07], kNN rows 4096/20000 (20%)``. Nothing is shown when disabled."""

    def __init__(self, steps: tuple, enabled: bool, desc: str = "hil cluster"):
        self.steps, self.i = steps, 0
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is None or not enabled:
            self.bar, self._stop = _NoBar(), None
            return
        import threading

        self.bar = tqdm(total=len(steps), desc=desc, unit="step", file=sys.stderr,
                        bar_format="{desc}: {n_fmt}/{total_fmt} steps [{elapsed}]{postfix}")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self):
        while not self._stop.wait(0.5):
            with self._lock:
                self.bar.refresh()

    def start(self, name: str, note: str = "") -> None:
        """Step ``name`` starts (the steps before it are done)."""
        with getattr(self, "_lock", _NOLOCK):
            k = self.steps.index(name)
            if k > self.i:
                self.bar.update(k - self.i)
                self.i = k
            self.bar.set_postfix_str(f"{name}{' ' + note if note else ''}")

    def chunk(self, name: str, done: int, total: int, unit: str = "rows") -> None:
        """``done`` of ``total`` ``unit`` of step ``name`` (which starts now if it had not)."""
        if name != self.steps[min(self.i, len(self.steps) - 1)]:
            self.start(name)
        if total > 0:
            with getattr(self, "_lock", _NOLOCK):
                self.bar.set_postfix_str(f"{name} {unit} {done}/{total} ({100 * done // total}%)")

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
        with getattr(self, "_lock", _NOLOCK):
            if self.i < len(self.steps):
                self.bar.update(len(self.steps) - self.i)
                self.i = len(self.steps)
            self.bar.close()


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


_NOLOCK = _NoLock()

#: the library's argument names -> ``hil cluster``'s flags, for messages raised below the CLI
_CLUSTER_FLAGS = {"x": "FEATURES", "k1": "--k1", "k2": "--k2", "max_distance": "--eps", "eps": "--eps",
                  "min_samples": "--min-samples", "backend": "--backend"}


def _under_flag(flag: str, msg: str) -> str:
    """``msg`` of a library call on ``flag``'s value, naming the flag once: a leading ``name: `` that is the
    flag's own name becomes the flag (``checkpoint: x`` -> ``--checkpoint: x``); a message that already names
    a config key (``config.optim.lr: ...``) stays as it is; any other gets the flag in front."""
    name = flag.lstrip("-")
    head, sep, rest = msg.partition(": ")
    if sep and head == name:
        return f"{flag}: {rest}"
    if msg.startswith((flag + ":", flag + " ", name + ".")):
        return msg
    return f"{flag}: {msg}"


def _as_flag(msg: str, flags: dict) -> str:
    """``msg`` with a leading ``name: `` (a library argument) named by its flag instead."""
    head, sep, rest = msg.partition(": ")
    return f"{flags[head]}: {rest}" if sep and head in flags else msg


def _cluster_hook(bar: _Steps, n: int, d: int):
    """The :mod:`hilcore._progress` hook of ``hil cluster``: the parts of the pipeline start their steps, the kNN
    reports its rows (``kNN rows 4096/20000``), the k-reciprocal stages the rows of each of their passes over
    the N rows (``Jaccard pass 2/3 rows 8192/20000``: they count ``k * N + rows`` of ``passes * N``)."""
    names = {"knn": ("kNN", f"of {n} x {d}"), "stages": ("Jaccard", "k-reciprocal sets, query expansion")}

    def hook(stage, done, total):
        if stage in names and total == 0:
            bar.start(*names[stage])
        elif stage == "stages" and total >= n:
            passes = total // n
            k = max(0, min((done - 1) // n, passes - 1))   # a pass's end shows as that pass's n/n
            bar.chunk("Jaccard", done - k * n, n, f"pass {k + 1}/{passes} rows")
        elif stage in names:
            bar.chunk(names[stage][0], done, total)

    return hook


def cmd_cluster(args) -> int:
    import hilcore
    from hilcore import _arrays, _dispatch

    # every check that needs no data first: the long work must not end in a usage error
    check_input_file(args.features, "FEATURES")
    check_device(args.device)
    _dispatch.check_backend(args.backend, "--backend")
    for opt, v in (("--k1", args.k1), ("--k2", args.k2)):
        check_number(v, opt, 1)
    check_number(args.min_samples, "--min-samples", 1, maximum=_arrays.MAX_INT)
    check_number(args.eps, "--eps", 0)
    if args.out:
        check_output_file(args.out, "--out")
    t0 = time.perf_counter()
    arr = check_features(load_features(args.features), args.features)
    if args.device != "cpu":
        import torch

        arr = (arr if isinstance(arr, torch.Tensor) else _arrays.as_tensor(arr, "FEATURES")[0]).to(args.device)
    t_load = time.perf_counter() - t0
    n, d = arr.shape
    k1 = min(args.k1, n)
    try:
        _arrays.ranking_length(args.k1, "--k1", n)
        _arrays.ranking_length(args.k2, "--k2", k1, limit_name="--k1")
    except ValueError as e:
        _fail(str(e))

    import torch

    device = arr.device if isinstance(arr, torch.Tensor) else torch.device("cpu")
    try:
        jac = _dispatch.resolve("jaccard_distance", args.backend, device)
        b_db = _dispatch.resolve("dbscan", args.backend, device).backend
    except (ValueError, TypeError, RuntimeError) as e:
        _fail(f"--backend {args.backend}: {e}")
    b_jac = jac.backend
    ran = {p.label for _, p in jac.parts} | {b_db}
    backend = ran.pop() if len(ran) == 1 else f"jaccard {jac.label} / dbscan {b_db}"

    # a progress display on runs long enough to wait for (or when asked)
    slow = n >= 20000 or (jac.part("knn").backend == "torch" and device.type == "cpu" and n >= 4000)
    from hilcore import _progress

    bar = _Steps(("kNN", "Jaccard", "DBSCAN"), show_progress(args.progress, slow))
    hook = _cluster_hook(bar, n, d)
    try:
        t = time.perf_counter()
        with _progress.reporting(hook if show_progress(args.progress, slow) else None):
            dist = hilcore.jaccard_distance(arr, args.k1, args.k2, max_distance=args.eps, backend=b_jac)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_jac = time.perf_counter() - t
        bar.start("DBSCAN", f"eps {args.eps}, min_samples {args.min_samples}")
        t = time.perf_counter()
        labels = hilcore.dbscan(dist, args.eps, args.min_samples, backend=b_db)
        if isinstance(labels, torch.Tensor):
            labels = labels.cpu().numpy()
        t_db = time.perf_counter() - t
    except (ValueError, TypeError) as e:
        _fail(_as_flag(str(e), _CLUSTER_FLAGS))
    finally:
        bar.close()
    labels = np.asarray(labels, dtype=np.int64)
    nnz = dist._nnz() if isinstance(dist, torch.Tensor) else dist.nnz

    clustered = labels[labels >= 0]
    n_clusters = int(clustered.max()) + 1 if clustered.size else 0
    n_noise = int((labels < 0).sum())
    largest = int(np.bincount(clustered).max()) if clustered.size else 0
    out = sys.stdout
    print(f"features   {args.features}: N={n} D={d} ({device})", file=out)
    print(f"backend    {backend}", file=out)
    print(f"params     k1={args.k1} k2={args.k2} eps={args.eps} min_samples={args.min_samples}"
          + (f" (k1 clamped to N={k1})" if k1 != args.k1 else ""), file=out)
    print(f"clusters   {n_clusters}", file=out)
    print(f"noise      {n_noise} ({100.0 * n_noise / n:.1f}%)", file=out)
    print(f"largest    {largest}", file=out)
    print(f"pairs      {nnz} stored with d <= eps ({nnz / n:.1f} per row)", file=out)
    print(f"time       load {t_load:.3f}s  knn+jaccard {t_jac:.3f}s  dbscan {t_db:.3f}s  "
          f"total {t_jac + t_db:.3f}s", file=out)
    if args.out:
        outp = save_npy(args.out, labels)   # exactly this path, atomically (an earlier file survives a failure)
        print(f"labels     -> {outp}", file=out)
    return 0


def _ids_path(out: Path, what: str) -> Path:
    stem = out.name[:-4] if out.name.endswith(".npy") else out.name
    return out.with_name(f"{stem}_{what}.npy")


def cmd_make_features(args) -> int:
    from .synthetic import reid_features

    out = Path(args.out)
    if out.suffix.lower() != ".npy":
        _fail(f"OUT: expected a .npy path, got {args.out}")
    check_number(args.ids, "--ids", 1)
    check_number(args.per_id, "--per-id", 1)
    check_number(args.dim, "--dim", 2)
    check_number(args.cams, "--cams", 1)
    check_seed(args.seed)
    for p in (out, _ids_path(out, "ids"), _ids_path(out, "cams")):
        check_output_file(str(p), "OUT")
    t = time.perf_counter()
    x, ids, cams = reid_features(args.ids, args.per_id, dim=args.dim, n_cams=args.cams, seed=args.seed)
    # the three files as one: every byte written and synced before the first rename, so a full disk leaves
    # the earlier three (not a new features file beside old ids)
    with contextlib.ExitStack() as files:
        for path, arr in ((out, x), (_ids_path(out, "ids"), ids), (_ids_path(out, "cams"), cams)):
            fh = files.enter_context(atomic_open(path, "wb"))
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
    print(f"wrote {out} ({x.shape[0]} x {x.shape[1]} float32, {args.ids} identities x {args.per_id} images, "
          f"{args.cams} cameras, seed {args.seed}) and {_ids_path(out, 'ids')}, {_ids_path(out, 'cams')} "
          f"in {time.perf_counter() - t:.2f}s")
    return 0


def bench_out_dir() -> Path:
    """Where ``hil bench`` writes its results by default: ``$HIL_BENCH_DIR``, else
    ``$XDG_CACHE_HOME/hilcore/bench`` (``~/.cache/hilcore/bench``); never the source tree, whose
    ``benchmarks/results/`` holds the committed results the documentation shows."""
    if os.environ.get("HIL_BENCH_DIR"):
        return Path(os.environ["HIL_BENCH_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "hilcore" / "bench"


def find_bench_script() -> Path | None:
    """``benchmarks/bench_cluster.py`` of the source tree this hilcore runs from (an editable install), else of
    the clone the current folder is in (any of its folders), else None."""
    rel = Path("benchmarks") / "bench_cluster.py"
    here = Path(__file__).resolve().parents[1]
    cwd = Path.cwd().resolve()
    for root in (here, cwd, *cwd.parents):
        if (root / rel).is_file() and (root / "hilcore" / "__init__.py").is_file():
            return root / rel
    return None


def cmd_bench(bench_args: list[str]) -> int:
    script = find_bench_script()
    if script is None:
        _fail("bench: the benchmark scripts are not installed with the package; they live in hilcore's source "
              "repository: run `hil bench` inside a clone of it (any of its folders), or "
              "`python benchmarks/bench_cluster.py` there")
    import runpy

    args = list(bench_args)
    if not any(a in ("-h", "--help", "--worker") or a.startswith(("--out=", "--out-dir")) or a == "--out"
               for a in args):
        args += ["--out-dir", str(bench_out_dir())]
    sys.argv = [f"{PROG} bench"] + args       # argparse names the program after argv[0]
    sys.path.insert(0, str(script.parents[1]))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        _fail(f"--size: expected HxW (e.g. 64x32), got {text!r}")
    if h < 1 or w < 1:
        _fail(f"--size: expected positive HxW (e.g. 64x32), got {text!r}")
    return h, w


def cmd_make_synthetic(args) -> int:
    from .train.synthetic_people import make_synthetic_regdb, make_synthetic_sysu

    t = time.perf_counter()
    size = _size(args.size)
    check_number(args.ids, "--ids", 3 if args.layout == "sysu" else 2)  # the layouts' train/test split needs them
    check_number(args.imgs_per_cam, "--imgs-per-cam", 1)
    check_seed(args.seed)
    if size[0] < 16 or size[1] < 8:
        _fail(f"--size: expected H >= 16 and W >= 8, got {args.size}")
    check_output_dir(args.dir, "DIR")
    try:
        if args.layout == "sysu":
            root = make_synthetic_sysu(args.dir, n_ids=args.ids, imgs_per_cam=args.imgs_per_cam, size=size,
                                       seed=args.seed, overwrite=args.overwrite)
        else:
            root = make_synthetic_regdb(args.dir, n_ids=args.ids, imgs_per_id=args.imgs_per_cam, size=size,
                                        seed=args.seed, overwrite=args.overwrite)
    except FileExistsError:
        _fail(f"DIR: {args.dir} is not empty; pass --overwrite to replace the dataset there")
    except (ValueError, TypeError, NotADirectoryError) as e:
        _fail(str(e))
    n = sum(1 for p in Path(root).rglob("*") if p.suffix.lower() in (".jpg", ".bmp"))
    print(f"wrote {n} images of {size[0]}x{size[1]} ({args.ids} identities, {args.layout} layout, seed {args.seed}) "
          f"to {root} in {time.perf_counter() - t:.1f}s")
    return 0


def cmd_train(args) -> int:
    from .train.config import load_config

    if args.device:  # (the config file itself is checked by load_config, after the train extra's imports)
        check_device(args.device, allow_auto=True)
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"run.output={args.output}")
    if args.resume:
        overrides.append(f"run.resume={args.resume}")
    if args.device:
        overrides.append(f"run.device={args.device}")
    try:
        cfg = load_config(args.config, overrides)
    except (FileNotFoundError, ValueError, TypeError) as e:
        msg = str(e)      # the file's own faults name --config; a bad key names the key (file or override)
        _fail(_under_flag("--config", msg) if isinstance(e, FileNotFoundError) or " is not valid YAML" in msg
              else msg)
    check_device(cfg.run.device, "config run.device", allow_auto=True)
    check_output_dir(cfg.run.output, "--output" if args.output else "config run.output")
    from .train import distributed as D
    from .train.checkpoint import CheckpointError
    from .train.hil_vit import ModelSetupError
    from .train.loop import train

    try:
        train(cfg)
    except (FileNotFoundError, NotADirectoryError, ModelSetupError, CheckpointError, FolderLockedError) as e:
        _fail(str(e))
    except RuntimeError as e:
        if "clustering failed" in str(e):
            _fail(str(e))
        raise
    finally:
        D.cleanup()
    return 0


def cmd_eval(args) -> int:
    import torch

    from .train import checkpoint as ckpt
    from .train.data import build_data
    from .train.evaluation import evaluate
    from .train.loop import load_trained_model

    if not Path(args.data_root).is_dir():  # (the checkpoint is checked by its loader, before any work)
        _fail(f"--data-root: no such folder: {args.data_root}")
    check_device(args.device)
    check_number(args.trials, "--trials", 1)
    check_number(args.batch_size, "--batch-size", 1)
    check_number(args.workers, "--workers", 0)
    if args.regdb_trial is not None:
        check_number(args.regdb_trial, "--regdb-trial", 1, maximum=10)
    if args.dataset == "regdb" and args.regdb_trial is None:
        check_number(args.trials, "--trials", 1, maximum=10)
    try:
        state = ckpt.load_checkpoint(args.checkpoint)
        model, cfg = load_trained_model(state, args.device)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    cfg.data.dataset = args.dataset
    cfg.data.root = args.data_root
    cfg.data.workers = args.workers
    cfg.data.cache = False
    if args.size:
        cfg.data.size = list(_size(args.size))
    device = torch.device(args.device)
    print(f"checkpoint {args.checkpoint}: {cfg.model.backbone}, epoch {state['epoch']}, input "
          f"{cfg.data.size[0]}x{cfg.data.size[1]}")
    # the run's test features; a bar per extraction (query, gallery) on a terminal
    feat_kw = dict(flip=cfg.data.flip_extract, augment=cfg.data.augment, progress=show_progress(args.progress))
    rows = []
    if args.dataset == "regdb":
        trials = [args.regdb_trial] if args.regdb_trial is not None else list(range(1, args.trials + 1))
        if len(trials) > 1:
            print("note       RegDB: averaging the test splits of trials 1..10; a model trained on one trial has "
                  "seen identities of the other trials' test splits (pass --regdb-trial N for the honest number)")
        for t in trials:
            cfg.data.regdb_trial = t
            try:
                data = build_data(cfg)
            except (FileNotFoundError, NotADirectoryError, ValueError) as e:
                _fail(str(e))
            rows.append(evaluate(model, data, device, batch_size=args.batch_size, trials=1, **feat_kw))
        res = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        blocks = (("visible -> thermal", ""), ("thermal -> visible", "t2v_"))
        print(f"protocol   RegDB, trials {trials[0]}..{trials[-1]} ({len(trials)} averaged)")
    else:
        try:
            data = build_data(cfg)
        except (FileNotFoundError, NotADirectoryError, ValueError) as e:
            _fail(str(e))
        res = evaluate(model, data, device, batch_size=args.batch_size, trials=args.trials, modes=("all", "indoor"),
                       **feat_kw)
        blocks = (("all-search", ""), ("indoor-search", "indoor_"))
        print(f"protocol   SYSU-MM01, {len(data.query)} IR queries, one RGB image per identity and camera, "
              f"{args.trials} trials averaged")
    print(f"{'':20s} {'R1':>7s} {'R5':>7s} {'R10':>7s} {'R20':>7s} {'mAP':>7s} {'mINP':>7s}")
    for name, pre in blocks:
        vals = [res.get(f"{pre}{k}", float("nan")) for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")]
        print(f"{name:20s} " + " ".join(f"{100 * v:7.2f}" for v in vals))
    return 0


def cmd_extract(args) -> int:
    import torch

    from .train.extract import extract_files, list_images
    from .train.hil_vit import HILNet, load_hil_weights, read_weights

    check_device(args.device)
    if args.batch_size < 1:
        _fail(f"--batch-size: expected a positive integer, got {args.batch_size}")
    check_output_file(args.out, "--out")  # before the extraction, not after it
    try:
        files = list_images(args.images)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        _fail(str(e))
    try:
        obj = read_weights(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        _fail(_under_flag("--checkpoint", str(e)))
    size, kwargs, source = (288, 144), {}, "defaults (ViT-B/16, ICS stem, 288x144)"
    cfg_dict = None
    if args.config:
        from .train.config import load_config

        try:
            cfg_dict = load_config(args.config).to_dict()
        except (FileNotFoundError, ValueError, TypeError) as e:
            _fail(_under_flag("--config", str(e)))
        source = args.config
    elif isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        cfg_dict, source = obj["config"], "the checkpoint's config"
    if cfg_dict is not None:
        model = cfg_dict.get("model") or {}
        if model.get("backbone") != "hil_vit":
            _fail(f"hil extract needs the released network (model.backbone: hil_vit); {source} has "
                  f"{model.get('backbone')!r}")
        size, kwargs = tuple((cfg_dict.get("data") or {}).get("size", size)), dict(model.get("kwargs") or {})
    try:
        net = HILNet(img_size=size, **kwargs)
        rep = load_hil_weights(net, obj)
    except (ValueError, TypeError) as e:
        _fail(f"--checkpoint {args.checkpoint}: {e}")
    full = not rep.missing or not all(k.startswith("patch_embed2.") for k in rep.missing)
    if rep.missing and full:
        _fail(f"--checkpoint {args.checkpoint}: {len(rep.missing)} parameters of the network are missing from the "
              f"file (first: {rep.missing[:5]}); is it a checkpoint of this network ({source})?")
    kind = "pretrained ViT (heads copied from its last block)" if rep.missing else "full model"
    print(f"checkpoint {args.checkpoint}: {kind}, {len(rep.unexpected)} unexpected key(s) {rep.unexpected[:5]}, "
          f"{len(rep.ignored)} ignored; network from {source}", file=sys.stderr)
    progress = show_progress(args.progress)
    try:
        feats = extract_files(net, files, args.modality, heads=args.heads, batch_size=args.batch_size,
                              device=args.device, progress=progress)
    except ValueError as e:
        _fail(str(e))
    out = save_npy(args.out, feats)
    names = out.with_name(out.stem + "_files.txt")
    root = Path(args.images)
    write_text(names, "".join(p.relative_to(root).as_posix() + "\n" for p in files))
    print(f"wrote {out}: {feats.shape[0]} x {feats.shape[1]} float32 ({args.modality.upper()} branch, heads "
          f"{args.heads}, flip-averaged), file order in {names}")
    return 0


def cmd_convert_checkpoint(args) -> int:
    from .train import checkpoint as ckpt

    src = Path(args.input)
    if src.is_dir():
        _fail(f"IN: {src} is a directory; expected a checkpoint file (e.g. {src / ckpt.LAST})")
    try:
        dst, state, old = ckpt.convert_checkpoint(src, args.output, trust=args.trust)
    except (FileNotFoundError, ckpt.CheckpointError, OSError) as e:
        _fail(str(e))
    print(f"converted  {src} (format {old['format']}, hilcore {old['hilcore_version'] or 'unknown'}"
          f"{', read in full because of --trust' if old['trusted'] else ', read safely'}) -> {dst} "
          f"(format {state['version']}, hilcore {state['hilcore_version']}, epoch {state['epoch']}, "
          f"sha256 {state['checksum']['sha256'][:16]}...)")
    return 0


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog=PROG, description="hilcore: the clustering step of unsupervised "
                                "visible-infrared ReID (k-reciprocal Jaccard + DBSCAN), fast and O(N) in memory.")
    p.add_argument("--version", action="version", version=f"hil (hilcore) {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of any error (also HIL_DEBUG=1); without it a user error is one line")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_cluster_commands(sub)
    _add_training_commands(sub)
    _add_checkpoint_commands(sub)
    # listed for --help; main() forwards everything after "bench" to the script untouched
    sub.add_parser("bench", help="run benchmarks/bench_cluster.py (in a clone) with the remaining options; results "
                   "go to ~/.cache/hilcore/bench unless --out is given (hil bench --help lists them)", add_help=False)
    return p


def _add_cluster_commands(sub) -> None:
    """``hil cluster``, ``hil make-features``, ``hil make-synthetic``."""
    c = sub.add_parser("cluster", help="cluster features: Jaccard distance + DBSCAN -> pseudo labels",
                       description="Cluster features (one row per image) with the k-reciprocal Jaccard distance "
                       "and DBSCAN, as a HIL / cluster-contrast epoch does.")
    c.add_argument("features", metavar="FEATURES",
                   help=".npy array [N, D], or .pt holding a tensor or a dict with 'features'/'feats'")
    c.add_argument("--k1", type=int, default=30, help="k-reciprocal ranking length (default 30)")
    c.add_argument("--k2", type=int, default=6, help="query-expansion length, 1 = none (default 6)")
    c.add_argument("--eps", type=float, default=0.6, help="DBSCAN radius on the Jaccard distance (default 0.6)")
    c.add_argument("--min-samples", type=int, default=4, help="DBSCAN core size, self included (default 4)")
    c.add_argument("--backend", default="auto",
                   help="auto, torch, native, cuda, triton (default auto; hilcore.capabilities() lists them)")
    c.add_argument("--device", default="cpu", help="cpu or cuda[:i]: where the computation runs (default cpu)")
    c.add_argument("--out", default=None, help="write the labels (int64 [N], -1 = noise) to this .npy")
    c.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress display: auto = on a terminal for long runs (default auto)")
    c.set_defaults(func=cmd_cluster)

    m = sub.add_parser("make-features", help="write ReID-like synthetic features (+ OUT_ids.npy, OUT_cams.npy)",
                       description="Write ReID-like synthetic features (identities x cameras x noise, "
                       "L2-normalised) for trying hil cluster.")
    m.add_argument("out", metavar="OUT.npy")
    m.add_argument("--ids", type=int, default=300, help="identities (default 300)")
    m.add_argument("--per-id", type=int, default=20, help="images per identity (default 20)")
    m.add_argument("--dim", type=int, default=1536, help="feature dimension (default 1536)")
    m.add_argument("--cams", type=int, default=4, help="cameras (default 4)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    m.set_defaults(func=cmd_make_features)

    s = sub.add_parser("make-synthetic", help="write the synthetic people dataset (SYSU-MM01 or RegDB layout)",
                       description="Write procedurally drawn people in the SYSU-MM01 layout (cam1..cam6, exp/) or "
                       "the RegDB layout, for the demo and the tests.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--layout", choices=("sysu", "regdb"), default="sysu", help="dataset layout (default sysu)")
    s.add_argument("--ids", type=int, default=96, help="identities (default 96)")
    s.add_argument("--imgs-per-cam", type=int, default=4,
                   help="images per identity and camera (RegDB: per identity and modality) (default 4)")
    s.add_argument("--size", default="64x32", help="image size HxW (default 64x32)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset in DIR")
    s.set_defaults(func=cmd_make_synthetic)


def _add_training_commands(sub) -> None:
    """``hil train``, ``hil eval``."""
    t = sub.add_parser("train", help="train with the HIL loop from a YAML config (resumes automatically)",
                       description="Run the HIL training loop (extract, cluster, train, evaluate, checkpoint per "
                       "epoch). Under torchrun it trains with DistributedDataParallel.")
    t.add_argument("--config", required=True, metavar="FILE", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="config overrides, values in YAML (e.g. optim.lr=1e-4 data.size=[64,32])")
    t.add_argument("--output", default=None, help="output folder (overrides run.output)")
    t.add_argument("--resume", default=None,
                   help="auto (continue from OUTPUT/last.pt when present), never, or a checkpoint path")
    t.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (overrides run.device)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint with the SYSU-MM01 or RegDB protocol",
                       description="CMC rank-1/5/10/20, mAP and mINP of a training checkpoint: SYSU-MM01 "
                       "all-search and indoor-search, or RegDB both directions.")
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="last.pt / best.pt, or a run folder")
    e.add_argument("--dataset", required=True, choices=("sysu", "regdb", "synthetic"))
    e.add_argument("--data-root", required=True, help="dataset root folder")
    e.add_argument("--trials", type=int, default=10, help="SYSU: gallery draws averaged; RegDB: trials 1..N "
                   "averaged (default 10)")
    e.add_argument("--regdb-trial", type=int, default=None, help="RegDB: evaluate this trial only")
    e.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    e.add_argument("--batch-size", type=int, default=128, help="extraction batch (default 128)")
    e.add_argument("--workers", type=int, default=0, help="image reading processes (default 0)")
    e.add_argument("--size", default=None, help="input size HxW (default: the checkpoint's)")
    e.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bars of the feature extraction: auto = on a terminal (default auto)")
    e.set_defaults(func=cmd_eval)


def _add_checkpoint_commands(sub) -> None:
    """``hil extract``, ``hil convert-checkpoint``."""
    x = sub.add_parser("extract", help="features of a folder of images with the released HIL network",
                       description="Write the features the released HIL code clusters: one row per image (sorted "
                       "by file name), test transform (bicubic resize, ImageNet normalisation), flip-averaged "
                       "feat and feat_s of the modality's branch, concatenated and L2-normalised.")
    x.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="model_best.pth.tar of the release / SDCL, a hil train checkpoint, or a TransReID-SSL .pth")
    x.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    x.add_argument("--modality", required=True, choices=("rgb", "ir"), help="branch: rgb (patch_embed) or ir "
                   "(patch_embed2)")
    x.add_argument("--out", required=True, metavar="F.npy", help="output .npy (float32 [N, D]); F_files.txt "
                   "lists the images in row order")
    x.add_argument("--config", default=None, metavar="FILE", help="YAML config giving data.size and model.kwargs "
                   "(default: the checkpoint's config, else ViT-B/16 at 288x144)")
    x.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    x.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    x.add_argument("--heads", choices=("d", "s", "both"), default="both",
                   help="both: normalize(cat(feat, feat_s)) (default); d or s: that head, normalised")
    x.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar: auto = on a terminal (default auto)")
    x.set_defaults(func=cmd_extract)

    v = sub.add_parser("convert-checkpoint", help="rewrite a checkpoint in the safe format, with a checksum",
                       description="Rewrite a training checkpoint in hilcore's safe format (tensors, numbers, "
                       "strings, lists, dicts; read with torch.load(weights_only=True)) sealed with a SHA-256 "
                       "checksum and the hilcore version. A file that pickles other Python objects (checkpoints "
                       "of older hilcore versions) is read only with --trust, with full unpickling, which runs "
                       "any code the file names: pass it only for files whose origin you trust.")
    v.add_argument("input", metavar="IN", help="the checkpoint to convert")
    v.add_argument("output", metavar="OUT", nargs="?", default=None,
                   help="where to write the converted checkpoint (default: replace IN atomically)")
    v.add_argument("--trust", action="store_true",
                   help="read IN with full unpickling (only for files you trust; it can run code)")
    v.set_defaults(func=cmd_convert_checkpoint)


def _missing_extra(e: ModuleNotFoundError, command: str) -> int | None:
    """An optional dependency of ``hil COMMAND`` is not installed: name the extra, exit status 2
    (``None`` when the module is not one of an extra's)."""
    from ._extras import extra_for, missing_message

    extra = extra_for(e.name)
    if extra is None:
        return None
    if command == "bench":  # the benchmark scripts' dependencies are all in the bench extra
        extra = "bench"
    print(f"{PROG}: error: {missing_message(e.name, f'{PROG} {command}', extra)}", file=sys.stderr)
    return 2


def _report(e: BaseException, debug: bool, command: str = "") -> int:
    """The one place an exception of a command becomes output and an exit status."""
    from ._dispatch import BackendUnavailable

    if isinstance(e, ModuleNotFoundError):
        rc = _missing_extra(e, command)
        if rc is not None:
            return rc
    if isinstance(e, KeyboardInterrupt):
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    if isinstance(e, OSError) and (isinstance(e, WriteError) or e.errno in _FULL):
        # a failed write (the atomic writer left any earlier file in place): one line, exit status 2
        if debug:
            traceback.print_exception(e)
        print(f"{PROG}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    if isinstance(e, _USER_ERRORS + (BackendUnavailable, MemoryError)):
        if debug and not isinstance(e, CLIError):
            traceback.print_exception(e)
        msg = str(e) or type(e).__name__
        if isinstance(e, MemoryError):
            msg = f"out of memory ({msg}); try fewer rows, or a device with more memory"
        print(f"{PROG}: error: {msg.splitlines()[0] if msg else msg}", file=sys.stderr)
        return 2
    from . import __version__

    if debug:
        traceback.print_exception(e)
    print(f"{PROG}: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
          f"{PROG}: this is a bug in hilcore {__version__}, not in your input; please report it to {ISSUE_TRACKER}"
          + ("" if debug else f"\n{PROG}: run the command again with --debug to print the traceback"),
          file=sys.stderr)
    return 1


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug (anywhere before a bench command's own options): tracebacks for every error
    cut = argv.index("bench") if "bench" in argv else len(argv)
    debug = "--debug" in argv[:cut] or os.environ.get("HIL_DEBUG", "") not in ("", "0")
    argv = [a for i, a in enumerate(argv) if not (i < cut and a == "--debug")]
    try:
        if argv[:1] == ["bench"]:
            return cmd_bench(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        return args.func(args)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the central error handler
        return _report(e, debug, argv[0] if argv else "")


if __name__ == "__main__":
    sys.exit(main())
