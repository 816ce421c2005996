"""Local moves of the order search (schedule/local.py) on hand-made chains."""


import time


from olla_onnx.ir.memory import simulate
from olla_onnx.schedule.local import improve_moves
from olla_onnx.schedule.reduce import reduce_graph
from test_schedule import brute_force


def _chain_graph(spec, outputs):
    """A graph from ``[(name, inputs, size)]`` (one output tensor per node, named after it)."""
    from olla_onnx.ir.graph import Graph, Node, Tensor

    nodes = [Node(name, "op", tuple(ins), (name,)) for name, ins, _ in spec]
    tensors = [Tensor(name, size) for name, _, size in spec]
    return Graph.build(nodes, tensors, outputs)


def test_moves_delay_a_private_branch_past_the_peak():
    """x makes a tensor only x2 reads, x2 one that only the last node reads (a weight gradient
    and its transpose): no single move helps (x2 alone leaves x's output live instead, z needs
    e), the group {x, x2} after the chain does."""
    g = _chain_graph(
        [("s", [], 10), ("x", ["s"], 60), ("x2", ["x"], 60), ("b", [], 50), ("c", ["b"], 50),
         ("d", ["c"], 50), ("e", ["d"], 1), ("z", ["x2", "e", "s"], 1)],
        ["z"],
    )
    p = reduce_graph(g)
    start = list(range(g.num_nodes))
    moved = improve_moves(p, start, time.perf_counter() + 5)
    assert p.to_bytes(p.peak(moved)) == brute_force(g) < simulate(g, start).peak


def test_moves_delay_the_readers_of_a_shared_tensor():
    """r is read by the forward (f) and by two nodes that make tensors read only at the end;
    moving those two after the peak keeps r alive instead of both their outputs."""
    g = _chain_graph(
        [("r", [], 40), ("m1", ["r"], 30), ("m2", ["r"], 30), ("f", ["r"], 5), ("h1", ["f"], 60),
         ("h2", ["h1"], 60), ("h3", ["h2"], 1), ("z", ["m1", "m2", "h3"], 1)],
        ["z"],
    )
    p = reduce_graph(g)
    start = list(range(g.num_nodes))
    moved = improve_moves(p, start, time.perf_counter() + 5)
    assert p.to_bytes(p.peak(moved)) == brute_force(g) < simulate(g, start).peak
