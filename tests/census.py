"""Census of the work a call issues: ATen ops and host syncs (TorchDispatchMode) and Triton launches.

Used by tests/test_census.py. On CPU the Triton kernels run in the interpreter
(TRITON_INTERPRET=1), so the op and launch counts are those of the GPU code path
with CPU tensors. A host sync is an op whose result the host must read: on a
CUDA tensor it waits for the device.
"""
from __future__ import annotations

import collections
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose output size or value the host reads (a device -> host sync on CUDA)
SYNC_OPS = {"_local_scalar_dense", "nonzero", "equal", "is_nonzero", "_unique", "_unique2", "unique_dim",
            "unique_consecutive", "masked_select", "bincount", "repeat_interleave", "item", "allclose",
            "_assert_async", "histc"}

# ops that take a list of index tensors; a boolean (mask) index is turned into positions with a
# nonzero() inside the op, which the dispatcher does not show: x[mask], x[mask] = v
BOOL_INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}

# Tensor methods that read the whole tensor on the host (see census())
HOST_READS = ("tolist", "numpy", "cpu")


def _bool_index(args) -> bool:
    idx = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in (idx or ()))


class _Census(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.syncs = collections.Counter()
        self.views = collections.Counter()
        self.paused = 0  # inside a Triton launch: the interpreter's own tensor copies are not the op's work

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.paused:
            return func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.is_view:
            self.views[name] += 1  # metadata only: no kernel, no sync
            return func(*args, **(kwargs or {}))
        self.ops[name] += 1
        if name in BOOL_INDEX_OPS and _bool_index(args):
            self.syncs[name + "[bool]"] += 1  # a boolean mask index: its nonzero() reads the mask on the host
        elif name in SYNC_OPS:
            if name == "repeat_interleave" and (kwargs or {}).get("output_size") is not None:
                pass  # output_size given: no sync
            else:
                self.syncs[name] += 1
        return func(*args, **(kwargs or {}))


class Counts:
    def __init__(self, census, launches):
        self.ops = sum(census.ops.values())  # ATen ops that can launch work (views excluded)
        self.views = sum(census.views.values())
        self.syncs = sum(census.syncs.values())
        self.launches = sum(launches.values())
        self.by_op = census.ops
        self.by_sync = census.syncs
        self.by_kernel = launches

    def __repr__(self):
        return (f"Counts(ops={self.ops}, views={self.views}, launches={self.launches}, syncs={self.syncs}, "
                f"syncs_by_op={dict(self.by_sync)}, kernels={dict(self.by_kernel)}, "
                f"top_ops={self.by_op.most_common(12)})")


@contextlib.contextmanager
def census():
    """``with census() as get: ...; c = get()`` -> :class:`Counts` of the block."""
    launches = collections.Counter()
    patched = []
    mode = _Census()
    try:
        from triton.runtime import interpreter, jit
        for cls in (interpreter.InterpretedFunction, jit.JITFunction):
            orig = cls.run

            def run(self, *a, _orig=orig, **k):
                launches[getattr(self, "__name__", None) or self.fn.__name__] += 1
                mode.paused += 1
                try:
                    return _orig(self, *a, **k)
                finally:
                    mode.paused -= 1
            cls.run = run
            patched.append((cls, "run", orig))
    except ImportError:
        pass
    # reads of a whole tensor by the host: on a CPU tensor they reach no ATen op (no copy is needed), on
    # a CUDA tensor they copy it to the host and wait for the device, so each one is counted as a sync
    for meth in HOST_READS:
        orig = getattr(torch.Tensor, meth)

        def read(self, *a, _orig=orig, _name=meth, **k):
            if not mode.paused and not getattr(self, "_census_on_host", False):
                mode.syncs[_name] += 1
            out = _orig(self, *a, **k)
            if _name == "cpu" and isinstance(out, torch.Tensor):
                if out is self:  # a CPU tensor's cpu() is itself: mark an alias, not the tensor
                    mode.paused += 1
                    out = out.detach()
                    mode.paused -= 1
                out._census_on_host = True  # the host copy: reading it again waits for nothing
            return out
        setattr(torch.Tensor, meth, read)
        patched.append((torch.Tensor, meth, orig))
    result = {}
    _ACTIVE.append((mode, launches))
    try:
        with mode:
            yield lambda: result["c"]
    finally:
        _ACTIVE.remove((mode, launches))
        for cls, meth, orig in patched:
            setattr(cls, meth, orig)
        result["c"] = Counts(mode, launches)


# --------------------------------------------------------------- the GPU code path on CPU
# The CUDA-extension kernels (the ``cuda_*`` entry points of hilcore._native that hilcore/backend/cuda
# calls: the Jaccard stages and DBSCAN) cannot run without a GPU. For a census of a whole epoch they are
# replaced by a CPU model of their contract (tests/cuda_model.py: NativeModel), each call counted as ONE
# launch with nothing inside it counted; the CUDA backend's Python glue around them (its torch ops, syncs,
# chunking) runs for real on CPU tensors standing in for CUDA tensors, and is counted.
_ACTIVE: list = []  # the (mode, launches) of the census being taken, innermost last


class _CountedNative:
    """A NativeModel whose kernel entry points each count as one launch of the census being taken."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        fn = getattr(self._model, name)
        if not name.startswith("cuda_") or name == "cuda_jaccard_smem_slots":
            return fn  # host queries, not launches

        def run(*args, **kwargs):
            if not _ACTIVE:
                return fn(*args, **kwargs)
            mode, launches = _ACTIVE[-1]
            launches["cuda:" + name[len("cuda_"):]] += 1
            mode.paused += 1
            try:
                return fn(*args, **kwargs)
            finally:
                mode.paused -= 1
        return run


def gpu_dispatch_on_cpu(monkeypatch, model=None):
    """Make ``backend="auto"`` on CPU tensors resolve as on a CUDA device (``AUTO_ORDER["cuda"]``): Triton
    runs in the interpreter, the cuda backend's own code runs with CPU tensors standing in for CUDA ones
    (its device test and stream context, the only seams, accept them) and ``model`` (a
    tests/cuda_model.py NativeModel) in place of the extension's CUDA entry points. Returns the model."""
    import dataclasses

    from cuda_model import NativeModel
    from hilcore import _dispatch
    from hilcore.backend.cuda import jaccard as cj

    model = NativeModel() if model is None else model
    _dispatch._load()
    monkeypatch.setitem(_dispatch.AUTO_ORDER, "cpu", _dispatch.AUTO_ORDER["cuda"])
    orig = _dispatch._why_not
    monkeypatch.setattr(_dispatch, "_why_not",
                        lambda b, d: None if b == "cuda" and d.type == "cpu" else orig(b, d))
    for (op, b), cap in list(_dispatch._TABLE.items()):
        if b == "cuda":
            monkeypatch.setitem(_dispatch._TABLE, (op, b), dataclasses.replace(cap, devices=cap.devices + ("cpu",)))
    native = _CountedNative(model)
    monkeypatch.setattr(cj, "_native", lambda: native)
    monkeypatch.setattr(cj, "_cuda", lambda t: isinstance(t, torch.Tensor) and t.device.type == "cpu")
    monkeypatch.setattr(cj, "_on_device", lambda dev: contextlib.nullcontext(0))
    # torch.cuda.mem_get_info has no CPU twin: the workspace the glue would get on a large idle GPU
    monkeypatch.setattr(cj, "default_workspace", lambda dev: cj.DEFAULT_WORKSPACE_BYTES)
    return model
