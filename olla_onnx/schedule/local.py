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
from olla_onnx.schedule.fastdp import solve_window_fast
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
                    floor = min(outside, peak - 1)
                    if k >= 40:  # the numpy DP pays off once levels hold many states
                        res = solve_window_fast(problem, cur, a, b, peak, floor, deadline, max_total)
                    else:
                        res = solve_window(problem, cur, a, b, peak, floor, None, deadline, max_total)
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


class _FastLive:
    """Vectorized live totals of an order (numpy): O(n + E) per evaluation without Python loops."""

    def __init__(self, problem: Problem):
        T = len(problem.size)
        self.n = problem.n
        self.size = np.asarray(problem.size, dtype=np.int64)
        self.prod = np.asarray(problem.prod, dtype=np.int64)
        self.persist = np.asarray(problem.persist, dtype=bool)
        flat_t, flat_c = [], []
        for t in range(T):
            for c in problem.cons[t]:
                flat_t.append(t)
                flat_c.append(c)
        self.flat_t = np.asarray(flat_t, dtype=np.int64)
        self.flat_c = np.asarray(flat_c, dtype=np.int64)
        # tensors with readers, and where their readers start in flat_c (grouped by tensor)
        self.read = np.unique(self.flat_t)
        self.offsets = np.searchsorted(self.flat_t, self.read)

    def span(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per tensor, the first and last step it is live."""
        start = pos[self.prod]
        end = start.copy()
        if len(self.flat_t):
            end[self.read] = np.maximum(end[self.read], np.maximum.reduceat(pos[self.flat_c], self.offsets))
        end[self.persist] = self.n - 1
        return start, end

    def live(self, pos: np.ndarray) -> np.ndarray:
        n = self.n
        start, end = self.span(pos)
        delta = np.bincount(start, weights=self.size, minlength=n + 1) - np.bincount(end + 1, weights=self.size, minlength=n + 1)
        return np.cumsum(delta[:n]).astype(np.int64)


def improve_moves(problem: Problem, order: Sequence[int], deadline: float, max_rounds: int = 10_000) -> list[int]:
    """Move single nodes within their windows (between their last predecessor and first successor) to cut the peak.

    Candidates are the producers of the tensors live at a peak step (moved to
    after it, as late as allowed) and their last readers (moved before it, as
    early as allowed), and, per tensor live at the peak, the group of all its
    readers after the peak moved to before it (where live bytes are least, or just before it). A move is kept when it lowers (peak, number of steps at
    the peak). Returns an order never worse than ``order``. Cost per round:
    O(candidates * (n + E)) with numpy.
    """
    n = problem.n
    cur = list(order)
    if n < 3:
        return cur
    fast = _FastLive(problem)
    pos = np.empty(n, dtype=np.int64)
    pos[np.asarray(cur)] = np.arange(n)
    live = fast.live(pos)

    def score(lv: np.ndarray) -> tuple[int, int]:
        pk = int(lv.max())
        return pk, int((lv == pk).sum())

    best = score(live)
    cur_arr = np.asarray(cur, dtype=np.int64)
    preds, succs = problem.preds, problem.succs
    for _ in range(max_rounds):
        if time.perf_counter() > deadline:
            break
        s = int(np.argmax(live))
        cands: dict[int, tuple[int, ...]] = {}
        # tensors live at s (producer at or before s, alive after s), largest first
        start, end = fast.span(pos)
        at_s = np.nonzero((start <= s) & (end >= s))[0]
        at_s = at_s[np.argsort(-fast.size[at_s], kind="stable")].tolist()
        for t in at_s:
            cands.setdefault(problem.prod[t], ())
            for c in problem.cons[t]:
                if pos[c] >= s:
                    cands.setdefault(c, ())
        improved = False
        trial_best = None
        tried_groups: set[tuple] = set()

        def try_group(kind: str, gset: set[int], steps) -> None:
            """Move the nodes ``gset`` (in their order) to just before the node now at each of
            ``steps`` (``n``: the end); keep the best valid one that beats the current score."""
            nonlocal trial_best
            group = tuple(sorted(gset, key=lambda c: pos[c]))
            if (kind,) + group in tried_groups:
                return
            tried_groups.add((kind,) + group)
            garr = np.asarray(group, dtype=np.int64)
            gpos = pos[garr]
            keep_mask = np.ones(n, dtype=bool)
            keep_mask[gpos] = False
            rest = cur_arr[keep_mask]
            for at in dict.fromkeys(int(x) for x in steps):
                k = at - int((gpos < at).sum())  # the index in ``rest`` of the node now at step ``at``
                new_arr = np.concatenate([rest[:k], garr, rest[k:]])
                npos = np.empty(n, dtype=np.int64)
                npos[new_arr] = np.arange(n)
                if any(npos[q] > npos[c] for c in group for q in preds[c] if q not in gset) or any(
                    npos[w] < npos[c] for c in group for w in succs[c] if w not in gset
                ):
                    continue
                lv = fast.live(npos)
                sc = score(lv)
                if sc < best and (trial_best is None or sc < trial_best[0]):
                    trial_best = (sc, new_arr.tolist(), npos, lv)

        # group moves: all the readers of a tensor live at s that run after s, moved to just before s
        # (its last use then comes before the peak; single-node moves cannot see that gain);
        # largest tensors first, and the first move that helps is taken (rounds stay cheap on big graphs)
        for t in at_s:
            if trial_best is not None or time.perf_counter() > deadline:
                break
            p = problem.prod[t]
            if problem.persist[t] or pos[p] >= s:
                continue
            late = [c for c in problem.cons[t] if pos[c] > s]
            if not late or len(late) > 8:
                continue
            # with them, whatever they need that runs at or after s (constants, small chains), up to 24 nodes
            gset = set(late)
            stack = list(late)
            ok = True
            while stack and ok:
                c = stack.pop()
                for q in preds[c]:
                    if pos[q] >= s and q not in gset:
                        if pos[q] == s or len(gset) >= 24:
                            ok = False
                            break
                        gset.add(q)
                        stack.append(q)
            if not ok:
                continue
            earliest = max((int(pos[q]) + 1 for c in gset for q in preds[c] if q not in gset), default=0)
            # insert where the group's extra bytes hurt least: the step of least live bytes before s, or at s
            try_group("early", gset, (earliest + int(np.argmin(live[earliest:s + 1])), s))
        # delay moves: a tensor made before s and read only after it, moved after s together with
        # the part of its making that nothing else needs (a weight gradient's matmul and transposes:
        # what they read is often far smaller than what they make); up to 24 nodes
        for t in at_s:
            if trial_best is not None or time.perf_counter() > deadline:
                break
            p = problem.prod[t]
            if problem.persist[t] or pos[p] >= s or not problem.cons[t] or min(int(pos[c]) for c in problem.cons[t]) <= s:
                continue
            gset = {p}
            _add_private_producers(gset, preds, succs, problem, 24)
            latest = min((int(pos[w]) for u in gset for w in succs[u] if w not in gset), default=n)
            if latest > s + 1:
                try_group("late", gset, (s + 1, s + 1 + int(np.argmin(live[s + 1:latest])), latest))
        # shared-input delay moves: the readers of one tensor ``u`` that run before s (with what
        # they feed before s), moved after s together: then ``u`` may stay live instead of all they
        # make (a relu output read by its mask, its pooled values and a saved difference)
        if trial_best is None:
            shared: dict[int, None] = {}
            for t in at_s[:256]:
                p = problem.prod[t]
                if pos[p] < s and all(pos[c] > s for c in problem.cons[t]):
                    for u in problem.ins[p]:
                        if not problem.persist[u]:
                            shared.setdefault(u, None)
            for u in list(shared)[:32]:
                if trial_best is not None or time.perf_counter() > deadline:
                    break
                gset = set()
                for c in problem.cons[u]:
                    if pos[c] < s:
                        down = _descendants_before(c, succs, pos, s, 16)
                        if down is not None and len(gset | down) <= 24:
                            gset |= down
                if len(gset) < 2:
                    continue
                _add_private_producers(gset, preds, succs, problem, 32)
                latest = min((int(pos[w]) for c in gset for w in succs[c] if w not in gset), default=n)
                if latest > s + 1:
                    try_group("shared", gset, (s + 1, s + 1 + int(np.argmin(live[s + 1:latest])), latest))
        # branch moves: a node at or before s whose descendants are few (a weight gradient and its
        # update), moved later as a whole with its private producers: nothing outside needs the
        # branch, so any later place is valid; the latest is the end
        if trial_best is None and s + 1 < n:
            made_live: dict[int, int] = {}  # producer -> bytes it made that are live at s
            for t in at_s:
                q = problem.prod[t]
                if pos[q] < s:
                    made_live[q] = made_live.get(q, 0) + problem.size[t]
            branch_roots = [int(cur_arr[s])] + sorted(made_live, key=lambda q: -made_live[q])
            for v in branch_roots[:64]:
                if trial_best is not None or time.perf_counter() > deadline:
                    break
                gset = _descendants_within(v, succs, 48)
                if gset is not None:
                    _add_private_producers(gset, preds, succs, problem, 64)
                    try_group("branch", gset, (s + 1, s + 1 + int(np.argmin(live[s + 1:])), n))
        for v in (cands if trial_best is None else ()):
            if time.perf_counter() > deadline:
                break
            i = int(pos[v])
            lo = max((int(pos[p]) + 1 for p in preds[v]), default=0)
            hi = min((int(pos[w]) - 1 for w in succs[v]), default=n - 1)
            # positions are in the order without v: targets after removal
            targets = set()
            if i <= s:
                targets.update((hi, min(hi, s + 1), min(hi, s)))
            if i >= s:
                targets.update((lo, max(lo, s - 1), max(lo, s)))
            for j in targets:
                if j == i or j < lo or j > hi:
                    continue
                new = cur[:i] + cur[i + 1:]
                new.insert(j, v)
                npos = pos.copy()
                if j > i:
                    npos[np.asarray(cur[i + 1:j + 1], dtype=np.int64)] -= 1
                else:
                    npos[np.asarray(cur[j:i], dtype=np.int64)] += 1
                npos[v] = j
                lv = fast.live(npos)
                sc = score(lv)
                if sc < best and (trial_best is None or sc < trial_best[0]):
                    trial_best = (sc, new, npos, lv)
        if trial_best is not None:
            best, cur, pos, live = trial_best
            cur_arr = np.asarray(cur, dtype=np.int64)
            improved = True
        if not improved:
            break
    return cur


def _descendants_within(v: int, succs, limit: int) -> set[int] | None:
    """``v`` and all its descendants, or None when they are more than ``limit``."""
    seen = {v}
    stack = [v]
    while stack:
        u = stack.pop()
        for w in succs[u]:
            if w not in seen:
                seen.add(w)
                if len(seen) > limit:
                    return None
                stack.append(w)
    return seen


def _descendants_before(v: int, succs, pos: np.ndarray, s: int, limit: int) -> set[int] | None:
    """``v`` and its descendants that run before step ``s``, or None when one runs at ``s`` or they are more than ``limit``."""
    seen = {v}
    stack = [v]
    while stack:
        u = stack.pop()
        for w in succs[u]:
            if w in seen or pos[w] > s:
                continue
            if pos[w] == s or len(seen) >= limit:
                return None
            seen.add(w)
            stack.append(w)
    return seen


def _add_private_producers(gset: set[int], preds, succs, problem: Problem, limit: int) -> None:
    """Grow ``gset`` with the nodes all of whose successors are in it (and that make no graph output)."""
    grew = True
    while grew and len(gset) < limit:
        grew = False
        for u in list(gset):
            for q in preds[u]:
                if q in gset or len(gset) >= limit or any(problem.persist[x] for x in problem.outs[q]):
                    continue
                if all(w in gset for w in succs[q]):
                    gset.add(q)
                    grew = True


def cut_restarts(problem: Problem, order: Sequence[int], deadline: float, rounds: int = 12) -> list[int]:
    """Restarts of the move search from orders re-split at a peak node by a min cut there.

    For the node ``v`` at a peak step, :meth:`~olla_onnx.schedule.bounds._CutNetwork.min_cut`
    gives a down-set ``S`` (``v`` in it, no descendant of ``v``) with the least live total while
    ``v`` runs. The order ``S`` (in the current order, ``v`` last) then the rest is topological
    and holds exactly that total at ``v``, though other steps may rise; :func:`improve_moves`
    then repairs it. The result is kept when it beats the best so far. Each round takes the
    peak node of the best order, or the next node at a peak step not tried yet. Never worse
    than ``order``. Cost per round: one max flow, O(n + E), and the move search.
    """
    from olla_onnx.schedule.bounds import _CutNetwork

    best = list(order)
    if problem.n < 3:
        return best
    net = _CutNetwork(problem)
    live = problem.live_per_step(best)
    peak = int(live.max())
    tried: set[int] = set()
    for _ in range(rounds):
        now = time.perf_counter()
        if now > deadline:
            break
        v = next((best[int(st)] for st in np.nonzero(live == peak)[0] if best[int(st)] not in tried), None)
        if v is None:
            break
        tried.add(v)
        _, down = net.min_cut(problem, v, want_set=True)
        first = [u for u in best if (down >> u) & 1 and u != v] + [v]
        new = first + [u for u in best if not (down >> u) & 1]
        new = improve_moves(problem, new, min(deadline, now + max(0.2, (deadline - now) / 3)))
        nl = problem.live_per_step(new)
        if int(nl.max()) < peak:
            best, live, peak = new, nl, int(nl.max())
    return best
