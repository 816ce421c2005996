"""onnxruntime's default order, emulated, against the order its profiler shows it really ran.

Sessions use ORT_DISABLE_ALL so the graph onnxruntime runs is the file's
graph (see olla_onnx.ort_facts.default_order for what the default session does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from olla_onnx.formats.onnx.read import graph_from_model
from olla_onnx.ir.graph import is_topological
from olla_onnx.runtime.profile import profiled_node_names, profiled_order
from olla_onnx.ort_facts.default_order import file_order, ort_default_order, ort_priority_order

sys.path.insert(0, str(Path(__file__).parent))
import onnx_models as M  # noqa: E402
from dags import random_graphs  # noqa: E402
from test_onnx_frontend import if_model, loop_model  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def without_constants(graph, order):
    return [v for v in order if graph.nodes[v].op_type != "Constant"]


def check_emulation(m: onnx.ModelProto, dims=None) -> list[int]:
    g = graph_from_model(m, dims)
    emulated = ort_default_order(g)
    assert is_topological(g, emulated)
    ran = profiled_order(m, "default", dims=dims)
    assert without_constants(g, emulated) == ran
    return ran


def dead_branch_model() -> onnx.ModelProto:
    """Nodes whose outputs nobody reads and that are not graph outputs: onnxruntime still runs them."""
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [3])  # noqa: E731
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Neg", ["a"], ["dead"], name="dead"),
        helper.make_node("Sigmoid", ["x"], ["b"], name="b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="y"),
        helper.make_node("Exp", ["dead"], ["dead2"], name="dead2"),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", [vi("x")], [vi("y")]), opset_imports=[helper.make_opsetid("", 17)])


HANDMADE = {
    "dead_branch": dead_branch_model,
    "mlp_training": M.mlp_training,
    "transformer_block": M.transformer_block,
    "resnet_blocks": M.resnet_block,
    "if_with_captures": if_model,
    "loop_with_capture": loop_model,
}


@pytest.mark.parametrize("name", list(HANDMADE))
def test_emulation_equals_profiled_order_on_built_graphs(name):
    m = HANDMADE[name]()
    ran = check_emulation(m)
    assert len(ran) == sum(n.op_type != "Constant" for n in m.graph.node)  # every node ran, Constants never


def _small(p: Path) -> bool:
    """Corpus graphs cheap enough to run in a unit test: the tiny variants and the hand-built step.

    Running the full-size ones (batch 32 at 224x224) takes minutes each on 2 cores; they are
    checked by ``docs/investigations/ort_order/ort_order_check.py`` instead."""
    return p.stem.endswith("_tiny") or p.stem == "mlp_sgd_handwritten"


@pytest.mark.parametrize("path", [p for p in sorted(MODELS_DIR.glob("*.onnx")) if _small(p)], ids=lambda p: p.name)
def test_emulation_equals_profiled_order_on_corpus(path):
    m = onnx.load(str(path))  # with external data, for the session
    graph_from_model(onnx.load(str(path), load_external_data=False))
    check_emulation(m)


def test_default_order_is_not_the_file_order():
    """The reason the emulation exists: onnxruntime's default order ignores the file's order."""
    m = M.mlp_training()
    g = graph_from_model(m)
    assert profiled_order(m, "default") != without_constants(g, file_order(g))


@pytest.mark.parametrize("name", list(HANDMADE))
def test_priority_based_order_is_the_file_order(name):
    """docs/design.md: ORT_DISABLE_ALL + PRIORITY_BASED runs the nodes in file order (no Shape/Size nodes here)."""
    m = HANDMADE[name]()
    g = graph_from_model(m)
    assert profiled_order(m, "priority") == without_constants(g, file_order(g))


def test_priority_based_runs_ready_shape_nodes_early():
    """The exception to file order: onnxruntime runs a ready Shape node before other ready nodes."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Neg", ["x"], ["b"], name="b"),
        helper.make_node("Shape", ["x"], ["s"], name="s"),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT, name="c"),
        helper.make_node("Sum", ["a", "b"], ["y"], name="y"),
    ]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]), helper.make_tensor_value_info("sf", TensorProto.FLOAT, [1])]
    m = helper.make_model(
        helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])], out),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert profiled_order(m, "priority")[0] == 2
    assert without_constants(graph_from_model(m), ort_priority_order(graph_from_model(m))) == profiled_order(m, "priority")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 10**6))
def test_both_emulations_equal_profiled_orders_on_random_dags_with_shape_nodes(n, seed):
    m = M.random_dag(n, seed, shapes=True)
    g = graph_from_model(m)
    assert without_constants(g, ort_priority_order(g)) == profiled_order(m, "priority")
    assert without_constants(g, ort_default_order(g)) == profiled_order(m, "default")


@settings(max_examples=200, deadline=None)
@given(random_graphs(max_nodes=14))
def test_priority_order_is_file_order_without_shape_nodes(graph):
    order = ort_priority_order(graph)
    assert is_topological(graph, order) and order == graph.topological_order()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 10**6), st.integers(1, 4), st.integers(2, 12))
def test_emulation_equals_profiled_order_on_random_dags(n, seed, n_inputs, window):
    check_emulation(M.random_dag(n, seed, n_inputs=n_inputs, window=window))


def test_emulation_with_constant_nodes_and_multi_output_nodes():
    c = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones(4, np.float32)), name="")
    nodes = [
        helper.make_node("Split", ["x"], ["p", "q"], axis=0, num_outputs=2, name=""),
        c,
        helper.make_node("Add", ["q", "k2"], ["r"], name="dup"),
        helper.make_node("Mul", ["p", "r"], ["s"], name="dup"),
        helper.make_node("Constant", [], ["k2"], value=numpy_helper.from_array(np.ones(4, np.float32)), name="c2"),
        helper.make_node("Sub", ["p", "k"], ["t"], name=""),
    ]
    # listed out of topological order on purpose (k2 is defined after its use): both sides sort it out
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    m = helper.make_model(
        helper.make_graph(nodes, "g", [vi("x", [8])], [vi("s", [4]), vi("t", [4])]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    g = graph_from_model(m)
    emulated = ort_default_order(g)
    assert emulated[:2] == [1, 4]  # Constant nodes first, file order
    assert without_constants(g, emulated) == profiled_order(m, "default")


def reference_ort_order(graph) -> list[int]:
    """Recursive statement of the same rule: leaves last-index first, producers highest-index first, post-order."""
    n = graph.num_nodes
    const = {v for v in range(n) if graph.nodes[v].op_type == "Constant"}
    preds = [[p for p in graph.preds[v] if p not in const] for v in range(n)]
    has_consumer = {p for v in range(n) if v not in const for p in preds[v]}
    seen: set[int] = set()
    out = sorted(const)

    def visit(v):
        if v in seen:
            return
        seen.add(v)
        for p in sorted(preds[v], reverse=True):
            visit(p)
        out.append(v)

    for leaf in reversed([v for v in range(n) if v not in const and v not in has_consumer]):
        visit(leaf)
    return out


@settings(max_examples=200, deadline=None)
@given(random_graphs(max_nodes=14))
def test_emulation_equals_recursive_reference_and_is_topological(graph):
    order = ort_default_order(graph)
    assert order == reference_ort_order(graph)
    assert is_topological(graph, order)


def test_profiled_node_names_reports_subgraph_nodes_too():
    names = profiled_node_names(loop_model())
    assert names.count("after") == 1 and len(names) > 3  # the body's nodes ran three times
