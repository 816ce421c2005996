"""onnxruntime's views (Reshape, Flatten, Squeeze, Unsqueeze, Identity): the output lives in the input's buffer.

The frontend gives a view output 0 bytes and makes every reader of a view read the view's root too, so the
root's buffer lives until the last reader of any view of it (:func:`olla_onnx.frontends.onnx.alias_views`).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from olla_onnx.frontends.onnx import graph_from_model
from olla_onnx.memory import simulate

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
    from olla_onnx.runtime.measure import measure_planned, random_inputs

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
