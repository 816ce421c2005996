"""onnxruntime sessions whose every allocation goes through an olla-onnx allocator.

Two kinds of session:

- *default*: onnxruntime's default options (all graph optimizations, its own
  node order, memory pattern on), plus ``session.use_env_allocators = 1`` so
  that its allocations can be seen;
- *planned*: nodes in file order (``ORT_DISABLE_ALL`` and ``PRIORITY_BASED``,
  the only combination under which onnxruntime keeps the file's order),
  memory pattern off, onnxruntime's default thread count (fewer threads
  change the summation order inside MatMul, hence the last bits of results).

On CPU the allocations go through the process-wide env allocator
(:func:`olla_onnx.runtime.allocator.env_allocator`); on CUDA the device
allocations go through the CUDA execution provider's ``gpu_external_alloc`` /
``gpu_external_free`` / ``gpu_external_empty_cache`` callbacks (its BFC arena
bypassed) and the host ones through the env allocator. :class:`Session` keeps
the ``SessionOptions`` and the callbacks alive as long as the session, and
:meth:`Session.close` frees the session (do so before the interpreter exits:
callbacks during interpreter teardown may find Python half gone).

A session with in-place pairs (a plan's :mod:`olla_onnx.passes.inplace` pairs) runs
through onnxruntime's IO binding (:class:`InplaceBinding`): its inputs live in
buffers of its own, and each paired output is bound to its input's buffer, so
onnxruntime writes the update over the old value and allocates nothing for it.
"""

from __future__ import annotations

import ctypes as C
import gc
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from olla_onnx.errors import OllaInputError
from olla_onnx.runtime.allocator import ArenaAllocator, Backend, RecordingAllocator, env_allocator

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

CUDA_ALLOC_FN = C.CFUNCTYPE(C.c_void_p, C.c_size_t)
CUDA_FREE_FN = C.CFUNCTYPE(None, C.c_void_p)
CUDA_EMPTY_FN = C.CFUNCTYPE(None)


def session_options(kind: str, mem_reuse: bool = True, *, env_allocators: bool = True, threads: int | None = None) -> Any:
    """``onnxruntime.SessionOptions`` for a ``"default"`` or a ``"planned"`` session (module docstring).

    ``mem_reuse=False`` (planned only) stops onnxruntime from handing a dead
    tensor's buffer to a later tensor itself: then every tensor is its own
    request and the arena plan sees the true lifetimes (no in-place reuse).
    ``env_allocators=False``: onnxruntime's own allocators instead of the ones
    olla-onnx registers; ``threads``: the intra-op thread count (None: onnxruntime's).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if env_allocators:
        so.add_session_config_entry("session.use_env_allocators", "1")
    if threads is not None:
        so.intra_op_num_threads = threads
    if kind == "planned":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_mem_pattern = False
        so.enable_mem_reuse = bool(mem_reuse)
    elif kind != "default":
        raise ValueError(f"unknown session kind {kind!r}")
    return so


def check_provider(provider: str) -> str:
    """The onnxruntime provider name for ``cpu``/``cuda``; a user error if it is not available."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise OllaInputError(f"--provider {provider!r}: choose cpu or cuda")
    name = PROVIDERS[provider]
    if name not in ort.get_available_providers():
        raise OllaInputError(
            f"onnxruntime has no {name} here; install onnxruntime-gpu (`pip install '.[gpu]'`) on a machine with CUDA"
        )
    return name


@dataclass
class _CudaCallbacks:
    """The three ``gpu_external_*`` callbacks of one session, bound to one device backend."""

    backend: Backend
    fns: list = field(default_factory=list)

    def options(self) -> dict[str, str]:
        backend = self.backend

        def _alloc(size):
            try:
                return backend.alloc(size)
            except BaseException:
                return None

        def _free(p):
            if p:
                try:
                    backend.free(p)
                except BaseException:
                    pass

        def _empty():
            return None

        self.fns = [CUDA_ALLOC_FN(_alloc), CUDA_FREE_FN(_free), CUDA_EMPTY_FN(_empty)]
        addr = [C.cast(f, C.c_void_p).value for f in self.fns]
        return {"gpu_external_alloc": str(addr[0]), "gpu_external_free": str(addr[1]), "gpu_external_empty_cache": str(addr[2])}


@dataclass
class Session:
    """An onnxruntime session bound to its allocators; run it with :meth:`run`, end it with :meth:`close`.

    ``host`` serves host allocations; ``device`` (CUDA only) device ones.
    ``run`` returns copies of the outputs and drops onnxruntime's own arrays
    before it returns, so every buffer of a run is freed inside the run.
    """

    sess: Any
    options: Any
    host: Backend
    device: Backend | None = None
    keepalive: list = field(default_factory=list)
    binding: "InplaceBinding | None" = None

    @property
    def measured(self) -> Backend:
        """The allocator whose bytes the measurement reports (device on CUDA, else host)."""
        return self.device if self.device is not None else self.host

    @property
    def inplace(self) -> dict[str, str]:
        """Output -> input of the outputs written into their input's buffer (empty: a plain session)."""
        return dict(self.binding.pairs) if self.binding is not None else {}

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One run on ``feeds`` (never modified); copies of the outputs, in :meth:`output_names` order."""
        if self.binding is not None:
            self.binding.load(feeds)
            return self.step()
        self._begin()
        with env_allocator().serving(self.host):
            raw = self.sess.run(None, dict(feeds))
            outs = [np.array(a, copy=True) for a in raw]
            del raw
        return outs

    def load(self, feeds: Mapping[str, np.ndarray]) -> None:
        """In-place sessions: copy ``feeds`` into the session's input buffers (for :meth:`step`)."""
        if self.binding is None:
            raise RuntimeError("load/step need a session with in-place pairs")
        self.binding.load(feeds)

    def step(self, copy_paired: bool = True) -> list[np.ndarray]:
        """In-place sessions: one run on the input buffers as they are; each paired output's new
        value stays in its input's buffer for the next step (no copy back).

        ``copy_paired=False`` (CPU): each paired output is returned as its input's buffer itself
        (no copy; it changes with the next step), the other outputs as copies, as always.
        """
        if self.binding is None:
            raise RuntimeError("load/step need a session with in-place pairs")
        self._begin()
        with env_allocator().serving(self.host):
            return self.binding.run(copy_paired)

    def _begin(self) -> None:
        for b in (self.host, self.device):
            if isinstance(b, ArenaAllocator):
                b.begin_run()

    def output_names(self) -> list[str]:
        return [o.name for o in self.sess.get_outputs()]

    def close(self) -> None:
        """Free the session (its buffers go back to the allocators); idempotent."""
        if self.sess is not None:
            with env_allocator().serving(self.host):
                self.binding = None
                self.sess = None
                gc.collect()
        self.keepalive.clear()


def open_session(
    model: bytes,
    kind: str,
    host: Backend,
    device: Backend | None = None,
    provider: str = "cpu",
    mem_reuse: bool = True,
    inplace: Mapping[str, str] | None = None,
) -> Session:
    """Create a ``kind`` session of the serialized ``model`` whose allocations go to ``host``/``device``.

    ``inplace`` (output -> input) makes it an IO-binding session (:class:`InplaceBinding`).
    """
    import onnxruntime as ort

    so = session_options(kind, mem_reuse)
    name = check_provider(provider)
    keep: list = []
    providers: Sequence[Any]
    if provider == "cuda":
        if device is None:
            raise ValueError("a CUDA session needs a device allocator")
        cb = _CudaCallbacks(device)
        providers = [(name, cb.options()), "CPUExecutionProvider"]
        keep.append(cb)
    else:
        providers = [name]
    with env_allocator().serving(host):
        try:
            sess = ort.InferenceSession(model, so, providers=list(providers))
        except Exception as exc:
            raise OllaInputError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
    s = Session(sess, so, host, device, keep)
    if inplace:
        s.binding = InplaceBinding(sess, inplace, provider)
    return s


#: onnxruntime's element type names -> numpy dtypes (the types a paired tensor may have).
_ORT_TYPES = {
    "float": np.float32, "double": np.float64, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "uint64": np.uint64, "bool": np.bool_,
}


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``alignment``-byte boundary (like onnxruntime's own)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    off = (-raw.ctypes.data) % alignment
    return raw[off: off + nbytes].view(dtype).reshape(shape)


class InplaceBinding:
    """Runs a session through IO binding, each paired output written into its input's buffer.

    The binding owns one buffer per graph input (host: 64-byte aligned numpy
    arrays; CUDA: device ``OrtValue`` s). :meth:`load` copies the caller's
    arrays into them (the caller's memory is never bound, so never written);
    :meth:`run` runs on their current contents and returns copies of all
    outputs in session order. A paired output is bound to its input's buffer
    (``bind_output`` with the buffer's address): onnxruntime writes it there and
    allocates nothing for it, and the next :meth:`run` reads the new value.
    Other outputs are allocated by the session's allocator as in a plain run.
    Safe only for pairs the plan checked (:mod:`olla_onnx.passes.inplace`): every other
    reader of the input runs before the update. After each run the binding
    checks that onnxruntime returned every paired output at its input's address.

    On CUDA the input buffers are device ``OrtValue`` s from onnxruntime's own
    CUDA allocator, outside the measured allocator (like the caller's arrays
    on CPU), whereas a plain CUDA session copies its host feeds to the device
    through the measured allocator: CUDA peaks of the two differ by that too.
    The CUDA branch has not been run in this project yet (no GPU was lent).
    """

    def __init__(self, sess: Any, pairs: Mapping[str, str], provider: str = "cpu") -> None:
        self.sess = sess
        self.pairs = dict(pairs)
        self.device = "cuda" if provider == "cuda" else "cpu"
        self.io = sess.io_binding()
        self.inputs = [i.name for i in sess.get_inputs()]
        self.outputs = [o.name for o in sess.get_outputs()]
        self.out_meta = {o.name: o for o in sess.get_outputs()}
        missing = [f"{o} -> {i}" for o, i in self.pairs.items() if o not in self.out_meta or i not in self.inputs]
        if missing:
            raise OllaInputError(f"in-place pairs name tensors that are not session outputs/inputs: {missing[:3]}")
        self.host: dict[str, np.ndarray] = {}
        self.values: dict[str, Any] = {}  # CUDA: device OrtValues
        self._out_spec: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}

    def load(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Copy ``feeds`` (one array per graph input) into the bound input buffers."""
        import onnxruntime as ort

        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise OllaInputError(f"no value for the graph inputs {missing[:3]}")
        for name in self.inputs:
            arr = np.asarray(feeds[name])  # (not ascontiguousarray: it makes a scalar 1-d)
            buf = self.host.get(name)
            if buf is None or buf.shape != arr.shape or buf.dtype != arr.dtype:
                buf = _aligned_empty(arr.shape, arr.dtype)
                self.host[name] = buf
                self.values.pop(name, None)
                self._out_spec.clear()
            np.copyto(buf, arr)
            if self.device == "cpu":
                self.io.bind_input(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
            else:
                ov = self.values.get(name)
                if ov is None:
                    ov = ort.OrtValue.ortvalue_from_numpy(buf, "cuda", 0)
                    self.values[name] = ov
                else:
                    ov.update_inplace(buf)
                self.io.bind_ortvalue_input(name, ov)

    def set_input(self, name: str, value: np.ndarray) -> None:
        """Overwrite one loaded input's buffer (same shape and dtype)."""
        buf = self.host[name]
        np.copyto(buf, np.asarray(value, dtype=buf.dtype).reshape(buf.shape))
        if self.device != "cpu":
            self.values[name].update_inplace(buf)

    def _spec(self, out: str) -> tuple[np.dtype, tuple[int, ...]]:
        """dtype and shape to bind ``out`` with: its declared shape if static, else its input's."""
        spec = self._out_spec.get(out)
        if spec is None:
            buf = self.host[self.pairs[out]]
            meta = self.out_meta[out]
            dtype = _ORT_TYPES.get(meta.type[len("tensor("):-1]) if meta.type.startswith("tensor(") else None
            if dtype is None or np.dtype(dtype) != buf.dtype:
                raise OllaInputError(f"in-place output {out!r} ({meta.type}) does not have its input's dtype ({buf.dtype})")
            shape = tuple(meta.shape) if all(isinstance(d, int) for d in meta.shape) else buf.shape
            if int(np.prod(shape, dtype=np.int64)) != buf.size:
                raise OllaInputError(f"in-place output {out!r} {list(shape)} does not fit its input's buffer {list(buf.shape)}")
            spec = self._out_spec[out] = (buf.dtype, shape)
        return spec

    def run(self, copy_paired: bool = True) -> list[np.ndarray]:
        """One run on the loaded buffers (call inside the session's allocator context).

        Outputs come back as copies (onnxruntime's own output buffers are freed inside the run),
        except, with ``copy_paired=False`` on CPU, the paired outputs: each is its input's buffer
        (reshaped to the output's shape), valid until the next run or :meth:`load` changes it.
        """
        if not self.host:
            raise RuntimeError("load() the inputs before the first run")
        bound: dict[int, int] = {}  # output index -> the input buffer it must be written to
        for k, name in enumerate(self.outputs):
            inp = self.pairs.get(name)
            if inp is None:
                self.io.bind_output(name, self.device, 0)
                continue
            dtype, shape = self._spec(name)
            ptr = self.host[inp].ctypes.data if self.device == "cpu" else self.values[inp].data_ptr()
            self.io.bind_output(name, self.device, 0, dtype, list(shape), ptr)
            bound[k] = ptr
        try:
            self.sess.run_with_iobinding(self.io)
            if bound:  # onnxruntime reuses a bound buffer only when the result fits it: check that it did
                values = self.io.get_outputs()
                moved = [self.outputs[k] for k, ptr in bound.items() if values[k].data_ptr() != ptr]
                del values
                if moved:
                    raise RuntimeError(f"onnxruntime did not write {moved[:3]} into the bound input buffers")
            if copy_paired or self.device != "cpu":
                raw = self.io.copy_outputs_to_cpu()
                outs = [np.array(a, copy=True) for a in raw]
            else:  # OrtValue.numpy() is a view of onnxruntime's buffer on CPU: one copy of each unpaired output
                raw = self.io.get_outputs()
                outs = [self.host[self.pairs[name]].reshape(self._spec(name)[1]) if k in bound
                        else np.array(raw[k].numpy(), copy=True) for k, name in enumerate(self.outputs)]
            del raw
        finally:
            self.io.clear_binding_outputs()  # onnxruntime's own output buffers go back inside the run
        return outs


def new_allocators(kind: str, provider: str) -> tuple[Backend, Backend | None]:
    """(host, device) allocators for a session: recording for ``default``, planned arena for ``planned``."""
    from olla_onnx.runtime.allocator import CudaMemory

    make = RecordingAllocator if kind == "default" else ArenaAllocator
    if provider == "cuda":
        return RecordingAllocator(), make(CudaMemory())
    return make(), None
