"""One entry point for placement: bound, decompose, greedy, exact search, check."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from olla_onnx.errors import OllaInputError
from olla_onnx.ort_facts import DEFAULT_ALIGNMENT
from olla_onnx.place.decompose import dust_mask, place_by_windows
from olla_onnx.place.greedy import best_greedy
from olla_onnx.place.problem import Buffers, aligned_sizes, check_placement, max_load
from olla_onnx.place.search import search_placement
from olla_onnx.place.split import place_split, split_candidates

#: Largest independent window (in buffers) handed to the exact search; above it
#: the neighbour lists (O(n * k) memory for k buffers alive together) and the
#: O(n) work per search node cost too much, and greedy is the answer.
EXACT_MAX_BUFFERS = 25_000
#: Windows larger than this first get one canonical dive at a loose capacity
#: (just below the greedy arena): it usually lands on or near the bound.
DIVE_MIN_BUFFERS = 200

#: Windows with at least this many buffers are first placed by the
#: hottest-window-first decomposition of :mod:`olla_onnx.place.decompose`.
DECOMPOSE_MIN_BUFFERS = 500
#: The decomposition's tries, in turn until one reaches the goal: (share of
#: the room between bound and goal left to dust, rank buffers by their
#: lifetime inside each window?, the search's preorders, buffer starts per
#: window). Measured on the model corpus (benchmarks/placement_corpus.py):
#: ranking inside the window settles most big traces fastest; the size-first
#: preorders settle the tiny models (no room for dust at 0.1%); each later
#: one settles a few the others miss. Tries whose dust is the same as an
#: earlier try's with the same ranking and preorders are skipped. Windows
#: where the dives failed (tiny models) start with the size-first try: the
#: in-window ranking fails there and leaves the next try too little time.
_WAT = ("WAT", "TAW", "TWA")
DECOMPOSE_TRIES: tuple[tuple[float, bool, tuple[str, ...], int], ...] = (
    (0.25, True, _WAT, 200),
    (0.25, False, ("ZWT", "TZW"), 200),
    (0.25, False, _WAT, 200),
    (0.125, False, _WAT, 200),
    (0.5, False, _WAT, 200),
)
SIZE_FIRST_TRIES = (DECOMPOSE_TRIES[1], DECOMPOSE_TRIES[0]) + DECOMPOSE_TRIES[2:]
#: Share of the decomposition's time left that a try other than the last may use.
TRY_SHARE = 0.8
#: Share of the time left that a step other than the last may use on a big window.
FIRST_STEP_SHARE = {"split": 0.3, "decompose": 0.7, "dive": 0.4, "search": 0.3}
#: The decomposition's share where the dives came first and failed (tiny
#: models): its size-first try needs most of the time left there, and the
#: search after it rarely improves on what it leaves.
DECOMPOSE_AFTER_DIVES_SHARE = 0.9
#: The dives of the "dive" step: (preorder, at the bound? else at the goal),
#: in turn until one lands, each one round of the exact search with at most
#: ``DIVE_NODES`` * n nodes. Measured on the model corpus's tiny models (1,000
#: to 5,000 buffers, goal 0.1% above the bound), where bisection from a loose
#: capacity misses: TAW at the goal lands on most, TZW on the U-Net traces,
#: UWT (latest end first) on GPT-2 at alignment 256; TAW at the bound itself
#: lands on some where the goal's looser capacity prunes less (and proves the
#: arena optimal).
GOAL_DIVES: tuple[tuple[str, bool], ...] = (("TAW", False), ("UWT", False), ("TZW", False), ("TAW", True))
#: Windows with more buffers than this skip the dives: one costs tens of
#: seconds on 20,000 buffers (O(n) numpy work per node, 1.7 n nodes).
DIVE_MAX_BUFFERS = 10_000
#: Node limit of one dive, in multiples of the buffers: the landings measured
#: on the corpus took at most 1.6 n nodes.
DIVE_NODES = 1.7
#: Share of ``time_limit`` the steps may use; the rest is left for the final
#: fallbacks (best fit of what a step left unplaced) and the checker.
TIME_MARGIN = 0.95
#: A big window goes to the decomposition first when at least this share of
#: its buffers is dust (see :func:`_dust_share`).
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


def _dust_share(lo: np.ndarray, up: np.ndarray, sz: np.ndarray, goal: int, unit: int) -> float:
    """Share of the nonzero buffers the first decomposition try leaves to the end as dust.

    Buffers of size 0 do not count: they take no room and crowd no search
    (a trace with many of them is not dusty for that).
    """
    live = sz > 0
    if not live.any():
        return 0.0
    room = max(goal - max_load(lo, up, sz), 0) // unit
    return float(dust_mask(lo[live], up[live], sz[live] // unit, int(room * DECOMPOSE_TRIES[0][0])).mean())


def _decompose_window(
    lo: np.ndarray,
    up: np.ndarray,
    sz: np.ndarray,
    arena: int,
    goal: int,
    deadline: float,
    unit: int,
    all_tries: tuple[tuple[float, bool, tuple[str, ...], int], ...] = DECOMPOSE_TRIES,
) -> tuple[np.ndarray | None, int, int]:
    """Hottest-window-first placement (:mod:`.decompose`, in units of ``unit``), try after try.

    Stops at the first try within ``goal``; returns the best offsets (None if
    none beat ``arena``), their arena and the number of tries run.
    """
    room = max(goal - max_load(lo, up, sz), 0) // unit
    best_off, best_arena, tries = None, arena, 0
    distinct, seen = [], set()
    for dust_share, rank_in_window, heuristics, per_window in all_tries:
        budget = int(room * dust_share)
        key = (int(dust_mask(lo, up, sz // unit, budget).sum()), rank_in_window, heuristics, per_window)
        if key not in seen:
            seen.add(key)
            distinct.append((budget, rank_in_window, heuristics, per_window))
    for k, (budget, rank_in_window, heuristics, per_window) in enumerate(distinct):
        now = time.perf_counter()
        if best_arena <= goal or now >= deadline:
            break
        tries += 1
        # Every try but the last gets a share of the time left: a failing try can be long.
        until = deadline if k == len(distinct) - 1 else now + (deadline - now) * TRY_SHARE
        off_u, _ = place_by_windows(
            lo, up, sz // unit, goal // unit, until, per_window=per_window,
            tries=((rank_in_window, heuristics),), dust_budget=budget, give_up=True,
        )
        off = off_u * unit
        new_arena = int((off + sz).max())
        if new_arena < best_arena:
            best_off, best_arena = off, new_arena
    return best_off, best_arena, tries


def _goal_dives(
    lo: np.ndarray, up: np.ndarray, sz: np.ndarray, goal: int, deadline: float, unit: int
) -> tuple[np.ndarray | None, int]:
    """The dives of :data:`GOAL_DIVES` (at the window's bound or at ``goal``), until one lands.

    Returns the offsets of the first landing (``None`` if none did) and the
    largest capacity proven too small (a dive that exhausts its space is a
    proof; ``bound - unit`` when none did). Cost: at most
    ``len(GOAL_DIVES) * DIVE_NODES * n`` search nodes of O(n) numpy work.
    """
    bound = max_load(lo, up, sz)
    refuted = bound - unit
    for h, at_bound in GOAL_DIVES:
        cap = bound if at_bound else max(goal, bound)
        left = deadline - time.perf_counter()
        if left <= 0 or cap <= refuted:
            continue
        res = search_placement(
            lo, up, sz // unit, cap // unit, time_limit=left, heuristics=(h,), max_rounds=1, first_limit=DIVE_NODES
        )
        if res.status == "feasible":
            assert res.offsets is not None
            return res.offsets * unit, refuted
        if res.status == "infeasible":
            refuted = cap
    return None, refuted


def _tighten_window(
    lo: np.ndarray,
    up: np.ndarray,
    sz: np.ndarray,
    off: np.ndarray,
    arena: int,
    good_enough: int,
    capacity: int | None,
    minimize: bool,
    deadline: float,
    unit: int,
    refuted: int = -1,
) -> tuple[np.ndarray, int, bool, bool]:
    """Exact search on one window whose greedy arena exceeds ``good_enough``.

    Tries the window's max-load bound (or ``good_enough``) first, then bisects
    between the lowest capacity not yet ruled out and the incumbent; a try that
    runs out of time (it gets half the time left) sends the next try higher.
    Returns offsets, arena, whether that arena is proven optimal for the
    window, and whether the search ran. Sizes are multiples of ``unit`` (the
    alignment), so the search works in units and every offset is aligned.
    ``refuted``: a capacity already proven too small (e.g. by a dive).
    """
    bound = max_load(lo, up, sz)
    lo_cap, hi = max(bound, refuted + unit), arena  # proven: the window's optimum lies in [lo_cap, hi]
    unknown_below = max(bound - unit, refuted)  # capacities <= this are proven or given up on
    targets: list[int] = [capacity] if capacity is not None and arena > capacity else []
    searched = False
    if not targets and sz.size >= DIVE_MIN_BUFFERS:
        # Quick dives (one pass per preorder, 2n nodes each) at a loose
        # capacity: canonical bottom-up packing usually lands on or near the
        # bound where best-fit does not.
        for h in ("WAT", "TAW", "TWA", "TW", "AW"):
            if hi <= good_enough or time.perf_counter() >= deadline:
                break
            left = max(deadline - time.perf_counter(), 0.0)
            res = search_placement(lo, up, sz // unit, (hi - unit) // unit, time_limit=left / 2, heuristics=(h,), max_rounds=1)
            searched = True
            if res.status == "feasible":
                assert res.offsets is not None
                new_off = res.offsets * unit
                new_arena = int((new_off + sz).max())
                if new_arena < arena:
                    off, arena = new_off, new_arena
                hi = min(hi, new_arena)
            elif res.status == "infeasible":
                lo_cap = max(lo_cap, hi)
                break
    first = True
    while time.perf_counter() < deadline and lo_cap < hi and hi > good_enough:
        share = 0.5
        if targets:
            cap = targets.pop()
            if capacity is not None and cap == capacity and not minimize:
                share = 1.0
        elif capacity is not None and not minimize and hi <= capacity:
            break
        else:
            low = max(lo_cap, unknown_below + unit, good_enough)
            if low >= hi:
                break
            cap = low if first else (low + hi) // 2 // unit * unit
            cap = max(cap, low)
            first = False
            if cap + unit >= hi:
                share = 1.0
        cap_units = cap // unit
        searched = True
        left = max(deadline - time.perf_counter(), 0.0)
        res = search_placement(lo, up, sz // unit, cap_units, time_limit=left * share)
        if res.status == "feasible":
            assert res.offsets is not None
            new_off = res.offsets * unit
            new_arena = int((new_off + sz).max())
            if new_arena < arena:
                off, arena = new_off, new_arena
            hi = min(hi, new_arena)
        elif res.status == "infeasible":
            lo_cap = max(lo_cap, cap_units * unit + unit)
            unknown_below = max(unknown_below, cap_units * unit)
            if capacity is not None and cap >= capacity and not minimize:
                break
        else:  # out of time at this capacity: look higher
            unknown_below = max(unknown_below, cap_units * unit)
    return off, arena, lo_cap >= arena or arena == bound, searched


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
    (70% of the time left), the dives of :data:`GOAL_DIVES` (quick exact
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
    results = []
    for g in windows:
        if g.size == 1:
            w_off, w_arena, name = np.zeros(1, dtype=np.int64), int(sz[g[0]]), "trivial"
        else:
            w_off, w_arena, name = best_greedy(lo[g], up[g], sz[g])
        results.append([g, w_off, w_arena, f"greedy-{name}", w_arena <= bound])
    # Pass 2: exact search on the windows above the bound, biggest arena first.
    if tolerance < 0:
        raise OllaInputError(f"tolerance must be >= 0, got {tolerance}")
    goal = max(bound, int(bound * (1.0 + tolerance)) // alignment * alignment)
    if not (minimize or capacity is None):
        goal = max(goal, capacity)
    for r in sorted(results, key=lambda r: -r[2]):
        g = r[0]
        if r[2] <= goal or time.perf_counter() >= deadline:
            continue
        # Big windows: the decomposition first where dust crowds the search,
        # else the search first; the first step may use a share of the time.
        steps = ["search"]
        cands: list[tuple[int, int, int]] = []
        if g.size >= DECOMPOSE_MIN_BUFFERS:
            dusty = _dust_share(lo[g], up[g], sz[g], goal, alignment) >= DUSTY_SHARE
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
            if r[2] <= goal or now >= deadline:
                break
            after_dives = "dive" in steps[:i]  # the dives failed: the decomposition starts size-first, with more time
            share = DECOMPOSE_AFTER_DIVES_SHARE if step == "decompose" and after_dives else FIRST_STEP_SHARE[step]
            until = deadline if i == len(steps) - 1 else now + share * (deadline - now)
            if step == "split":
                s_off, s_arena = place_split(lo[g], up[g], sz[g] // alignment, goal // alignment, until, cands)
                if s_off is not None and s_arena * alignment < r[2]:
                    r[1], r[2], r[3], r[4] = s_off * alignment, s_arena * alignment, "split", s_arena * alignment <= bound
            elif step == "dive":
                v_off, refuted = _goal_dives(lo[g], up[g], sz[g], goal, until, alignment)
                if v_off is not None:
                    v_arena = int((v_off + sz[g]).max())
                    if v_arena < r[2]:
                        r[1], r[2], r[3], r[4] = v_off, v_arena, "dive", v_arena <= bound
            elif step == "decompose":
                tries = SIZE_FIRST_TRIES if after_dives else DECOMPOSE_TRIES
                d_off, d_arena, _ = _decompose_window(lo[g], up[g], sz[g], r[2], goal, until, alignment, tries)
                if d_off is not None:
                    r[1], r[2], r[3], r[4] = d_off, d_arena, "windows", d_arena <= bound
            elif g.size <= EXACT_MAX_BUFFERS:
                w_arena = r[2]
                new_off, new_arena, proven, searched = _tighten_window(
                    lo[g], up[g], sz[g], r[1], w_arena, goal, capacity, minimize, until, alignment, refuted
                )
                if searched:
                    r[3] = "search" if new_arena < w_arena else r[3] + "+search"
                r[1], r[2], r[4] = new_off, new_arena, proven or new_arena <= bound
    for g, w_off, _, _, _ in results:
        offsets[g] = w_off
    arena = check_placement(lo, up, sz, offsets, alignment=alignment)
    # Optimal: a window that sets the arena is proven optimal (every arena is at
    # least that window's optimum).
    optimal = arena == bound or any(r[4] and r[2] == arena for r in results)
    methods = {r[3] for r in results if r[2] == arena} or {"empty"}
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
