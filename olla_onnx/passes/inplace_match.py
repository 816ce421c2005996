"""Dataflow candidates for in-place updates: which graph output is the updated value of which resident input.

Names alone miss exports whose tensors are called ``arg0_1`` and ``sub_36`` (PyTorch's functional tracing):
this module finds the pairs from the graph itself. :mod:`olla_onnx.passes.inplace` proposes them after the
explicit pairs and the naming rules, and its safety checker then accepts or refuses each one.

*Dataflow match*. An output ``O`` is a candidate update of a resident input ``I`` when

- ``I`` is fed by the caller (``feedable``) and ``O`` is a graph output a node computes, neither already
  claimed (by an explicit pair or by a naming-rule candidate, accepted or refused);
- ``I`` and ``O`` have the same dtype and shape where the caller's ``signatures`` give both, else the same
  size in the IR (and more than 0 bytes);
- ``I`` reaches ``O`` through an *element-wise path*: every node on it is element-wise
  (:data:`PATH_OPS`: :data:`~olla_onnx.ort_facts.ELEMENTWISE`, ``Cast``/``CastLike``, and the views of
  :data:`~olla_onnx.ort_facts.VIEW_OPS` through their data input) and every tensor on it has ``I``'s size
  (a view's output counts as its input's size: the ONNX reader gives views 0 bytes). So ``I`` is never
  broadcast on the way, and each element of ``O`` comes from the element of ``I`` at the same position
  (views and Cast keep the element count and the order; the IR has no intermediate shapes, so a view
  that reshapes is allowed: only the end points must agree). Exporters write updates this way:
  ``Sub(p, Mul(lr, g))``, ``Add(Mul(b1, m), Mul(1 - b1, g))``, ``Div``, ``Sqrt``, ``Add(., eps)``.

*Matching*. An input may reach several outputs (in Adam, ``m`` and ``v`` are element-wise ancestors of
the new ``p`` too) and an output several inputs. Each candidate (``I``, ``O``) gets the cost of its best
path, ``(nodes, side entries)``: the number of element-wise nodes on the path (a Cast or a view computes
nothing and counts 0), then how many of them the path enters through an operand other than the first
(updates usually read their own state first: ``p - lr * g``, ``m * b1 + ...``). Candidates are taken
greedily in the order (cost, position of ``I`` among the resident tensors, position of ``O`` among the
graph outputs) -- deterministic --, each input and each output at most once. ``p`` is a direct operand
of the ``Sub`` that makes the new ``p`` (one node) while ``m`` is several nodes away, so ``p`` wins that
output and ``m`` keeps its own. The matching is made from dataflow only, before any safety check: a
matched pair the checker refuses keeps both names (it is listed with the checker's reason), so an
output never falls back to a more distant input (which would put, say, a parameter into its moment's
buffer).

*Limit*. Any fed input can match: one that is not state but is combined element-wise into a same-shaped
output (a fed loss scale multiplied into the returned scalar loss) is paired too when safe, and its
buffer then holds that output after the step. Callers that reuse such an input pass ``feedable``
without it.

Cost: one Dijkstra search from each candidate input over the tensors of its size that element-wise
nodes reach (the update tail: a handful of nodes per input), then a sort of the candidates.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Collection, Mapping

from olla_onnx.ir.graph import Graph
from olla_onnx.ort_facts import ELEMENTWISE, VIEW_OPS

#: Ops a dataflow path may go through (each output element from the same-position input elements).
PATH_OPS = ELEMENTWISE | {"Cast", "CastLike"} | VIEW_OPS

#: Ops read through their first input only (the others are a shape or a type, not data).
_FIRST_INPUT_ONLY = VIEW_OPS | {"Cast", "CastLike"}


@dataclass(frozen=True, order=True)
class Candidate:
    """A dataflow match: ``output`` is reached from ``input`` through ``nodes`` element-wise nodes (casts and
    views not counted), entering ``side`` of them through an operand other than the first (the matching's cost,
    module docstring)."""

    nodes: int
    side: int
    input: str
    output: str


def _path_costs(graph: Graph, start: str) -> dict[str, tuple[int, int]]:
    """Best (nodes, side entries) from ``start`` to each tensor an element-wise path of ``start``'s size reaches."""
    size = graph.tensors[start].size
    best: dict[str, tuple[int, int]] = {start: (0, 0)}
    heap = [(0, 0, start)]
    while heap:
        d, s, t = heapq.heappop(heap)
        if best.get(t, (d, s)) < (d, s):
            continue
        for c in graph.consumers.get(t, ()):
            node = graph.nodes[c]
            if node.op_type not in PATH_OPS:
                continue
            if node.op_type in _FIRST_INPUT_ONLY:  # a cast or a view: no arithmetic, so no cost
                if not node.inputs or node.inputs[0] != t:
                    continue
                step, side = 0, 0
            else:
                step, side = 1, 0 if node.inputs and node.inputs[0] == t else 1
            for o in node.outputs:
                osize = graph.tensors[o].size
                if osize != size and not (node.op_type in VIEW_OPS and osize == 0):
                    continue
                cost = (d + step, s + side)
                if cost < best.get(o, (1 << 60, 0)):
                    best[o] = cost
                    heapq.heappush(heap, (cost[0], cost[1], o))
    return best


def dataflow_candidates(
    graph: Graph,
    inputs: Collection[str],
    outputs: Collection[str],
    signatures: Mapping[str, object] | None = None,
) -> list[Candidate]:
    """Every dataflow match (module docstring) between ``inputs`` (resident) and ``outputs`` (graph outputs),
    cheapest first, in the matching's order."""
    sig = signatures or {}
    rank_in = {n: i for i, n in enumerate(graph.resident)}
    rank_out = {n: i for i, n in enumerate(graph.outputs)}
    wanted = {o for o in outputs if o in graph.producer and graph.tensors[o].size > 0}
    found: list[tuple[tuple[int, int, int, int], Candidate]] = []
    for inp in inputs:
        if inp not in rank_in or graph.tensors[inp].size == 0:
            continue
        for out, (d, s) in _path_costs(graph, inp).items():
            if out not in wanted or graph.tensors[out].size != graph.tensors[inp].size:
                continue  # (a view reached as 0 bytes is not a graph output: those keep their size)
            si, so = sig.get(inp), sig.get(out)
            if si is not None and so is not None and si != so:
                continue
            found.append(((d, s, rank_in[inp], rank_out[out]), Candidate(d, s, inp, out)))
    found.sort(key=lambda kc: kc[0])
    return [c for _, c in found]


def match(candidates: list[Candidate]) -> list[Candidate]:
    """Greedy matching in the given order: each input and each output in one candidate at most."""
    used: set[str] = set()
    out = []
    for c in candidates:
        if c.input not in used and c.output not in used:
            used.update((c.input, c.output))
            out.append(c)
    return out


__all__ = ["Candidate", "PATH_OPS", "dataflow_candidates", "match"]
