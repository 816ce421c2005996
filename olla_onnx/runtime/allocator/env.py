"""The one ``OrtAllocator`` registered in onnxruntime's environment, forwarding to the running session's allocator."""

from __future__ import annotations

import contextlib
import ctypes as C
import threading
from typing import Iterator, Protocol

from olla_onnx.runtime.allocator.recording import RecordingAllocator


class Backend(Protocol):
    def alloc(self, size: int) -> int: ...

    def free(self, ptr: int) -> None: ...


class EnvAllocator:
    """The one ``OrtAllocator`` (CPU) registered in onnxruntime's environment, forwarding to a backend.

    Sessions made with ``session.use_env_allocators = 1`` allocate through it.
    Requests go to the backend of :meth:`serving` (a stray request outside any
    ``serving`` block goes to :attr:`stray`, a recording allocator); frees go to
    the backend that served the pointer.
    """

    def __init__(self) -> None:
        from olla_onnx.runtime.ortapi import ALLOC_FN, FREE_FN, INFO_FN, OrtAllocatorStruct, ort_api

        api = ort_api()
        self.stray = RecordingAllocator()
        state = {"current": self.stray}
        owners: dict[int, Backend] = {}
        self._state = state
        self._owners = owners
        self._lock = threading.RLock()
        info = api.cpu_memory_info

        def _alloc(this, size):  # closures only: no module globals at shutdown
            try:
                b = state["current"]
                p = b.alloc(size)
                owners[p] = b
                return p
            except BaseException:
                return None

        def _free(this, p):
            if not p:
                return
            try:
                owners.pop(p).free(p)
            except BaseException:
                pass

        def _info(this):
            return info

        self._struct = OrtAllocatorStruct(18, ALLOC_FN(_alloc), FREE_FN(_free), INFO_FN(_info), ALLOC_FN(_alloc))
        api.check(api.register_allocator(api.env, C.addressof(self._struct)), "RegisterAllocator")

    @contextlib.contextmanager
    def serving(self, backend: Backend) -> Iterator[None]:
        """Within the block, onnxruntime's requests go to ``backend`` (not re-entrant across threads)."""
        with self._lock:
            prev = self._state["current"]
            self._state["current"] = backend
            try:
                yield
            finally:
                self._state["current"] = prev

    def owned_by(self, backend: Backend) -> int:
        """How many live pointers ``backend`` served (0 once its sessions are gone)."""
        return sum(1 for b in self._owners.values() if b is backend)


_env_lock = threading.Lock()
_env_allocator: list[EnvAllocator] = []


def env_allocator() -> EnvAllocator:
    """The process-wide :class:`EnvAllocator`, registered on first use (it can never be unregistered
    while sessions use it, so it lives as long as the process)."""
    with _env_lock:
        if not _env_allocator:
            _env_allocator.append(EnvAllocator())
        return _env_allocator[0]
