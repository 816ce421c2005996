import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dags import all_topological_orders, random_graphs, random_topological_order, reference_peak
from olla_onnx.errors import GraphError, InvalidOrderError
from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind
from olla_onnx.ir.memory import ancestor_bound, lifetimes, per_node_bound, simulate


def small_graph() -> Graph:
    return Graph.build(
        [
            Node("a", "X", ("x",), ("t1",)),
            Node("b", "X", ("t1",), ("t2", "dead")),
            Node("c", "X", ("t1", "t2"), ("y",)),
        ],
        [Tensor("x", 10, TensorKind.INPUT), Tensor("t1", 5), Tensor("t2", 7), Tensor("dead", 100), Tensor("y", 1)],
        outputs=["y"],
    )


def test_simulate_by_hand():
    g = small_graph()
    sim = simulate(g, [0, 1, 2])
    # step 0: x + t1; step 1: x + t1 + t2 + dead; step 2: x + t1 + t2 + y (dead died after b)
    assert sim.live.tolist() == [15, 122, 23]
    assert sim.peak == 122 and sim.peak_step == 1
    assert sim.alive_at(1)[0] == ("dead", 100)


def test_invalid_orders_are_refused():
    g = small_graph()
    with pytest.raises(InvalidOrderError, match="runs before"):
        simulate(g, [1, 0, 2])
    with pytest.raises(InvalidOrderError, match="appears twice"):
        simulate(g, [0, 0, 2])
    with pytest.raises(InvalidOrderError, match="entries"):
        simulate(g, [0, 1])


@pytest.mark.parametrize(
    "nodes,tensors,message",
    [
        ([Node("a", "X", ("nope",), ("t",))], [Tensor("t", 1)], "reads 'nope'"),
        ([Node("a", "X", (), ("t",)), Node("a", "X", (), ("u",))], [Tensor("t", 1), Tensor("u", 1)], "duplicate node name 'a'"),
        ([Node("a", "X", (), ("t",)), Node("b", "X", (), ("t",))], [Tensor("t", 1)], "'t' is produced twice"),
        ([Node("a", "X", ("u",), ("t",)), Node("b", "X", ("t",), ("u",))], [Tensor("t", 1), Tensor("u", 1)], "cycle"),
    ],
)
def test_graph_validation_names_the_culprit(nodes, tensors, message):
    with pytest.raises(GraphError, match=message):
        Graph.build(nodes, tensors)


def test_duplicate_tensor_names():
    with pytest.raises(GraphError, match="duplicate tensor name 't'"):
        Graph.build([], [Tensor("t", 1), Tensor("t", 2)])


@settings(max_examples=200, deadline=None)
@given(random_graphs(max_nodes=15), st.randoms(use_true_random=False))
def test_simulator_equals_reference(g, rnd):
    order = g.topological_order()
    assert simulate(g, order).peak == reference_peak(g, order)
    # and on a second, random topological order
    other = random_topological_order(g, rnd)
    sim = simulate(g, other)
    assert sim.peak == reference_peak(g, other)
    assert int(sim.live.max(initial=g.resident_bytes)) == sim.peak


@settings(max_examples=150, deadline=None)
@given(random_graphs(max_nodes=7))
def test_bounds_are_sound_against_brute_force(g):
    best = min(simulate(g, o, validate=False).peak for o in all_topological_orders(g))
    pn, ad = per_node_bound(g), ancestor_bound(g)
    assert pn.value <= ad.value <= best


@settings(max_examples=100, deadline=None)
@given(random_graphs(max_nodes=12))
def test_lifetimes_cover_the_producer_and_readers(g):
    order = g.topological_order()
    lt = lifetimes(g, order)
    pos = {v: s for s, v in enumerate(order)}
    for name, s, e in zip(lt.names, lt.start, lt.end):
        assert s == pos[g.producer[name]]
        for c in g.consumers[name]:
            assert s <= pos[c] <= e
        assert np.all(lt.sizes >= 0)
