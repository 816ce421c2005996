"""Exact placement by depth-first search over canonical solutions (the MiniMalloc idea).

Decision problem: can every buffer be placed inside ``capacity`` bytes? The
search builds a solution from the bottom of the arena up. Every buffer goes to
its *minimum offset*: the highest top of the already placed buffers it overlaps
in time. A solution in which buffers are placed in non-decreasing order of
offset, each at its minimum offset, is *canonical*; every feasible instance has
one (push every buffer down as far as it goes, then read the buffers by offset),
so searching canonical solutions only is complete.

Pruning rules, each sound on its own (see Moffitt, "MiniMalloc: A Lightweight
Memory Allocator for Hardware-Accelerated Machine Learning", ASPLOS 2023):

- **canonical order**: the next buffer's offset is not below the last one's, and
  at equal offsets buffers come in preorder (no permutation is tried twice).
- **dominance (no avoidable gap)**: a buffer whose offset is at or above the
  lowest top ``min(min_offset + size)`` of the unplaced buffers is not tried:
  that lower buffer could be dropped into the gap, giving a canonical solution
  found on another branch.
- **section inference**: in each section (a time slice where the set of live
  buffers is constant) the unplaced buffers overlap each other and all placed
  ones, so they stack above ``max(floor, offset)``; if ``floor + unplaced bytes``
  exceeds the capacity anywhere, the branch is dead.
- **unplaced floor**: a section's floor is at least the smallest minimum offset
  among its unplaced buffers (sharpens section inference).
- **hatless pruning** (generalised): a buffer whose placement raises no unplaced
  buffer's minimum offset constrains nobody (whoever overlaps it already sits
  above it); if the search below it fails, the alternatives fail too.
- **dynamic decomposition**: once no unplaced buffer spans the boundary between
  two sections, the two sides are independent subproblems; each is solved on
  its own and a failure of one ends the branch (no cross product of retries).
  Each subproblem is ranked afresh with the section totals of the moment
  (MiniMalloc does the same; it is what makes problem H easy).
- **fixed buffers** (optional): a buffer whose offset is given is a
  candidate only at that offset, ranked ahead of every free buffer there
  (negative preorder ranks); no buffer is placed above the lowest unplaced
  fixed offset before that fixed buffer, and a placement that would push a
  fixed buffer's minimum offset above its given offset is refused. Canonical
  solutions still exist (push the free buffers down, leave the fixed ones),
  so the search stays complete relative to the fixed offsets; the dominance
  rule counts free buffers only (a fixed one cannot drop into a gap).
- **failure memo**: the subtree below a node is fixed by the unplaced buffers,
  their minimum offsets, and the last (offset, rank); a failure also holds for
  any lexicographically larger (offset, rank). Failures that did not depend on
  the rank hold for every preorder and survive the restarts. Keys are 128-bit
  BLAKE2 digests (a collision, odds ~2^-100, could only prune wrongly).

The search runs several static preorders (MiniMalloc's WAT, TAW, TWA; see
:mod:`olla_onnx.place.preorder`) round robin with a node limit that doubles,
which tames heavy-tailed runs. Cost:
exponential in the worst case; each node costs O(n + S) numpy work
(about 4,000-6,000 nodes per second on the challenging suite). The sections,
their totals and the overlap lists are built by :mod:`olla_onnx.place.sections`.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import time
from dataclasses import dataclass

import numpy as np

from olla_onnx.place.preorder import MINIMALLOC_PREORDERS, PreorderMeasures
from olla_onnx.place.sections import Sections

OK, NOT_FOUND = 0, 1
_BIG = np.int64(2**62)
#: Largest (section, buffer) slice the unplaced-floor rule scans per placement.
_BUMP_MAX = 20_000
#: Failure-memo entries kept before the memo is emptied (16-byte keys).
_MEMO_MAX = 2_000_000
#: Nodes with more unplaced buffers than this skip the memo (hashing them costs more than it saves).
_MEMO_MAX_BUFFERS = 4096
#: Subproblems up to this many buffers are ranked afresh (an O(size * span) Python loop).
_RERANK_MAX = 512


class _Stop(Exception):
    """Node limit or deadline reached (the search state is discarded)."""

    def __init__(self, timeout: bool) -> None:
        self.timeout = timeout


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`search_placement`.

    ``status`` is ``"feasible"`` (``offsets`` is a valid placement within the
    capacity), ``"infeasible"`` (proved: no placement fits) or ``"timeout"``.
    """

    status: str
    offsets: np.ndarray | None
    nodes: int
    seconds: float


class _Solver:
    def __init__(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        sizes: np.ndarray,
        capacity: int,
        deadline: float,
        fixed: np.ndarray,
        rank_span: tuple[int, int] | None = None,
    ) -> None:
        n = sizes.size
        self.n = n
        self.cap = int(capacity)
        self.deadline = deadline
        self.sz = sizes.astype(np.int64)
        sec = Sections.build(lower, upper, self.sz)
        self.sections = sec
        self.slo, self.shi, self.S = sec.first, sec.stop, sec.count
        self.nbrs, self.total0, self.cuts0 = sec.neighbours, sec.total, sec.crossings
        self.memb, self.ptr = sec.members, sec.ptr
        self.measures = PreorderMeasures(lower, upper, self.sz, sec.times, self.total0, rank_span)
        self.memo_any: dict[bytes, int] = {}
        self.memo_pre: dict[bytes, tuple[int, int]] = {}
        self.nodes = 0
        self.sol = np.full(n, -1, dtype=np.int64)
        # Fixed buffers: given offsets (-1: free), ranked -nf..-1 so that they
        # come first at their offset; ``root_pre`` is below every rank.
        self.foff = fixed.astype(np.int64)
        self.is_fixed = self.foff >= 0
        self.any_fixed = bool(self.is_fixed.any())
        self.fixed_rank = np.full(n, 0, dtype=np.int64)
        fidx = np.flatnonzero(self.is_fixed)
        self.fixed_rank[fidx] = np.arange(fidx.size) - fidx.size
        self.root_pre = -fidx.size - 1

    def reset(self, preorder: str) -> None:
        self.preorder = preorder
        self.pre = self.measures.ranks(preorder)
        if self.any_fixed:
            self.pre[self.is_fixed] = self.fixed_rank[self.is_fixed]
        self.mo = np.zeros(self.n, dtype=np.int64)
        self.placed = np.zeros(self.n, dtype=bool)
        self.floor = np.zeros(self.S, dtype=np.int64)
        self.total = self.total0.copy()
        self.cuts = self.cuts0.copy()
        self.memo_pre = {}

    def _rerank(self, sub: np.ndarray) -> np.ndarray:
        """Preorder ranks for the buffers ``sub`` with today's section totals ('T')."""
        rank = self.measures.ranks_now(sub, self.total, self.preorder)
        if self.any_fixed:
            fx = self.is_fixed[sub]
            rank[fx] = self.fixed_rank[sub[fx]]
        return rank

    # The recursive search over one partition (buffers P, sections [a, b)).
    def dfs(self, P: np.ndarray, a: int, b: int, last_off: int, last_pre: int) -> int:
        U = P[~self.placed[P]]
        if U.size == 0:
            return OK
        mou = self.mo[U]
        # Failure memo: the subtree below a node depends only on the unplaced
        # buffers, their minimum offsets, the last offset and the last preorder
        # rank (a larger rank only removes candidates); floors and totals follow
        # from these. Failures that did not depend on the rank hold for every
        # preorder and survive restarts.
        memo = U.size <= _MEMO_MAX_BUFFERS
        if memo:
            key = hashlib.blake2b(U.tobytes() + mou.tobytes() + struct.pack("<qq", a, b), digest_size=16).digest()
            # A failure at last offset L (rank p) implies failure at any (L', p')
            # that is lexicographically larger: the candidates only shrink.
            known_any = self.memo_any.get(key)
            if known_any is not None and last_off >= known_any:
                return NOT_FOUND
            key_pre = hashlib.blake2b(key + self.pre[U].tobytes(), digest_size=16).digest()
            known = self.memo_pre.get(key_pre)
            if known is not None and (last_off, last_pre) >= known:
                return NOT_FOUND
        self.nodes += 1
        self.budget -= 1
        if self.budget < 0:
            raise _Stop(False)
        if (self.nodes & 15) == 0 and time.perf_counter() > self.deadline:
            raise _Stop(True)
        eff = mou
        if self.any_fixed:
            fx = self.is_fixed[U]
            if fx.any():
                eff = np.where(fx, self.foff[U], mou)
        status = self._expand(P, a, b, last_off, last_pre, U, eff)
        if status == NOT_FOUND and memo:
            if len(self.memo_any) + len(self.memo_pre) > _MEMO_MAX:
                self.memo_any.clear()
                self.memo_pre.clear()
            if not (eff == last_off).any():
                self.memo_any[key] = last_off if known_any is None else min(known_any, last_off)
            else:
                entry = (last_off, last_pre)
                self.memo_pre[key_pre] = entry if known is None else min(known, entry)
        return status

    def _expand(self, P: np.ndarray, a: int, b: int, last_off: int, last_pre: int, U: np.ndarray, mou: np.ndarray) -> int:
        # ``mou``: each unplaced buffer's offset if placed next (its minimum
        # offset; a fixed buffer's given offset).
        mo, sz, pre = self.mo, self.sz, self.pre
        preu = pre[U]
        fx = self.is_fixed[U] if self.any_fixed else None
        if fx is not None and fx.any():
            free = ~fx
            min_height = int((mou[free] + sz[U[free]]).min()) if free.any() else int(_BIG)
            fmin = int(mou[fx].min())
            if fmin < last_off:
                return NOT_FOUND  # a fixed buffer was passed over
            # Nothing goes above the lowest unplaced fixed buffer before it does.
            ok = (mou < min_height) & ((mou < fmin) | (fx & (mou == fmin)))
        else:
            min_height = int((mou + sz[U]).min())
            ok = mou < min_height
        ok &= (mou > last_off) | ((mou == last_off) & (preu > last_pre))
        C = U[ok]
        if C.size == 0:
            return NOT_FOUND
        offs = mou[ok]
        if C.size > 1:
            o = np.lexsort((pre[C], offs))
            C, offs = C[o], offs[o]
        cap = self.cap
        floor, total, placed, cuts = self.floor, self.total, self.placed, self.cuts
        # Section inference with the monotonic floor: after a buffer goes to
        # offset ``off`` (at its minimum offset, so it sits on its sections'
        # floors), every section needs max(floor, off) + unplaced <= capacity.
        # Inside the buffer's span that sum is unchanged by placing it, so the
        # test depends on ``off`` alone: candidates above cap - max(total) fail.
        tot = total[a:b]
        off_max = cap - int(tot.max())
        if offs[0] > off_max:
            return NOT_FOUND
        if offs[-1] > off_max:
            keep = offs <= off_max
            C, offs = C[keep], offs[keep]
        slo, shi, memb, ptr = self.slo, self.shi, self.memb, self.ptr
        foff, is_fixed = self.foff, self.is_fixed
        for bi, off in zip(C.tolist(), offs.tolist()):
            s0, s1 = int(slo[bi]), int(shi[bi])
            size = int(sz[bi])
            top = off + size
            nb = self.nbrs[bi]
            nbu = nb[~placed[nb]]
            if self.any_fixed:
                if is_fixed[bi] and top > cap:
                    return NOT_FOUND
                fn = nbu[is_fixed[nbu]]
                if fn.size and (foff[fn] < top).any():
                    continue  # it would overlap a fixed buffer above it
            placed[bi] = True
            self.sol[bi] = off
            changed = nbu[mo[nbu] < top]
            hatless = changed.size == 0
            old_mo = mo[changed]
            mo[changed] = top
            old_floor = floor[s0:s1].copy()
            floor[s0:s1] = top
            total[s0:s1] -= size
            # Unplaced floor: a section's floor is at least the smallest minimum
            # offset of its unplaced buffers; only sections of buffers whose
            # minimum offset rose can change.
            alive = True
            r0 = r1 = 0
            if changed.size:
                r0 = max(int(slo[changed].min()), a)
                r1 = min(int(shi[changed].max()), b)
                p0, p1 = ptr[r0], ptr[r1]
                if p1 - p0 > _BUMP_MAX:  # the rule only prunes; skip it where it costs too much
                    p1 = p0
                m = memb[p0:p1]
                lows = np.minimum.reduceat(np.where(placed[m], _BIG, mo[m]), ptr[r0:r1] - p0) if m.size else None
                if lows is not None:
                    seg_floor = floor[r0:r1]
                    bump = np.where(lows >= _BIG, 0, lows)
                    bump[ptr[r0 + 1 : r1 + 1] == ptr[r0:r1]] = 0
                    old_seg = seg_floor.copy()
                    np.maximum(seg_floor, bump, out=seg_floor)
                    if ((seg_floor + total[r0:r1]) > cap).any():
                        alive = False
                else:
                    old_seg = None
            else:
                old_seg = None
            status = NOT_FOUND
            if alive:
                # Dynamic decomposition: boundaries no unplaced buffer spans any more.
                zeros: list[int] = []
                if s1 - s0 > 1:
                    seg = cuts[s0 : s1 - 1]
                    seg -= 1
                    zeros = (np.flatnonzero(seg == 0) + s0 + 1).tolist()
                try:
                    if not zeros:
                        status = self.dfs(P, a, b, off, int(pre[bi]))
                    else:
                        status = OK
                        bounds = [a] + [z for z in zeros if a < z < b] + [b]
                        rest = P[~placed[P]]
                        rlo = slo[rest]
                        for x, y in zip(bounds[:-1], bounds[1:]):
                            sub = rest[(rlo >= x) & (rlo < y)]
                            if sub.size == 0:
                                continue
                            # Like MiniMalloc, rank the subproblem afresh with
                            # the section totals as they are now.
                            old_pre = pre[sub]
                            if sub.size <= _RERANK_MAX:
                                pre[sub] = self._rerank(sub)
                            try:
                                sub_status = self.dfs(sub, x, y, off, self.root_pre)
                            finally:
                                pre[sub] = old_pre
                            if sub_status != OK:
                                status = NOT_FOUND
                                break
                finally:
                    if s1 - s0 > 1:
                        cuts[s0 : s1 - 1] += 1
            if old_seg is not None:
                floor[r0:r1] = old_seg
            floor[s0:s1] = old_floor
            total[s0:s1] += size
            mo[changed] = old_mo
            placed[bi] = False
            if status == OK:
                return OK
            if hatless or (self.any_fixed and is_fixed[bi]):
                break  # a fixed buffer is forced: nothing may come before it
        return NOT_FOUND


def search_placement(
    lower: np.ndarray,
    upper: np.ndarray,
    sizes: np.ndarray,
    capacity: int,
    time_limit: float = 60.0,
    preorders: tuple[str, ...] = MINIMALLOC_PREORDERS,
    max_rounds: int | None = None,
    fixed: np.ndarray | None = None,
    rank_span: tuple[int, int] | None = None,
    first_limit: float = 2.0,
) -> SearchResult:
    """Decide whether the buffers fit in ``capacity`` bytes; return a placement if so.

    Complete: ``"infeasible"`` is a proof (the search space was exhausted under
    sound pruning), ``"feasible"`` comes with offsets. Buffers of size 0 get
    offset 0. Independent time windows (no buffer spans their boundary) are
    solved separately. Cost: exponential in the worst case, bounded by
    ``time_limit`` seconds (then ``"timeout"``). Each round runs every
    preorder of ``preorders`` (:class:`~olla_onnx.place.preorder.Preorder`
    members or letter strings) once with a node limit that doubles per round (starting at twice
    the buffers); ``max_rounds`` caps the rounds (then ``"timeout"`` too), so
    ``max_rounds=1`` is a quick set of near-greedy dives. ``fixed`` gives
    offsets for buffers that must stay where they are (-1: free to place); the
    fixed buffers must not overlap each other, and ``"infeasible"`` then means
    no placement of the free buffers fits around them. ``rank_span``
    ``(start, end)`` measures the preorders (width, area, section totals)
    inside that time window only; it changes the order of the search, never
    its answer. ``first_limit`` sets the first round's node limit, in
    multiples of the buffers (a dive that lands rarely needs more than 1.6).
    """
    t0 = time.perf_counter()
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n = sizes.size
    fixed = np.full(n, -1, dtype=np.int64) if fixed is None else np.asarray(fixed, dtype=np.int64)
    if fixed.shape != (n,):
        raise ValueError(f"{fixed.size} fixed offsets for {n} buffers")
    offsets = np.where(fixed >= 0, fixed, 0)
    live = np.flatnonzero(sizes > 0)
    if live.size == 0:
        return SearchResult("feasible", offsets, 0, time.perf_counter() - t0)
    solver = _Solver(lower[live], upper[live], sizes[live], capacity, t0 + time_limit, fixed[live], rank_span)
    if (solver.total0 > capacity).any() or (solver.foff + solver.sz > capacity)[solver.is_fixed].any():
        return SearchResult("infeasible", None, 0, time.perf_counter() - t0)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 4 * solver.n + 1000))
    try:
        for P, a, b in solver.sections.partitions():
            limit = max(P.size, 16) * first_limit / 2
            solved = False
            rounds = 0
            while not solved:
                if max_rounds is not None and rounds >= max_rounds:
                    return SearchResult("timeout", None, solver.nodes, time.perf_counter() - t0)
                rounds += 1
                limit *= 2
                for preorder in preorders:
                    solver.reset(preorder)
                    solver.budget = int(limit)
                    try:
                        st = solver.dfs(P, a, b, 0, solver.root_pre)
                    except _Stop as stop:
                        if stop.timeout:
                            return SearchResult("timeout", None, solver.nodes, time.perf_counter() - t0)
                        continue
                    if st != OK:
                        return SearchResult("infeasible", None, solver.nodes, time.perf_counter() - t0)
                    solved = True
                    break
    finally:
        sys.setrecursionlimit(old_limit)
    offsets[live] = solver.sol
    return SearchResult("feasible", offsets, solver.nodes, time.perf_counter() - t0)
