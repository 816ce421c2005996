"""The memory model: simulate an order, tensor lifetimes, and sound lower bounds.

Memory model (docs/design.md): resident tensors (no producer) are live all step. A
node's outputs appear when it runs; while it runs its inputs and outputs are
all live. A tensor dies after its last consumer ran; a graph output lives to
the end; a tensor nobody reads dies right after its producer. ``peak(order)``
is the largest live total over the steps, resident bytes included.

This module is the referee: every order any algorithm returns goes through
:func:`simulate` (which checks that it is topological) before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from olla_onnx.ir.graph import Graph, check_order, reachability


@dataclass(frozen=True)
class Lifetimes:
    """Lifetimes of the non-resident tensors under one order.

    Tensor ``names[i]`` of ``sizes[i]`` bytes is live on steps ``start[i] ..
    end[i]`` inclusive (as a half-open buffer interval: ``[start, end + 1)``).
    """

    names: tuple[str, ...]
    sizes: np.ndarray
    start: np.ndarray
    end: np.ndarray


@dataclass(frozen=True)
class Simulation:
    """The result of running an order through the memory model.

    ``live[s]`` is the bytes live while step ``s`` runs, resident bytes included.
    """

    order: tuple[int, ...]
    live: np.ndarray
    peak: int
    peak_step: int
    resident_bytes: int
    lifetimes: Lifetimes

    def alive_at(self, step: int) -> list[tuple[str, int]]:
        """Non-resident tensors live at ``step`` as (name, bytes), largest first."""
        lt = self.lifetimes
        mask = (lt.start <= step) & (lt.end >= step)
        idx = np.nonzero(mask)[0]
        pairs = [(lt.names[i], int(lt.sizes[i])) for i in idx]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        return pairs


def positions(graph: Graph, order: Sequence[int]) -> np.ndarray:
    """``pos[v]`` = the step at which node ``v`` runs under ``order``."""
    pos = np.empty(graph.num_nodes, dtype=np.int64)
    pos[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
    return pos


def lifetimes(graph: Graph, order: Sequence[int]) -> Lifetimes:
    """Lifetimes of every produced tensor under ``order`` (assumed topological). O(n + E)."""
    pos = positions(graph, order)
    last_step = graph.num_nodes - 1
    names: list[str] = []
    sizes: list[int] = []
    start: list[int] = []
    end: list[int] = []
    outputs = graph.output_set
    consumers = graph.consumers
    for name, p in graph.producer.items():
        s = int(pos[p])
        cons = consumers[name]
        e = int(max(pos[c] for c in cons)) if cons else s
        if name in outputs:
            e = last_step
        names.append(name)
        sizes.append(graph.tensors[name].size)
        start.append(s)
        end.append(e)
    return Lifetimes(
        tuple(names),
        np.asarray(sizes, dtype=np.int64),
        np.asarray(start, dtype=np.int64),
        np.asarray(end, dtype=np.int64),
    )


def simulate(graph: Graph, order: Sequence[int], validate: bool = True) -> Simulation:
    """Live bytes per step, the peak and where it happens. O(n + E).

    With ``validate`` (the default) the order is first checked to be a
    topological order listing every node once (:class:`InvalidOrderError` if not).
    """
    if validate:
        check_order(graph, order)
    n = graph.num_nodes
    lt = lifetimes(graph, order)
    delta = np.zeros(n + 1, dtype=np.int64)
    np.add.at(delta, lt.start, lt.sizes)
    np.add.at(delta, lt.end + 1, -lt.sizes)
    resident = graph.resident_bytes
    live = np.cumsum(delta[:n]) + resident
    if n:
        step = int(np.argmax(live))
        top = int(live[step])
    else:
        step, top = 0, resident
    return Simulation(tuple(int(v) for v in order), live, top, step, resident, lt)


def peak(graph: Graph, order: Sequence[int], validate: bool = True) -> int:
    """Peak live bytes of ``order`` (resident included)."""
    return simulate(graph, order, validate).peak


# ---------------------------------------------------------------------------
# Lower bounds: each holds for *every* topological order of the graph.


@dataclass(frozen=True)
class LowerBound:
    """A lower bound on the peak of every order, and the node that attains it."""

    value: int
    method: str
    node: int | None = None


def node_footprints(graph: Graph) -> np.ndarray:
    """Per node: bytes of its distinct non-resident inputs and outputs.

    Sound as a bound because while a node runs, all its inputs and outputs are live.
    """
    prod = graph.producer
    sizes = graph.tensors
    out = np.zeros(graph.num_nodes, dtype=np.int64)
    for i, node in enumerate(graph.nodes):
        names = set(node.outputs) | {t for t in node.inputs if t in prod}
        out[i] = sum(sizes[t].size for t in names)
    return out


def per_node_bound(graph: Graph) -> LowerBound:
    """Resident bytes + the largest single-node footprint. O(n + E).

    Sound: whatever the order, each node runs at some step, and at that step
    its inputs and outputs are live together with the resident tensors.
    """
    if graph.num_nodes == 0:
        return LowerBound(graph.resident_bytes, "per-node")
    fp = node_footprints(graph)
    v = int(np.argmax(fp))
    return LowerBound(graph.resident_bytes + int(fp[v]), "per-node", v)


def _reachability(graph: Graph) -> tuple[list[int], list[int]]:
    """Bitsets (Python ints, bit ``u`` = node ``u``): strict ancestors and descendants of each node."""
    return reachability(graph.preds, graph.succs, graph.topological_order())


def forced_live_bytes(graph: Graph) -> np.ndarray:
    """Per node ``v``: bytes that every topological order must hold while ``v`` runs.

    A non-resident tensor ``t`` produced by ``p`` is live while ``v`` runs, in
    every order, when ``v == p``, or when ``p`` is an ancestor of ``v`` (so ``p``
    already ran) and some consumer of ``t`` is ``v`` or a descendant of ``v``
    (so that consumer has not run yet), or ``t`` is a graph output (it never
    dies). This is the ancestor/descendant bound of NOTES-ordering.md.

    Cost: O(n * E / 64) bit operations plus O(T * n) to add up; fine to ~20k nodes.
    """
    n = graph.num_nodes
    anc, desc = _reachability(graph)
    nbytes = (n + 7) // 8
    acc = np.zeros(n, dtype=np.int64)
    outputs = graph.output_set
    everyone = (1 << n) - 1
    consumers = graph.consumers
    for name, p in graph.producer.items():
        size = graph.tensors[name].size
        if size == 0:
            continue
        if name in outputs:
            later = everyone
        else:
            later = 0
            for c in consumers[name]:
                later |= anc[c] | (1 << c)
        mask = (desc[p] & later) | (1 << p)
        bits = np.unpackbits(np.frombuffer(mask.to_bytes(nbytes, "little"), dtype=np.uint8), bitorder="little")[:n]
        acc += bits.astype(np.int64) * size
    return acc


def ancestor_bound(graph: Graph) -> LowerBound:
    """Resident bytes + max over nodes of :func:`forced_live_bytes`. Dominates :func:`per_node_bound`."""
    if graph.num_nodes == 0:
        return LowerBound(graph.resident_bytes, "ancestor/descendant")
    forced = forced_live_bytes(graph)
    v = int(np.argmax(forced))
    return LowerBound(graph.resident_bytes + int(forced[v]), "ancestor/descendant", v)


def lower_bound(graph: Graph, max_nodes_for_ancestor: int = 30_000) -> LowerBound:
    """The best cheap bound: ancestor/descendant when the graph is small enough, else per-node."""
    if graph.num_nodes <= max_nodes_for_ancestor:
        return ancestor_bound(graph)
    return per_node_bound(graph)
