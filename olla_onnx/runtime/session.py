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


def session_options(kind: str, mem_reuse: bool = True) -> Any:
    """``onnxruntime.SessionOptions`` for a ``"default"`` or a ``"planned"`` session (module docstring).

    ``mem_reuse=False`` (planned only) stops onnxruntime from handing a dead
    tensor's buffer to a later tensor itself: then every tensor is its own
    request and the arena plan sees the true lifetimes (no in-place reuse).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.use_env_allocators", "1")
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

    @property
    def measured(self) -> Backend:
        """The allocator whose bytes the measurement reports (device on CUDA, else host)."""
        return self.device if self.device is not None else self.host

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        for b in (self.host, self.device):
            if isinstance(b, ArenaAllocator):
                b.begin_run()
        with env_allocator().serving(self.host):
            raw = self.sess.run(None, dict(feeds))
            outs = [np.array(a, copy=True) for a in raw]
            del raw
        return outs

    def output_names(self) -> list[str]:
        return [o.name for o in self.sess.get_outputs()]

    def close(self) -> None:
        """Free the session (its buffers go back to the allocators); idempotent."""
        if self.sess is not None:
            with env_allocator().serving(self.host):
                self.sess = None
                gc.collect()
        self.keepalive.clear()


def open_session(
    model: bytes, kind: str, host: Backend, device: Backend | None = None, provider: str = "cpu", mem_reuse: bool = True
) -> Session:
    """Create a ``kind`` session of the serialized ``model`` whose allocations go to ``host``/``device``."""
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
    return Session(sess, so, host, device, keep)


def new_allocators(kind: str, provider: str) -> tuple[Backend, Backend | None]:
    """(host, device) allocators for a session: recording for ``default``, planned arena for ``planned``."""
    from olla_onnx.runtime.allocator import CudaMemory

    make = RecordingAllocator if kind == "default" else ArenaAllocator
    if provider == "cuda":
        return RecordingAllocator(), make(CudaMemory())
    return make(), None
