"""In-place updates: a graph output written over the resident input it replaces.

A training step reads parameters and optimizer state (resident graph inputs)
and returns their updated values (graph outputs). Under the memory model (docs/design.md)
model every output lives to the end of the step, so the update tail holds a
full second copy of parameters and state. When nothing reads an input after
the node ``P`` that produces its updated value, that value can be written into
the input's own buffer: the output then costs no bytes at all.

This module is a pass over the IR, in two steps:

- :func:`find_inplace_pairs` matches inputs to outputs (explicit pairs, naming
  rules, then dataflow) and keeps the *safe* ones, saying why each other one
  was refused;
- :func:`apply_inplace` returns the same graph where each paired output has
  size 0 and every other reader ``c`` of the input gets a zero-byte *order
  token* that ``P`` reads (``c`` must run before ``P`` overwrites the input).

Every algorithm (simulator, bounds, order search, placement) then works on
the transformed graph as on any other: its topological orders are exactly
the orders of the original graph in which the aliasing is safe, and its
simulated peak is the peak with the outputs living in their inputs' buffers.
Tokens are tensors of the IR only: the ONNX writer maps orders by node index,
and :func:`is_order_token` lets plans and reports leave them out.

Candidates, in this order of precedence:

1. explicit pairs (``--inplace IN=OUT``): each must be safe, or it is an error;
2. naming rules, for each graph output in order (the output is matched to the
   first candidate input that exists; a name match wins whether or not the
   dataflow agrees -- names are the exporter's word, and the checker below
   makes any pair safe):

   a. ``A_out.R`` -> ``A.R``: the corpus's ``param_out.X`` -> ``param.X`` and
      ``state_out.X`` -> ``state.X``;
   b. ``X_new``, ``X.new``, ``X_out``, ``X.out``, ``X_updated``, ``X.updated`` -> ``X``;

3. dataflow, among the inputs the caller feeds and the outputs that are in no
   explicit pair and no naming-rule candidate, accepted or refused
   (:mod:`olla_onnx.passes.inplace_match`): ``O`` is the updated value of ``I``
   when they have the same dtype and shape and ``I`` reaches ``O`` through
   element-wise nodes only, on tensors of ``I``'s size; where several inputs
   reach one output (Adam's ``m`` and ``v`` reach the new ``p``), a greedy
   matching takes the shortest path first (``p`` is an operand of the final
   ``Sub``; ``m`` is several nodes away), ties broken by fewer entries through
   a non-first operand, then input and output position. The matching is
   made before the safety check: an output whose match is refused does not
   fall back to a more distant input (a parameter is never put into its
   moment's buffer).

Every candidate is then accepted or refused (with a one-line reason) by the
safety rules below, one by one in that order, so the pairs found by names
alone are exactly those found before the dataflow step existed.

Safety, per pair (input ``I``, output ``O``, ``P`` = producer of ``O``):

(a) every other reader of ``I`` (or of a view of ``I``, below) can run before
    ``P``: ``P`` is not an ancestor of any of them, in the graph with the
    tokens of the pairs accepted so far (so the tokens of all pairs together
    never close a cycle);
(b) if ``P`` reads ``I`` itself, ``P`` is an element-wise op
    (:data:`~olla_onnx.ort_facts.ELEMENTWISE`) and reads no view of ``I``: the kernel then reads
    each element before it writes the same index (``I`` and ``O`` have the
    same size, so ``I`` is not broadcast);
(c) ``I`` is a resident tensor the caller provides (``feedable``), is not a
    graph output, and no view of ``I`` is one; ``O`` is a graph output that
    ``P`` computes when the schedule says (not a Constant, Shape, Size or
    control-flow node, which onnxruntime runs at times of its own); ``I`` and
    ``O`` have the same size (and the same dtype and shape, where the caller
    passes ``signatures``); each name is in one pair.

*Views*: onnxruntime may return the input buffer itself as the output of
Reshape, Flatten, Squeeze, Unsqueeze and Identity (:data:`~olla_onnx.ort_facts.VIEW_OPS`); their
outputs are treated as ``I`` (transitively).

Cost: O(n + E) to index the graph, plus one forward search from each ``P``
(usually a handful of nodes: updates sit at the end of the step), plus the
dataflow search: one search from each candidate input over the same-sized
tensors element-wise nodes reach from it (the update tail), and a sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from olla_onnx.errors import GraphError, OllaInputError
from olla_onnx.ir.graph import Graph, Node, Tensor
from olla_onnx.ort_facts import ELEMENTWISE, UNSCHEDULED_OPS, VIEW_OPS
from olla_onnx.passes.inplace_match import dataflow_candidates, match

#: Every order token's name starts with this (a model using the prefix itself gets no pairs).
TOKEN_PREFIX = "olla.order_token:"


@dataclass(frozen=True)
class InplacePair:
    """Output ``output`` is written into the buffer of resident input ``input`` (``bytes`` each)."""

    input: str
    output: str
    bytes: int


@dataclass(frozen=True)
class Refusal:
    """A candidate pair that is not safe, and why (one line)."""

    input: str
    output: str
    reason: str


@dataclass(frozen=True)
class InplaceSearch:
    """What :func:`find_inplace_pairs` found: the safe pairs, and the candidates refused."""

    pairs: tuple[InplacePair, ...]
    refused: tuple[Refusal, ...]

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.pairs)


def is_order_token(name: str) -> bool:
    """True for the zero-byte tensors :func:`apply_inplace` adds (never written to ONNX or plans)."""
    return name.startswith(TOKEN_PREFIX)


def candidate_inputs(output: str) -> list[str]:
    """Input names the naming rules (module docstring) pair with ``output``, first rule first."""
    out: list[str] = []
    head, dot, rest = output.partition(".")
    if dot and head.endswith("_out") and len(head) > 4:
        out.append(f"{head[:-4]}.{rest}")
    for suffix in ("_new", ".new", "_out", ".out", "_updated", ".updated"):
        if output.endswith(suffix) and len(output) > len(suffix):
            out.append(output[: -len(suffix)])
    return out


def parse_pair(text: str) -> tuple[str, str]:
    """``"IN=OUT"`` -> ``("IN", "OUT")``; anything else is an :class:`OllaInputError`."""
    name, sep, out = text.partition("=")
    if not sep or not name.strip() or not out.strip():
        raise OllaInputError(f"--inplace {text!r}: expected INPUT=OUTPUT, e.g. --inplace param.w=param_out.w")
    return name.strip(), out.strip()


class _Checker:
    """The safety rules against one graph, with the tokens of the pairs accepted so far."""

    def __init__(self, graph: Graph, feedable: Iterable[str] | None, signatures: Mapping[str, object] | None) -> None:
        self.graph = graph
        resident = set(graph.resident)
        self.feedable = resident if feedable is None else resident & set(feedable)
        self.signatures = signatures or {}
        self.extra_succs: dict[int, set[int]] = {}  # token edges c -> P of accepted pairs
        self.used: set[str] = set()
        self.reserved = any(is_order_token(t) for t in graph.tensors)

    def views(self, name: str) -> set[str]:
        """``name`` and every tensor that may alias it through :data:`~olla_onnx.ort_facts.VIEW_OPS` (transitively)."""
        g = self.graph
        seen, todo = {name}, [name]
        while todo:
            t = todo.pop()
            for c in g.consumers.get(t, ()):
                node = g.nodes[c]
                if node.op_type in VIEW_OPS and node.inputs and node.inputs[0] == t:
                    for o in node.outputs:
                        if o not in seen:
                            seen.add(o)
                            todo.append(o)
        return seen

    def readers(self, views: set[str], producer: int) -> list[int]:
        """Nodes other than ``producer`` that read ``views`` (ascending, each once)."""
        g = self.graph
        acc = {c for t in views for c in g.consumers.get(t, ())}
        acc.discard(producer)
        return sorted(acc)

    def reaches(self, start: int, targets: set[int]) -> int | None:
        """A node of ``targets`` reachable from ``start`` (data edges and accepted tokens), or None."""
        succs, extra = self.graph.succs, self.extra_succs
        seen, todo = {start}, [start]
        while todo:
            v = todo.pop()
            for w in (*succs[v], *extra.get(v, ())):
                if w in targets:
                    return w
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return None

    def why_not(self, inp: str, out: str) -> str | None:
        """None if (inp, out) is safe given the pairs accepted so far, else the reason (one line)."""
        g = self.graph
        if self.reserved:
            return f"the model names a tensor with the reserved prefix {TOKEN_PREFIX!r}"
        if inp in self.used or out in self.used:
            return "a name of this pair is already in another pair"
        if inp not in g.tensors or inp in g.producer:
            return f"{inp!r} is not a resident input of the graph"
        if inp not in self.feedable:
            return f"{inp!r} is not a graph input the caller feeds (an initializer or constant)"
        if out not in g.output_set or out not in g.producer:
            return f"{out!r} is not a graph output computed by a node"
        size_i, size_o = g.tensors[inp].size, g.tensors[out].size
        if size_i != size_o:
            return f"sizes differ ({size_i} and {size_o} bytes)"
        if size_i == 0:
            return "zero bytes: nothing to save"
        si, so = self.signatures.get(inp), self.signatures.get(out)
        if si is not None and so is not None and si != so:
            return f"dtype or shape differ ({si} and {so})"
        p = g.producer[out]
        node = g.nodes[p]
        if node.op_type in UNSCHEDULED_OPS:
            return f"its producer {node.name!r} is a {node.op_type} node, which onnxruntime does not run in file order"
        views = self.views(inp)
        if views & g.output_set:
            return f"{inp!r} (or a view of it) is itself a graph output"
        read = set(node.inputs)
        if read & (views - {inp}):
            return f"its producer {node.name!r} reads a view of {inp!r}"
        if inp in read and node.op_type not in ELEMENTWISE:
            return f"its producer {node.name!r} ({node.op_type}) reads {inp!r} and is not element-wise"
        readers = self.readers(views, p)
        hit = self.reaches(p, set(readers))
        if hit is not None:
            return f"{g.nodes[hit].name!r} reads {inp!r} and depends on its producer {node.name!r}"
        return None

    def accept(self, inp: str, out: str) -> InplacePair:
        g = self.graph
        p = g.producer[out]
        for c in self.readers(self.views(inp), p):
            self.extra_succs.setdefault(c, set()).add(p)
        self.used.update((inp, out))
        return InplacePair(inp, out, g.tensors[out].size)


def find_inplace_pairs(
    graph: Graph,
    explicit: Sequence[tuple[str, str]] = (),
    *,
    rules: bool = True,
    dataflow: bool = True,
    feedable: Iterable[str] | None = None,
    signatures: Mapping[str, object] | None = None,
) -> InplaceSearch:
    """The safe (input, output) pairs of ``graph``: ``explicit`` ones first, then the naming rules
    (``rules``), then the dataflow matches (``dataflow``; module docstring).

    ``feedable`` limits inputs to those the caller provides (default: every
    resident tensor); ``signatures`` maps names to a comparable (dtype, shape)
    where known. An explicit pair whose names do not exist or that is unsafe is
    an :class:`OllaInputError` (the user asked for it); a pair the rules or the
    dataflow propose and the safety rules refuse is listed in ``refused`` with
    its reason. Pairs are accepted one by one, each checked with the tokens of
    the earlier ones. Cost: module docstring.
    """
    check = _Checker(graph, feedable, signatures)
    pairs: list[InplacePair] = []
    refused: list[Refusal] = []
    claimed: set[str] = set()  # names of every candidate so far, accepted or refused

    def propose(inp: str, out: str) -> None:
        why = check.why_not(inp, out)
        if why is None:
            pairs.append(check.accept(inp, out))
        else:
            refused.append(Refusal(inp, out, why))
        claimed.update((inp, out))

    for inp, out in explicit:
        for name, what in ((inp, "input"), (out, "output")):
            if name not in graph.tensors:
                raise OllaInputError(f"--inplace {inp}={out}: the graph has no tensor {name!r} (the {what})")
        why = check.why_not(inp, out)
        if why is not None:
            raise OllaInputError(f"--inplace {inp}={out}: not safe in place: {why}")
        pairs.append(check.accept(inp, out))
        claimed.update((inp, out))
    if rules:
        for out in graph.outputs:
            if out in check.used:
                continue
            for inp in candidate_inputs(out):
                if inp in graph.tensors and inp not in graph.producer:
                    propose(inp, out)
                    break
    if dataflow and not check.reserved:
        inputs = [t for t in graph.resident if t in check.feedable and t not in claimed]
        outputs = [t for t in graph.outputs if t not in claimed]
        for c in match(dataflow_candidates(graph, inputs, outputs, signatures)):
            propose(c.input, c.output)
    return InplaceSearch(tuple(pairs), tuple(refused))


def apply_inplace(graph: Graph, pairs: Sequence[InplacePair]) -> Graph:
    """``graph`` with each paired output at 0 bytes and an order token from every other reader of
    its input to its producer (module docstring). Node indices and names are unchanged.

    Every pair is re-checked (names, sizes, safety): a pair that does not fit
    ``graph`` is a :class:`GraphError`. Without pairs, ``graph`` itself is returned. O(n + E + tokens).
    """
    if not pairs:
        return graph
    check = _Checker(graph, None, None)
    extra_in: dict[int, list[str]] = {}
    extra_out: dict[int, list[str]] = {}
    tensors = dict(graph.tensors)
    for pair in pairs:
        why = check.why_not(pair.input, pair.output)
        if why is None and graph.tensors[pair.output].size != pair.bytes:
            why = f"the pair says {pair.bytes} bytes, the graph {graph.tensors[pair.output].size}"
        if why is not None:
            raise GraphError(f"in-place pair {pair.input} -> {pair.output} does not fit the graph: {why}")
        check.accept(pair.input, pair.output)
        t = graph.tensors[pair.output]
        tensors[t.name] = Tensor(t.name, 0, t.kind)
    for c, ps in sorted(check.extra_succs.items()):
        for p in sorted(ps):
            name = f"{TOKEN_PREFIX}{graph.nodes[c].name}->{graph.nodes[p].name}"
            tensors[name] = Tensor(name, 0)
            extra_out.setdefault(c, []).append(name)
            extra_in.setdefault(p, []).append(name)
    nodes = [
        Node(n.name, n.op_type, n.inputs + tuple(extra_in.get(i, ())), n.outputs + tuple(extra_out.get(i, ())))
        for i, n in enumerate(graph.nodes)
    ]
    return Graph(tuple(nodes), tensors, graph.outputs, graph.name)


def respected_pairs(graph: Graph, pairs: Sequence[InplacePair], order: Sequence[int]) -> tuple[InplacePair, ...]:
    """The pairs whose aliasing ``order`` (an order of ``graph``) keeps safe: every other reader of the
    input (or of a view of it) runs before the output's producer. O(n + sum of readers)."""
    pos = {v: s for s, v in enumerate(order)}
    check = _Checker(graph, None, None)
    out = []
    for pair in pairs:
        p = graph.producer[pair.output]
        if all(pos[c] < pos[p] for c in check.readers(check.views(pair.input), p)):
            out.append(pair)
    return tuple(out)


__all__ = [
    "InplacePair", "InplaceSearch", "Refusal", "apply_inplace", "candidate_inputs",
    "find_inplace_pairs", "is_order_token", "parse_pair", "respected_pairs",
]
