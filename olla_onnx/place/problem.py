"""Placement problems: buffers with lifetimes, the max-load bound and the checker.

A buffer ``i`` needs ``sizes[i]`` bytes on the half-open time interval
``[lower[i], upper[i])``. A placement gives every buffer an ``offset``; it is
valid when two buffers alive at the same time never share a byte and every
buffer lies inside ``[0, arena)``. :func:`check_placement` is the one checker
of that (plans and the runtime use it too). Traces on disk (CSV) are
:mod:`olla_onnx.formats.trace`.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from olla_onnx.errors import OllaInputError


@dataclass(frozen=True)
class Buffers:
    """Buffers to place: ``ids[i]`` lives on ``[lower[i], upper[i])`` and needs ``sizes[i]`` bytes.

    Arrays are int64 and read-only; ``upper > lower`` and ``sizes >= 0`` hold for
    every buffer (checked by :meth:`build`).
    """

    ids: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    sizes: np.ndarray

    @staticmethod
    def build(ids: Sequence[object], lower: Sequence[int], upper: Sequence[int], sizes: Sequence[int]) -> "Buffers":
        """Validate and freeze; :class:`OllaInputError` names the first bad buffer."""
        lo = np.asarray(lower, dtype=np.int64).reshape(-1)
        up = np.asarray(upper, dtype=np.int64).reshape(-1)
        sz = np.asarray(sizes, dtype=np.int64).reshape(-1)
        names = tuple(str(i) for i in ids)
        if not (len(names) == lo.size == up.size == sz.size):
            raise OllaInputError("ids, lower, upper and sizes must have the same length")
        bad = np.flatnonzero(up <= lo)
        if bad.size:
            i = int(bad[0])
            raise OllaInputError(f"buffer {names[i]!r}: upper {int(up[i])} <= lower {int(lo[i])} (the interval [lower, upper) is empty)")
        bad = np.flatnonzero(sz < 0)
        if bad.size:
            i = int(bad[0])
            raise OllaInputError(f"buffer {names[i]!r}: negative size {int(sz[i])}")
        if len(set(names)) != len(names):
            seen: set[str] = set()
            dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise OllaInputError(f"buffer id {dup!r} appears twice")
        for a in (lo, up, sz):
            a.setflags(write=False)
        return Buffers(names, lo, up, sz)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray) -> "Buffers":
        """The buffers at positions ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        return Buffers.build([self.ids[i] for i in idx], self.lower[idx], self.upper[idx], self.sizes[idx])


def aligned_sizes(sizes: np.ndarray, alignment: int) -> np.ndarray:
    """Sizes rounded up to a multiple of ``alignment`` (the space a buffer takes in an aligned arena)."""
    if alignment < 1:
        raise OllaInputError(f"alignment must be a positive integer, got {alignment}")
    a = np.int64(alignment)
    return (np.asarray(sizes, dtype=np.int64) + a - 1) // a * a


def load_profile(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(times, load)``: ``load[k]`` is the bytes alive on ``[times[k], times[k+1])``. O(n log n)."""
    times = np.unique(np.concatenate([lower, upper]))
    delta = np.zeros(times.size, dtype=np.int64)
    np.add.at(delta, np.searchsorted(times, lower), sizes)
    np.add.at(delta, np.searchsorted(times, upper), -sizes)
    return times, np.cumsum(delta)


def max_load(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray) -> int:
    """The most bytes alive at any moment: a lower bound on every arena. O(n log n)."""
    if len(sizes) == 0:
        return 0
    return int(load_profile(lower, upper, sizes)[1].max())


def check_placement(
    lower: np.ndarray,
    upper: np.ndarray,
    sizes: np.ndarray,
    offsets: np.ndarray,
    capacity: int | None = None,
    alignment: int = 1,
    *,
    names: Sequence[str] | None = None,
    error: Callable[[str], Exception] = ValueError,
    prefix: str = "",
) -> int:
    """Verify a placement and return its arena size ``max(offset + size)``.

    Buffer ``i`` occupies bytes ``[offsets[i], offsets[i] + sizes[i])`` on the
    time interval ``[lower[i], upper[i])``; sizes are ``>= 0``, buffers of size
    0 take no bytes. Raises ``error(prefix + message)`` (``ValueError`` by
    default) for the first defect found, checked in this order: a negative
    offset, one not a multiple of ``alignment``, a buffer that ends above
    ``capacity`` (each message says it "lies outside the arena"), then the
    first two buffers alive at the same time whose byte ranges overlap.
    Messages name buffers by ``repr(names[i])`` when ``names`` are given, else
    by position.

    Every pair alive together is alive at the later of their start times, so
    checking each buffer against the buffers alive when it starts covers all
    pairs; the alive set is kept sorted by offset and, being disjoint, needs
    checking against a new buffer's two address neighbours only.
    O(n log n + n * k) for k buffers alive at once.
    """
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(sizes)

    def fail(message: str) -> Exception:
        return error(prefix + message)

    def label(i: int) -> str:
        return repr(names[i]) if names is not None else str(i)

    if offsets.shape != (n,):
        raise fail(f"{offsets.size} offsets for {n} buffers")
    if names is not None and len(names) != n:
        raise fail(f"{len(names)} names for {n} buffers")
    if n == 0:
        return 0
    tops = offsets + sizes
    if (offsets < 0).any():
        i = int(np.flatnonzero(offsets < 0)[0])
        raise fail(
            f"buffer {label(i)} has a negative offset {int(offsets[i])}: "
            f"[{int(offsets[i])}, {int(tops[i])}) lies outside the arena"
        )
    if alignment > 1 and (offsets % alignment).any():
        i = int(np.flatnonzero(offsets % alignment)[0])
        raise fail(f"buffer {label(i)}: offset {int(offsets[i])} is not a multiple of the alignment {alignment}")
    arena = int(tops.max())
    if capacity is not None and arena > capacity:
        i = int(np.argmax(tops))
        raise fail(
            f"buffer {label(i)} ends at {arena}, above the capacity {capacity}: "
            f"[{int(offsets[i])}, {arena}) lies outside the arena"
        )
    # Events: starts sorted by time; ends removed lazily before each start.
    live = np.flatnonzero(sizes > 0)
    by_start = live[np.argsort(lower[live], kind="stable")]
    by_end = live[np.argsort(upper[live], kind="stable")]
    active: list[tuple[int, int]] = []  # (offset, buffer) sorted
    e = 0
    lo_l, up_l, off_l, top_l = lower.tolist(), upper.tolist(), offsets.tolist(), tops.tolist()
    end_l = by_end.tolist()
    for b in by_start.tolist():
        t = lo_l[b]
        while e < len(end_l) and up_l[end_l[e]] <= t:
            c = end_l[e]
            k = bisect_left(active, (off_l[c], c))
            if k < len(active) and active[k][1] == c:
                active.pop(k)
            e += 1
        key = (off_l[b], b)
        k = bisect_left(active, key)
        # The neighbour below must end at or below b's offset, the one above start at or above b's top.
        pair = None
        if k > 0 and top_l[active[k - 1][1]] > off_l[b]:
            pair = (active[k - 1][1], b)
        elif k < len(active) and top_l[b] > off_l[active[k][1]]:
            pair = (b, active[k][1])
        if pair is not None:
            raise fail(f"buffers {label(pair[0])} and {label(pair[1])} are alive together at time {t} and overlap in bytes")
        insort(active, key)
    return arena


def buffers_from_lifetimes(lt) -> Buffers:
    """Buffers of a :class:`olla_onnx.ir.memory.Lifetimes`: tensor ``names[i]`` on ``[start, end + 1)``.

    Resident tensors are not in ``Lifetimes`` (they live outside the arena).
    """
    return Buffers.build(lt.names, lt.start, np.asarray(lt.end, dtype=np.int64) + 1, lt.sizes)
