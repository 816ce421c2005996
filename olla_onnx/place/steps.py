"""The steps :func:`olla_onnx.place.place` runs on a window above its goal, with their tuned constants.

Each step improves one independent window's placement (sizes multiples of
``unit``, the alignment): :func:`decompose_window` (the hottest-window-first
decomposition of :mod:`olla_onnx.place.decompose`, try after try),
:func:`goal_dives` (quick exact searches at the goal and at the bound) and
:func:`tighten_window` (loose-capacity dives, then the exact search bisecting
between the bound and the incumbent). :func:`dust_share` tells how dusty a
window is. The constants were measured on the model corpus
(``benchmarks/placement_corpus.py``); the order of the tries matters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from olla_onnx.place.decompose import WindowTry, dust_mask, place_by_windows
from olla_onnx.place.preorder import MINIMALLOC_PREORDERS, Preorder
from olla_onnx.place.problem import max_load
from olla_onnx.place.search import SearchResult, search_placement

#: Windows larger than this first get one canonical dive at a loose capacity
#: (just below the greedy arena): it usually lands on or near the bound.
DIVE_MIN_BUFFERS = 200
#: The loose-capacity dives, in turn (one pass per preorder, 2n nodes each):
#: canonical bottom-up packing usually lands on or near the bound where
#: best fit does not.
LOOSE_DIVES: tuple[Preorder, ...] = MINIMALLOC_PREORDERS + (Preorder.PEAK_LIFETIME, Preorder.AREA_LIFETIME)


@dataclass(frozen=True)
class DecomposeTry:
    """One try of the decomposition (:func:`olla_onnx.place.decompose.place_by_windows`)."""

    #: Share of the room between the bound and the goal left to the dust (placed last, by best fit).
    dust_share: float
    #: Rank buffers by their lifetime inside each window (else by their whole lifetime).
    rank_in_window: bool
    #: The search's preorders in each window.
    preorders: tuple[Preorder, ...]
    #: Buffer starts per window.
    per_window: int

    @property
    def window_try(self) -> WindowTry:
        """The search each window gets."""
        return WindowTry(rank_in_window=self.rank_in_window, preorders=self.preorders)


#: Ranking inside the window (MiniMalloc's preorders): settles most big traces fastest.
IN_WINDOW_TRY = DecomposeTry(dust_share=0.25, rank_in_window=True, preorders=MINIMALLOC_PREORDERS, per_window=200)
#: The size-first preorders: settle the tiny models (no room for dust at 0.1%).
SIZE_FIRST_TRY = DecomposeTry(
    dust_share=0.25,
    rank_in_window=False,
    preorders=(Preorder.SIZE_LIFETIME_PEAK, Preorder.PEAK_SIZE_LIFETIME),
    per_window=200,
)
#: Whole lifetimes, MiniMalloc's preorders, more or less dust: each settles a few the others miss.
LATER_TRIES: tuple[DecomposeTry, ...] = tuple(
    DecomposeTry(dust_share=share, rank_in_window=False, preorders=MINIMALLOC_PREORDERS, per_window=200)
    for share in (0.25, 0.125, 0.5)
)
#: The decomposition's tries, in turn until one reaches the goal. Measured on
#: the model corpus (benchmarks/placement_corpus.py): ranking inside the
#: window settles most big traces fastest; the size-first preorders settle
#: the tiny models (no room for dust at 0.1%); each later one settles a few
#: the others miss. Tries whose dust is the same as an earlier try's with the
#: same ranking and preorders are skipped.
DECOMPOSE_TRIES: tuple[DecomposeTry, ...] = (IN_WINDOW_TRY, SIZE_FIRST_TRY) + LATER_TRIES
#: The tries for windows where the dives failed (tiny models): the size-first
#: try first, as the in-window ranking fails there and leaves the next try
#: too little time.
SIZE_FIRST_TRIES: tuple[DecomposeTry, ...] = (SIZE_FIRST_TRY, IN_WINDOW_TRY) + LATER_TRIES
#: Share of the decomposition's time left that a try other than the last may use.
TRY_SHARE = 0.8


@dataclass(frozen=True)
class GoalDive:
    """One dive of :func:`goal_dives`: one round of the exact search with one preorder."""

    preorder: Preorder
    #: Dive at the window's max-load bound (else at the goal).
    at_bound: bool


#: The dives of the "dive" step, in turn until one lands, each one round of
#: the exact search with at most ``DIVE_NODES`` * n nodes. Measured on the
#: model corpus's tiny models (1,000 to 5,000 buffers, goal 0.1% above the
#: bound), where bisection from a loose capacity misses: TAW at the goal lands
#: on most, TZW on the U-Net traces, UWT (latest end first) on GPT-2 at
#: alignment 256; TAW at the bound itself lands on some where the goal's
#: looser capacity prunes less (and proves the arena optimal).
GOAL_DIVES: tuple[GoalDive, ...] = (
    GoalDive(Preorder.PEAK_AREA_LIFETIME, at_bound=False),
    GoalDive(Preorder.END_LIFETIME_PEAK, at_bound=False),
    GoalDive(Preorder.PEAK_SIZE_LIFETIME, at_bound=False),
    GoalDive(Preorder.PEAK_AREA_LIFETIME, at_bound=True),
)
#: Node limit of one dive, in multiples of the buffers: the landings measured
#: on the corpus took at most 1.6 n nodes.
DIVE_NODES = 1.7


def dust_share(lo: np.ndarray, up: np.ndarray, sz: np.ndarray, goal: int, unit: int) -> float:
    """Share of the nonzero buffers the first decomposition try leaves to the end as dust.

    Buffers of size 0 do not count: they take no room and crowd no search
    (a trace with many of them is not dusty for that).
    """
    live = sz > 0
    if not live.any():
        return 0.0
    room = max(goal - max_load(lo, up, sz), 0) // unit
    return float(dust_mask(lo[live], up[live], sz[live] // unit, int(room * DECOMPOSE_TRIES[0].dust_share)).mean())


def decompose_window(
    lo: np.ndarray,
    up: np.ndarray,
    sz: np.ndarray,
    arena: int,
    goal: int,
    deadline: float,
    unit: int,
    all_tries: tuple[DecomposeTry, ...] = DECOMPOSE_TRIES,
) -> tuple[np.ndarray | None, int, int]:
    """Hottest-window-first placement (:mod:`.decompose`, in units of ``unit``), try after try.

    Stops at the first try within ``goal``; returns the best offsets (None if
    none beat ``arena``), their arena and the number of tries run.
    """
    room = max(goal - max_load(lo, up, sz), 0) // unit
    best_off, best_arena, tries = None, arena, 0
    distinct: list[tuple[int, DecomposeTry]] = []  # (dust budget, try)
    seen = set()
    for attempt in all_tries:
        budget = int(room * attempt.dust_share)
        key = (int(dust_mask(lo, up, sz // unit, budget).sum()), attempt.window_try, attempt.per_window)
        if key not in seen:
            seen.add(key)
            distinct.append((budget, attempt))
    for k, (budget, attempt) in enumerate(distinct):
        now = time.perf_counter()
        if best_arena <= goal or now >= deadline:
            break
        tries += 1
        # Every try but the last gets a share of the time left: a failing try can be long.
        until = deadline if k == len(distinct) - 1 else now + (deadline - now) * TRY_SHARE
        off_u, _ = place_by_windows(
            lo, up, sz // unit, goal // unit, until, per_window=attempt.per_window,
            tries=(attempt.window_try,), dust_budget=budget, give_up=True,
        )
        off = off_u * unit
        new_arena = int((off + sz).max())
        if new_arena < best_arena:
            best_off, best_arena = off, new_arena
    return best_off, best_arena, tries


def goal_dives(
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
    for dive in GOAL_DIVES:
        cap = bound if dive.at_bound else max(goal, bound)
        left = deadline - time.perf_counter()
        if left <= 0 or cap <= refuted:
            continue
        res = search_placement(
            lo, up, sz // unit, cap // unit, time_limit=left, preorders=(dive.preorder,), max_rounds=1, first_limit=DIVE_NODES
        )
        if res.status == "feasible":
            assert res.offsets is not None
            return res.offsets * unit, refuted
        if res.status == "infeasible":
            refuted = cap
    return None, refuted


def tighten_window(
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

    def landed(res: SearchResult) -> int:
        """Keep the search's placement (in units) if it beats the incumbent; return its arena."""
        nonlocal off, arena
        assert res.offsets is not None
        new_off = res.offsets * unit
        new_arena = int((new_off + sz).max())
        if new_arena < arena:
            off, arena = new_off, new_arena
        return new_arena

    if not targets and sz.size >= DIVE_MIN_BUFFERS:
        for preorder in LOOSE_DIVES:
            if hi <= good_enough or time.perf_counter() >= deadline:
                break
            left = max(deadline - time.perf_counter(), 0.0)
            res = search_placement(lo, up, sz // unit, (hi - unit) // unit, time_limit=left / 2, preorders=(preorder,), max_rounds=1)
            searched = True
            if res.status == "feasible":
                hi = min(hi, landed(res))
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
            hi = min(hi, landed(res))
        elif res.status == "infeasible":
            lo_cap = max(lo_cap, cap_units * unit + unit)
            unknown_below = max(unknown_below, cap_units * unit)
            if capacity is not None and cap >= capacity and not minimize:
                break
        else:  # out of time at this capacity: look higher
            unknown_below = max(unknown_below, cap_units * unit)
    return off, arena, lo_cap >= arena or arena == bound, searched
