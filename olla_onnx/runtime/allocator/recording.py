"""The event log both allocators keep, the trace of one window of it, and the recording allocator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from olla_onnx.runtime.allocator.backends import HostMemory, Memory


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


class EventLog:
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
        self.log = EventLog()
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
