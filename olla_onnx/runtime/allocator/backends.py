"""Raw memory of one device for the allocators: host (``aligned_alloc``) and CUDA (``cudaMalloc``)."""

from __future__ import annotations

import ctypes as C
from typing import Protocol

from olla_onnx.ort_facts import DEFAULT_ALIGNMENT

#: onnxruntime's CPU allocator alignment: every host buffer and every arena offset is a multiple of it.
ALIGNMENT = DEFAULT_ALIGNMENT["cpu"]


def round_up(n: int, a: int = ALIGNMENT) -> int:
    return (int(n) + a - 1) // a * a


class Memory(Protocol):
    """Raw memory of one device: ``malloc(n)`` returns a nonzero address or raises MemoryError."""

    device: str

    def malloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...


class HostMemory:
    """Host memory, 64-byte aligned (onnxruntime's CPU alignment), sizes rounded up to 64."""

    device = "cpu"

    def __init__(self) -> None:
        libc = C.CDLL(None)
        self._aligned_alloc = libc.aligned_alloc
        self._aligned_alloc.restype = C.c_void_p
        self._aligned_alloc.argtypes = [C.c_size_t, C.c_size_t]
        self._free = libc.free
        self._free.argtypes = [C.c_void_p]
        self._free.restype = None

    def malloc(self, nbytes: int) -> int:
        p = self._aligned_alloc(ALIGNMENT, round_up(max(int(nbytes), 1)))
        if not p:
            raise MemoryError(f"aligned_alloc of {nbytes} bytes failed")
        return int(p)

    def free(self, ptr: int) -> None:
        self._free(ptr)


class CudaMemory:
    """CUDA device memory through ``cudaMalloc``/``cudaFree`` of the CUDA runtime library.

    Not run in this project's CI (no GPU there); see the tests' skip conditions.
    """

    device = "cuda"

    def __init__(self) -> None:
        lib = None
        for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"):
            try:
                lib = C.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise OSError("the CUDA runtime library (libcudart) was not found")
        self._malloc = lib.cudaMalloc
        self._malloc.argtypes = [C.POINTER(C.c_void_p), C.c_size_t]
        self._malloc.restype = C.c_int
        self._free = lib.cudaFree
        self._free.argtypes = [C.c_void_p]
        self._free.restype = C.c_int

    def malloc(self, nbytes: int) -> int:
        p = C.c_void_p()
        rc = self._malloc(C.byref(p), round_up(max(int(nbytes), 1), DEFAULT_ALIGNMENT["cuda"]))
        if rc != 0 or not p.value:
            raise MemoryError(f"cudaMalloc of {nbytes} bytes failed (error {rc})")
        return int(p.value)

    def free(self, ptr: int) -> None:
        self._free(ptr)
