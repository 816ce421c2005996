"""The stock orders: the file's order, and onnxruntime's default execution order emulated.

What "onnxruntime's default order" means here: the order in which
onnxruntime 1.32 runs the nodes of the *unoptimized* graph, that is a session
with ``graph_optimization_level = ORT_DISABLE_ALL`` and the default
``ExecutionOrder.DEFAULT``. That order is ``GraphViewer``'s topological order,
which this module reproduces exactly:

1. onnxruntime turns every ONNX ``Constant`` node into an initializer when it
   builds its graph, so Constant nodes never run; the remaining nodes keep
   their file order as their node index.
2. The *leaves* are the nodes no other node reads from (their outputs are
   graph outputs or unused), taken in index order and pushed on a stack.
3. A depth-first search walks from the leaves towards the inputs (a reverse
   DFS): pop a node; if not yet visited, mark it, push a "leave" marker, then
   push its producers sorted by ascending index (so the highest-index producer
   is explored first). A node is emitted when its "leave" marker pops
   (post-order), which is a topological order.

So the last leaf's whole ancestry runs first, and the file order matters only
through node indices. The default session (``ORT_ENABLE_ALL``) first rewrites
the graph (constant folding, fusions, layout changes, dead-node removal), then
applies the same rule to the rewritten graph; its order cannot be expressed
on the original nodes and is not emulated. ``PRIORITY_BASED`` order (see
:func:`ort_priority_order`) is a Kahn sort that prefers ready ``Shape``/``Size``
nodes, then the lowest index: on a topologically listed file without
Shape/Size nodes it is the file order, which is how a reordered file is run.

Constant nodes have no place in onnxruntime's order (they are resident
initializers there); :func:`ort_default_order` lists them first, in file
order, which is the closest the IR's memory model gets to "resident".

Checked against the node events of onnxruntime's profiler in
``tests/test_ort_order.py``.
"""

from __future__ import annotations

from olla_onnx.ir.graph import Graph


def file_order(graph: Graph) -> list[int]:
    """The order the file lists the nodes in, if it is topological; else a stable Kahn order.

    onnxruntime runs this order under ``ORT_DISABLE_ALL`` + ``PRIORITY_BASED``
    (Shape/Size nodes aside). O(n + E).
    """
    return graph.topological_order()


def ort_default_order(graph: Graph) -> list[int]:
    """onnxruntime 1.32's ``ExecutionOrder.DEFAULT`` on the unoptimized graph (see module docstring).

    Returns every node index once; Constant nodes first. Cost: O(n + E log d)
    with d the largest in-degree; no recursion.

    >>> # a -> c, b -> c: leaves [c]; c's producers pushed [a, b], b popped first
    """
    n = graph.num_nodes
    is_const = [node.op_type == "Constant" for node in graph.nodes]
    preds = [tuple(p for p in graph.preds[v] if not is_const[p]) for v in range(n)]  # ascending
    has_consumer = [False] * n
    for v in range(n):
        if not is_const[v]:
            for p in preds[v]:
                has_consumer[p] = True
    stack: list[tuple[int, bool]] = [(v, False) for v in range(n) if not is_const[v] and not has_consumer[v]]
    visited = [False] * n
    order: list[int] = [v for v in range(n) if is_const[v]]
    while stack:
        v, leave = stack.pop()
        if leave:
            order.append(v)
            continue
        if visited[v]:
            continue
        visited[v] = True
        stack.append((v, True))
        for p in preds[v]:
            if not visited[p]:
                stack.append((p, False))
    return order


def ort_priority_order(graph: Graph) -> list[int]:
    """onnxruntime 1.32's ``ExecutionOrder.PRIORITY_BASED`` on the unoptimized graph.

    A Kahn topological sort whose ready set is a priority queue: ready
    ``Shape`` and ``Size`` nodes first, then the lowest node index (node
    priorities, set only by some training transformers, are all 0 here).
    So a file written in a topological order runs in that order, except that
    each Shape/Size node runs as soon as its input exists. Constant nodes
    first, as in :func:`ort_default_order`. O((n + E) log n).
    """
    import heapq

    n = graph.num_nodes
    is_const = [node.op_type == "Constant" for node in graph.nodes]
    high = [node.op_type in ("Shape", "Size") for node in graph.nodes]
    indeg = [sum(1 for p in graph.preds[v] if not is_const[p]) for v in range(n)]
    heap = [(not high[v], v) for v in range(n) if not is_const[v] and indeg[v] == 0]
    heapq.heapify(heap)
    order: list[int] = [v for v in range(n) if is_const[v]]
    while heap:
        _, v = heapq.heappop(heap)
        order.append(v)
        for w in graph.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, (not high[w], w))
    return order


def written_order_as_run(graph: Graph, order: list[int] | tuple[int, ...]) -> list[int]:
    """The order onnxruntime (``ORT_DISABLE_ALL`` + ``PRIORITY_BASED``) runs after ``order`` is written to the file.

    Equal to ``order`` except that ready Shape/Size nodes move up (Constant
    nodes are listed first). Writing *this* order instead gives a file that
    onnxruntime runs exactly as written (checked with the profiler in
    ``tests/test_rewrite.py``), so the simulator and onnxruntime agree.
    O((n + E) log n).
    """
    return [order[i] for i in ort_priority_order(graph.with_order(order))]
