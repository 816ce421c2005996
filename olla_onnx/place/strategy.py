"""One entry point for placement: bound, greedy, the steps of :mod:`.steps` per window, check."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from olla_onnx.errors import OllaInputError
from olla_onnx.place.greedy import best_greedy
from olla_onnx.place.problem import Buffers, aligned_sizes, check_placement, max_load
from olla_onnx.place.split import place_split, split_candidates
from olla_onnx.place.steps import (
    DECOMPOSE_TRIES,
    SIZE_FIRST_TRIES,
    decompose_window,
    dust_share,
    goal_dives,
    tighten_window,
)

#: Largest independent window (in buffers) handed to the exact search; above it
#: the neighbour lists (O(n * k) memory for k buffers alive together) and the
#: O(n) work per search node cost too much, and greedy is the answer.
EXACT_MAX_BUFFERS = 25_000
#: Windows with at least this many buffers are first placed by the
#: hottest-window-first decomposition of :mod:`olla_onnx.place.decompose`.
DECOMPOSE_MIN_BUFFERS = 500
#: Share of the time left that a step other than the last may use on a big window.
FIRST_STEP_SHARE = {"split": 0.3, "decompose": 0.7, "dive": 0.4, "search": 0.3}
#: The decomposition's share where the dives came first and failed (tiny
#: models): its size-first try needs most of the time left there, and the
#: search after it rarely improves on what it leaves.
DECOMPOSE_AFTER_DIVES_SHARE = 0.9
#: Windows with more buffers than this skip the dives: one costs tens of
#: seconds on 20,000 buffers (O(n) numpy work per node, 1.7 n nodes).
DIVE_MAX_BUFFERS = 10_000
#: Share of ``time_limit`` the steps may use; the rest is left for the final
#: fallbacks (best fit of what a step left unplaced) and the checker.
TIME_MARGIN = 0.95
#: A big window goes to the decomposition first when at least this share of
#: its buffers is dust (see :func:`olla_onnx.place.steps.dust_share`).
DUSTY_SHARE = 0.1


@dataclass(frozen=True)
class Placement:
    """Offsets for every buffer (same order as the input) and what is known about them.

    ``arena_bytes`` is ``max(offset + aligned size)``; ``lower_bound`` the most
    (aligned) bytes alive at any moment; ``optimal`` is true only when no smaller
    arena exists (arena equals the bound, or the exact search proved every
    arena one alignment unit smaller infeasible); ``feasible`` is
    ``arena_bytes <= capacity`` (true when no capacity was given).
    """

    offsets: np.ndarray
    arena_bytes: int
    lower_bound: int
    optimal: bool
    feasible: bool
    seconds: float
    method: str
    alignment: int = 1
    windows: int = 1

    @property
    def fragmentation(self) -> float:
        """``arena / lower_bound - 1`` (0 for a perfect placement)."""
        return self.arena_bytes / self.lower_bound - 1.0 if self.lower_bound else 0.0


@dataclass
class _WindowResult:
    """The best placement of one independent window so far (offsets relative to the window)."""

    #: The window's buffers (positions in the input).
    members: np.ndarray
    offsets: np.ndarray
    arena: int
    #: How the offsets were found (``Placement.method``).
    method: str
    #: The arena is proven optimal for the window, or at most the global bound
    #: (then no smaller arena for the window could shrink the overall arena).
    optimal: bool

    def take(self, offsets: np.ndarray, arena: int, method: str, bound: int) -> None:
        """Keep ``offsets`` (arena ``arena``, found by ``method``) if they beat the best so far."""
        if arena < self.arena:
            self.offsets, self.arena, self.method, self.optimal = offsets, arena, method, arena <= bound


def independent_windows(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Groups of buffers separated by moments where nothing (of nonzero size) is alive.

    Groups never overlap in time, so each can be placed from offset 0 on its own
    and the arena is the largest group arena. O(n log n).
    """
    n = sizes.size
    if n == 0:
        return []
    order = np.argsort(lower, kind="stable")
    reach = np.maximum.accumulate(upper[order])
    # A new group starts where the next buffer starts at or after everything before it ended.
    starts = np.flatnonzero(lower[order][1:] >= reach[:-1]) + 1
    return [g for g in np.split(order, starts) if g.size]


def place(
    buffers: Buffers,
    capacity: int | None = None,
    alignment: int = 1,
    time_limit: float = 60.0,
    minimize: bool = True,
    tolerance: float = 0.0,
) -> Placement:
    """Place ``buffers`` in one arena; every result passes :func:`check_placement`.

    Steps: split into independent time windows (nothing alive between them);
    per window, best-fit greedy under several orders; if that exceeds the
    window's max-load bound (or ``capacity``), the exact search of
    :mod:`olla_onnx.place.search` tightens it, keeping the best answer found
    when ``time_limit`` runs out. Windows of at least
    ``DECOMPOSE_MIN_BUFFERS`` buffers first get the size split of
    :mod:`olla_onnx.place.split` (where some size threshold qualifies; 30% of
    the time), then, where tiny "dust" buffers are many, the
    hottest-window-first decomposition of :mod:`olla_onnx.place.decompose`
    (70% of the time left), the dives of :data:`~olla_onnx.place.steps.GOAL_DIVES` (quick exact
    searches at the goal and at the bound; 40%) and the search; else the
    dives, the decomposition, then the search (windows above
    ``DIVE_MAX_BUFFERS`` skip the dives). Steps stop at 95% of
    ``time_limit``; the rest is left to finishing and the checker. With ``minimize=False`` and a capacity, the
    search stops at the first placement within the capacity. With
    ``tolerance`` > 0 the search stops once the arena is within
    ``bound * (1 + tolerance)`` (``optimal`` still means proven).

    Offsets are multiples of ``alignment``; each buffer occupies its size rounded
    up to the alignment, and the bound and optimality refer to those sizes.
    Cost: greedy is O(n * k) numpy work (k buffers alive together); the exact
    search runs whole only on windows of at most ``EXACT_MAX_BUFFERS``
    buffers, the decomposition on any size. Deterministic for a given input
    unless ``time_limit`` cuts a step short.
    """
    t0 = time.perf_counter()
    if time_limit <= 0:
        raise OllaInputError(f"time limit must be positive, got {time_limit}")
    if capacity is not None and capacity < 0:
        raise OllaInputError(f"capacity must be >= 0, got {capacity}")
    deadline = t0 + TIME_MARGIN * time_limit
    lo, up = buffers.lower, buffers.upper
    sz = aligned_sizes(buffers.sizes, alignment)
    offsets = np.zeros(len(buffers), dtype=np.int64)
    bound = max_load(lo, up, sz)
    windows = independent_windows(lo, up, sz)
    # Pass 1: greedy everywhere. A window is good enough once its arena is at
    # most the global bound: improving it further cannot shrink the arena.
    results: list[_WindowResult] = []
    for g in windows:
        if g.size == 1:
            w_off, w_arena, name = np.zeros(1, dtype=np.int64), int(sz[g[0]]), "trivial"
        else:
            w_off, w_arena, name = best_greedy(lo[g], up[g], sz[g])
        results.append(_WindowResult(g, w_off, w_arena, f"greedy-{name}", w_arena <= bound))
    # Pass 2: exact search on the windows above the bound, biggest arena first.
    if tolerance < 0:
        raise OllaInputError(f"tolerance must be >= 0, got {tolerance}")
    goal = max(bound, int(bound * (1.0 + tolerance)) // alignment * alignment)
    if not (minimize or capacity is None):
        goal = max(goal, capacity)
    for r in sorted(results, key=lambda r: -r.arena):
        g = r.members
        if r.arena <= goal or time.perf_counter() >= deadline:
            continue
        # Big windows: the decomposition first where dust crowds the search,
        # else the search first; the first step may use a share of the time.
        steps = ["search"]
        cands: list[tuple[int, int, int]] = []
        if g.size >= DECOMPOSE_MIN_BUFFERS:
            dusty = dust_share(lo[g], up[g], sz[g], goal, alignment) >= DUSTY_SHARE
            steps = ["decompose", "dive", "search"] if dusty else ["dive", "decompose", "search"]
            if g.size > DIVE_MAX_BUFFERS:
                steps.remove("dive")
            # A size split whose two max loads fit the goal goes first.
            cands = split_candidates(lo[g], up[g], sz[g] // alignment, goal // alignment)
            if cands:
                steps.insert(0, "split")
        refuted = -1  # the largest window capacity a dive proved too small
        for i, step in enumerate(steps):
            now = time.perf_counter()
            if r.arena <= goal or now >= deadline:
                break
            after_dives = "dive" in steps[:i]  # the dives failed: the decomposition starts size-first, with more time
            share = DECOMPOSE_AFTER_DIVES_SHARE if step == "decompose" and after_dives else FIRST_STEP_SHARE[step]
            until = deadline if i == len(steps) - 1 else now + share * (deadline - now)
            if step == "split":
                s_off, s_arena = place_split(lo[g], up[g], sz[g] // alignment, goal // alignment, until, cands)
                if s_off is not None:
                    r.take(s_off * alignment, s_arena * alignment, "split", bound)
            elif step == "dive":
                v_off, refuted = goal_dives(lo[g], up[g], sz[g], goal, until, alignment)
                if v_off is not None:
                    r.take(v_off, int((v_off + sz[g]).max()), "dive", bound)
            elif step == "decompose":
                tries = SIZE_FIRST_TRIES if after_dives else DECOMPOSE_TRIES
                d_off, d_arena, _ = decompose_window(lo[g], up[g], sz[g], r.arena, goal, until, alignment, tries)
                if d_off is not None:  # it beats r.arena
                    r.take(d_off, d_arena, "windows", bound)
            elif g.size <= EXACT_MAX_BUFFERS:
                w_arena = r.arena
                new_off, new_arena, proven, searched = tighten_window(
                    lo[g], up[g], sz[g], r.offsets, w_arena, goal, capacity, minimize, until, alignment, refuted
                )
                if searched:
                    r.method = "search" if new_arena < w_arena else r.method + "+search"
                r.offsets, r.arena, r.optimal = new_off, new_arena, proven or new_arena <= bound
    for r in results:
        offsets[r.members] = r.offsets
    arena = check_placement(lo, up, sz, offsets, alignment=alignment)
    # Optimal: a window that sets the arena is proven optimal (every arena is at
    # least that window's optimum).
    optimal = arena == bound or any(r.optimal and r.arena == arena for r in results)
    methods = {r.method for r in results if r.arena == arena} or {"empty"}
    return Placement(
        offsets=offsets,
        arena_bytes=arena,
        lower_bound=bound,
        optimal=bool(optimal),
        feasible=capacity is None or arena <= capacity,
        seconds=time.perf_counter() - t0,
        method=",".join(sorted(methods)),
        alignment=alignment,
        windows=len(windows),
    )
