"""The one intermediate representation: a dataflow graph of nodes and tensors.

A :class:`Graph` knows nothing of ONNX. Frontends build it; every algorithm
(simulation, bounds, ordering, placement) reads it. Nodes are addressed by
their index ``0..n-1`` in the graph's *input order* (the order the file lists
them in); an *order* is a sequence of node indices.

Tensors without a producer are *resident*: graph inputs, parameters,
optimizer state and initializers, live for the whole step. Every other tensor
has exactly one producer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np

from olla_onnx.errors import GraphError


class TensorKind(str, enum.Enum):
    """What a tensor is in a training step (for reports and plots; the memory model ignores it)."""

    INPUT = "input"
    PARAMETER = "parameter"
    OPTIMIZER_STATE = "optimizer_state"
    GRADIENT = "gradient"
    ACTIVATION = "activation"
    OUTPUT = "output"
    CONSTANT = "constant"
    WORKSPACE = "workspace"  # a kernel's scratch while its node runs (no ONNX value; see frontends/workspace.py)


@dataclass(frozen=True)
class Tensor:
    """A value in the graph: its unique name, its size in bytes and its kind."""

    name: str
    size: int
    kind: TensorKind = TensorKind.ACTIVATION


@dataclass(frozen=True)
class Node:
    """An operator: unique name, op type, and the names of the tensors it reads and writes.

    ``inputs`` may repeat a name (an op reading one tensor twice); ``outputs`` may not.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Graph:
    """An immutable, validated dataflow graph.

    Construction checks (and names the culprit of) duplicate node names,
    duplicate tensor names, tensors produced twice, inputs that nothing
    produces and that are not resident, negative sizes and cycles.

    Attributes:
        nodes: the nodes in input (file) order.
        tensors: every tensor by name.
        outputs: names of graph outputs (live until the end of the step).
        name: a label for reports.
    """

    nodes: tuple[Node, ...]
    tensors: dict[str, Tensor]
    outputs: tuple[str, ...] = ()
    name: str = "graph"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(dict.fromkeys(self.outputs)))
        self._validate()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        nodes: Iterable[Node],
        tensors: Iterable[Tensor],
        outputs: Iterable[str] = (),
        name: str = "graph",
    ) -> "Graph":
        """Make a graph from nodes and tensors; a tensor listed twice is an error."""
        table: dict[str, Tensor] = {}
        for t in tensors:
            if t.name in table:
                raise GraphError(f"duplicate tensor name {t.name!r}")
            table[t.name] = t
        return cls(tuple(nodes), table, tuple(outputs), name)

    def _validate(self) -> None:
        seen_nodes: set[str] = set()
        producer: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.name in seen_nodes:
                raise GraphError(f"duplicate node name {node.name!r}")
            seen_nodes.add(node.name)
            if len(set(node.outputs)) != len(node.outputs):
                raise GraphError(f"node {node.name!r} lists an output twice")
            for out in node.outputs:
                if out in producer:
                    other = self.nodes[producer[out]].name
                    raise GraphError(f"tensor {out!r} is produced twice (by {other!r} and {node.name!r})")
                if out not in self.tensors:
                    raise GraphError(f"node {node.name!r} produces {out!r}, which has no size/entry in the tensor table")
                producer[out] = i
        for t in self.tensors.values():
            if t.size < 0:
                raise GraphError(f"tensor {t.name!r} has a negative size ({t.size})")
        for node in self.nodes:
            for inp in node.inputs:
                if inp not in self.tensors:
                    raise GraphError(f"node {node.name!r} reads {inp!r}, which no node produces and no graph input provides")
        for out in self.outputs:
            if out not in self.tensors:
                raise GraphError(f"graph output {out!r} is not a tensor of the graph")
        self._cache["producer"] = producer
        cycle = self._find_cycle()
        if cycle:
            names = " -> ".join(self.nodes[i].name for i in cycle)
            raise GraphError(f"the graph has a cycle: {names}")

    def _find_cycle(self) -> list[int] | None:
        """Return one cycle as a list of node indices, or None (Kahn, then a walk on the rest)."""
        indeg = [len(p) for p in self.preds]
        stack = [i for i, d in enumerate(indeg) if d == 0]
        done = 0
        while stack:
            v = stack.pop()
            done += 1
            for w in self.succs[v]:
                indeg[w] -= 1
                if indeg[w] == 0:
                    stack.append(w)
        if done == len(self.nodes):
            return None
        rest = {i for i, d in enumerate(indeg) if d > 0}
        v = next(iter(rest))
        path: list[int] = []
        index: dict[int, int] = {}
        while v not in index:  # every node left has a predecessor left, so this walk closes
            index[v] = len(path)
            path.append(v)
            v = next(p for p in self.preds[v] if p in rest)
        cycle = path[index[v]:]
        cycle.reverse()
        return cycle + [cycle[0]]

    # ------------------------------------------------------------- structure
    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def producer(self) -> dict[str, int]:
        """Tensor name -> index of the node that produces it (resident tensors are absent)."""
        return self._cache["producer"]

    @cached_property
    def consumers(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> indices of the nodes that read it (each node once, ascending)."""
        acc: dict[str, list[int]] = {name: [] for name in self.tensors}
        for i, node in enumerate(self.nodes):
            for inp in dict.fromkeys(node.inputs):
                acc[inp].append(i)
        return {k: tuple(v) for k, v in acc.items()}

    @cached_property
    def resident(self) -> tuple[str, ...]:
        """Tensors no node produces (graph inputs, parameters, state, initializers): live all step."""
        prod = self.producer
        return tuple(n for n in self.tensors if n not in prod)

    @cached_property
    def resident_bytes(self) -> int:
        """Bytes of all resident tensors; every peak includes them, no order changes them."""
        return int(sum(self.tensors[n].size for n in self.resident))

    @cached_property
    def preds(self) -> tuple[tuple[int, ...], ...]:
        """Per node, the distinct nodes whose outputs it reads (data dependencies)."""
        prod = self._cache["producer"]
        out = []
        for node in self.nodes:
            ps = {prod[t] for t in node.inputs if t in prod}
            out.append(tuple(sorted(ps)))
        return tuple(out)

    @cached_property
    def succs(self) -> tuple[tuple[int, ...], ...]:
        """Per node, the distinct nodes that read its outputs."""
        acc: list[list[int]] = [[] for _ in self.nodes]
        for v, ps in enumerate(self.preds):
            for p in ps:
                acc[p].append(v)
        return tuple(tuple(s) for s in acc)

    @cached_property
    def output_set(self) -> frozenset[str]:
        return frozenset(self.outputs)

    def index_of(self, node_name: str) -> int:
        """Index of the node called ``node_name``."""
        table = self._cache.get("index")
        if table is None:
            table = {n.name: i for i, n in enumerate(self.nodes)}
            self._cache["index"] = table
        try:
            return table[node_name]
        except KeyError:
            raise GraphError(f"no node named {node_name!r}") from None

    def topological_order(self) -> list[int]:
        """The input order if it is topological, else a stable Kahn order (smallest index first)."""
        order = list(range(self.num_nodes))
        if is_topological(self, order):
            return order
        return kahn_order(self.preds, self.succs)

    def sizes(self) -> np.ndarray:
        """Sizes of all tensors as int64, in the order of ``list(self.tensors)``."""
        return np.fromiter((t.size for t in self.tensors.values()), dtype=np.int64, count=len(self.tensors))

    def with_order(self, order: Sequence[int]) -> "Graph":
        """The same graph with its nodes listed in ``order`` (which must be topological)."""
        check_order(self, order)
        return Graph(tuple(self.nodes[i] for i in order), self.tensors, self.outputs, self.name)

    def bytes_by_kind(self) -> dict[str, int]:
        """Total bytes per tensor kind."""
        out: dict[str, int] = {}
        for t in self.tensors.values():
            out[t.kind.value] = out.get(t.kind.value, 0) + t.size
        return out


def is_topological(graph: Graph, order: Sequence[int]) -> bool:
    """True when ``order`` lists every node exactly once, each after all its predecessors."""
    try:
        check_order(graph, order)
    except GraphError:
        return False
    return True


def check_order(graph: Graph, order: Sequence[int]) -> None:
    """Raise :class:`InvalidOrderError` naming the first problem with ``order``. O(n + E)."""
    from olla_onnx.errors import InvalidOrderError

    n = graph.num_nodes
    if len(order) != n:
        raise InvalidOrderError(f"order has {len(order)} entries, the graph has {n} nodes")
    pos = [-1] * n
    for step, v in enumerate(order):
        if not (0 <= v < n):
            raise InvalidOrderError(f"order entry {v} at step {step} is not a node index")
        if pos[v] != -1:
            raise InvalidOrderError(f"node {graph.nodes[v].name!r} appears twice in the order")
        pos[v] = step
    for v in range(n):
        for p in graph.preds[v]:
            if pos[p] > pos[v]:
                raise InvalidOrderError(
                    f"node {graph.nodes[v].name!r} runs before its input producer {graph.nodes[p].name!r}"
                )


def reachability(
    preds: Sequence[Sequence[int]], succs: Sequence[Sequence[int]], order: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Strict ancestors and descendants of every node as bitsets (Python ints, bit ``u`` = node ``u``).

    ``order`` must be topological. Cost: O(n * E / 64) word operations.
    """
    n = len(preds)
    anc = [0] * n
    for v in order:
        acc = 0
        for p in preds[v]:
            acc |= anc[p] | (1 << p)
        anc[v] = acc
    desc = [0] * n
    for v in reversed(order):
        acc = 0
        for s in succs[v]:
            acc |= desc[s] | (1 << s)
        desc[v] = acc
    return anc, desc


def set_bits(mask: int) -> list[int]:
    """The members of a bitset (as :func:`reachability` returns), ascending. O(members) big-int operations."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def kahn_order(preds: Sequence[Sequence[int]], succs: Sequence[Sequence[int]]) -> list[int]:
    """A topological order by Kahn's algorithm, the smallest ready index first. O((n + E) log n)."""
    import heapq

    indeg = [len(p) for p in preds]
    heap = [v for v, d in enumerate(indeg) if d == 0]
    heapq.heapify(heap)
    out: list[int] = []
    while heap:
        v = heapq.heappop(heap)
        out.append(v)
        for w in succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, w)
    return out
