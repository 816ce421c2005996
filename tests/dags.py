"""Random DAG strategies shared by the tests (hypothesis)."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind
from olla_onnx.ort_facts import VIEW_OPS


@st.composite
def random_graphs(draw, min_nodes: int = 1, max_nodes: int = 12, max_outputs: int = 2, resident: bool = True) -> Graph:
    """A random DAG: nodes in index order, each reading earlier tensors; some nodes have
    several outputs, some outputs are unread, some are graph outputs, plus resident inputs."""
    n = draw(st.integers(min_nodes, max_nodes))
    tensors: list[Tensor] = []
    available: list[str] = []
    if resident:
        for j in range(draw(st.integers(0, 2))):
            tensors.append(Tensor(f"in{j}", draw(st.integers(0, 50)), TensorKind.INPUT))
            available.append(f"in{j}")
    nodes: list[Node] = []
    for i in range(n):
        k = draw(st.integers(0, min(3, len(available))))
        ins = tuple(draw(st.lists(st.sampled_from(available), min_size=k, max_size=k))) if available else ()
        outs = []
        for o in range(draw(st.integers(1, max_outputs))):
            name = f"t{i}_{o}"
            tensors.append(Tensor(name, draw(st.integers(0, 100))))
            outs.append(name)
        nodes.append(Node(f"n{i}", "op", ins, tuple(outs)))
        available.extend(outs)
    produced = [t.name for t in tensors if t.name.startswith("t")]
    outputs = draw(st.lists(st.sampled_from(produced), max_size=2, unique=True)) if produced else []
    perm = draw(st.permutations(list(range(n))))
    return Graph.build([nodes[i] for i in perm], tensors, outputs)


def all_topological_orders(graph: Graph):
    """Every topological order (exponential: only for tiny graphs)."""
    n = graph.num_nodes
    indeg = [len(p) for p in graph.preds]
    order: list[int] = []

    def rec():
        if len(order) == n:
            yield list(order)
            return
        for v in range(n):
            if indeg[v] == 0 and v not in placed:
                placed.add(v)
                order.append(v)
                for w in graph.succs[v]:
                    indeg[w] -= 1
                yield from rec()
                for w in graph.succs[v]:
                    indeg[w] += 1
                order.pop()
                placed.discard(v)

    placed: set[int] = set()
    yield from rec()


def random_topological_order(graph: Graph, rnd) -> list[int]:
    """A uniformly drawn ready node at each step (Kahn); ``rnd`` is a ``random.Random``."""
    indeg = [len(p) for p in graph.preds]
    ready = [v for v in range(graph.num_nodes) if indeg[v] == 0]
    order: list[int] = []
    while ready:
        v = ready.pop(rnd.randrange(len(ready)))
        order.append(v)
        for w in graph.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return order


def reference_peak(graph: Graph, order: list[int]) -> int:
    """The memory model written as plainly as possible: per step, the set of live tensors."""
    n = len(order)
    step_of = {v: s for s, v in enumerate(order)}
    best = 0
    for s in range(n):
        live = set(graph.resident)
        for name, p in graph.producer.items():
            born = step_of[p]
            readers = [step_of[c] for c in graph.consumers[name]]
            last = n - 1 if name in graph.outputs else max(readers, default=born)
            if born <= s <= last:
                live.add(name)
        best = max(best, sum(graph.tensors[t].size for t in live))
    return best if n else sum(graph.tensors[t].size for t in graph.resident)


__all__ = ["random_graphs", "all_topological_orders", "random_topological_order", "reference_peak", "itertools"]


def views_of(g: Graph, name: str) -> set[str]:
    """``name`` and every tensor that onnxruntime's views (:data:`~olla_onnx.ort_facts.VIEW_OPS`) make of it."""
    out, todo = {name}, [name]
    while todo:
        t = todo.pop()
        for c in g.consumers[t]:
            node = g.nodes[c]
            if node.op_type in VIEW_OPS and node.inputs[0] == t:
                out.update(node.outputs)
                todo.extend(node.outputs)
    return out
