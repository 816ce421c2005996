"""Decomposition for graphs too wide for the whole-graph DP: segments of an order, solved apart.

An incumbent order is cut into consecutive segments at steps where few bytes
are live (the seams); every segment is re-solved by the exact DP to the
smallest maximum it can have (a segment's order changes live totals inside
it only, see :mod:`olla_onnx.schedule.dp`), the segments are stitched back in
place, and :func:`olla_onnx.schedule.local.improve_windows` then works across
the seams. The result is never worse than the incumbent. It is not a proof of
optimality: the segments' node sets come from one order.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from olla_onnx.schedule.fastdp import solve_window_fast
from olla_onnx.schedule.reduce import Problem


def seams(live: np.ndarray, segment: int) -> list[int]:
    """Cut steps: in each stretch of about ``segment`` steps, the step after the least live total."""
    n = len(live)
    cuts = [0]
    a = 0
    while a + segment < n:
        lo = a + segment // 2
        hi = min(n - 1, a + segment + segment // 2)
        cut = lo + int(np.argmin(live[lo:hi])) + 1
        cuts.append(cut)
        a = cut
    cuts.append(n)
    return cuts


def solve_segments(
    problem: Problem,
    order: Sequence[int],
    deadline: float,
    segment: int = 64,
    max_total: int = 100_000,
) -> list[int]:
    """Re-solve each segment of ``order`` (seams at low live totals) to its own smallest maximum.

    Segments whose DP runs over ``max_total`` states or past the deadline keep their order.
    """
    cur = list(order)
    live = problem.live_per_step(cur)
    cuts = seams(live, segment)
    # highest segments first: they decide the peak
    segs = sorted(zip(cuts[:-1], cuts[1:]), key=lambda ab: -int(live[ab[0]:ab[1]].max()))
    for a, b in segs:
        if time.perf_counter() > deadline:
            break
        upper = int(live[a:b].max())
        res = solve_window_fast(problem, cur, a, b, upper, 0, deadline, max_total)
        if res.order is not None:
            cur = list(res.order)
            live = problem.live_per_step(cur)
    return cur
