"""Values no node reads: onnxruntime holds them until the run ends, and so does the memory model."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from olla_onnx.formats.onnx.read import graph_from_model
from olla_onnx.ir.memory import simulate

N, C, HW = 4, 8, 32  # the unread MaxPool values: 4*8*32*32*4 = 128 KiB


def _model() -> onnx.ModelProto:
    """x -> MaxPool(kernel 1) whose values output nobody reads; its indices feed a chain of 6 Relus."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["unread", "idx"], kernel_shape=[1, 1], name="pool"),
        helper.make_node("Cast", ["idx"], ["f0"], to=TensorProto.FLOAT, name="cast"),
    ]
    for i in range(6):
        nodes.append(helper.make_node("Relu", [f"f{i}"], [f"f{i + 1}"], name=f"relu{i}"))
    graph = helper.make_graph(
        nodes, "unread",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, C, HW, HW])],
        [helper.make_tensor_value_info("f6", TensorProto.FLOAT, [N, C, HW, HW])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_unread_value_lives_to_the_end_in_the_model():
    graph = graph_from_model(_model())
    assert "unread" in graph.output_set and "f6" in graph.output_set
    sim = simulate(graph, graph.topological_order())
    unread = graph.tensors["unread"].size
    assert unread == N * C * HW * HW * 4
    # at the last step: the unread values, the output and the last Relu's input are live
    assert sim.live[-1] == graph.resident_bytes + unread + 2 * graph.tensors["f6"].size


def test_onnxruntime_holds_an_unread_value_as_the_model_predicts(tmp_path):
    """Served from the plan with onnxruntime's own buffer reuse off (each tensor its own
    request, the plan's assumption), the measured peak plus the inputs is the simulator's
    prediction within 2%. Without the rule (the unread value dying right after its
    producer) the prediction would be 20% low: the buffer is held through all six Relus.
    """
    import onnx as _onnx

    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.runtime.feeds import random_feeds as random_inputs
    from olla_onnx.runtime.measure import measure_planned

    src = tmp_path / "unread.onnx"
    onnx.save(_model(), src)
    loaded = load_graph(src)
    result = optimize_model(loaded, time_limit=1.0)
    out = tmp_path / "opt.onnx"
    write_outputs(loaded, result, out, None)
    model = _onnx.load(str(out))
    feeds = random_inputs(model, None, 0)
    m = measure_planned(model.SerializeToString(), feeds, "cpu", 1.0, mem_reuse=False)
    assert m.fallbacks == 0
    measured = m.peak_bytes + sum(a.nbytes for a in feeds.values())
    predicted = result.peak_optimized
    assert abs(measured / predicted - 1) <= 0.02, (measured, predicted)
