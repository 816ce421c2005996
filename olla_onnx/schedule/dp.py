"""Exact (and beam-limited) dynamic programming over down-sets, on a window of an order.

Serenity (Ahn et al., MLSys 2020): a state is the set ``S`` of nodes already
run. The live bytes after ``S`` depend on ``S`` alone, so the best peak to reach
each ``S`` is all one needs to keep; states are explored level by level (all
sets of ``k`` nodes before any of ``k + 1``). The number of states grows with
the graph's width, not its length: at a node every other node precedes or
follows, the level holds a single state, so a chain-like graph splits into
independent segments by itself.

Windows: permuting the nodes of steps ``a..b-1`` of a topological order among
themselves (keeping it topological) changes live bytes at those steps only.
Tensors from before the window that are read after it, and tensors made in the
window and read after it, stay live across the whole window whatever its
order. So the window is a subproblem of its own, with a constant ``base`` of
bytes live on entry and a ``floor`` (the largest live total outside the
window), and :func:`solve_window` with ``a = 0, b = n`` is the exact DP of the
whole graph.

Pruning rules (each keeps the optimum):

* Incumbent bound: a transition whose step reaches ``upper`` (the incumbent's
  peak) is dropped: the search looks for strictly better orders only. If no
  order survives and nothing was truncated, none better exists (a proof).
* Free-run dominance: if a ready node ``v`` keeps no more bytes than it frees
  (``kept(v) <= freed(v, S)``) and its step stays within the peak so far
  (``live(S) + out(v) <= peak(S)``), then only ``S + v`` is explored. Exchange
  argument: take any completion that runs ``v`` later; moving ``v`` to the
  front changes each step in between by ``kept(v) - freed(v, S) <= 0`` (the
  inputs it frees die earlier, its kept outputs are born earlier), removes its
  old step, and adds a step no higher than ``peak(S)``. So some best
  completion starts with ``v``. (Training graphs: an optimizer update keeps the
  new parameter and frees the gradient, so it runs as soon as it can.)
* Deferral dominance: a node ``v`` none of whose inputs can die in the window
  (resident, graph outputs, or read after the window: a transpose of a weight,
  a scaling of optimizer state, ``lr * new_state``), whose every output is
  kept, and that has a successor in the window, frees nothing wherever it
  runs. Moving it to just before its first successor ``c`` lowers every step
  in between by ``kept(v)``, and its new step holds at most what ``c``'s step
  holds (its outputs, read at or after ``c``, are live there anyway). So
  some best order runs every such node in a block directly before its first
  successor, and the DP expands ``v`` only when some successor in the window
  has all its other predecessors run or deferrable too. (Without this rule
  the k weight transposes of a training graph multiply the states by up to
  2^k.) When ``v`` is the only predecessor of its only successor ``c``, that
  block is ``v`` alone: ``v, c`` is one move.
* Beam (optional, not exact): with ``max_states`` per level, only the best
  states by (peak, live) are kept; the result is then marked truncated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from olla_onnx.schedule.reduce import Problem


@dataclass(frozen=True)
class WindowResult:
    """Outcome of a DP over one window.

    ``order`` is the whole order with the window rearranged, or None when no
    order of the window beats ``upper``. ``window_peak`` is its largest scaled
    live total inside the window (max with the floor). ``exhaustive`` is True when
    no state was cut by the beam or the clock: then ``order is None`` proves that
    no order of the window beats ``upper``, and a returned order is the best
    possible for the window.
    """

    order: tuple[int, ...] | None
    window_peak: int | None
    exhaustive: bool
    states: int
    timed_out: bool


@dataclass(frozen=True)
class _Window:
    nodes: tuple[int, ...]
    base: int
    floor: int
    outsz: tuple[int, ...]
    keep: tuple[int, ...]
    frees: tuple[tuple[tuple[int, int], ...], ...]
    predmask: tuple[int, ...]
    succs: tuple[tuple[int, ...], ...]
    defer: int  # mask of deferrable nodes
    outcons: tuple[int, ...]  # per node, mask of its successors in the window


def _build_window(problem: Problem, order: Sequence[int], a: int, b: int, floor: int) -> _Window:
    n = problem.n
    pos = [0] * n
    for s, v in enumerate(order):
        pos[v] = s
    nodes = tuple(order[a:b])
    loc = {v: i for i, v in enumerate(nodes)}
    m = len(nodes)
    outsz = [0] * m
    keep = [0] * m
    frees: list[list[tuple[int, int]]] = [[] for _ in range(m)]
    base = 0
    seen: set[int] = set()
    for i, v in enumerate(nodes):
        for t in problem.outs[v]:
            seen.add(t)
        for t in problem.ins[v]:
            seen.add(t)
    for t in seen:
        sz = problem.size[t]
        p = problem.prod[t]
        cmask = 0
        persist = problem.persist[t]
        for c in problem.cons[t]:
            pc = pos[c]
            if pc >= b:
                persist = True
            elif pc >= a:
                cmask |= 1 << loc[c]
        if pos[p] < a:
            base += sz  # read in the window, so live on entry
        else:
            i = loc[p]
            outsz[i] += sz
            if persist or cmask:
                keep[i] += sz
        if not persist:
            bit = cmask
            while bit:
                low = bit & -bit
                frees[low.bit_length() - 1].append((sz, cmask))
                bit ^= low
    # tensors born before the window and read only after it (or never dying) are live on entry too
    for t, sz in enumerate(problem.size):
        if t in seen:
            continue
        if pos[problem.prod[t]] < a and (problem.persist[t] or any(pos[c] >= b for c in problem.cons[t])):
            base += sz
    defer = 0
    outcons = [0] * m
    for i, v in enumerate(nodes):
        for c in problem.succs[v]:  # successors, not only readers of kept tensors: zero-byte edges bind too
            if c in loc:
                outcons[i] |= 1 << loc[c]
        if not frees[i] and outcons[i] and keep[i] == outsz[i]:
            defer |= 1 << i
    predmask = []
    succs = []
    for v in nodes:
        pm = 0
        for p in problem.preds[v]:
            if p in loc:
                pm |= 1 << loc[p]
        predmask.append(pm)
        succs.append(tuple(loc[w] for w in problem.succs[v] if w in loc))
    return _Window(
        nodes, base, floor, tuple(outsz), tuple(keep), tuple(tuple(f) for f in frees), tuple(predmask), tuple(succs),
        defer, tuple(outcons),
    )


def _pairs(w: _Window) -> list[int]:
    """Per window node, its contracted partner or -1. A deferrable ``u`` whose only successor in
    the window is ``c``, where ``u`` is ``c``'s only predecessor in the window, runs directly
    before ``c`` in some best order (the deferral rule); ``u`` and ``c`` are one move."""
    m = len(w.nodes)
    pair = [-1] * m
    for i in range(m):
        oc = w.outcons[i]
        if w.defer >> i & 1 and oc and oc & (oc - 1) == 0:
            c = oc.bit_length() - 1
            if w.predmask[c] == 1 << i:
                pair[i] = c
    return pair


def solve_window(
    problem: Problem,
    order: Sequence[int],
    a: int,
    b: int,
    upper: int,
    floor: int = 0,
    max_states: int | None = None,
    deadline: float | None = None,
    max_total: int | None = None,
) -> WindowResult:
    """Best rearrangement of steps ``a..b-1`` of the topological ``order``, if its peak is below ``upper``.

    The objective is ``max(floor, largest scaled live total in the window)``:
    pass the largest live total outside the window (or anything lower) as
    ``floor``; 0 for the whole graph. ``max_states`` (per level) turns the
    exact DP into a beam search; ``max_total`` caps all states expanded and
    ``deadline`` (a ``time.perf_counter()`` value) the time, both ending the
    search without a result. Cost: O(states * (ready + degree) * n / 64).
    """
    if floor >= upper:
        return WindowResult(None, None, True, 0, False)
    w = _build_window(problem, order, a, b, floor)
    m = len(w.nodes)
    full = (1 << m) - 1
    ready0 = 0
    for i in range(m):
        if w.predmask[i] == 0:
            ready0 |= 1 << i
    outsz, keep, frees, predmask, succs = w.outsz, w.keep, w.frees, w.predmask, w.succs
    defer, outcons = w.defer, w.outcons
    pair = _pairs(w)
    # levels[k]: mask (k nodes run) -> (peak, live, ready mask); parent: mask -> (parent mask, nodes)
    levels: list[dict[int, tuple[int, int, int]]] = [dict() for _ in range(m + 1)]
    levels[0][0] = (w.floor, w.base, ready0)
    parent: dict[int, tuple[int, tuple[int, ...]]] = {}
    exhaustive = True
    total = 0
    for k in range(m):
        level = levels[k]
        if not level:
            continue
        if max_states is not None and len(level) > max_states:
            exhaustive = False
            level = dict(sorted(level.items(), key=lambda kv: (kv[1][0], kv[1][1]))[:max_states])
        levels[k] = {}  # free memory as we go
        for mask, (pk, lv, ready) in level.items():
            total += 1
            if (total & 15) == 0 and (
                (deadline is not None and time.perf_counter() > deadline) or (max_total is not None and total > max_total)
            ):
                return WindowResult(None, None, False, total, True)
            cands = []
            forced = None
            r = ready
            while r:
                low = r & -r
                r ^= low
                i = low.bit_length() - 1
                done = mask | low
                if defer & low:
                    ok = False
                    cm = outcons[i]
                    while cm:
                        lc = cm & -cm
                        cm ^= lc
                        if predmask[lc.bit_length() - 1] & ~(done | defer) == 0:
                            ok = True
                            break
                    if not ok:
                        continue
                freed = 0
                for sz, cm in frees[i]:
                    if cm & ~done == 0:
                        freed += sz
                trans = lv + outsz[i]
                if trans >= upper:
                    continue
                if keep[i] <= freed and trans <= pk and pair[i] < 0:  # a pair is not one free node
                    forced = (i, low, done, freed, trans)
                    break
                cands.append((i, low, done, freed, trans))
            if forced is not None:
                cands = [forced]
            for i, low, done, freed, trans in cands:
                npk = pk if pk >= trans else trans
                nlv = lv + keep[i] - freed
                nready = ready ^ low
                for s2 in succs[i]:
                    if predmask[s2] & ~done == 0:
                        nready |= 1 << s2
                moved: tuple[int, ...] = (i,)
                c = pair[i]
                if c >= 0:  # the contracted pair: c runs at once
                    lowc = 1 << c
                    done |= lowc
                    freed = 0
                    for sz, cm in frees[c]:
                        if cm & ~done == 0:
                            freed += sz
                    trans = nlv + outsz[c]
                    if trans >= upper:
                        continue
                    if trans > npk:
                        npk = trans
                    nlv = nlv + keep[c] - freed
                    nready ^= lowc
                    for s2 in succs[c]:
                        if predmask[s2] & ~done == 0:
                            nready |= 1 << s2
                    moved = (i, c)
                target = levels[k + len(moved)]
                old = target.get(done)
                if old is not None and old[0] <= npk:
                    continue
                target[done] = (npk, nlv, nready)
                parent[done] = (mask, moved)
    final = levels[m].get(full)
    if final is None:
        return WindowResult(None, None, exhaustive, total, False)
    pk = final[0]
    local: list[int] = []
    mask = full
    while mask:
        mask, moved = parent[mask]
        local.extend(reversed(moved))
    local.reverse()
    new = tuple(order[:a]) + tuple(w.nodes[i] for i in local) + tuple(order[b:])
    return WindowResult(new, pk, exhaustive, total, False)


def exact_order(
    problem: Problem,
    incumbent: Sequence[int],
    upper: int | None = None,
    deadline: float | None = None,
    max_total: int | None = None,
) -> WindowResult:
    """DP over the whole graph: the best order if its scaled peak is below ``upper`` (default:
    the incumbent's peak); when the result is exhaustive and ``order`` is None, no order
    beats ``upper`` (so an incumbent with that peak is optimal)."""
    if upper is None:
        upper = problem.peak(incumbent)
    return solve_window(problem, incumbent, 0, problem.n, upper, 0, None, deadline, max_total)
