"""onnxruntime's CPU kernel scratch ("workspace"): the rules against the allocator, and the IR's pseudo-outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from olla_onnx.formats.onnx.read import graph_from_model
from olla_onnx.ort_facts.workspace import default_threads, is_workspace, node_workspace_bytes, workspace_name
from olla_onnx.ir.graph import TensorKind
from olla_onnx.ir.memory import simulate

ort = pytest.importorskip("onnxruntime")

F = TensorProto.FLOAT


def _one_node(op: str, inputs: dict[str, tuple], out_shape: tuple, elem: int = F, opset: int = 17, **attrs) -> onnx.ModelProto:
    """A model of one node whose inputs are graph inputs (name -> (shape, element type))."""
    node = helper.make_node(op, list(inputs), ["y"], name="n", **attrs)
    ins = [helper.make_tensor_value_info(k, t, list(s)) for k, (s, t) in inputs.items()]
    graph = helper.make_graph([node], "one", ins, [helper.make_tensor_value_info("y", elem, list(out_shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        out[vi.name] = rng.random(shape).astype(dtype) if dtype != np.bool_ else rng.random(shape) < 0.5
    return out


def _measured_scratch(model: onnx.ModelProto, threads: int | None) -> int:
    """What onnxruntime requests and frees again inside one run (the node's scratch)."""
    from olla_onnx.runtime.scratch import scratch_bytes

    return scratch_bytes(model.SerializeToString(), _feeds(model), threads)


def _predicted(model: onnx.ModelProto, threads: int | None) -> int:
    g = graph_from_model(model, threads=threads)
    return sum(t.size for name, t in g.tensors.items() if is_workspace(name))


def _conv(x: tuple, w: tuple, y: tuple, **attrs) -> onnx.ModelProto:
    return _one_node("Conv", {"x": (x, F), "w": (w, F)}, y, **attrs)


# Each case exercises one branch of the rules (see olla_onnx/frontends/workspace.py).
CASES = {
    "conv pointwise (GEMM on the input)": _conv((2, 8, 6, 6), (4, 8, 1, 1), (2, 4, 6, 6)),
    "conv 3x3, batch 2 (one panel per thread)": _conv((2, 4, 8, 8), (8, 4, 3, 3), (2, 8, 8, 8), pads=[1, 1, 1, 1]),
    "conv more filters than pixels (whole im2col)": _conv((2, 3, 5, 5), (32, 3, 3, 3), (2, 32, 3, 3)),
    "conv one image, big (thread count from the work)": _conv((1, 16, 32, 32), (16, 16, 3, 3), (1, 16, 32, 32), pads=[1, 1, 1, 1]),
    "conv one image, small (one thread)": _conv((1, 2, 8, 8), (2, 2, 3, 3), (1, 2, 8, 8), pads=[1, 1, 1, 1]),
    "conv kernel spanning the width, 1 channel": _conv((2, 1, 6, 6), (8, 1, 3, 6), (2, 8, 4, 1)),
    "conv grouped, strided": _conv((2, 8, 9, 9), (8, 1, 3, 3), (2, 8, 4, 4), group=8, strides=[2, 2]),
    "conv 1-d": _conv((2, 4, 40), (6, 4, 5), (2, 6, 36)),
    "conv_transpose 3x3": _one_node("ConvTranspose", {"x": ((2, 8, 5, 5), F), "w": ((8, 4, 3, 3), F)}, (2, 4, 7, 7)),
    "where with broadcast": _one_node(
        "Where", {"c": ((4, 1, 6), TensorProto.BOOL), "a": ((4, 5, 6), F), "b": ((1,), F)}, (4, 5, 6)
    ),
    "log_softmax along axis 1 (transposed twice)": _one_node("LogSoftmax", {"x": ((2, 3, 4, 5), F)}, (2, 3, 4, 5), axis=1),
    "softmax along the last axis (none)": _one_node("Softmax", {"x": ((2, 3, 4), F)}, (2, 3, 4), axis=-1),
    "softmax opset 11 (none)": _one_node("Softmax", {"x": ((2, 3, 4), F)}, (2, 3, 4), opset=11, axis=1),
    "conv auto_pad SAME_UPPER, strided, one image": _conv((1, 4, 9, 9), (4, 4, 3, 3), (1, 4, 5, 5), auto_pad="SAME_UPPER", strides=[2, 2]),
    "conv 4 spatial dims (generic im2col)": _conv((2, 2, 4, 4, 4, 4), (3, 2, 2, 2, 2, 2), (2, 3, 3, 3, 3, 3)),
    "conv_transpose grouped": _one_node("ConvTranspose", {"x": ((2, 8, 5, 5), F), "w": ((8, 3, 3, 3), F)}, (2, 6, 7, 7), group=2),
    "conv_transpose 1x1": _one_node("ConvTranspose", {"x": ((2, 8, 5, 5), F), "w": ((8, 3, 1, 1), F)}, (2, 3, 5, 5)),
    "where int64, scalar branch": _one_node(
        "Where", {"c": ((4, 6), TensorProto.BOOL), "a": ((4, 6), TensorProto.INT64), "b": ((), TensorProto.INT64)},
        (4, 6), elem=TensorProto.INT64,
    ),
    "softmax along axis 0 of 2": _one_node("Softmax", {"x": ((3, 4), F)}, (3, 4), axis=0),
    "matmul (none)": _one_node("MatMul", {"a": ((8, 16), F), "b": ((16, 4), F)}, (8, 4)),
}


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_rule_equals_what_onnxruntime_requests(case, threads):
    model = CASES[case]
    assert _predicted(model, threads) == _measured_scratch(model, threads)


def test_the_thread_count_matters_where_the_rule_says():
    big = CASES["conv one image, big (thread count from the work)"]
    assert _predicted(big, 1) < _predicted(big, 2) < _predicted(big, 4)
    pointwise = CASES["conv pointwise (GEMM on the input)"]
    assert _predicted(pointwise, 1) == _predicted(pointwise, 4) == 0


def test_default_threads_is_onnxruntimes_default():
    """64 images: MLAS's working buffer is one 64 KiB panel per thread, so it counts the threads."""
    model = _conv((64, 2, 6, 6), (2, 2, 3, 3), (64, 2, 6, 6), pads=[1, 1, 1, 1])
    measured = _measured_scratch(model, None)
    assert measured == min(default_threads(), 64) * 16384 * 4 == _predicted(model, None)


def test_rule_function_on_hand_computed_values():
    from olla_onnx.ort_facts.workspace import Value

    x, w, y = Value((2, 4, 8, 8), F, 2048), Value((8, 4, 3, 3), F, 1152), Value((2, 8, 8, 8), F, 4096)
    pads = {"pads": [1, 1, 1, 1]}
    assert node_workspace_bytes("Conv", [x, w], [y], pads, 17, threads=3) == 2 * 16384 * 4  # min(threads, images)
    # 36 output pixels < 40 filters: the whole im2col matrix, 36 pixels x (4 * 3 * 3)
    y2 = Value((2, 40, 6, 6), F, 11520)
    w2 = Value((40, 4, 3, 3), F, 5760)
    x2 = Value((2, 4, 8, 8), F, 2048)
    assert node_workspace_bytes("Conv", [x2, w2], [y2], {}, 17, threads=8) == 36 * 36 * 4
    assert node_workspace_bytes("Relu", [x], [x], {}, 17) == 0


# ------------------------------------------------------------------------------------------ the IR


def _conv_net() -> onnx.ModelProto:
    """x -> Conv 3x3 -> Relu -> Conv 3x3 -> y, weights as graph inputs, batch 2, 16 channels at 16x16."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        n("Relu", ["c1"], ["r1"], name="relu"),
        n("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "convnet",
        [vi("x", F, [2, 16, 16, 16]), vi("w1", F, [16, 16, 3, 3]), vi("w2", F, [16, 16, 3, 3])],
        [vi("y", F, [2, 16, 16, 16])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_workspace_is_a_pseudo_output_live_only_while_its_node_runs():
    g = graph_from_model(_conv_net(), threads=2)
    ws = workspace_name("conv1")
    assert ws in g.nodes[g.index_of("conv1")].outputs and workspace_name("relu") not in g.tensors
    t = g.tensors[ws]
    assert t.kind is TensorKind.WORKSPACE and t.size == 2 * 16384 * 4
    assert not g.consumers.get(ws) and ws not in g.output_set  # not caught by the unread-values rule
    sim = simulate(g, g.topological_order())
    i = sim.lifetimes.names.index(ws)
    assert sim.lifetimes.start[i] == sim.lifetimes.end[i] == g.topological_order().index(g.index_of("conv1"))
    plain = graph_from_model(_conv_net(), workspace=False)
    assert not any(is_workspace(n) for n in plain.tensors)
    assert simulate(g, g.topological_order()).peak == simulate(plain, plain.topological_order()).peak + t.size


def test_onnxruntime_holds_what_the_model_predicts(tmp_path):
    """The planned session (onnxruntime's reuse off, served from the arena): measured peak plus
    inputs is the simulated peak within 2% with the workspace modelled, and far off without it."""
    from olla_onnx.runtime.measure import measure_planned

    model = _conv_net()
    feeds = _feeds(model)
    m = measure_planned(model.SerializeToString(), feeds, "cpu", 1.0, mem_reuse=False)
    assert m.fallbacks == 0
    measured = m.peak_bytes + sum(a.nbytes for a in feeds.values())  # inputs are read in place
    with_ws = graph_from_model(model)
    without = graph_from_model(model, workspace=False)
    predicted = simulate(with_ws, with_ws.topological_order()).peak
    assert abs(measured / predicted - 1) < 0.02
    assert measured / simulate(without, without.topological_order()).peak - 1 > 0.2


def test_workspace_never_reaches_the_written_model_and_the_plan_round_trips(tmp_path):
    from olla_onnx.errors import PlanError
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.plan import load_plan

    src = tmp_path / "convnet.onnx"
    onnx.save(_conv_net(), src)
    loaded = load_graph(src)
    result = optimize_model(loaded, time_limit=0.5)
    out, plan_path = tmp_path / "opt.onnx", tmp_path / "plan.json"
    write_outputs(loaded, result, out, plan_path)
    written = onnx.load(str(out))
    names = {x for node in written.graph.node for x in list(node.input) + list(node.output)}
    assert len(written.graph.node) == 3 and not any(is_workspace(x) for x in names)
    plan = load_plan(plan_path, load_graph(out).graph)  # the hash check passes on the reordered file
    assert any(is_workspace(b.tensor) for b in plan.buffers)
    with pytest.raises(PlanError):
        load_plan(plan_path, load_graph(out, workspace=False).graph)
