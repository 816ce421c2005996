"""`olla-onnx run` against plans made with other settings, and what its prediction counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from olla_onnx.formats import load_graph
from olla_onnx.ort_facts.workspace import is_workspace
from olla_onnx.optimize import optimize_model, write_outputs
from olla_onnx.plan import plan_uses_workspace
from olla_onnx.run import load_model_for_run, run_model
from olla_onnx.ort_facts import SMALL_INITIALIZER
from olla_onnx.runtime.measure import outside_allocator

ROOT = Path(__file__).resolve().parents[1]
CNN_TINY = ROOT / "models" / "cnn_tiny.onnx"


def _optimized(tmp_path: Path, workspace: bool, inplace: bool = False) -> tuple[Path, Path]:
    loaded = load_graph(CNN_TINY, workspace=workspace)
    res = optimize_model(loaded, time_limit=0.5, inplace=inplace)
    out, plan = tmp_path / f"opt_{workspace}_{inplace}.onnx", tmp_path / f"plan_{workspace}_{inplace}.json"
    write_outputs(loaded, res, out, plan)
    return out, plan


@pytest.mark.parametrize("workspace", [False, True])
def test_plan_is_checked_against_the_graph_it_was_made_for(tmp_path, workspace):
    # cnn_tiny has Conv nodes, so the two graphs (and their hashes) differ
    assert any(is_workspace(n) for n in load_graph(CNN_TINY).graph.tensors)
    out, plan_path = _optimized(tmp_path, workspace)
    model, graph, plan, source = load_model_for_run(out, plan_path, None)
    assert source == "plan"
    assert plan_uses_workspace(plan) is workspace
    assert any(is_workspace(n) for n in graph.tensors) is workspace
    assert [n.name for n in model.graph.node] == list(plan.order)


def test_no_workspace_plan_runs(tmp_path):
    out, plan_path = _optimized(tmp_path, workspace=False)
    r = run_model(out, plan_path)
    assert r.order_source == "plan" and r.fallbacks == 0 and r.planned_equals_unplanned


ROW = 4096  # floats: the tensors are 1 MiB, so 64-byte rounding is noise


def _model_with_initializers() -> onnx.ModelProto:
    big = numpy_helper.from_array(np.ones((64, ROW), np.float32), "big")  # 128 bytes up: outside the allocator
    edge = numpy_helper.from_array(np.ones(SMALL_INITIALIZER, np.uint8), "edge")  # 127 bytes: through it
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(1, np.float32)))
    nodes = [
        const,
        helper.make_node("Add", ["x", "big"], ["y"]),
        helper.make_node("Cast", ["edge"], ["e"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["e"], ["s"], keepdims=0),
        helper.make_node("Mul", ["y", "s"], ["z"]),
        helper.make_node("Add", ["z", "c"], ["w"]),
    ]
    g = helper.make_graph(
        nodes,
        "inits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, ROW])],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [64, ROW])],
        [big, edge],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_outside_allocator_splits_at_127_bytes():
    model = _model_with_initializers()
    sizes = {"big": 256 * ROW, "edge": 127, "c": 4}
    assert outside_allocator(model, sizes) == (256 * ROW, 127 + 4)
    assert outside_allocator(model, {**sizes, "big": 128}) == (128, 127 + 4)
    assert outside_allocator(model, {**sizes, "big": 127}) == (0, 2 * 127 + 4)


def test_prediction_counts_initializers_held_outside_the_allocator(tmp_path):
    path = tmp_path / "inits.onnx"
    onnx.save(_model_with_initializers(), path)
    r = run_model(path)
    assert r.initializer_bytes_outside == 256 * ROW
    # without the initializer the error would be about -256 * ROW / predicted
    assert abs(r.prediction_error) < 0.01 * 256 * ROW / r.predicted_peak_bytes


def test_prediction_of_a_corpus_plan_within_two_percent(tmp_path):
    out, plan_path = _optimized(tmp_path, workspace=True)
    r = run_model(out, plan_path, inplace=False)
    assert r.initializer_bytes_outside > 0
    assert abs(r.prediction_error) < 0.02


def test_inplace_plan_is_timed_and_judged(tmp_path):
    # the in-place session's timed steps run on its own buffers (Session.step)
    out, plan_path = _optimized(tmp_path, workspace=True, inplace=True)
    r = run_model(out, plan_path)
    assert r.inplace_pairs > 0 and r.inplace_equals_plain and r.inplace_verdict == "equal"
    assert r.timed_steps == 5 and r.step_seconds_planned > 0 and r.step_seconds_default > 0
    assert r.ort_run_to_run_variation == 0.0 and r.ort_one_thread_deterministic is None
    verdicts = [v for _, v, _ in r.output_checks()]
    assert verdicts[1:] == ["equal", "equal"]  # in-place vs plain, arena vs heap: bitwise
    assert verdicts[0] in ("equal", "within_rewrites")  # against the default session (its fusions may round differently)
