"""The time-indexed integer program (OLLA/MODeL style) in CVXPY, solved by SCIP.

Model (scaled sizes, resident tensors removed; n nodes run in n steps, one per step):

* ``Y[v, s]`` binary: node ``v`` has run by the end of step ``s``. Each row is
  non-decreasing and ends at 1; column ``s`` sums to ``s + 1`` (one node per step).
* ASAP/ALAP windows fix ``Y[v, s] = 0`` before ``asap[v]`` and ``1`` from ``alap[v]``.
* Dependencies: ``Y[v, s] <= Y[p, s - 1]`` (``p`` ran in an earlier step).
* ``L[t, s]`` in [0, 1] is forced up to 1 while tensor ``t`` is live at step ``s``:
  ``L[t, s] >= Y[p, s] - Y[c, s - 1]`` for every consumer ``c`` (made, not yet
  read by ``c``); a graph output from its producer on (``L >= Y[p, s]``); a
  tensor nobody reads at its producer's step only.
* ``peak >= size @ L[:, s]`` for every step; minimise ``peak``.

Every constraint family is one vectorized expression over sparse selection
matrices. The incumbent enters as a cutoff (``peak <= incumbent``): CVXPY's
SCIP interface ignores ``warm_start``, so the incumbent's value prunes the
tree instead, and the incumbent is kept whenever SCIP does not beat it.
Statuses are read from SCIP itself: only ``optimal`` is a proof; on a time
limit the dual bound is still a sound lower bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from olla_onnx.schedule.reduce import Problem, windows


@dataclass(frozen=True)
class IlpResult:
    """SCIP's outcome. ``peak`` and ``bound`` are scaled; ``optimal`` only on SCIP status 'optimal'."""

    order: list[int] | None
    peak: int | None
    bound: int | None
    optimal: bool
    status: str
    seconds: float


@dataclass(frozen=True)
class IlpModel:
    problem: Any  # the cvxpy.Problem
    Y: Any
    peak: Any


def build_model(problem: Problem, upper: int | None = None, lower: int = 0) -> IlpModel:
    """The CVXPY model of ``problem``; ``upper`` (an incumbent's scaled peak) and ``lower`` bound the peak."""
    import cvxpy as cp
    import scipy.sparse as sp

    n = problem.n
    T = len(problem.size)
    asap, alap = windows(problem)
    Y = cp.Variable((n, n), boolean=True)
    L = cp.Variable((T, n), nonneg=True) if T else None
    peak = cp.Variable(nonneg=True)
    cons = []
    steps = np.arange(n)
    zero_mask = (steps[None, :] < asap[:, None]).astype(float)
    one_mask = (steps[None, :] >= alap[:, None]).astype(float)
    if zero_mask.any():
        cons.append(cp.multiply(zero_mask, Y) == 0)
    if one_mask.any():
        cons.append(cp.multiply(one_mask, Y) == one_mask)
    if n > 1:
        cons.append(Y[:, 1:] >= Y[:, :-1])
    cons.append(cp.sum(Y, axis=0) == steps + 1)
    # Y shifted one step: done before step s
    shift = sp.csr_matrix((np.ones(max(n - 1, 0)), (np.arange(n - 1), np.arange(1, n))), shape=(n, n))
    Yprev = Y @ shift

    def select(idx: Sequence[int], width: int) -> sp.csr_matrix:
        k = len(idx)
        return sp.csr_matrix((np.ones(k), (np.arange(k), np.asarray(idx, dtype=np.int64))), shape=(k, width))

    ev = [v for v in range(n) for _ in problem.preds[v]]
    ep = [p for v in range(n) for p in problem.preds[v]]
    if ev:
        cons.append(select(ev, n) @ Y <= select(ep, n) @ Yprev)
        # a node with a predecessor cannot run at step 0
        cons.append(select(ev, n) @ Y[:, 0] <= 0)
    if T:
        pt, pc = [], []
        persist, dead = [], []
        for t in range(T):
            if problem.persist[t]:
                persist.append(t)
            elif not problem.cons[t]:
                dead.append(t)
            for c in problem.cons[t]:
                pt.append(t)
                pc.append(c)
        prod = np.asarray(problem.prod)
        if pt:
            cons.append(select(pt, T) @ L >= select(prod[pt], n) @ Y - select(pc, n) @ Yprev)
        if persist:
            cons.append(select(persist, T) @ L >= select(prod[persist], n) @ Y)
        if dead:
            cons.append(select(dead, T) @ L >= select(prod[dead], n) @ (Y - Yprev))
        cons.append(np.asarray(problem.size, dtype=float) @ L <= peak)
    if upper is not None:
        cons.append(peak <= upper)
    if lower:
        cons.append(peak >= lower)
    return IlpModel(cp.Problem(cp.Minimize(peak), cons), Y, peak)


def solve_model(model: IlpModel, time_limit: float, threads: int = 1) -> tuple[list[int] | None, str, float | None]:
    """Solve with SCIP for at most ``time_limit`` seconds: (order or None, SCIP status, dual bound or None)."""
    import cvxpy as cp

    try:
        model.problem.solve(solver=cp.SCIP, scip_params={"limits/time": max(0.1, float(time_limit)), "parallel/maxnthreads": threads})
    except cp.error.SolverError:
        return None, "solver error", None
    extra = model.problem.solver_stats.extra_stats or {}
    status = str(extra.get("scip_status", model.problem.status))
    scip = extra.get("model")
    bound = float(scip.getDualbound()) if scip is not None else None
    order = None
    if model.Y.value is not None:
        Y = np.rint(model.Y.value).astype(np.int64)
        first = np.argmax(Y, axis=1)  # the step each node runs
        order = [int(v) for v in np.argsort(first, kind="stable")]
    return order, status, bound


def solve_ilp(problem: Problem, incumbent: Sequence[int], deadline: float, lower: int = 0) -> IlpResult:
    """Build and solve the model with the incumbent as cutoff, until ``deadline`` (perf_counter)."""
    t0 = time.perf_counter()
    inc_peak = problem.peak(incumbent)
    model = build_model(problem, upper=inc_peak, lower=lower)
    order, status, bound = solve_model(model, deadline - time.perf_counter())
    peak = None
    if order is not None:
        peak = problem.peak(order) if _topological(problem, order) else None
        if peak is None:
            order = None
    lb = None
    if bound is not None and math.isfinite(bound):
        lb = max(lower, math.ceil(bound - 1e-6 * max(1.0, abs(bound))))
    optimal = status == "optimal" and peak is not None
    return IlpResult(order, peak, lb, optimal, status, time.perf_counter() - t0)


def _topological(problem: Problem, order: Sequence[int]) -> bool:
    if sorted(order) != list(range(problem.n)):
        return False
    pos = {v: s for s, v in enumerate(order)}
    return all(pos[p] < pos[v] for v in range(problem.n) for p in problem.preds[v])
