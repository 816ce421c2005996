"""Allocators onnxruntime calls back into: a recording one and a planned-arena one.

onnxruntime's allocator interface hands over only a size. A session's
requests during one run are, however, the same sequence of sizes run after
run (file order, sequential execution, memory pattern off). So:

1. :class:`ArenaAllocator` starts in *recording* mode: it serves every request
   from a heap and records the trace (alloc/free events, exact sizes).
2. :func:`plan_trace` places the buffers of one run's trace in one arena
   (every buffer live on ``[alloc event, free event)``) — the plan comes from
   what onnxruntime really does, its in-place reuse included.
3. :meth:`ArenaAllocator.install` switches it to *replay*: the i-th request of
   a run gets the i-th planned buffer, at ``arena + offset``, when its size is
   the recorded one and no live buffer occupies those bytes; any other request
   is served from the fallback heap and counted (:attr:`ArenaStats.fallbacks`).

Memory comes from a :class:`Memory` (host: 64-byte aligned ``aligned_alloc``;
CUDA: ``cudaMalloc``). :class:`RecordingAllocator` is the measuring device
for onnxruntime's own sessions: exact bytes in use, peak, trace.

:class:`EnvAllocator` is the one process-wide ``OrtAllocator`` registered in
onnxruntime's environment; it forwards each request to the allocator of the
session that is running (:meth:`EnvAllocator.serving`) and each free to the
allocator that served the pointer. Its callbacks read no module globals, so a
late free during interpreter shutdown still finds what it needs.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import threading
from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

ALIGNMENT = 64


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
        rc = self._malloc(C.byref(p), round_up(max(int(nbytes), 1), 256))
        if rc != 0 or not p.value:
            raise MemoryError(f"cudaMalloc of {nbytes} bytes failed (error {rc})")
        return int(p.value)

    def free(self, ptr: int) -> None:
        self._free(ptr)


# ----------------------------------------------------------------------------- traces


@dataclass(frozen=True)
class AllocTrace:
    """The allocations of one window (one run), in request order.

    Buffer ``i`` of ``sizes[i]`` bytes was requested at event ``lower[i]`` and
    freed at event ``upper[i]`` (events count allocs and frees of the window);
    one still live at the window's end has ``upper == events`` and
    ``escaped[i]`` True.
    """

    sizes: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    escaped: np.ndarray
    events: int

    def __len__(self) -> int:
        return int(self.sizes.size)

    def same_requests(self, other: "AllocTrace") -> bool:
        """True when both windows asked for the same sizes in the same order."""
        return self.sizes.shape == other.sizes.shape and bool(np.array_equal(self.sizes, other.sizes))

    @property
    def peak_live_bytes(self) -> int:
        """Most bytes of this window's buffers live at once (their own sizes, not rounded)."""
        if not len(self):
            return 0
        delta = np.zeros(self.events + 1, dtype=np.int64)
        np.add.at(delta, self.lower, self.sizes)
        np.add.at(delta, self.upper, -self.sizes)
        return int(np.cumsum(delta).max())


class _Recorder:
    """Event log shared by both allocators: ``(is_alloc, buffer id, size)`` per event."""

    def __init__(self) -> None:
        self.kind: list[bool] = []
        self.ident: list[int] = []
        self.size: list[int] = []
        self._next = 0
        self.paused = False  # ids still count up, nothing is kept (a long replay must not grow the process)

    def alloc(self, size: int) -> int:
        i = self._next
        self._next += 1
        if self.paused:
            return i
        self.kind.append(True)
        self.ident.append(i)
        self.size.append(size)
        return i

    def free(self, ident: int, size: int) -> None:
        if self.paused:
            return
        self.kind.append(False)
        self.ident.append(ident)
        self.size.append(size)

    def mark(self) -> int:
        return len(self.kind)

    def window(self, start: int, stop: int | None = None) -> AllocTrace:
        stop = len(self.kind) if stop is None else stop
        order: dict[int, int] = {}
        sizes: list[int] = []
        lower: list[int] = []
        upper: list[int] = []
        for t in range(start, stop):
            ident = self.ident[t]
            if self.kind[t]:
                order[ident] = len(sizes)
                sizes.append(self.size[t])
                lower.append(t - start)
                upper.append(stop - start)
            elif ident in order:
                upper[order[ident]] = t - start
        up = np.asarray(upper, dtype=np.int64)
        return AllocTrace(
            np.asarray(sizes, dtype=np.int64),
            np.asarray(lower, dtype=np.int64),
            up,
            up == (stop - start),
            stop - start,
        )


class RecordingAllocator:
    """Serves every request from ``memory`` and counts exactly: bytes in use, peak, the trace.

    ``in_use`` and ``peak`` count requested bytes (not rounded). O(1) per call.
    """

    def __init__(self, memory: Memory | None = None) -> None:
        self.memory = memory or HostMemory()
        self.in_use = 0
        self.peak = 0
        self.allocs = 0
        self.log = _Recorder()
        self._live: dict[int, tuple[int, int]] = {}

    def alloc(self, size: int) -> int:
        p = self.memory.malloc(size)
        self._live[p] = (self.log.alloc(size), size)
        self.in_use += size
        self.allocs += 1
        if self.in_use > self.peak:
            self.peak = self.in_use
        return p

    def free(self, ptr: int) -> None:
        ident, size = self._live.pop(ptr)
        self.log.free(ident, size)
        self.in_use -= size
        self.memory.free(ptr)

    def reset_peak(self) -> None:
        """Start a new measurement window: the peak becomes the bytes in use now."""
        self.peak = self.in_use

    @property
    def live_count(self) -> int:
        return len(self._live)

    def close(self) -> bool:
        """True when nothing is left to free (all memory was returned)."""
        return not self._live


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class TracePlan:
    """Offsets for every buffer of one run's trace, inside an arena of ``arena_bytes``.

    ``sizes`` are the requested sizes; each buffer occupies ``round_up(size)``
    bytes from its offset, so every offset is a multiple of ``alignment``.
    """

    sizes: np.ndarray
    offsets: np.ndarray
    arena_bytes: int
    alignment: int
    lower_bound: int
    method: str
    optimal: bool
    in_arena: np.ndarray | None = None  # False: still live at the run's end (kept by onnxruntime), served from the heap


def greedy_offsets(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Greedy by size: largest buffer first, each at the lowest offset free for its whole lifetime.

    A classic heuristic (TFLite's "greedy by size"); no optimality claim.
    O(n^2) interval tests in the worst case.
    """
    n = sizes.size
    offsets = np.zeros(n, dtype=np.int64)
    placed: list[int] = []
    for i in sorted(range(n), key=lambda i: (-int(sizes[i]), int(lower[i]))):
        if sizes[i] == 0:
            continue
        busy = sorted(
            (int(offsets[j]), int(offsets[j] + sizes[j]))
            for j in placed
            if lower[j] < upper[i] and lower[i] < upper[j]
        )
        off = 0
        for lo, hi in busy:
            if lo >= off + sizes[i]:
                break
            off = max(off, hi)
        offsets[i] = off
        placed.append(i)
    return offsets


def plan_trace(trace: AllocTrace, alignment: int = ALIGNMENT, time_limit: float = 5.0) -> TracePlan:
    """Place the buffers of ``trace`` in one arena; the placement is verified before it is returned.

    Uses the project's exact placement search (:mod:`olla_onnx.place`) when it
    is available and finishes within ``time_limit``; otherwise greedy by size.
    ``lower_bound`` is the most (aligned) bytes live at once: no arena is smaller.
    """
    keep = ~trace.escaped  # buffers onnxruntime keeps past the run live across runs: heap, not arena
    sizes = np.asarray([round_up(s, alignment) if k else 0 for s, k in zip(trace.sizes, keep)], dtype=np.int64)
    lower, upper = trace.lower, np.maximum(trace.upper, trace.lower + 1)
    aligned = AllocTrace(sizes, lower, upper, trace.escaped, trace.events + 1)
    bound = aligned.peak_live_bytes
    offsets, method, optimal = None, "greedy-by-size", False
    try:
        from olla_onnx.place import place  # type: ignore[attr-defined]
        from olla_onnx.place.problem import Buffers

        bufs = Buffers.build(range(len(sizes)), lower, upper, sizes)
        res = place(bufs, alignment=alignment, time_limit=time_limit)
        offsets = np.asarray(res.offsets, dtype=np.int64)
        method, optimal = "olla_onnx.place", bool(getattr(res, "optimal", False))
    except (ImportError, AttributeError):
        pass
    greedy = greedy_offsets(lower, upper, sizes)
    if offsets is None or _arena(greedy, sizes) < _arena(offsets, sizes):
        offsets, method, optimal = greedy, "greedy-by-size", _arena(greedy, sizes) == bound
    _verify(lower, upper, sizes, offsets, alignment)
    return TracePlan(trace.sizes.copy(), offsets, _arena(offsets, sizes), alignment, bound, method, optimal, keep)


def _arena(offsets: np.ndarray, sizes: np.ndarray) -> int:
    return int((offsets + sizes).max()) if sizes.size else 0


def _verify(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray, offsets: np.ndarray, alignment: int) -> None:
    """Raise RuntimeError if two buffers live together share a byte or an offset is misaligned."""
    if (offsets % alignment).any() or (offsets < 0).any():
        raise RuntimeError("trace plan: misaligned or negative offset")
    events = sorted(range(sizes.size), key=lambda i: int(lower[i]))
    live: list[tuple[int, int, int]] = []  # (upper, offset, end)
    for i in events:
        if sizes[i] == 0:
            continue
        live = [b for b in live if b[0] > lower[i]]
        lo, hi = int(offsets[i]), int(offsets[i] + sizes[i])
        for _, o, e in live:
            if o < hi and lo < e:
                raise RuntimeError(f"trace plan: buffer {i} overlaps a live buffer")
        live.append((int(upper[i]), lo, hi))


# ----------------------------------------------------------------------------- planned arena


@dataclass(frozen=True)
class ArenaStats:
    """What the planned allocator saw since :meth:`ArenaAllocator.reset_peak`.

    ``peak_bytes`` is the most bytes held at once: the arena (all of it, once
    installed) plus heap bytes in use (resident allocations and fallbacks).
    """

    arena_bytes: int
    heap_in_use: int
    peak_bytes: int
    planned_allocs: int
    fallbacks: int
    fallback_bytes: int
    first_fallback: str | None


class ArenaAllocator:
    """Record a run's requests, then serve them from one planned arena (see the module docstring).

    Safe under deviation: a planned slot is handed out only when the request
    has the recorded size and no live arena buffer overlaps its bytes;
    otherwise the fallback heap serves it and :attr:`fallbacks` counts it.
    """

    def __init__(self, memory: Memory | None = None) -> None:
        self.memory = memory or HostMemory()
        self.log = _Recorder()
        self.plan: TracePlan | None = None
        self.base = 0
        self.arena_bytes = 0
        self.heap_in_use = 0
        self.peak = 0
        self.planned_allocs = 0
        self.fallbacks = 0
        self.fallback_bytes = 0
        self.first_fallback: str | None = None
        self._cursor = 0
        self._heap: dict[int, tuple[int, int]] = {}  # ptr -> (event id, size)
        self._arena_live: list[tuple[int, int]] = []  # sorted (offset, end)
        self._arena_ptr: dict[int, tuple[int, int, int]] = {}  # ptr -> (offset, end, event id)

    # -- control
    def install(self, plan: TracePlan) -> None:
        """Allocate the arena and switch to replay; later requests follow ``plan``."""
        if self.plan is not None:
            raise RuntimeError("a plan is already installed")
        self.base = self.memory.malloc(max(plan.arena_bytes, 1))
        self.arena_bytes = int(plan.arena_bytes)
        self.plan = plan
        self._sizes = [int(s) for s in plan.sizes]
        self._offsets = [int(o) for o in plan.offsets]
        self._aligned = [round_up(s, plan.alignment) for s in self._sizes]
        keep = plan.in_arena if plan.in_arena is not None else np.ones(len(self._sizes), dtype=bool)
        self._in_arena = [bool(k) for k in keep]
        self.log.paused = True  # replay needs no trace
        self.reset_peak()

    def begin_run(self) -> None:
        """A run starts: the next request is matched against the plan's first buffer."""
        self._cursor = 0

    def reset_peak(self) -> None:
        self.peak = self.arena_bytes + self.heap_in_use

    def stats(self) -> ArenaStats:
        return ArenaStats(
            self.arena_bytes, self.heap_in_use, self.peak, self.planned_allocs,
            self.fallbacks, self.fallback_bytes, self.first_fallback,
        )

    # -- the two callbacks
    def alloc(self, size: int) -> int:
        ident = self.log.alloc(size)
        if self.plan is not None:
            i = self._cursor
            self._cursor += 1
            if i < len(self._sizes) and self._sizes[i] == size and not self._in_arena[i]:
                return self._heap_alloc(ident, size)
            if i < len(self._sizes) and self._sizes[i] == size:
                off = self._offsets[i]
                end = off + self._aligned[i]
                if self._arena_free(off, end):
                    insort(self._arena_live, (off, end))
                    p = self.base + off
                    self._arena_ptr[p] = (off, end, ident)
                    self.planned_allocs += 1
                    return p
                why = f"request {i} ({size} bytes): its planned bytes are still in use"
            elif i < len(self._sizes):
                why = f"request {i} asks {size} bytes, the plan recorded {self._sizes[i]}"
            else:
                why = f"request {i} ({size} bytes) is beyond the {len(self._sizes)} recorded"
            self.fallbacks += 1
            self.fallback_bytes += size
            if self.first_fallback is None:
                self.first_fallback = why
        return self._heap_alloc(ident, size)

    def _heap_alloc(self, ident: int, size: int) -> int:
        p = self.memory.malloc(size)
        self._heap[p] = (ident, size)
        self.heap_in_use += size
        held = self.arena_bytes + self.heap_in_use
        if held > self.peak:
            self.peak = held
        return p

    def free(self, ptr: int) -> None:
        a = self._arena_ptr.pop(ptr, None)
        if a is not None:
            off, end, ident = a
            del self._arena_live[bisect_left(self._arena_live, (off, end))]
            self.log.free(ident, end - off)
            return
        ident, size = self._heap.pop(ptr)
        self.log.free(ident, size)
        self.heap_in_use -= size
        self.memory.free(ptr)

    def _arena_free(self, off: int, end: int) -> bool:
        live = self._arena_live
        k = bisect_left(live, (off, end))
        if k < len(live) and live[k][0] < end:
            return False
        if k > 0 and live[k - 1][1] > off:
            return False
        return True

    def close(self) -> bool:
        """Release the arena when no arena buffer is live; True when everything was returned."""
        if self.base and not self._arena_ptr:
            self.memory.free(self.base)
            self.base = 0
        return not self._heap and not self._arena_ptr


# ----------------------------------------------------------------------------- the env allocator


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
