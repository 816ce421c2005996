"""The nested down-set bound: one integer program over the moments a few given nodes run.

The per-node min cut (:mod:`.bounds`) lets every node pick its own best
down-set (the set of nodes run before it). When two or more nodes each need
a low-load moment of their own (two convolutions with big workspaces, say),
the down-sets they pick may be inconsistent: in one order, the down-sets
current while ``v_1, ..., v_k`` run (in that order) are *nested*,
``D_1 ⊆ D_2 ⊆ ... ⊆ D_k``, with ``v_i`` in ``D_j`` for ``i < j``.

:func:`chain_value` minimises ``max_i live(D_i, v_i)`` over nested, closed
down-sets with an integer program written in CVXPY and solved by SCIP. Every
order that runs the chain in that sequence yields a feasible point whose
objective is at most its peak, so the optimum (and, on a time limit, SCIP's
dual bound) is a lower bound for every such order. :func:`chain_bound` takes
the smallest value over the sequences the graph allows, so it bounds every
order. Sizes are the problem's scaled sizes; resident bytes are excluded.

The live rule is the simulator's: while ``v`` runs after ``D``, tensor ``t``
is live iff its producer is in ``D ∪ {v}`` and it is a graph output, or it was
made by ``v``, or one of its consumers is not in ``D``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from olla_onnx.ir.graph import reachability, set_bits
from olla_onnx.schedule.reduce import Problem, topo_order


@dataclass(frozen=True)
class ChainValue:
    """``value``: sound lower bound (scaled) for every order running ``chain`` in sequence; None if no order does.

    ``exact`` is True when SCIP proved the optimum (then ``value`` is attained by nested down-sets).
    ``downsets``: per chain position, the nodes of SCIP's best solution's down-set (None without one)."""

    chain: tuple[int, ...]
    value: int | None
    exact: bool
    status: str
    seconds: float
    downsets: tuple[frozenset[int], ...] | None = None


def _fixings(problem: Problem, chain: Sequence[int], anc: list[int], desc: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per chain position, the nodes forced into (1) and out of (0) its down-set; None when inconsistent."""
    k, n = len(chain), problem.n
    ones = np.zeros((k, n), dtype=bool)
    zeros = np.zeros((k, n), dtype=bool)

    def bits(mask: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[set_bits(mask)] = True
        return out

    anc_b = [bits(anc[v]) for v in chain]
    desc_b = [bits(desc[v]) for v in chain]
    for i in range(k):
        for j in range(k):
            if j < i:  # v_j ran before v_i: it and its ancestors are in D_i
                ones[i] |= anc_b[j]
                ones[i, chain[j]] = True
            else:  # v_j runs at or after v_i: it and its descendants are not
                zeros[i] |= desc_b[j]
                zeros[i, chain[j]] = True
        ones[i] |= anc_b[i]
    if (ones & zeros).any():
        return None
    return ones, zeros


def chain_value(
    problem: Problem,
    chain: Sequence[int],
    time_limit: float,
    upper: int | None = None,
    reach: tuple[list[int], list[int]] | None = None,
) -> ChainValue:
    """Lower bound on the peak of every order that runs ``chain`` in this sequence (see module docstring).

    ``upper`` (a known peak, scaled) is a cutoff: when SCIP shows nothing below
    it is feasible, the value returned is ``upper``. ``reach``: the problem's
    (ancestor, descendant) bitsets when already known. Cost: one MILP with
    ``k * n`` binaries (fixed ones presolved away) and ``k * T`` continuous
    live indicators, at most ``time_limit`` seconds.
    """
    import cvxpy as cp
    import scipy.sparse as sp

    t0 = time.perf_counter()
    chain = tuple(int(v) for v in chain)
    k, n, T = len(chain), problem.n, len(problem.size)
    anc, desc = reach if reach is not None else reachability(problem.preds, problem.succs, topo_order(problem))
    fixed = _fixings(problem, chain, anc, desc)
    if fixed is None:
        return ChainValue(chain, None, True, "no order runs the chain in this sequence", time.perf_counter() - t0)
    ones, zeros = fixed
    free = ~(ones | zeros)
    nfree = int(free.sum())
    # X (k*n, flattened row-major) = M @ x + c: the down-set indicators, free entries as variables
    flat_free = np.flatnonzero(free.ravel())
    M = sp.csr_matrix((np.ones(nfree), (flat_free, np.arange(nfree))), shape=(k * n, max(nfree, 1)))
    c = ones.ravel().astype(float)
    x = cp.Variable(max(nfree, 1), boolean=True)
    X = M @ x + c
    # Z = D ∪ {v_i}
    zc = np.zeros((k, n))
    zc[np.arange(k), list(chain)] = 1.0
    Z = X + zc.ravel()

    def sel(rows: Sequence[int], width: int) -> sp.csr_matrix:
        r = len(rows)
        return sp.csr_matrix((np.ones(r), (np.arange(r), np.asarray(rows, dtype=np.int64))), shape=(r, width))

    cons = []
    # closure: u in D_i implies its predecessors are; nesting: D_i within D_{i+1}
    eu = [(i * n + u, i * n + p) for i in range(k) for u in range(n) if free[i, u] for p in problem.preds[u]]
    if eu:
        a, b = zip(*eu)
        cons.append(sel(a, k * n) @ X <= sel(b, k * n) @ X)
    nest = [(i * n + u, (i + 1) * n + u) for i in range(k - 1) for u in range(n) if free[i, u] or free[i + 1, u]]
    if nest:
        a, b = zip(*nest)
        cons.append(sel(a, k * n) @ X <= sel(b, k * n) @ X)
    L = cp.Variable(k * T, nonneg=True) if T else None
    peak = cp.Variable(nonneg=True)
    if T:
        lt, lz, lx = [], [], []  # L[i,t] >= Z[i,prod t] - X[i,c]
        pt, pz = [], []  # L[i,t] >= Z[i,prod t] (graph outputs)
        dt, dz, dx = [], [], []  # L[i,t] >= Z[i,p] - X[i,p] (no reader: live at its producer's step only)
        for i in range(k):
            for t in range(T):
                p = problem.prod[t]
                if zeros[i, p] and p != chain[i]:
                    continue  # not made yet
                if problem.persist[t]:
                    pt.append(i * T + t)
                    pz.append(i * n + p)
                elif not problem.cons[t]:
                    dt.append(i * T + t)
                    dz.append(i * n + p)
                    dx.append(i * n + p)
                else:
                    for cn in problem.cons[t]:
                        lt.append(i * T + t)
                        lz.append(i * n + p)
                        lx.append(i * n + cn)
        if lt:
            cons.append(sel(lt, k * T) @ L >= sel(lz, k * n) @ Z - sel(lx, k * n) @ X)
        if pt:
            cons.append(sel(pt, k * T) @ L >= sel(pz, k * n) @ Z)
        if dt:
            cons.append(sel(dt, k * T) @ L >= sel(dz, k * n) @ Z - sel(dx, k * n) @ X)
        size = np.asarray(problem.size, dtype=float)
        W = sp.kron(sp.identity(k), sp.csr_matrix(size.reshape(1, -1)), format="csr")
        cons.append(W @ L <= peak)
    if upper is not None:
        cons.append(peak <= upper)
    prob = cp.Problem(cp.Minimize(peak), cons)
    left = max(0.1, time_limit - (time.perf_counter() - t0))
    try:
        prob.solve(solver=cp.SCIP, scip_params={"limits/time": left, "parallel/maxnthreads": 1})
    except cp.error.SolverError as exc:
        return ChainValue(chain, None, False, f"solver error: {exc}", time.perf_counter() - t0)
    extra = prob.solver_stats.extra_stats or {}
    status = str(extra.get("scip_status", prob.status))
    scip = extra.get("model")
    secs = time.perf_counter() - t0
    if status == "infeasible" and upper is not None:
        # nothing at or below the cutoff: every such order peaks above ``upper``
        return ChainValue(chain, int(upper) + 1, True, status, secs)
    if scip is None:
        return ChainValue(chain, None, False, status, secs)
    dual = float(scip.getDualbound())
    if not math.isfinite(dual):
        return ChainValue(chain, None, False, status, secs)
    # peaks are integers (scaled sizes): round the dual bound up, with a little slack for tolerances
    value = max(0, math.ceil(dual - 1e-6))
    downsets = None
    xv = x.value
    if xv is None and status == "optimal":
        xv = np.zeros(max(nfree, 1))  # no constraint reads x (CVXPY left it out): any choice is optimal
    if xv is not None:
        Xv = np.rint(M @ np.asarray(xv).ravel() + c).reshape(k, n) > 0.5
        downsets = tuple(frozenset(int(u) for u in np.flatnonzero(row)) for row in Xv)
    return ChainValue(chain, value, status == "optimal", status, secs, downsets)


def order_from_downsets(chain: Sequence[int], downsets: Sequence[frozenset[int]], order: Sequence[int]) -> list[int]:
    """The order that runs ``D_1``, ``v_1``, ``D_2 - D_1 - {v_1}``, ``v_2``, ..., then the rest; each part in ``order``'s sequence.

    With nested, predecessor-closed down-sets (as :func:`chain_value` returns)
    and a topological ``order``, the result is topological and the live total
    while each ``v_i`` runs is exactly that of ``D_i``. O(k n)."""
    placed: set[int] = set()
    out: list[int] = []
    for v, down in zip(chain, downsets):
        for u in order:
            if u in down and u not in placed:
                out.append(u)
                placed.add(u)
        if v not in placed:
            out.append(v)
            placed.add(v)
    out.extend(u for u in order if u not in placed)
    return out


def _sequences(anc: list[int], nodes: Sequence[int]) -> list[tuple[int, ...]]:
    """The sequences of ``nodes`` that some topological order runs them in."""
    return [s for s in itertools.permutations(nodes)
            if all(not (anc[s[i]] >> s[j]) & 1 for i in range(len(s)) for j in range(i + 1, len(s)))]


def chain_bound(
    problem: Problem,
    nodes: Sequence[int],
    time_limit: float,
    upper: int | None = None,
    reach: tuple[list[int], list[int]] | None = None,
) -> ChainValue | None:
    """The smallest :func:`chain_value` over every sequence of ``nodes`` some order allows: a bound for every order.

    Sequences the reachability forbids are skipped; at most 24 (4 nodes)
    are tried, sharing ``time_limit``. Returns None when a sequence ran out of
    time without a finite dual bound (then nothing is proven).
    """
    nodes = tuple(dict.fromkeys(int(v) for v in nodes))
    if len(nodes) > 4:
        raise ValueError("chain_bound takes at most 4 nodes")
    reach = reach if reach is not None else reachability(problem.preds, problem.succs, topo_order(problem))
    seqs = _sequences(reach[0], nodes)
    deadline = time.perf_counter() + time_limit
    best: ChainValue | None = None
    for m, seq in enumerate(seqs):
        left = (deadline - time.perf_counter()) / (len(seqs) - m)
        if left <= 0:
            return None
        cv = chain_value(problem, seq, left, upper, reach)
        if cv.status.startswith("no order"):
            continue
        if cv.value is None:
            return None
        if best is None or cv.value < best.value:
            best = cv
        if best.value == 0:
            break  # no sequence can do better
    return best


def chain_step(
    problem: Problem,
    order: Sequence[int],
    lower: int,
    deadline: float,
    max_nodes: int = 4,
    max_sequences: int = 6,
    reach: tuple[list[int], list[int]] | None = None,
) -> tuple[list[int] | None, int]:
    """One round of the nested down-set program around the peak of ``order``: (an order or None, a bound).

    The chain is the nodes at ``order``'s highest live steps (distinct, at most
    ``max_nodes``, fewer when their sequences would exceed ``max_sequences``).
    The program runs with ``order``'s peak minus one as cutoff, so it either
    finds nested down-sets below that peak (the order built from them, see
    :func:`order_from_downsets`, is returned for repair by the caller) or proves
    there are none for every sequence (the bound returned is then the peak).
    The bound returned is at least ``lower`` and sound for every order.
    """
    peak = problem.peak(order)
    if peak <= lower or problem.n < 2:
        return None, lower
    live = problem.live_per_step(order)
    reach = reach if reach is not None else reachability(problem.preds, problem.succs, topo_order(problem))
    anc = reach[0]
    nodes: list[int] = []
    for step in np.argsort(-live, kind="stable"):
        v = int(order[int(step)])
        if v in nodes:
            continue
        if len(_sequences(anc, nodes + [v])) > max_sequences:
            continue
        nodes.append(v)
        if len(nodes) == max_nodes:
            break
    left = deadline - time.perf_counter()
    if left <= 0.05:
        return None, lower
    cv = chain_bound(problem, nodes, left, upper=peak - 1, reach=reach)
    if cv is None or cv.value is None:
        return None, lower
    bound = max(lower, min(cv.value, peak))
    new = order_from_downsets(cv.chain, cv.downsets, order) if cv.downsets is not None and cv.value < peak else None
    return new, bound
