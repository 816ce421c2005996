"""Placement as a mixed-integer program (OLLA's formulation), solved by SCIP through CVXPY.

For every pair ``(i, j)`` of buffers alive at the same time a binary ``z``
says which one lies below::

    x_i + s_i <= x_j + M (1 - z_ij)        (i below j when z_ij = 1)
    x_j + s_j <= x_i + M z_ij              (j below i when z_ij = 0)
    x_i + s_i <= H,   minimise H

with ``M`` an upper bound on the arena (the greedy one). The model has one
binary per overlapping pair, so it pays only for a few hundred buffers; the
exact search in :mod:`olla_onnx.place.search` is the tool for anything larger.
Model building and solving are separate (:func:`build_model`, :func:`solve_ilp`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from olla_onnx.place.greedy import best_greedy
from olla_onnx.place.problem import check_placement, max_load


@dataclass(frozen=True)
class IlpResult:
    """``offsets`` (or ``None``), ``arena``, whether SCIP proved it optimal, the CVXPY status, seconds."""

    offsets: np.ndarray | None
    arena: int | None
    optimal: bool
    status: str
    seconds: float


def overlapping_pairs(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(I, J)``, ``I < J``, of the pairs alive at the same time. O(n^2) memory-light numpy."""
    lo = np.asarray(lower)[:, None]
    up = np.asarray(upper)[:, None]
    m = (lo < up.T) & (lo.T < up)
    I, J = np.nonzero(np.triu(m, k=1))
    return I.astype(np.int64), J.astype(np.int64)


def build_model(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray, big_m: int):
    """The CVXPY problem and its variables ``(problem, x, H)`` (vectorised constraints)."""
    import cvxpy as cp

    n = sizes.size
    s = np.asarray(sizes, dtype=float)
    I, J = overlapping_pairs(lower, upper)
    x = cp.Variable(n, integer=True)
    H = cp.Variable()
    cons = [x >= 0, x + s <= H, H >= max_load(lower, upper, sizes), H <= big_m]
    if I.size:
        z = cp.Variable(I.size, boolean=True)
        cons += [
            x[I] + s[I] <= x[J] + big_m * (1 - z),
            x[J] + s[J] <= x[I] + big_m * z,
        ]
    return cp.Problem(cp.Minimize(H), cons), x, H


def solve_ilp(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray, time_limit: float = 60.0) -> IlpResult:
    """Minimise the arena with SCIP; every returned placement passes the checker.

    ``optimal`` is true only for CVXPY status ``optimal`` (a time-limit or
    inaccurate status is not a proof). Cost: exponential in the worst case, one
    binary per overlapping pair.
    """
    import cvxpy as cp

    t0 = time.perf_counter()
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size == 0:
        return IlpResult(np.zeros(0, dtype=np.int64), 0, True, "optimal", 0.0)
    g_off, g_arena, _ = best_greedy(lower, upper, sizes)
    problem, x, _ = build_model(lower, upper, sizes, max(g_arena, 1))
    try:
        problem.solve(solver=cp.SCIP, scip_params={"limits/time": float(time_limit)})
    except cp.error.SolverError as exc:  # SCIP gave up without a solution
        return IlpResult(g_off, g_arena, False, f"solver error: {exc}", time.perf_counter() - t0)
    status = str(problem.status)
    if x.value is None:
        return IlpResult(g_off, g_arena, False, status, time.perf_counter() - t0)
    off = np.rint(x.value).astype(np.int64)
    try:
        arena = check_placement(lower, upper, sizes, off)
    except ValueError:
        return IlpResult(g_off, g_arena, False, status + " (rounded solution invalid; greedy kept)", time.perf_counter() - t0)
    if arena > g_arena:
        off, arena = g_off, g_arena
    return IlpResult(off, arena, status == cp.OPTIMAL, status, time.perf_counter() - t0)
