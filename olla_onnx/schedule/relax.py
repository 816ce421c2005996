"""Lower bounds from a relaxed subproblem: the nodes of a region ``W``, solved exactly by the DP.

Any set ``W`` of nodes gives a smaller scheduling problem whose optimum is a
lower bound on the optimum of the whole graph (:func:`region_relaxation`).
The nodes outside ``W`` are dropped; what they imply is kept where it holds
for every order:

* precedence: ``w1`` before ``w2`` when ``w2`` is a descendant of ``w1`` in the
  whole graph (paths through dropped nodes bind too);
* a tensor is *born* in the relaxation when a node of ``B = W ∩ Desc*(prod)``
  runs (its producer has run by then in every order; ``Desc*`` = descendants
  or self). A tensor made in ``W`` is born with its producer. A tensor made
  outside gets a virtual producer: a node with no inputs that must run before
  the minimal nodes of ``B`` (tensors whose ``B`` has the same minimal nodes
  share one virtual node);
* it *dies* after every relaxed consumer ran: the nodes of ``D = W ∩ Anc*(C)``
  (``C`` its consumers: each node of ``D`` runs no later than some consumer)
  that are descendants of its relaxed producer; a graph output never dies.
  A tensor made outside with no relaxed consumer that is not a graph output is
  dropped.

Why ``opt(relaxed) <= opt(graph)``: take any order of the graph, keep the
nodes of ``W`` in its order and put each virtual node directly before the
first node of its ``B``; this order is topological for the relaxation. At
the step of a node ``w`` of ``W``, every tensor the relaxation holds is live
in the graph's order too: its producer ran (a node of ``B`` ran at or before
``w``) and it is a graph output or a consumer has not run (some node of ``D``,
an ancestor or self of that consumer, runs at or after ``w``). At a virtual
step, the relaxation holds what it held after the previous step plus the
virtual node's outputs, all of which it still holds while the next node of
``W`` (the first of ``B``) runs: a tensor live after a step is live at the
next one, only virtual nodes (which read nothing) lie in between, and each
virtual output has a relaxed consumer in ``B``, run at or after that node.
So each step of the relaxed order holds at most what some step of the
graph's order holds, and the relaxed optimum is at most the graph's peak, for
every order, hence at most the optimum. With ``W`` every node, the relaxation
is the graph itself; with ``W = {v}`` it is the ancestor/descendant bound at ``v``.

Sizes, ``scale`` and ``base`` are the original problem's, so relaxed peaks
compare with the original's directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from olla_onnx.ir.graph import reachability, set_bits
from olla_onnx.schedule.reduce import Problem, topo_order


@dataclass(frozen=True)
class Relaxation:
    """A relaxed problem: ``problem`` has nodes ``0..len(nodes)-1`` for ``nodes`` (in the graph's
    indices), then the virtual producers; its optimum (scaled) is a lower bound on the graph's."""

    problem: Problem
    nodes: tuple[int, ...]


def region_relaxation(
    problem: Problem,
    region: Sequence[int],
    reach: tuple[list[int], list[int]] | None = None,
) -> Relaxation:
    """The relaxation of ``problem`` to the nodes ``region`` (see the module docstring).

    ``reach`` is ``(ancestors, descendants)`` bitsets of ``problem`` when already
    computed. Cost: O(|W|^2 + T * degree) bitset operations.
    """
    anc, desc = reach if reach is not None else reachability(problem.preds, problem.succs, topo_order(problem))
    nodes = tuple(dict.fromkeys(int(v) for v in region))
    loc = {v: i for i, v in enumerate(nodes)}
    m = len(nodes)
    wmask = 0
    for v in nodes:
        wmask |= 1 << v

    def local(mask: int) -> int:
        out = 0
        for v in set_bits(mask & wmask):
            out |= 1 << loc[v]
        return out

    # precedence among W: the transitive reduction of reachability restricted to W
    dloc = [local(desc[v]) for v in nodes]  # W-descendants, local bits
    preds: list[list[int]] = [[] for _ in range(m)]
    for i in range(m):
        # a W-descendant j is a direct successor unless it is a W-descendant of another W-descendant
        covered = 0
        for j in set_bits(dloc[i]):
            covered |= dloc[j]
        for j in set_bits(dloc[i] & ~covered):
            preds[j].append(i)
    # tensors
    size: list[int] = []
    prod: list[int] = []
    cons: list[tuple[int, ...]] = []
    persist: list[bool] = []
    names: list[str] = []
    virtual: dict[int, int] = {}  # minimal-nodes mask (local) -> virtual node index
    vsucc: list[int] = []
    for t, sz in enumerate(problem.size):
        p = problem.prod[t]
        born = local(desc[p] | (1 << p))  # B
        if not born:
            continue
        dies = 0
        for c in problem.cons[t]:
            dies |= local(anc[c] | (1 << c))  # D
        if p in loc:
            producer = loc[p]
            relaxed_cons = dies & dloc[producer]
        else:
            relaxed_cons = dies & born
            if not relaxed_cons and not problem.persist[t]:
                continue
            minimal = born
            for j in set_bits(born):
                minimal &= ~dloc[j]
            producer = virtual.get(minimal)
            if producer is None:
                producer = virtual[minimal] = m + len(vsucc)
                vsucc.append(minimal)
        size.append(sz)
        prod.append(producer)
        cons.append(tuple(set_bits(relaxed_cons)))
        persist.append(problem.persist[t])
        names.append(problem.names[t])
    n = m + len(vsucc)
    all_preds: list[list[int]] = preds + [[] for _ in vsucc]
    for x, minimal in enumerate(vsucc):
        for j in set_bits(minimal):
            all_preds[j].append(m + x)
    succs: list[list[int]] = [[] for _ in range(n)]
    for v in range(n):
        for p in all_preds[v]:
            succs[p].append(v)
    outs: list[list[int]] = [[] for _ in range(n)]
    ins: list[list[int]] = [[] for _ in range(n)]
    for t in range(len(size)):
        outs[prod[t]].append(t)
        for c in cons[t]:
            ins[c].append(t)
    relaxed = Problem(
        n=n,
        preds=tuple(tuple(p) for p in all_preds),
        succs=tuple(tuple(s) for s in succs),
        size=tuple(size),
        prod=tuple(prod),
        cons=tuple(cons),
        persist=tuple(persist),
        outs=tuple(tuple(o) for o in outs),
        ins=tuple(tuple(i) for i in ins),
        scale=problem.scale,
        base=problem.base,
        names=tuple(names),
    )
    return Relaxation(relaxed, nodes)


@dataclass(frozen=True)
class RegionBound:
    """The best relaxed optimum found (scaled, resident excluded) and the region (as a step range) that gave it."""

    value: int
    steps: tuple[int, int] | None
    regions_tried: int
    states: int


def region_bound(
    problem: Problem,
    order: Sequence[int],
    deadline: float,
    sizes: Sequence[int] = (40, 60, 100, 160),
    max_total: int = 400_000,
    at_least: int = 0,
    reach: tuple[list[int], list[int]] | None = None,
) -> RegionBound:
    """Lower bound from exact DPs on relaxations of regions of ``order`` around its peak steps.

    Each region is a run of consecutive steps of ``order`` (``sizes`` steps,
    centred on a peak step, then shifted by a quarter each way); its relaxation
    (:func:`region_relaxation`) is solved by the exact DP with the order's
    peak as the upper limit, at most ``max_total`` states each. An exhaustive
    DP that finds no relaxed order below the peak proves the order optimal
    (the value returned is then the peak); one that finds a relaxed optimum
    ``r`` proves ``opt >= r``. Returns the largest such value (at least
    ``at_least``); gives up when the first region's value is below 90% of
    ``at_least`` (the relaxation is weak on such graphs). Cost: per region, the DP on ``size`` nodes plus the
    virtual ones.
    """
    import time

    from olla_onnx.schedule.fastdp import exact_order_fast

    n = problem.n
    best = at_least
    best_steps = None
    if n == 0:
        return RegionBound(best, None, 0, 0)
    live = problem.live_per_step(order)
    upper = int(live.max())
    if best >= upper:
        return RegionBound(best, None, 0, 0)
    if reach is None:
        reach = reachability(problem.preds, problem.succs, topo_order(problem))
    peak_steps = [int(s) for s in (live == upper).nonzero()[0]]
    seen: set[tuple[int, int]] = set()
    tried = states = 0
    for k in sizes:
        k = min(k, n)
        for s in peak_steps[:2]:
            for shift in (0, -k // 4, k // 4):
                a = max(0, min(n - k, s - k // 2 + shift))
                b = a + k
                if (a, b) in seen:
                    continue
                seen.add((a, b))
                if time.perf_counter() > deadline:
                    return RegionBound(best, best_steps, tried, states)
                relaxed = region_relaxation(problem, order[a:b], reach).problem
                tried += 1
                res = exact_order_fast(relaxed, topo_order(relaxed), upper, deadline, max_total)
                states += res.states
                if not res.exhaustive:
                    continue
                value = upper if res.order is None else int(res.window_peak)
                if tried == 1 and value * 10 < at_least * 9:
                    # far below the known bound: what the region leaves out matters here (saved
                    # activations read by nodes outside it); larger regions rarely recover it
                    return RegionBound(best, best_steps, tried, states)
                if value > best:
                    best, best_steps = value, (a, b)
                    if best >= upper:
                        return RegionBound(best, best_steps, tried, states)
        if k == n:
            break
    return RegionBound(best, best_steps, tried, states)
