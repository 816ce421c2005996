"""Local improvement: re-solve windows of consecutive steps around the peak exactly.

Moving nodes within a window of ``k`` consecutive steps of a topological order
(keeping it topological) only changes the live totals inside the window (see
:mod:`olla_onnx.schedule.dp`). So each window is solved by the exact DP, asking
for a window maximum strictly below the current peak: an accepted move never
raises any step to the peak and removes at least one peak step; the peak drops
once no step is left at it. This subsumes every single-node move within the
node's window of ``k`` steps.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from olla_onnx.schedule.dp import solve_window
from olla_onnx.schedule.reduce import Problem


def improve_windows(
    problem: Problem,
    order: Sequence[int],
    deadline: float,
    sizes: Sequence[int] = (12, 24, 48, 96),
    max_total: int = 200_000,
) -> list[int]:
    """Improve ``order`` by exact DP on windows around its peak steps until no window helps or time is up.

    Returns an order whose peak is at most that of ``order`` (never worse).
    Cost per window: the DP over its down-sets, capped at ``max_total`` states.
    """
    cur = list(order)
    n = problem.n
    if n < 2:
        return cur
    live = problem.live_per_step(cur)
    failed: set[tuple[int, int, int]] = set()  # (a, b, peak) windows known not to help
    while time.perf_counter() < deadline:
        peak = int(live.max())
        steps = np.nonzero(live == peak)[0]
        moved = False
        for k in sizes:
            k = min(k, n)
            for s in steps[:8]:
                for a in sorted({int(s) - k // 2, int(s) - k + 1, int(s)}):
                    a = max(0, min(a, n - k))
                    b = a + k
                    if (a, b, peak) in failed:
                        continue
                    if time.perf_counter() > deadline:
                        return cur
                    outside = max(int(live[:a].max(initial=0)), int(live[b:].max(initial=0)))
                    res = solve_window(problem, cur, a, b, peak, min(outside, peak - 1), None, deadline, max_total)
                    if res.order is not None:
                        cur = list(res.order)
                        live = problem.live_per_step(cur)
                        moved = True
                        break
                    failed.add((a, b, peak))
                if moved:
                    break
            if moved:
                break
            if k == n:
                break
        if not moved:
            break
    return cur
