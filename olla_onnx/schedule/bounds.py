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
graph output pays through ``p -> h`` with ``h -> sink`` infinite. ``v``'s own tensors are added as a
constant instead. The ancestor/descendant bound of :mod:`olla_onnx.ir.memory`
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
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from olla_onnx.ir.graph import reachability
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
    """Per-node min-cut queries, each on the part of the graph that the node leaves free.

    For node ``v``, its ancestors (and ``v``) are on the source side and its
    descendants on the sink side in every down-set that can be current while
    ``v`` runs. So a tensor made by an ancestor and read by a descendant (or a
    graph output made by an ancestor) is charged in every cut: a constant
    (these are the ancestor/descendant bound's tensors). Only the nodes
    incomparable with ``v`` are free, and the network holds just them, their
    tensors, and the ancestors' tensors that free nodes read.
    """

    def __init__(self, problem: Problem):
        from olla_onnx.schedule.reduce import topo_order

        n = problem.n
        self.n = n
        total = sum(problem.size) + 1
        self.q = 1 if total < 2**29 else -(-total // 2**29)
        self.cap = [s // self.q for s in problem.size]
        self.anc, self.desc = reachability(problem.preds, problem.succs, topo_order(problem))

    def min_cut(self, problem: Problem, v: int, inside: int = 0, outside: int = 0, want_set: bool = False):
        """Least bytes live while ``v`` runs, other than its own tensors, over the down-sets
        that hold ``v``, its ancestors and ``inside`` and none of ``outside`` nor of ``v``'s
        descendants. ``inside`` must be closed under ancestors and ``outside`` under
        descendants (then a free node has no predecessor outside and no successor inside).
        With ``want_set``, returns ``(value, down-set)`` with a down-set (bitset) attaining it."""
        inside |= self.anc[v] | (1 << v)
        outside |= self.desc[v]
        own = set(problem.outs[v]) | set(problem.ins[v])
        local: dict[int, int] = {}  # free node -> vertex id (0 = source, 1 = sink)
        rows: list[int] = []
        cols: list[int] = []
        caps: list[int] = []
        const = 0
        big = 0
        cap = self.cap

        def vid(u: int) -> int:
            x = local.get(u)
            if x is None:
                x = local[u] = len(local) + 2
            return x

        helpers = 0
        pending: list[tuple[int, int, list[int]]] = []  # (from vertex, capacity, free consumers)
        for t, p in enumerate(problem.prod):
            if t in own or cap[t] == 0 or (outside >> p) & 1:
                continue
            p_in = (inside >> p) & 1
            free_cons = []
            charged = problem.persist[t]
            for c in problem.cons[t]:
                if (outside >> c) & 1:
                    charged = True
                elif not (inside >> c) & 1:
                    free_cons.append(c)
            if p_in:
                if charged:
                    const += cap[t]
                elif free_cons:
                    pending.append((0, cap[t], free_cons))
            else:
                if charged:
                    rows.append(vid(p))
                    cols.append(1)
                    caps.append(cap[t])
                    big += cap[t]
                elif free_cons:
                    pending.append((vid(p), cap[t], free_cons))
        for src_v, c_t, free_cons in pending:
            big += c_t
        inf = big + 1
        for src_v, c_t, free_cons in pending:
            h = -1 - helpers  # placeholder id, resolved below
            helpers += 1
            rows.append(src_v)
            cols.append(h)
            caps.append(c_t)
            for c in free_cons:
                rows.append(h)
                cols.append(vid(c))
                caps.append(inf)
        free = ((1 << self.n) - 1) & ~(inside | outside)
        while free:  # dependencies among free nodes keep the source side a down-set (all of them:
            low = free & -free  # a path through a node with no tensor of its own still binds)
            free ^= low
            u = low.bit_length() - 1
            for p in problem.preds[u]:
                if not (inside >> p) & 1:
                    rows.append(vid(u))
                    cols.append(vid(p))
                    caps.append(inf)
        if not caps:
            return (const * self.q, inside) if want_set else const * self.q
        N = len(local) + 2 + helpers
        r = np.asarray(rows, dtype=np.int64)
        c = np.asarray(cols, dtype=np.int64)
        r[r < 0] = len(local) + 2 + (-1 - r[r < 0])
        c[c < 0] = len(local) + 2 + (-1 - c[c < 0])
        if inf >= 2**31:
            raise OverflowError("capacities exceed 32 bits")  # cannot happen: sizes are scaled below 2**29
        mat = sp.csr_matrix((np.asarray(caps, dtype=np.int32), (r, c)), shape=(N, N))
        mat.sum_duplicates()
        res = maximum_flow(mat, 0, 1)
        value = (const + int(res.flow_value)) * self.q
        if not want_set:
            return value
        # the source side of a minimum cut: what the source reaches in the residual network
        resid = (mat - res.flow).tocsr()
        resid.data = (resid.data > 0).astype(np.int32)
        resid.eliminate_zeros()
        reached = breadth_first_order(resid, 0, directed=True, return_predecessors=False)
        ids = set(int(x) for x in reached)
        down = inside
        for u, x in local.items():
            if x in ids:
                down |= 1 << u
        return value, down


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


def pair_cut_bound(
    problem: Problem,
    incumbent: Sequence[int],
    at_least: int = 0,
    deadline: float | None = None,
    heads: int = 6,
    partners: int = 8,
    group: int = 8,
) -> CutBound:
    """A bound from min cuts on both sides of a precedence choice between two nodes (scaled, resident excluded).

    For incomparable nodes ``a`` and ``b``, every order runs one of them
    first. If ``a`` runs before ``b``, the down-set current while ``a`` runs
    holds neither ``b`` nor its descendants, and the one while ``b`` runs holds
    ``a`` and its ancestors; so that order's peak is at least
    ``max(cut(a | Desc*(b) out), cut(b | Anc*(a) in))`` (the restricted min
    cuts of :meth:`_CutNetwork.min_cut`), and symmetrically when ``b`` runs
    first. The smaller of the two cases is a lower bound for every order, at
    least ``max(cut(a), cut(b))`` and often more: the per-node bound lets each
    node pick its own best down-set, even two that no single order has (a
    weight's transpose, needed only in the backward, made before or after the
    forward matmul that reads the weight: either way the two coexist with
    everything the forward saved).

    ``a`` runs over the nodes at the incumbent's highest steps (``heads`` of
    them); ``b`` over the nodes on which the incumbent's down-set at ``a`` and
    ``a``'s own min-cut down-set disagree, largest outputs first
    (``partners`` of them), and the ``2 * partners`` incomparable nodes that
    make the most bytes; largest first. Then the same argument runs over
    every order of ``a`` and ``k - 1`` others, for ``k = 3, 4, ...`` up to
    ``group`` while the deadline allows (:func:`_set_order_value`): its best
    partners by pair value (one per chain), or the sinks that make the most
    bytes kept to the end. Heads whose incumbent live total is at most
    the best bound so far are not tried (no bound with them can exceed that). Cost:
    four max flows per pair, at most ``3 * partners`` pairs per head.
    """
    n = problem.n
    if n < 2:
        return CutBound(at_least, None, 0, True)
    fixed = [sum(problem.size[t] for t in set(problem.outs[v]) | set(problem.ins[v])) for v in range(n)]
    live = problem.live_per_step(incumbent)
    ub = np.empty(n, dtype=np.int64)
    ub[np.asarray(incumbent)] = live
    pos = np.empty(n, dtype=np.int64)
    pos[np.asarray(incumbent)] = np.arange(n)
    out_bytes = [sum(problem.size[t] for t in problem.outs[v]) for v in range(n)]
    by_out = sorted(range(n), key=lambda u: -out_bytes[u])[: 6 * partners + heads]
    kept = [sum(problem.size[t] for t in problem.outs[v] if problem.persist[t]) for v in range(n)]
    by_kept = sorted((v for v in range(n) if not problem.succs[v] and kept[v]), key=lambda u: -kept[u])[: group + heads]
    net = _CutNetwork(problem)
    anc, desc = net.anc, net.desc
    best, best_node, tried = at_least, None, 0
    top = int(live.max())  # no bound exceeds the incumbent's peak
    for step in np.argsort(-live, kind="stable")[:heads]:
        a = int(incumbent[int(step)])
        if ub[a] <= best:
            break
        if deadline is not None and time.perf_counter() > deadline:
            return CutBound(best, best_node, tried, False)
        t_head = time.perf_counter()
        _, down = net.min_cut(problem, a, want_set=True)
        prefix = 0
        for u in incumbent[: int(step) + 1]:
            prefix |= 1 << u
        comparable = anc[a] | desc[a] | (1 << a)
        differ = (down ^ prefix) & ~comparable
        cands = []
        while differ:
            low = differ & -differ
            differ ^= low
            cands.append(low.bit_length() - 1)
        cands.sort(key=lambda u: -out_bytes[u])
        # and the incomparable nodes that make the most bytes, wherever the two orders put them
        free = [u for u in by_out if not (comparable >> u) & 1][: 2 * partners]
        scored = []
        for b in sorted(set(cands[:partners] + free), key=lambda u: -out_bytes[u]):
            if deadline is not None and time.perf_counter() > deadline:
                return CutBound(best, best_node, tried, False)
            tried += 1
            # no early exit: the pairs' values also choose the partners of the larger groups below
            val = _pair_value(problem, net, fixed, a, b)
            scored.append((val, b))
            if val > best:
                best, best_node = val, a
        # the same argument over every order of ``a`` and its best partners (up to ``group`` nodes)
        # growing while the time allows: k nodes take up to k * 2**(k-1) max flows. Partners by
        # pair value, skipping one comparable with a partner already taken (a node of the same
        # update chain adds little: the two cannot swap)
        scored.sort(reverse=True)
        chosen: list[int] = []
        reach = 0
        for _, b in scored:
            if not (reach >> b) & 1:
                chosen.append(b)
                reach |= anc[b] | desc[b] | (1 << b)
        # and the sinks that make the most bytes kept to the end (the updates of a training step:
        # the last of them runs with all the others' results live)
        sinks = [u for u in by_kept if not (comparable >> u) & 1]
        per_cut = (time.perf_counter() - t_head) / max(1, 4 * len(scored) + 1)
        for k in range(3, group + 1):
            for team in (chosen, sinks):
                if len(team) < k - 1:
                    continue
                if deadline is not None and time.perf_counter() + per_cut * k * 2 ** (k - 1) > deadline:
                    return CutBound(best, best_node, tried, False)
                val = _set_order_value(problem, net, fixed, [a] + team[: k - 1])
                tried += 1
                if val > best:
                    best, best_node = val, a
                if best >= top:
                    return CutBound(best, best_node, tried, True)
    return CutBound(best, best_node, tried, True)


def _set_order_value(problem: Problem, net: _CutNetwork, fixed: Sequence[int], nodes: Sequence[int]) -> int:
    """The least, over the orders of ``nodes`` that the graph allows, of the largest restricted min
    cut among them: each node's down-set holds the nodes before it and their ancestors, and none of
    the nodes after it nor their descendants. Every order of the graph orders ``nodes`` one way, so
    this is a lower bound (the pair bound is the case of two nodes). Cost: at most
    ``k * 2**(k-1)`` max flows for ``k`` nodes (a DP over the sets of nodes run first)."""
    anc, desc = net.anc, net.desc
    k = len(nodes)
    full = (1 << k) - 1
    cuts: dict[tuple[int, int], int | None] = {}

    def cut(i: int, before: int) -> int | None:
        key = (i, before)
        if key not in cuts:
            inside = outside = 0
            for j, u in enumerate(nodes):
                if before >> j & 1:
                    inside |= anc[u] | (1 << u)
                elif j != i:
                    outside |= desc[u] | (1 << u)
            x = nodes[i]
            if (inside >> x) & 1 or (outside >> x) & 1 or inside & outside:
                cuts[key] = None  # no order of the graph runs the nodes this way
            else:
                cuts[key] = fixed[x] + net.min_cut(problem, x, inside=inside, outside=outside)
        return cuts[key]

    memo: dict[int, int] = {full: 0}

    def solve(before: int) -> int:
        if before in memo:
            return memo[before]
        val = None
        for i in range(k):
            if before >> i & 1:
                continue
            c = cut(i, before)
            if c is None:
                continue
            v = max(c, solve(before | (1 << i)))
            val = v if val is None or v < val else val
        memo[before] = val if val is not None else 0
        return memo[before]

    return solve(0)


def _pair_value(problem: Problem, net: _CutNetwork, fixed: Sequence[int], a: int, b: int, at_least: int = 0) -> int:
    """The bound of the pair ``(a, b)`` (incomparable nodes; see :func:`pair_cut_bound`); when the
    first case cannot beat ``at_least``, that case's value (also a bound, no higher than the pair's)."""
    anc, desc = net.anc, net.desc
    a_first = max(
        fixed[a] + net.min_cut(problem, a, outside=desc[b] | (1 << b)),
        fixed[b] + net.min_cut(problem, b, inside=anc[a] | (1 << a)),
    )
    if a_first <= at_least:
        return a_first
    b_first = max(
        fixed[b] + net.min_cut(problem, b, outside=desc[a] | (1 << a)),
        fixed[a] + net.min_cut(problem, a, inside=anc[b] | (1 << b)),
    )
    return min(a_first, b_first)
