"""Placement of big traces by time windows, hottest first, with an exact search per window.

The exact search (:mod:`olla_onnx.place.search`) settles a few hundred buffers;
training traces have thousands, with load profiles that rise through the
forward pass and fall through the backward pass, never reaching zero. This
module cuts such a trace into time windows of about ``per_window`` buffer
starts and places them one window at a time:

1. **hottest first**: windows go in order of their largest load, so the
   window holding the peak is solved while nothing constrains it, and the
   windows that follow have more slack to absorb what is already fixed;
2. **exact search around fixed buffers**: a window's problem is every
   unplaced buffer alive in it (whole lifetimes) plus, as fixed obstacles, the
   placed buffers that overlap them in time; the search
   (``search_placement(..., fixed=...)``) either places the free ones within
   the capacity, proves that impossible, or runs out of its node budget;
3. **merge on failure**: when a window fails, the windows that fixed its
   neighbours are undone and solved again together with it (once), so a
   decision taken for a hotter window is revisited when it blocks a cooler one;
4. **fallback**: a window that still fails is placed by best fit around the
   fixed buffers (always valid, possibly above the capacity), and the
   capacity for the rest rises to the arena reached.

Very small buffers ("dust": the smallest ones whose combined load is a small
part of the tolerance) are left out of the windows and put into holes by best
fit at the end; they carry no weight in the bound but crowd the search.

Every result is a valid placement; nothing here claims optimality. Windows
are solved under node budgets, so the result depends on the inputs alone
unless the overall deadline cuts a search short (then that window falls
back). Cost: per window and try one search of at most ``node_budget`` nodes,
each node O(window size) numpy work.

Why not cut only where the load is low: training traces have no such moment
(gradients and saved activations cross every cut), and fixing the crossing
buffers first takes away exactly the freedom the peak needs. Solving the peak
first and letting cooler windows adapt is the same idea turned around: the
buffers that cross into a cooler window are fixed, by the hotter one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from olla_onnx.place.greedy import best_fit
from olla_onnx.place.preorder import MINIMALLOC_PREORDERS
from olla_onnx.place.problem import load_profile, max_load
from olla_onnx.place.search import search_placement


@dataclass(frozen=True)
class WindowReport:
    """What :func:`place_by_windows` did: windows solved exactly, merges, fallbacks."""

    windows: int
    solved: int
    merged: int
    fallbacks: int
    dust: int


def dust_mask(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray, budget: int) -> np.ndarray:
    """The smallest buffers (whole size classes) whose combined max load is at most ``budget``.

    Returns a boolean mask. O(n log n * log s) for s distinct sizes.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    mask = np.zeros(sizes.size, dtype=bool)
    if budget <= 0 or sizes.size == 0:
        return mask
    classes = np.unique(sizes)
    lo_i, hi_i = 0, classes.size  # the answer: sizes < classes[k] for the largest feasible k
    while lo_i < hi_i:
        mid = (lo_i + hi_i + 1) // 2
        small = sizes < classes[mid] if mid < classes.size else np.ones(sizes.size, dtype=bool)
        if max_load(lower[small], upper[small], sizes[small]) <= budget:
            lo_i = mid
        else:
            hi_i = mid - 1
    if lo_i == 0:
        return mask
    return sizes < classes[lo_i] if lo_i < classes.size else np.ones(sizes.size, dtype=bool)


def _window_cuts(lower: np.ndarray, upper: np.ndarray, per_window: int) -> np.ndarray:
    """Cut times: every ``per_window``-th buffer start, plus the first and last moments."""
    starts = np.sort(lower)
    return np.unique(np.concatenate([[starts[0]], starts[::per_window][1:], [upper.max()]]))


class _Cover:
    """Which buffers overlap the union of some buffers' lifetimes (compressed time axis)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self.times = np.unique(np.concatenate([lower, upper]))
        self.slo = np.searchsorted(self.times, lower)
        self.shi = np.searchsorted(self.times, upper)

    def touching(self, group: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        cov = np.zeros(self.times.size + 1, dtype=np.int64)
        np.add.at(cov, self.slo[group], 1)
        np.add.at(cov, self.shi[group], -1)
        prefix = np.concatenate([[0], np.cumsum(np.cumsum(cov) > 0)])
        c = candidates
        return c[prefix[self.shi[c]] > prefix[self.slo[c]]]


@dataclass(frozen=True)
class WindowTry:
    """One node-limited search of a window: its preorders, measured on whole lifetimes or inside the window."""

    #: Measure the preorders on the part of each lifetime inside the window
    #: (the search's ``rank_span``) rather than on the whole lifetime.
    rank_in_window: bool
    #: The search's static preorders (:class:`~olla_onnx.place.preorder.Preorder`), round robin.
    preorders: tuple[str, ...]


#: The default tries of a window's search, in turn: MiniMalloc's preorders on whole lifetimes.
WINDOW_TRIES: tuple[WindowTry, ...] = (WindowTry(rank_in_window=False, preorders=MINIMALLOC_PREORDERS),)


def _solve_window(
    lo: np.ndarray,
    up: np.ndarray,
    sz: np.ndarray,
    free: np.ndarray,
    fixed: np.ndarray,
    off: np.ndarray,
    cap: int,
    span: tuple[int, int],
    deadline: float,
    tries: tuple[WindowTry, ...],
    max_rounds: int,
    node_budget: int,
) -> np.ndarray | None:
    """Offsets for ``free`` within ``cap`` around the ``fixed`` buffers, or None.

    Each try is one node-limited search; a proof of infeasibility ends the tries
    (it holds whatever the order).
    """
    sub = np.concatenate([free, fixed])
    given = np.concatenate([np.full(free.size, -1, dtype=np.int64), off[fixed]])
    for attempt in tries:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        rounds = 1  # node limits 2n, 4n, ... per preorder and round, within the budget
        while rounds < max_rounds and len(attempt.preorders) * free.size * (2 ** (rounds + 2) - 2) <= node_budget:
            rounds += 1
        res = search_placement(
            lo[sub], up[sub], sz[sub], cap, time_limit=left, preorders=attempt.preorders,
            max_rounds=rounds, fixed=given, rank_span=span if attempt.rank_in_window else None,
        )
        if res.status == "feasible":
            assert res.offsets is not None
            return res.offsets[: free.size]
        if res.status == "infeasible":
            return None
    return None


def place_by_windows(
    lower: np.ndarray,
    upper: np.ndarray,
    sizes: np.ndarray,
    capacity: int,
    deadline: float,
    per_window: int = 200,
    tries: tuple[WindowTry, ...] = WINDOW_TRIES,
    max_rounds: int = 4,
    node_budget: int = 8_000,
    merge_limit: int = 1500,
    dust_budget: int = 0,
    give_up: bool = False,
) -> tuple[np.ndarray, WindowReport]:
    """Offsets for every buffer from the hottest-window-first decomposition (see the module notes).

    ``capacity`` is the arena to aim for; ``deadline`` a ``time.perf_counter()``
    time after which remaining windows fall back to best fit. A window's
    search runs each of ``tries`` (see :data:`WINDOW_TRIES`) with at most
    ``node_budget`` nodes and ``max_rounds`` rounds; ``merge_limit`` caps the
    buffers of a merged window; ``dust_budget`` is the combined load of the
    dust left to the end. With ``give_up``, the first window that falls back
    ends the decomposition: everything not yet placed goes by best fit (a
    quick, valid answer above the capacity). The result is always a valid
    placement; its arena is ``max(offsets + sizes)``, possibly above
    ``capacity``.
    """
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n = sizes.size
    offsets = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return np.zeros(0, dtype=np.int64), WindowReport(0, 0, 0, 0, 0)
    dust = dust_mask(lower, upper, sizes, dust_budget) | (sizes == 0)
    big = np.flatnonzero(~dust)
    cap = int(capacity)
    if big.size:
        dust_load = max_load(lower[dust], upper[dust], sizes[dust])
        if cap - dust_load >= max_load(lower[big], upper[big], sizes[big]):
            cap -= dust_load  # room to stack the dust on top where no hole takes it
    lo, up, sz = lower[big], upper[big], sizes[big]
    off = np.full(big.size, -1, dtype=np.int64)
    report = {"windows": 0, "solved": 0, "merged": 0, "fallbacks": 0}
    if big.size:
        cover = _Cover(lo, up)
        cuts = _window_cuts(lo, up, per_window)
        times, load = load_profile(lo, up, sz)
        heat = []
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            k0 = max(int(np.searchsorted(times, a, side="right")) - 1, 0)
            k1 = max(int(np.searchsorted(times, b)), k0 + 1)
            heat.append(int(load[k0:k1].max()))
        group = np.full(big.size, -1, dtype=np.int64)
        for gid, w in enumerate(np.argsort(-np.asarray(heat), kind="stable").tolist()):
            a, b = int(cuts[w]), int(cuts[w + 1])
            free = np.flatnonzero((off < 0) & (lo < b) & (up > a))
            if free.size == 0:
                continue
            report["windows"] += 1
            merged = False
            while True:
                fixed = cover.touching(free, np.flatnonzero(off >= 0))
                got = _solve_window(lo, up, sz, free, fixed, off, cap, (a, b), deadline, tries, max_rounds, node_budget)
                if got is not None:
                    off[free] = got
                    group[free] = gid
                    report["solved"] += 1
                    break
                # Undo the windows around this one and solve them together with it, once.
                if not merged and fixed.size and time.perf_counter() < deadline:
                    undo = np.flatnonzero(np.isin(group, np.unique(group[fixed])))
                    if free.size + undo.size <= merge_limit:
                        off[undo], group[undo] = -1, -1
                        free = np.concatenate([free, undo])
                        merged = True
                        report["merged"] += 1
                        continue
                if give_up:
                    free = np.flatnonzero(off < 0)
                order = free[np.lexsort((lo[free], -(up[free] - lo[free])))]
                placed = best_fit(lo, up, sz, order, fixed=off)
                off[free] = placed[free]
                group[free] = gid
                cap = max(cap, int((off[free] + sz[free]).max()))
                report["fallbacks"] += 1
                break
            if give_up and report["fallbacks"]:
                break
        offsets[big] = off
    # Dust last, into the holes (best fit, largest first).
    d = np.flatnonzero(dust)
    if d.size:
        offsets = best_fit(lower, upper, sizes, d[np.lexsort((lower[d], -sizes[d]))], fixed=offsets)
    return offsets, WindowReport(dust=int(d.size), **report)
