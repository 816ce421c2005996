"""Reduction of a :class:`Graph` to the compact problem every scheduler in this package solves.

What is removed or rewritten, and why each step keeps the optimum:

* Resident tensors (no producer) are live in every step of every order: they
  add the same constant to every step, so they leave the problem and come back
  as ``base`` when a peak is reported.
* Zero-byte tensors change no live total: dropped.
* Sizes are divided by their greatest common divisor ``scale``: every live
  total is a multiple of it, so peaks compare the same way.
* Every node keeps only its distinct non-resident inputs and its outputs, as
  tensor indices; a tensor remembers its producer, its consumers, and whether
  it is a graph output (``persist``: it never dies).

ASAP/ALAP windows (:func:`windows`) are the earliest and latest step a node can
take in any topological order: its number of ancestors, and ``n - 1`` minus its
number of descendants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from olla_onnx.ir.graph import Graph, kahn_order, reachability


@dataclass(frozen=True, eq=False)
class Problem:
    """A scheduling problem: nodes ``0..n-1`` (the graph's indices) and the tensors that matter.

    Attributes:
        n: number of nodes.
        preds, succs: data dependencies between nodes (distinct, via non-resident tensors).
        size: per tensor, bytes divided by ``scale`` (all >= 1).
        prod: per tensor, its producer.
        cons: per tensor, its consumers (distinct).
        persist: per tensor, True for graph outputs (live from their producer to the end).
        outs: per node, the tensors it produces.
        ins: per node, the distinct tensors it reads.
        scale: the common divisor of all tensor sizes.
        base: resident bytes (unscaled), added to every live total.
        names: per tensor, its name in the graph.
    """

    n: int
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    size: tuple[int, ...]
    prod: tuple[int, ...]
    cons: tuple[tuple[int, ...], ...]
    persist: tuple[bool, ...]
    outs: tuple[tuple[int, ...], ...]
    ins: tuple[tuple[int, ...], ...]
    scale: int
    base: int
    names: tuple[str, ...]

    def to_bytes(self, scaled: int) -> int:
        """A live total of the scaled problem in the graph's bytes (resident included)."""
        return self.base + self.scale * int(scaled)

    def _deltas(self, order: Sequence[int]) -> list[int]:
        """Per step, scaled bytes born minus bytes that died after the previous step. O(n + E)."""
        n = self.n
        pos = [0] * n
        for s, v in enumerate(order):
            pos[v] = s
        delta = [0] * (n + 1)
        for t, sz in enumerate(self.size):
            s = pos[self.prod[t]]
            if self.persist[t]:
                e = n - 1
            elif self.cons[t]:
                e = max(pos[c] for c in self.cons[t])
            else:
                e = s
            delta[s] += sz
            delta[e + 1] -= sz
        return delta

    def peak(self, order: Sequence[int]) -> int:
        """Scaled peak of ``order`` (assumed topological; resident excluded). O(n + E)."""
        best = cur = 0
        for d in self._deltas(order)[: self.n]:
            cur += d
            if cur > best:
                best = cur
        return best

    def live_per_step(self, order: Sequence[int]) -> np.ndarray:
        """Scaled live bytes at every step of ``order`` (resident excluded)."""
        return np.cumsum(np.asarray(self._deltas(order)[: self.n], dtype=np.int64))


def reduce_graph(graph: Graph) -> Problem:
    """Build the compact :class:`Problem` of ``graph``. O(n + E)."""
    prod_of = graph.producer
    consumers = graph.consumers
    outputs = graph.output_set
    names = [name for name, p in prod_of.items() if graph.tensors[name].size > 0]
    raw = [graph.tensors[name].size for name in names]
    scale = 0
    for s in raw:
        scale = math.gcd(scale, s)
    scale = scale or 1
    index = {name: i for i, name in enumerate(names)}
    outs: list[list[int]] = [[] for _ in range(graph.num_nodes)]
    ins: list[list[int]] = [[] for _ in range(graph.num_nodes)]
    for i, name in enumerate(names):
        outs[prod_of[name]].append(i)
        for c in consumers[name]:
            ins[c].append(i)
    return Problem(
        n=graph.num_nodes,
        preds=graph.preds,
        succs=graph.succs,
        size=tuple(s // scale for s in raw),
        prod=tuple(prod_of[name] for name in names),
        cons=tuple(consumers[name] for name in names),
        persist=tuple(name in outputs for name in names),
        outs=tuple(tuple(o) for o in outs),
        ins=tuple(tuple(x) for x in ins),
        scale=scale,
        base=graph.resident_bytes,
        names=tuple(names),
    )


def windows(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """ASAP and ALAP step of every node: ``asap[v] = |ancestors(v)|``, ``alap[v] = n-1-|descendants(v)|``.

    Sound: all ancestors run before ``v`` and all descendants after it, in every
    topological order. Cost: O(n * E / 64) with bitsets.
    """
    n = problem.n
    anc, desc = reachability(problem.preds, problem.succs, topo_order(problem))
    asap = np.array([a.bit_count() for a in anc], dtype=np.int64)
    alap = np.array([n - 1 - d.bit_count() for d in desc], dtype=np.int64)
    return asap, alap


def topo_order(problem: Problem) -> list[int]:
    """A topological order (Kahn, smallest index first)."""
    return kahn_order(problem.preds, problem.succs)


def pin_constants(problem: Problem, budget: int) -> tuple[Problem, int] | None:
    """A relaxation that pins the outputs of input-free nodes (ONNX ``Constant`` and the like) live to the end.

    Pins shared constants smallest first while their total stays within
    ``budget`` (scaled bytes); returns ``(relaxed, slack)``, or None when
    nothing qualifies. Sound use: making a
    tensor live longer can only add its size to a step, so for every order
    ``peak(order) <= relaxed.peak(order) <= peak(order) + slack``, and an exact
    optimum ``opt'`` of the relaxation gives the bound ``opt >= opt' - slack``.
    Why: a node reading a shared constant may free it (if it reads it last), so
    it does not qualify for the DP's deferral rule; once the constant is pinned
    it does, and the optimizer-update tails of training graphs collapse.
    """
    shared = sorted(
        (t for t in range(len(problem.size))
         if not problem.persist[t] and not problem.ins[problem.prod[t]] and len(problem.cons[t]) > 1),
        key=lambda t: problem.size[t],
    )
    pinned = []
    slack = 0
    for t in shared:
        if slack + problem.size[t] > budget:
            break
        pinned.append(t)
        slack += problem.size[t]
    if not pinned:
        return None
    persist = list(problem.persist)
    for t in pinned:
        persist[t] = True
    from dataclasses import replace

    return replace(problem, persist=tuple(persist)), slack
