"""`olla-onnx plot --plan` draws the plan's order on the graph the plan is for (in-place pairs applied)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import olla_onnx.cli.optimize  # noqa: F401  (registers the commands)
import olla_onnx.cli.plot  # noqa: F401
from olla_onnx.cli.common import app
from olla_onnx.formats import load_graph
from olla_onnx.ir.memory import simulate
from olla_onnx.optimize import optimize_model, write_outputs
from olla_onnx.plot import memory_curves, plan_graph

ROOT = Path(__file__).resolve().parents[1]
MLP_TINY = ROOT / "models" / "mlp_tiny.onnx"


def test_in_place_plan_curve_is_the_aliased_simulation():
    loaded = load_graph(MLP_TINY)
    res = optimize_model(loaded, time_limit=0.5)
    assert res.plan.inplace, "mlp_tiny's SGD updates should go in place"
    order = res.plan.order_indices(loaded.graph)
    curves = memory_curves(loaded.graph, {"plain": order, "plan": order}, {"plan": plan_graph(loaded.graph, res.plan)})
    plain_live, _ = curves["plain"]
    plan_live, per_kind = curves["plan"]
    assert int(plan_live.max()) == res.peak_optimized  # what optimize reported for this plan
    assert int(plan_live.max()) < int(plain_live.max()) == res.peak_optimized_without_inplace
    assert int(sum(per_kind.values()).max()) == int(plan_live.max())
    # the plan's buffers fit the plan's graph: every one of them is a tensor there, with its size
    pg = plan_graph(loaded.graph, res.plan)
    assert all(pg.tensors[b.tensor].size == b.size for b in res.plan.buffers)
    assert simulate(pg, order).peak == res.peak_optimized


def test_plot_command_draws_in_place_and_no_workspace_plans(tmp_path):
    runner = CliRunner()
    for flags in ([], ["--no-workspace", "--no-inplace"]):
        opt, plan = tmp_path / f"opt{len(flags)}.onnx", tmp_path / f"plan{len(flags)}.json"
        r = runner.invoke(app, ["optimize", str(ROOT / "models" / "cnn_tiny.onnx"), "-o", str(opt), "--plan", str(plan),
                                "--time-limit", "0.5", *flags])
        assert r.exit_code == 0, r.output
        png = tmp_path / f"fig{len(flags)}.png"
        r = runner.invoke(app, ["plot", str(opt), "--plan", str(plan), "-o", str(png)])
        assert r.exit_code == 0, r.output
        assert png.stat().st_size > 0
