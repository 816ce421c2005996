"""Greedy best-fit placement (what TFLite's and onnxruntime's planners do), under several orders.

Buffers are taken one at a time in a fixed order; each goes into the smallest
gap, among the buffers already placed that overlap it in time, that holds it
(ties: the lowest such gap); if no gap holds it, on top of them. The orders
tried are by size, by lifetime, by area (all descending) and by start time;
:func:`best_greedy` keeps the smallest arena.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

ORDERS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "size": lambda lo, up, sz: np.lexsort((lo, -(up - lo), -sz)),
    "lifetime": lambda lo, up, sz: np.lexsort((lo, -sz, -(up - lo))),
    "area": lambda lo, up, sz: np.lexsort((lo, -sz, -(up - lo) * sz)),
    "start": lambda lo, up, sz: np.lexsort((-sz, -(up - lo), lo)),
}


def best_fit(
    lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray, order: np.ndarray, fixed: np.ndarray | None = None
) -> np.ndarray:
    """Offsets from best-fit placement of the buffers in ``order``.

    ``fixed`` (optional) gives offsets of buffers already in place (-1: not
    placed); they keep them and the buffers of ``order`` fit around them.
    Valid by construction when the fixed buffers do not overlap each other.
    Cost: O(n * k) numpy work for k placed buffers that overlap in time, at
    most O(n^2).
    """
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n = sizes.size
    offsets = np.zeros(n, dtype=np.int64)
    plo = np.empty(n, dtype=np.int64)
    pup = np.empty(n, dtype=np.int64)
    poff = np.empty(n, dtype=np.int64)
    ptop = np.empty(n, dtype=np.int64)
    k = 0
    if fixed is not None:
        fixed = np.asarray(fixed, dtype=np.int64)
        f = np.flatnonzero((fixed >= 0) & (sizes > 0))
        k = f.size
        plo[:k], pup[:k], poff[:k], ptop[:k] = lower[f], upper[f], fixed[f], fixed[f] + sizes[f]
        offsets[fixed >= 0] = fixed[fixed >= 0]
        order = [i for i in np.asarray(order, dtype=np.int64).tolist() if fixed[i] < 0]
    for i in np.asarray(order, dtype=np.int64).tolist():
        size = int(sizes[i])
        off = 0
        if size > 0 and k:
            lo, up = lower[i], upper[i]
            hit = np.flatnonzero((plo[:k] < up) & (pup[:k] > lo))
            if hit.size:
                o = poff[hit]
                srt = np.argsort(o, kind="stable")
                o = o[srt]
                t = np.maximum.accumulate(ptop[hit][srt])
                # Gap j lies between the highest top below buffer j and buffer j's offset.
                starts = np.empty(o.size, dtype=np.int64)
                starts[0] = 0
                starts[1:] = t[:-1]
                gaps = o - starts
                fit = np.flatnonzero(gaps >= size)
                if fit.size:
                    j = fit[np.argmin(gaps[fit])]
                    off = int(starts[j])
                else:
                    off = int(t[-1])
        offsets[i] = off
        if size > 0:
            plo[k], pup[k], poff[k], ptop[k] = lower[i], upper[i], off, off + size
            k += 1
    return offsets


def best_greedy(
    lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray, orders: tuple[str, ...] = tuple(ORDERS)
) -> tuple[np.ndarray, int, str]:
    """Best-fit under each named order; returns ``(offsets, arena, order name)`` of the smallest arena."""
    best: tuple[np.ndarray, int, str] | None = None
    sizes = np.asarray(sizes, dtype=np.int64)
    for name in orders:
        off = best_fit(lower, upper, sizes, ORDERS[name](lower, upper, sizes))
        arena = int((off + sizes).max()) if sizes.size else 0
        if best is None or arena < best[1]:
            best = (off, arena, name)
    assert best is not None
    return best


def squeaky_wheel(
    lower: np.ndarray,
    upper: np.ndarray,
    sizes: np.ndarray,
    order: np.ndarray,
    target: int,
    deadline: float,
    max_rounds: int = 1000,
) -> tuple[np.ndarray, int, int]:
    """Iterated best-fit: buffers that end above ``target`` move to the front of the order.

    Squeaky-wheel optimisation (Joslin and Clements, JAIR 1999): rerun best-fit
    with the buffers that ended above ``target`` promoted ahead of the rest,
    keep the best arena, stop at ``target``, at ``deadline``
    (``time.perf_counter()`` seconds) or after ``max_rounds``. Returns
    ``(offsets, arena, rounds)``. Each round costs one :func:`best_fit`.
    """
    import time

    sizes = np.asarray(sizes, dtype=np.int64)
    cur = np.asarray(order, dtype=np.int64)
    best_off = best_fit(lower, upper, sizes, cur)
    best_arena = int((best_off + sizes).max()) if sizes.size else 0
    off = best_off
    rounds = 0
    while best_arena > target and rounds < max_rounds and time.perf_counter() < deadline:
        rounds += 1
        bad = (off + sizes) > target
        if not bad.any():
            break
        # Promote the offenders (in their current relative order) ahead of everyone else.
        pos = np.empty(cur.size, dtype=np.int64)
        pos[cur] = np.arange(cur.size)
        key = pos - np.where(bad, cur.size, 0)
        cur = np.argsort(key, kind="stable")
        off = best_fit(lower, upper, sizes, cur)
        arena = int((off + sizes).max())
        if arena < best_arena:
            best_off, best_arena = off, arena
    return best_off, best_arena, rounds
