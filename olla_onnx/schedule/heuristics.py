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

    Cost: O(n * ready * degree).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
    n = problem.n
    prio = list(priority) if priority is not None else list(range(n))
    size, cons, persist, outs, ins = problem.size, problem.cons, problem.persist, problem.outs, problem.ins
    remaining = [len(c) for c in cons]
    outsz = [sum(size[t] for t in outs[v]) for v in range(n)]
    keep = [sum(size[t] for t in outs[v] if persist[t] or cons[t]) for v in range(n)]
    indeg = [len(p) for p in problem.preds]
    ready = {v for v in range(n) if indeg[v] == 0}
    live = 0
    peak = 0
    order: list[int] = []
    while ready:
        best = None
        best_key = None
        for v in ready:
            freed = 0
            for t in ins[v]:
                if remaining[t] == 1 and not persist[t]:
                    freed += size[t]
            delta = keep[v] - freed
            trans = live + outsz[v]
            if rule == "delta":
                key = (delta, trans, prio[v])
            elif rule == "transient":
                key = (trans, delta, prio[v])
            else:
                free = delta <= 0 and trans <= peak
                look = 0
                if not free:
                    # bytes that successors made ready by v could free at once
                    for w in problem.succs[v]:
                        if indeg[w] == 1:
                            f = sum(size[t] for t in ins[w] if not persist[t] and remaining[t] == 1 and problem.prod[t] != v)
                            f += sum(size[t] for t in outs[v] if cons[t] == (w,) and not persist[t])
                            look = max(look, f - keep[w])
                key = (0 if free else 1, delta - look, trans, prio[v])
            if best_key is None or key < best_key:
                best, best_key = v, key
        v = best
        ready.discard(v)
        order.append(v)
        trans = live + outsz[v]
        peak = max(peak, trans)
        for t in ins[v]:
            remaining[t] -= 1
            if remaining[t] == 0 and not persist[t]:
                live -= size[t]
        live += keep[v]
        for w in problem.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.add(w)
    return order


def beam_search(problem: Problem, incumbent: Sequence[int], width: int = 64, deadline: float | None = None) -> list[int] | None:
    """Beam search over down-sets (the DP of :mod:`dp` keeping ``width`` states per level).

    Returns an order strictly better than ``incumbent``, or None. Cost: O(n * width * ready).
    """
    res = solve_window(problem, incumbent, 0, problem.n, problem.peak(incumbent), 0, width, deadline)
    return list(res.order) if res.order is not None else None
