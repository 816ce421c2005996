"""Fast orders: memory-aware list scheduling and beam search.

All functions take a reduced :class:`Problem` and return a topological order
(node indices); callers check every order with the simulator.
"""

from __future__ import annotations

from typing import Sequence

from olla_onnx.schedule.dp import solve_window
from olla_onnx.schedule.reduce import Problem

RULES = ("delta", "transient", "free-first")


def list_schedule(problem: Problem, rule: str = "delta", priority: Sequence[int] | None = None) -> list[int]:
    """Greedy list scheduling: run, at each step, the ready node that is best by ``rule``.

    Rules (ties go to the smaller ``priority``, default the node index, i.e. the file order):

    * ``delta``: smallest change of live bytes after the node ran (kept outputs
      minus inputs it frees), then smallest step total;
    * ``transient``: smallest live total while it runs, then smallest change;
    * ``free-first``: any node that frees at least what it keeps and stays
      under the peak so far first (the DP's free-run rule), else ``delta`` with
      a one-step look-ahead that credits the bytes its successors could free.

    Cost: O((n + E) * degree * log n): a node is re-keyed only when what it frees or its
    look-ahead changes.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
    import heapq

    n = problem.n
    prio = list(priority) if priority is not None else list(range(n))
    size, cons, persist, outs, ins = problem.size, problem.cons, problem.persist, problem.outs, problem.ins
    preds, succs, prod = problem.preds, problem.succs, problem.prod
    remaining = [len(c) for c in cons]
    outsz = [sum(size[t] for t in outs[v]) for v in range(n)]
    keep = [sum(size[t] for t in outs[v] if persist[t] or cons[t]) for v in range(n)]
    indeg = [len(p) for p in preds]
    done = [False] * n
    # Keys change only when a tensor's remaining readers drop (what a node frees) or, for the
    # look-ahead, when a successor's in-degree drops; such nodes are marked dirty and re-keyed.
    # ``delta`` and ``transient`` keys do not depend on the live total (it is common to all
    # ready nodes), so one heap with lazy deletion serves them; ``free-first`` scans the
    # ready nodes that free at least what they keep for the free ones, else takes the heap's top.
    version = [0] * n
    delta = [0] * n
    heap: list[tuple] = []
    ready: set[int] = set()
    nonpos: set[int] = set()  # ready nodes with delta <= 0 (free-first only)

    def freed_by(v: int) -> int:
        return sum(size[t] for t in ins[v] if remaining[t] == 1 and not persist[t])

    def look_of(v: int) -> int:
        look = 0
        for w in succs[v]:
            if indeg[w] == 1:
                f = sum(size[t] for t in ins[w] if not persist[t] and remaining[t] == 1 and prod[t] != v)
                f += sum(size[t] for t in outs[v] if cons[t] == (w,) and not persist[t])
                look = max(look, f - keep[w])
        return look

    def rekey(v: int) -> None:
        d = keep[v] - freed_by(v)
        delta[v] = d
        version[v] += 1
        if rule == "delta":
            key = (d, outsz[v], prio[v])
        elif rule == "transient":
            key = (outsz[v], d, prio[v])
        else:
            key = (d - look_of(v), outsz[v], prio[v])
            if d <= 0:
                nonpos.add(v)
            else:
                nonpos.discard(v)
        heapq.heappush(heap, (key, version[v], v))

    for v in range(n):
        if indeg[v] == 0:
            ready.add(v)
            rekey(v)
    live = 0
    peak = 0
    order: list[int] = []
    while ready:
        v = -1
        if rule == "free-first" and nonpos:
            room = peak - live
            best_key = None
            for u in nonpos:
                if outsz[u] <= room:
                    key = (delta[u], outsz[u], prio[u])
                    if best_key is None or key < best_key:
                        v, best_key = u, key
        if v < 0:
            while True:
                key, ver, u = heap[0]
                if done[u] or ver != version[u]:
                    heapq.heappop(heap)
                    continue
                v = u
                break
        ready.discard(v)
        nonpos.discard(v)
        done[v] = True
        order.append(v)
        trans = live + outsz[v]
        peak = max(peak, trans)
        dirty: set[int] = set()
        for t in ins[v]:
            remaining[t] -= 1
            if remaining[t] == 0 and not persist[t]:
                live -= size[t]
            elif remaining[t] == 1:
                for c in cons[t]:
                    if not done[c]:
                        dirty.add(c)
                        if rule == "free-first":
                            dirty.update(preds[c])
        live += keep[v]
        for w in succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.add(w)
                dirty.add(w)
            elif rule == "free-first" and indeg[w] == 1:
                dirty.update(preds[w])
        for u in dirty:
            if u in ready:
                rekey(u)
    return order


def beam_search(problem: Problem, incumbent: Sequence[int], width: int = 64, deadline: float | None = None) -> list[int] | None:
    """Beam search over down-sets (the DP of :mod:`dp` keeping ``width`` states per level).

    Returns an order strictly better than ``incumbent``, or None. Cost: O(n * width * ready).
    """
    res = solve_window(problem, incumbent, 0, problem.n, problem.peak(incumbent), 0, width, deadline)
    return list(res.order) if res.order is not None else None
