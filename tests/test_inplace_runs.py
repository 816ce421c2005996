"""In-place updates end to end: optimize, the CLI, onnxruntime runs and the bench table."""


from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from olla_onnx.passes.inplace import (
    is_order_token,
)
from olla_onnx.ir.memory import simulate

MODELS = Path(__file__).resolve().parents[1] / "models"


# ---------------------------------------------------------------- random training-like graphs


def test_optimize_uses_inplace_and_writes_no_token(tmp_path):
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.plan import load_plan

    loaded = load_graph(MODELS / "mlp_sgd_handwritten.onnx")
    res = optimize_model(loaded, time_limit=2.0)
    plain = optimize_model(loaded, time_limit=2.0, inplace=False)
    assert len(res.inplace) == 16 and res.inplace_bytes == sum(p.bytes for p in res.inplace) > 0
    assert not plain.inplace and plain.peak_optimized == plain.peak_optimized_without_inplace
    assert simulate(res.graph, list(res.order)).peak == res.peak_optimized
    assert res.lower_bound <= res.peak_optimized <= min(res.peak_input_order, res.peak_ort_default)
    # in place removes the updated parameters and state from the peak (here, all of them)
    assert res.peak_optimized <= plain.peak_optimized - res.inplace_bytes // 2
    rep = res.report()
    assert rep["inplace_pairs"] == 16 and rep["inplace_bytes"] == res.inplace_bytes
    assert rep["peak_optimized_without_inplace"] == simulate(loaded.graph, list(res.order)).peak
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    written = onnx.load(out)
    names = {t for n in written.graph.node for t in (*n.input, *n.output)}
    assert not any(is_order_token(t) for t in names)
    assert sorted(n.name for n in written.graph.node) == sorted(n.name for n in loaded.model.graph.node)
    assert load_plan(plan, loaded.graph).inplace == res.inplace


def test_cli_optimize_reports_pairs_and_refuses_bad_ones(tmp_path):
    from typer.testing import CliRunner

    import olla_onnx.cli.optimize  # noqa: F401
    from olla_onnx.cli.common import app

    model = MODELS / "mlp_tiny.onnx"
    rep = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--time-limit", "0.5",
                                   "--report-json", str(rep)])
    assert res.exit_code == 0, res.output
    assert "in place: 12 updated tensor(s)" in res.output
    r = json.loads(rep.read_text())
    assert r["inplace_pairs"] == 12 and r["peak_optimized"] <= r["peak_optimized_without_inplace"]
    res = CliRunner().invoke(app, ["optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--no-inplace",
                                   "--time-limit", "0.5", "--report-json", str(rep)])
    assert res.exit_code == 0 and json.loads(rep.read_text())["inplace_pairs"] == 0
    proc = subprocess.run([sys.executable, "-m", "olla_onnx", "optimize", str(model), "-o", str(tmp_path / "x.onnx"),
                           "--inplace", "param.nope=loss"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no tensor 'param.nope'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- onnxruntime


@pytest.mark.parametrize("name", ["mlp_tiny", "mlp_sgd_handwritten"])
def test_inplace_run_equals_the_plain_planned_run(tmp_path, name):
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.run import run_model

    loaded = load_graph(MODELS / f"{name}.onnx")
    res = optimize_model(loaded, time_limit=1.0)
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    r = run_model(out, plan)
    assert r.inplace_pairs == len(res.inplace) > 0
    assert r.inplace_equals_plain and r.inplace_max_abs_diff == 0.0
    assert r.planned_equals_unplanned and r.fallbacks == 0
    assert r.prediction_error is not None and abs(r.prediction_error) <= 0.02
    off = run_model(out, plan, inplace=False)
    assert off.inplace_pairs == 0 and off.inplace_equals_plain is None
    # onnxruntime allocates nothing for the updated tensors: the measured peak drops
    assert r.peak_planned_bytes < off.peak_planned_bytes


def test_cli_run_with_an_inplace_plan(tmp_path):
    from typer.testing import CliRunner

    import olla_onnx.cli.optimize  # noqa: F401
    import olla_onnx.cli.run  # noqa: F401
    from olla_onnx.cli.common import app

    out, plan, rep = tmp_path / "o.onnx", tmp_path / "p.json", tmp_path / "r.json"
    res = CliRunner().invoke(app, ["optimize", str(MODELS / "mlp_tiny.onnx"), "-o", str(out), "--plan", str(plan),
                                   "--time-limit", "0.5"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["run", str(out), "--plan", str(plan), "--report-json", str(rep)])
    assert res.exit_code == 0, res.output
    assert "in place: 12 output(s)" in res.output and "without in-place: bitwise equal" in res.output
    r = json.loads(rep.read_text())
    assert r["inplace_pairs"] == 12 and r["inplace_equals_plain"] is True and r["outputs_equal"] is True
    res = CliRunner().invoke(app, ["run", str(out), "--plan", str(plan), "--no-inplace", "--report-json", str(rep)])
    assert res.exit_code == 0 and "in place:" not in res.output
    assert json.loads(rep.read_text())["inplace_pairs"] == 0


def test_scalar_and_broadcast_updates_in_place(tmp_path):
    """A scalar step counter and a weight updated with a broadcast operand: same shapes, same values."""
    from onnx import TensorProto as TP
    from onnx import helper as h

    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.run import run_model

    nodes = [
        h.make_node("Add", ["state.step", "one"], ["state_out.step"], name="count"),
        h.make_node("MatMul", ["batch.x", "param.w"], ["y"], name="fwd"),
        h.make_node("ReduceSum", ["y"], ["loss"], keepdims=0, name="loss"),
        h.make_node("ReduceSum", ["batch.x", "axes"], ["g"], keepdims=0, name="grad"),  # d loss / d w, per row
        h.make_node("Unsqueeze", ["g", "axes1"], ["g2"], name="col"),
        h.make_node("Mul", ["g2", "state_out.step"], ["step"], name="scale"),
        h.make_node("Sub", ["param.w", "step"], ["param_out.w"], name="update"),  # step [8,1] broadcast over w [8,3]
    ]
    graph = h.make_graph(
        nodes, "g",
        [h.make_tensor_value_info("batch.x", TP.FLOAT, [2, 8]), h.make_tensor_value_info("param.w", TP.FLOAT, [8, 3]),
         h.make_tensor_value_info("state.step", TP.FLOAT, [])],
        [h.make_tensor_value_info(n, TP.FLOAT, s) for n, s in (("loss", []), ("param_out.w", [8, 3]), ("state_out.step", []))],
        [h.make_tensor("one", TP.FLOAT, [], [1.0]), h.make_tensor("axes", TP.INT64, [1], [0]),
         h.make_tensor("axes1", TP.INT64, [1], [1])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    loaded = load_graph(src)
    res = optimize_model(loaded, time_limit=0.5)
    assert {(p.input, p.output) for p in res.inplace} == {("state.step", "state_out.step"), ("param.w", "param_out.w")}
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    r = run_model(out, plan)
    assert r.inplace_pairs == 2 and r.inplace_equals_plain and r.outputs_equal and r.max_abs_diff == 0.0


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a CUDA device"
)
def test_cuda_inplace_run(tmp_path):
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.run import run_model

    loaded = load_graph(MODELS / "mlp_sgd_handwritten.onnx")
    res = optimize_model(loaded, time_limit=1.0, alignment=256)
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    r = run_model(out, plan, provider="cuda")
    assert r.inplace_pairs > 0 and r.inplace_equals_plain and r.fallbacks == 0


def test_bench_table_has_order_only_and_inplace_columns():
    from olla_onnx.bench import markdown_table

    row = {
        "model": "m", "nodes": 3, "resident_bytes": 1 << 20, "peak_input_order": 5 << 20, "peak_ort_default": 6 << 20,
        "peak_optimized": 4 << 20, "lower_bound": 4 << 20, "gap": 0.0, "optimal": True, "transient_saving_vs_ort": 0.4,
        "transient_saving_bound": 0.45, "transient_saving_bound_inplace": 0.7, "arena_bytes": 3 << 20, "fragmentation": 0.0, "order_seconds": 1.0, "place_seconds": 0.1,
        "inplace_pairs": 2, "inplace_bytes": 1 << 20, "peak_inplace": 3 << 20, "lower_bound_inplace": 3 << 20,
        "optimal_inplace": False, "transient_saving_vs_ort_inplace": 0.6, "peak_ort_default_bytes": 6 << 20,
        "peak_planned_bytes": 4 << 20, "peak_planned_bytes_inplace": 3 << 20, "outputs_equal": True,
        "inplace_equals_plain": True,
    }
    lines = markdown_table([row, {"model": "bad", "error": "boom"}]).splitlines()
    head, rule, body, bad = lines[:4]
    assert head.count("|") == rule.count("|") == body.count("|") == bad.count("|")
    cells = dict(zip([c.strip() for c in head.split("|")], [c.strip() for c in body.split("|")]))
    assert cells["optimized peak"] == "4.0" and cells["peak, order + in-place"] == "3.0"
    assert cells["in-place MiB (pairs)"] == "1.0 (2)" and cells["proven, in-place"] == "no"
    assert cells["transient saving vs ORT default"] == "40.0%"
    assert cells["transient saving vs ORT default, order + in-place"] == "60.0%"
    assert cells["measured planned + in-place MiB"] == "3.0" and "bitwise" in cells["outputs vs default session"]
    assert cells["most saving any order can give"] == "45.0%" and cells["most saving, order + in-place"] == "70.0%"
    assert any("With in-place updates" in line and "60.0%" in line and "70.0%" in line for line in lines)
    assert any("lower bound allows: 45.0%" in line for line in lines)


def test_bench_saving_bound_caps_the_saving_found():
    """The saving bound comes from a sound lower bound, so no order found may beat it."""
    from olla_onnx.bench import bench_model

    row = bench_model(MODELS / "mlp_sgd_handwritten.onnx", time_limit=1.0, run=False)
    assert row["transient_saving_vs_ort"] <= row["transient_saving_bound"] + 1e-12
    assert row["transient_saving_vs_ort_inplace"] <= row["transient_saving_bound_inplace"] + 1e-12
