"""Lower bounds on the peak of every topological order, stronger than the per-node bound.

Min-cut bound (per node). When node ``v`` runs, the set ``S`` of nodes run so
far (``v`` included) is a down-set that contains ``v`` and none of its
descendants. The bytes live during that step are, for this ``S``: ``v``'s own
inputs and outputs, plus every other tensor whose producer is in ``S`` and that
still has a consumer outside ``S`` (or is a graph output, which never dies).
Whatever the order, the step of ``v`` sees *some* such ``S``, so

    peak >= base + max_v  min_{S}  live(S, v)

is sound. The inner minimum is a minimum closure problem, solved as a minimum
s-t cut (Picard 1976): the source side is ``S``; an infinite arc ``w -> p`` for
every dependency keeps ``S`` a down-set; ``source -> v`` and ``succ(v) -> sink``
(infinite) fix ``v`` in and its descendants out; a tensor ``t`` with producer
``p`` and consumers ``C`` gets a helper vertex ``h``, an arc ``p -> h`` of
capacity ``size(t)`` and infinite arcs ``h -> c`` for ``c`` in ``C``: a finite
cut pays ``size(t)`` exactly when ``p`` is in ``S`` and some consumer is not; a
graph output pays through ``p -> sink``. ``v``'s own tensors are added as a
constant instead. The ancestor/descendant bound of :mod:`olla_onnx.memory`
counts only the tensors cut for *every* such ``S``, so this bound dominates it
node by node.

scipy's max flow takes 32-bit capacities; when the sizes are too large they
are divided by a factor ``q`` and rounded *down*, which keeps the bound sound
(``q * floor(s / q) <= s``) and loosens it by less than ``q`` per cut tensor.

Nodes are tried from the highest live total the incumbent order has at them
(an upper bound of their minimum) downwards, and the search stops when that
upper bound cannot beat the best bound found, or at the deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from olla_onnx.schedule.reduce import Problem

_I32 = 2**31 - 1


@dataclass(frozen=True)
class CutBound:
    """Best per-node min-cut bound found (scaled units, resident excluded) and how far it got."""

    value: int
    node: int | None
    nodes_tried: int
    complete: bool


class _CutNetwork:
    """The flow network shared by all nodes; per node only some capacities change."""

    def __init__(self, problem: Problem):
        n = problem.n
        T = len(problem.size)
        self.n, self.T = n, T
        total = sum(problem.size) + 1
        self.q = 1 if total < 2**29 else -(-total // 2**29)
        cap_sizes = [s // self.q for s in problem.size]
        inf = sum(cap_sizes) + 1
        self.inf = inf
        src, snk = n + T, n + T + 1
        self.src, self.snk = src, snk
        rows: list[int] = []
        cols: list[int] = []
        caps: list[int] = []

        def arc(u: int, w: int, c: int) -> int:
            rows.append(u)
            cols.append(w)
            caps.append(c)
            return len(caps) - 1

        for w in range(n):
            for p in problem.preds[w]:
                arc(w, p, inf)
        self.tensor_arcs: list[list[int]] = []  # per tensor, the arcs that charge it
        for t in range(T):
            h = n + t
            p = problem.prod[t]
            if problem.persist[t]:
                self.tensor_arcs.append([arc(p, snk, cap_sizes[t])])
            else:
                arcs = [arc(p, h, cap_sizes[t])]
                for c in problem.cons[t]:
                    arc(h, c, inf)
                self.tensor_arcs.append(arcs)
        self.src_arc = [arc(src, v, 0) for v in range(n)]
        self.snk_arc = [arc(v, snk, 0) for v in range(n)]
        import scipy.sparse as sp

        N = n + T + 2
        mat = sp.coo_matrix((np.asarray(caps, dtype=np.int64), (np.asarray(rows), np.asarray(cols))), shape=(N, N)).tocsr()
        mat.sum_duplicates()
        self.mat = mat
        # position of each arc in the CSR data (duplicates were merged; keep a map by (row, col))
        self.caps = np.asarray(caps, dtype=np.int64)
        self.rows = np.asarray(rows)
        self.cols = np.asarray(cols)
        self.base_caps = self.caps.copy()

    def min_cut(self, problem: Problem, v: int) -> int:
        import scipy.sparse as sp
        from scipy.sparse.csgraph import maximum_flow

        caps = self.base_caps.copy()
        own = set(problem.outs[v]) | set(problem.ins[v])
        for t in own:
            for e in self.tensor_arcs[t]:
                caps[e] = 0
        caps[self.src_arc[v]] = self.inf
        for w in problem.succs[v]:
            caps[self.snk_arc[w]] = self.inf
        N = self.n + self.T + 2
        keep = caps > 0
        mat = sp.csr_matrix(
            (caps[keep].astype(np.int32), (self.rows[keep], self.cols[keep])), shape=(N, N)
        )
        mat.sum_duplicates()
        flow = maximum_flow(mat, self.src, self.snk).flow_value
        return int(flow) * self.q


def min_cut_bound(
    problem: Problem,
    incumbent: Sequence[int] | None = None,
    at_least: int = 0,
    deadline: float | None = None,
) -> CutBound:
    """The per-node min-cut lower bound (scaled, resident excluded); see the module docstring.

    ``incumbent`` (a topological order) orders and prunes the nodes tried;
    ``at_least`` is a bound already known (nodes that cannot beat it are
    skipped). ``complete`` is False when the deadline cut the search short (the
    value is still a sound bound). Cost: one max flow on n + T vertices per node tried.
    """
    n = problem.n
    if n == 0:
        return CutBound(0, None, 0, True)
    fixed = [sum(problem.size[t] for t in set(problem.outs[v]) | set(problem.ins[v])) for v in range(n)]
    if incumbent is not None:
        live = problem.live_per_step(incumbent)
        ub = np.empty(n, dtype=np.int64)
        ub[np.asarray(incumbent)] = live
    else:
        ub = np.full(n, np.iinfo(np.int64).max)
    best = max(at_least, max(fixed))
    best_node = int(np.argmax(fixed)) if max(fixed) >= at_least else None
    net = _CutNetwork(problem)
    tried = 0
    for v in np.argsort(-ub, kind="stable"):
        v = int(v)
        if ub[v] <= best:
            break
        if deadline is not None and time.perf_counter() > deadline:
            return CutBound(best, best_node, tried, False)
        tried += 1
        val = fixed[v] + net.min_cut(problem, v)
        if val > best:
            best, best_node = val, v
    return CutBound(best, best_node, tried, True)


def final_step_bound(problem: Problem) -> int:
    """Scaled bound from the last step: every graph output is live then, plus the last node's own tensors.

    Sound: the last node of any order is a node without successors; when it runs
    every node has run, so every graph output (which never dies) is live, and so
    are the last node's inputs and outputs. The minimum over the candidates for
    last node is therefore a lower bound on the last step, hence on the peak.
    Training graphs write every parameter and optimizer state as outputs, so
    this bound is often the tightest there. O(n + E).
    """
    if problem.n == 0:
        return 0
    persist = sum(s for s, p in zip(problem.size, problem.persist) if p)
    best = None
    for v in range(problem.n):
        if problem.succs[v]:
            continue
        own = {t for t in problem.ins[v] if not problem.persist[t]} | {t for t in problem.outs[v] if not problem.persist[t]}
        val = persist + sum(problem.size[t] for t in own)
        best = val if best is None or val < best else best
    return int(best or 0)
