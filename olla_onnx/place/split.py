"""Big buffers first (exact search), small ones last (best fit): a split by size class.

Training traces mix a few hundred large buffers (activations, weight-sized
gradients) with thousands of tiny ones (biases, scalars, shapes). The exact
search settles the large ones in a fraction of a second but drowns in the
tiny ones. For a size threshold ``c`` let *big* be the buffers of size at
least ``c`` and *small* the rest. Whenever

    max_load(big) + max_load(small) <= goal,

the big buffers searched within ``goal - max_load(small)`` leave a band of
``max_load(small)`` bytes on top; the small ones then go by best fit into the
holes between the big ones, or into that band. Best fit does not promise to
stay inside the band (it is a heuristic for a problem that is NP-hard even
for unit sizes around fixed obstacles), so the result is checked against the
goal, never assumed. Nothing here claims optimality.

Which threshold: every size class for which the inequality holds is a
candidate; candidates with fewer big buffers come first (a smaller search).
Every candidate gets one quick dive per preorder (``max_rounds=1``: at most
2n nodes), preorder by preorder; no long search (where the dives
fail, the search is lost in its heavy tail and other methods do better).
Cost: O(classes * n log n) to find the candidates, then one search and one
best fit (O(n * k)) per candidate tried.
"""

from __future__ import annotations

import time

import numpy as np

from olla_onnx.place.greedy import best_fit
from olla_onnx.place.preorder import MINIMALLOC_PREORDERS
from olla_onnx.place.problem import max_load
from olla_onnx.place.search import search_placement

#: Size classes tried as thresholds at most (spread over all classes).
MAX_CLASSES = 48
#: Candidates tried at most (fewest big buffers first).
MAX_CANDIDATES = 4
#: Rounds of the search per candidate and preorder: one dive of at most 2n
#: nodes. Measured on the model corpus: every split that landed with two
#: rounds (2n, then 4n) lands with one, and the failing ones waste a third
#: of the time they did, which the steps after the split need on tiny models.
SPLIT_ROUNDS = 1
#: The search's preorders, each dived once per candidate (no long search follows).
DIVE_PREORDERS = MINIMALLOC_PREORDERS


def split_candidates(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray, goal: int) -> list[tuple[int, int, int]]:
    """``(threshold, big buffers, max_load(small))`` for the size classes worth a try.

    A threshold qualifies when ``max_load(big) + max_load(small) <= goal`` and
    both sides are non-empty. Kept: the Pareto front of (fewer big buffers,
    more slack ``goal - max_load(big) - max_load(small)``: a looser search),
    sorted by the number of big buffers. Where sizes take more than
    ``MAX_CLASSES`` values, thresholds are that many classes spread evenly
    over the sorted classes. O(min(classes, MAX_CLASSES) * n log n).
    """
    out = []
    classes = np.unique(sizes)[1:]
    if classes.size > MAX_CLASSES:  # a spread of thresholds, not every class
        classes = np.unique(classes[np.linspace(0, classes.size - 1, MAX_CLASSES).astype(np.int64)])
    for c in classes.tolist():
        big = sizes >= c
        small_load = max_load(lower[~big], upper[~big], sizes[~big])
        if small_load == 0:
            continue
        slack = goal - max_load(lower[big], upper[big], sizes[big]) - small_load
        if slack >= 0:
            out.append((int(big.sum()), -slack, int(c), int(small_load)))
    front, most = [], -1
    for nb, neg_slack, c, small_load in sorted(out):
        if -neg_slack > most:
            front.append((c, nb, small_load))
            most = -neg_slack
    return front


def place_split(
    lower: np.ndarray,
    upper: np.ndarray,
    sizes: np.ndarray,
    goal: int,
    deadline: float,
    candidates: list[tuple[int, int, int]] | None = None,
) -> tuple[np.ndarray | None, int]:
    """Offsets from the best size split (see the module notes), or ``None`` if none was found.

    Stops at the first placement within ``goal``; otherwise returns the
    smallest arena reached (``None`` and 0 when no candidate's search
    succeeded). Sizes and ``goal`` are in the same units; offsets come out in
    them too. Every returned placement is valid (the small buffers are placed
    by best fit around the big ones). ``candidates``: the output of
    :func:`split_candidates` if already at hand.
    """
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if candidates is None:
        candidates = split_candidates(lower, upper, sizes, goal)
    cands = candidates[:MAX_CANDIDATES]
    best_off, best_arena = None, 0
    refuted: set[int] = set()
    # One dive (at most 2n nodes) per preorder and candidate, preorder
    # by preorder: the search either lands at once or is lost in a heavy tail.
    tries = [(c, small_load, preorder) for preorder in DIVE_PREORDERS for c, _, small_load in cands]
    for c, small_load, preorder in tries:
        left = deadline - time.perf_counter()
        if left <= 0 or (best_off is not None and best_arena <= goal):
            break
        if c in refuted:
            continue
        big = np.flatnonzero(sizes >= c)
        res = search_placement(
            lower[big], upper[big], sizes[big], goal - small_load, time_limit=left, preorders=(preorder,), max_rounds=SPLIT_ROUNDS
        )
        if res.status == "infeasible":
            refuted.add(c)  # proven: the big ones do not fit below the band
        if res.status != "feasible":
            continue
        assert res.offsets is not None
        fixed = np.full(sizes.size, -1, dtype=np.int64)
        fixed[big] = res.offsets
        small = np.flatnonzero(sizes < c)
        off = best_fit(lower, upper, sizes, small[np.lexsort((lower[small], -sizes[small]))], fixed=fixed)
        arena = int((off + sizes).max())
        if best_off is None or arena < best_arena:
            best_off, best_arena = off, arena
    return best_off, best_arena
