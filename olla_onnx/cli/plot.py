"""`olla-onnx plot MODEL [--plan PLAN] -o FIG.png`: live memory per order and the arena layout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from olla_onnx.optimize import DEFAULT_TIME_LIMIT
from olla_onnx.cli.common import app, console, fail, parse_dims, refuse_overwrite


@app.command()
def plot(
    model: Path = typer.Argument(..., help="An .onnx model or a networkx node-link .json graph."),
    out: Path = typer.Option(..., "-o", "--out", help="PNG file to write."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="A plan from `optimize --plan`; without it, optimize first."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help="Seconds for the order search when no plan is given."),
    dim: Optional[list[str]] = typer.Option(None, "--dim", help="Pin a symbolic dimension: NAME=VALUE (repeatable)."),
    size_attr: str = typer.Option("size", "--size-attr", help="Node attribute holding output bytes (node-link JSON)."),
) -> None:
    """Draw live memory per step (file order, onnxruntime default, optimized) stacked by kind, and the arena."""
    from olla_onnx.formats import load_graph
    from olla_onnx.plan import check_plan, load_plan, plan_uses_workspace
    from olla_onnx.plot import plan_graph, plot_memory

    if out.suffix.lower() != ".png":
        fail(f"-o {out}: write a .png file")
    refuse_overwrite(model, out, "-o")
    the_plan = load_plan(plan) if plan is not None else None
    with console.status(f"loading {model} ..."):
        workspace = the_plan is None or plan_uses_workspace(the_plan)  # the graph the plan was made for
        loaded = load_graph(model, dims=parse_dims(dim), size_attr=size_attr, workspace=workspace)
    graph = loaded.graph
    if the_plan is not None:
        check_plan(the_plan, graph)
    else:
        from olla_onnx.optimize import optimize_model

        with console.status("optimizing (no --plan given) ..."):
            the_plan = optimize_model(loaded, time_limit=time_limit).plan
    named = {
        "input order (file)": "input_order",
        "onnxruntime default order": "ort_default",
    }
    stock = loaded.stock_orders()
    orders = {label: stock[key] for label, key in named.items() if key in stock}
    label = "optimized order (olla-onnx)"
    if the_plan.inplace:
        label = f"optimized order + {len(the_plan.inplace)} in-place updates (olla-onnx)"
    orders[label] = the_plan.order_indices(graph)
    with console.status("drawing ..."):
        plot_memory(graph, orders, the_plan, out, title=f"{model.stem}: live memory per step",
                    graphs={label: plan_graph(graph, the_plan)})
    console.print(f"wrote {out}")
