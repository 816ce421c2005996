"""onnxruntime's views (Reshape, Flatten, Squeeze, Unsqueeze, Identity): the output lives in the input's buffer.

The frontend gives a view output 0 bytes and makes every reader of a view read the view's root too, so the
root's buffer lives until the last reader of any view of it (:func:`olla_onnx.formats.onnx.read.alias_views`).
"""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from olla_onnx.formats.onnx.read import graph_from_model
from olla_onnx.ir.memory import simulate

from dags import random_graphs, random_topological_order

F = TensorProto.FLOAT
B, H, S = 2, 4, 32  # one "attention matrix": 2*4*32*32*4 = 32 KiB


def _attention_like() -> onnx.ModelProto:
    """x -> Softmax p; p is reshaped (v) for a "forward" matmul and read by a late "backward" Mul; v is
    transposed late too, so p and v are both read long after the view is made (BERT's saved softmax).
    The peak falls in the stretch between (a chain of Negs on the matmul's output, twice p's size)."""
    shape = numpy_helper.from_array(np.array([B * H, S, S], np.int64), "shape")
    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=-1, name="softmax"),
        helper.make_node("Reshape", ["p", "shape"], ["v"], name="view"),
        helper.make_node("MatMul", ["v", "w"], ["h"], name="fwd"),
    ]
    for i in range(4):  # other work between forward and backward (Neg: never in place in onnxruntime)
        nodes.append(helper.make_node("Neg", [f"h{i - 1}" if i else "h"], [f"h{i}"], name=f"neg{i}"))
    nodes += [
        helper.make_node("ReduceSum", ["h3"], ["loss"], keepdims=0, name="loss"),
        helper.make_node("Transpose", ["v"], ["vt"], perm=[0, 2, 1], name="bwd_t"),
        helper.make_node("Mul", ["p", "p"], ["pp"], name="bwd_mul"),
    ]
    graph = helper.make_graph(
        nodes, "views",
        [helper.make_tensor_value_info("x", F, [B, H, S, S]), helper.make_tensor_value_info("w", F, [B * H, S, 2 * S])],
        [helper.make_tensor_value_info(o, F, None) for o in ("loss", "vt", "pp")],
        [shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_view_is_zero_bytes_and_keeps_its_root_alive():
    g = graph_from_model(_attention_like(), workspace=False)
    plain = graph_from_model(_attention_like(), workspace=False, views=False)
    att = B * H * S * S * 4
    assert g.tensors["v"].size == 0 and plain.tensors["v"].size == att
    assert "p" in g.nodes[g.index_of("bwd_t")].inputs  # the view's reader reads the root
    order = g.topological_order()
    assert order == plain.topological_order()  # the added reads are dependencies the graph already had
    with_views, without = simulate(g, order), simulate(plain, order)
    # while the Negs run, p (and its view v) is one buffer: the plain model counts it twice
    neg = order.index(g.index_of("neg1"))
    assert without.live[neg] - with_views.live[neg] == att
    assert without.peak - with_views.peak == att
    # the root dies after the last reader of itself or of any of its views
    lt = with_views.lifetimes
    end_p = int(lt.end[lt.names.index("p")])
    assert end_p == max(order.index(g.index_of(n)) for n in ("bwd_t", "bwd_mul"))


def test_views_of_inputs_chains_and_graph_outputs():
    """A view of a graph input costs nothing and extends nothing; a chain of views roots at its first
    tensor; a view that is a graph output is its own buffer (onnxruntime copies into it)."""
    ax = numpy_helper.from_array(np.array([0], np.int64), "ax")
    nodes = [
        helper.make_node("Flatten", ["x"], ["xf"], name="flat_in"),  # view of a graph input
        helper.make_node("Relu", ["xf"], ["r"], name="relu"),
        helper.make_node("Unsqueeze", ["r", "ax"], ["u"], name="unsq"),  # chain r -> u -> sq -> i
        helper.make_node("Squeeze", ["u", "ax"], ["sq"], name="sq"),
        helper.make_node("Identity", ["sq"], ["i"], name="ident"),
        helper.make_node("Neg", ["i"], ["y"], name="neg"),
        helper.make_node("Identity", ["y"], ["out"], name="out_view"),  # graph output: its own buffer
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", F, [4, 8])],
        [helper.make_tensor_value_info("out", F, None)], [ax],
    )
    g = graph_from_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [g.tensors[t].size for t in ("xf", "u", "sq", "i")] == [0, 0, 0, 0]
    assert g.tensors["out"].size == g.tensors["y"].size == 4 * 8 * 4
    assert g.nodes[g.index_of("relu")].inputs == ("xf",)  # root x is resident: nothing to extend
    assert g.nodes[g.index_of("neg")].inputs == ("i", "r")  # root of i is r
    assert g.nodes[g.index_of("sq")].inputs == ("u", "ax", "r")


def test_onnxruntime_holds_what_the_model_with_views_predicts():
    """The planned session (onnxruntime's reuse off): measured peak plus inputs equals the simulated
    peak with views modelled, and is a whole attention matrix below the peak without them."""
    pytest.importorskip("onnxruntime")
    from olla_onnx.runtime.feeds import random_feeds as random_inputs
    from olla_onnx.runtime.measure import measure_planned

    model = _attention_like()
    feeds = random_inputs(model, None, 0)
    m = measure_planned(model.SerializeToString(), feeds, "cpu", 1.0, mem_reuse=False)
    assert m.fallbacks == 0
    measured = m.arena_lower_bound + m.resident_bytes + sum(a.nbytes for a in feeds.values())
    g = graph_from_model(model)
    plain = graph_from_model(model, views=False)
    order = g.topological_order()
    predicted = simulate(g, order).peak
    assert abs(measured / predicted - 1) < 0.01, (measured, predicted)
    assert simulate(plain, order).peak - measured >= B * H * S * S * 4 * 0.9


def _buffer_peak(graph, views: dict[str, str], order: list[int]) -> int:
    """onnxruntime's buffers written out plainly: a view (``views``: view -> its input) owns no buffer;
    every other produced tensor owns one, live from its producer to the last reader of itself or of any
    view that chains down to it (to the end for a graph output; at its producer's step alone if unread)."""
    def root(t: str) -> str:
        while t in views:
            t = views[t]
        return t

    n = len(order)
    step_of = {v: s for s, v in enumerate(order)}
    readers: dict[str, list[int]] = {}
    for v, node in enumerate(graph.nodes):
        for t in node.inputs:
            readers.setdefault(root(t), []).append(step_of[v])
    best = 0
    for s in range(n):
        live = graph.resident_bytes
        for name, p in graph.producer.items():
            if name in views:
                continue
            born = step_of[p]
            last = n - 1 if name in graph.outputs else max(readers.get(name, []), default=born)
            if born <= s <= last:
                live += graph.tensors[name].size
        best = max(best, live)
    return best


@settings(max_examples=150, deadline=None)
@given(random_graphs(max_nodes=10), st.data())
def test_simulator_on_aliased_graphs_equals_the_buffer_model(graph, data):
    """On random DAGs with random nodes turned into views, the simulator on :func:`alias_views`'s graph
    equals the buffer model above in a random topological order (sizes are random, so a view may be smaller
    or larger than its root here; in onnxruntime it is the same size), and every dependency it adds to the
    graph was already implied."""
    from olla_onnx.passes.views import alias_views
    from olla_onnx.ir.graph import Graph, Node

    ops = [data.draw(st.sampled_from(["Reshape", "Identity", "op"])) if n.inputs and len(n.outputs) == 1 else "op"
           for n in graph.nodes]
    nodes = [Node(n.name, op, n.inputs, n.outputs) for n, op in zip(graph.nodes, ops)]
    plain = Graph.build(nodes, list(graph.tensors.values()), graph.outputs)
    views = {n.outputs[0]: n.inputs[0] for n in nodes if n.op_type != "op" and n.outputs[0] not in graph.output_set}
    aliased_nodes, aliased_tensors = alias_views(nodes, list(graph.tensors.values()), graph.outputs)
    aliased = Graph.build(aliased_nodes, aliased_tensors, graph.outputs)
    for v in range(plain.num_nodes):  # every added dependency was already implied (an ancestor in the plain graph)
        ancestors, stack = set(), list(plain.preds[v])
        while stack:
            u = stack.pop()
            if u not in ancestors:
                ancestors.add(u)
                stack.extend(plain.preds[u])
        assert set(aliased.preds[v]) - set(plain.preds[v]) <= ancestors
    order = random_topological_order(plain, random.Random(data.draw(st.integers(0, 2**16))))
    assert simulate(aliased, order).peak == _buffer_peak(plain, views, order)
