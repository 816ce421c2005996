"""Placing the buffers of one run's trace in one arena: :func:`plan_trace`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from olla_onnx.place import place
from olla_onnx.place.problem import Buffers, check_placement
from olla_onnx.runtime.allocator.backends import ALIGNMENT, round_up
from olla_onnx.runtime.allocator.recording import AllocTrace


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
    """Greedy by size, first fit: largest buffer first (ties: earliest start), each at the lowest offset
    free for its whole lifetime.

    A classic heuristic (TFLite's "greedy by size"); no optimality claim. Not
    :func:`olla_onnx.place.greedy.best_fit`, which takes the smallest gap that
    holds a buffer: the two differ on some traces, and :func:`plan_trace`
    keeps this one's arena where it is the smaller.
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

    Uses the project's placement (:func:`olla_onnx.place.place`, its exact
    search stopped at ``time_limit``) unless :func:`greedy_offsets` finds a
    smaller arena; the result passes :func:`olla_onnx.place.problem.check_placement`
    (a failure is a RuntimeError). ``lower_bound`` is the most (aligned) bytes
    live at once: no arena is smaller.
    """
    keep = ~trace.escaped  # buffers onnxruntime keeps past the run live across runs: heap, not arena
    sizes = np.asarray([round_up(s, alignment) if k else 0 for s, k in zip(trace.sizes, keep)], dtype=np.int64)
    lower, upper = trace.lower, np.maximum(trace.upper, trace.lower + 1)
    aligned = AllocTrace(sizes, lower, upper, trace.escaped, trace.events + 1)
    bound = aligned.peak_live_bytes
    res = place(Buffers.build(range(len(sizes)), lower, upper, sizes), alignment=alignment, time_limit=time_limit)
    offsets, method, optimal = np.asarray(res.offsets, dtype=np.int64), "olla_onnx.place", bool(res.optimal)
    greedy = greedy_offsets(lower, upper, sizes)
    if _arena(greedy, sizes) < _arena(offsets, sizes):
        offsets, method, optimal = greedy, "greedy-by-size", _arena(greedy, sizes) == bound
    arena = check_placement(lower, upper, sizes, offsets, alignment=alignment, error=RuntimeError, prefix="trace plan: ")
    return TracePlan(trace.sizes.copy(), offsets, arena, alignment, bound, method, optimal, keep)


def _arena(offsets: np.ndarray, sizes: np.ndarray) -> int:
    return int((offsets + sizes).max()) if sizes.size else 0
