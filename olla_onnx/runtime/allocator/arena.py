"""The planned-arena allocator: records one run's requests, then serves later runs from one arena."""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

import numpy as np

from olla_onnx.runtime.allocator.backends import HostMemory, Memory, round_up
from olla_onnx.runtime.allocator.planning import TracePlan
from olla_onnx.runtime.allocator.recording import EventLog


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
        self.log = EventLog()
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
