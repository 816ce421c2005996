"""`olla-onnx optimize MODEL -o OUT`: the main job — best order, arena plan, reordered model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from olla_onnx.pipeline import DEFAULT_TIME_LIMIT
from olla_onnx.commands.app import app, console, fail, parse_dims, refuse_overwrite, write_report
from olla_onnx.units import human_bytes


def _pct(a: int, b: int) -> str:
    return f"{(b - a) / b * 100:+.1f}%" if b else ""


@app.command()
def optimize(
    model: Path = typer.Argument(..., help="An .onnx training graph or a networkx node-link .json graph."),
    out: Path = typer.Option(..., "-o", "--out", help="Where to write the reordered model (same format as MODEL)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="Also write the arena-offset plan (JSON) here."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help="Seconds for the order search; the best order found by then is kept."),
    dim: Optional[list[str]] = typer.Option(None, "--dim", help="Pin a symbolic dimension: NAME=VALUE (repeatable)."),
    size_attr: str = typer.Option("size", "--size-attr", help="Node attribute holding output bytes (node-link JSON)."),
    alignment: int = typer.Option(64, "--alignment", help="Byte alignment of every offset in the plan (64 CPU, 256 CUDA)."),
    report_json: Optional[Path] = typer.Option(None, "--report-json", help="Write the figures as one JSON object."),
) -> None:
    """Find the node order with the lowest peak memory, place every tensor in one arena, write both."""
    from olla_onnx.frontends import load_graph
    from olla_onnx.pipeline import optimize_model, write_outputs

    if time_limit <= 0:
        fail(f"--time-limit {time_limit}: must be positive")
    if alignment <= 0 or alignment & (alignment - 1):
        fail(f"--alignment {alignment}: must be a power of two")
    refuse_overwrite(model, out, "-o")
    refuse_overwrite(model, plan, "--plan")
    with console.status(f"loading {model} ..."):
        loaded = load_graph(model, dims=parse_dims(dim), size_attr=size_attr)
    if out.suffix.lower() != model.suffix.lower():
        fail(f"-o {out}: the output has the input's format; use a {model.suffix} file name")

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("ordering", total=1.0)

        def progress(message: str, fraction: float) -> None:
            bar.update(task, description=message, completed=max(0.0, min(1.0, fraction)))

        result = optimize_model(loaded, time_limit=time_limit, alignment=alignment, progress=progress)
    write_outputs(loaded, result, out, plan)

    g = loaded.graph
    t = Table(title=f"{model.name}: {g.num_nodes} nodes", show_header=True)
    t.add_column("order")
    t.add_column("peak", justify="right")
    t.add_column("transient (peak - resident)", justify="right")
    t.add_column("saved by the optimized order", justify="right")
    r = result.resident_bytes
    rows = [("input file", result.peak_input_order)]
    if result.peak_ort_default is not None:
        rows.append(("onnxruntime default", result.peak_ort_default))
    rows.append(("[bold]optimized", result.peak_optimized))
    rows.append(("lower bound", result.lower_bound))
    for label, p in rows:
        t.add_row(label, human_bytes(p), human_bytes(p - r), "" if "optimized" in label or "bound" in label else _pct(result.peak_optimized - r, p - r))
    console.print(t)
    status = "proven optimal" if result.optimal else (
        f"not proven optimal: within {(result.peak_optimized - result.lower_bound) / max(result.lower_bound, 1) * 100:.2f}% of the lower bound"
    )
    console.print(f"order: {status} ({result.method}, {result.order_seconds:.1f} s)")
    console.print(
        f"arena: {human_bytes(result.arena_bytes)} for the transient tensors, fragmentation {result.fragmentation * 100:.2f}%"
        f" ({result.place_seconds:.1f} s); resident {human_bytes(r)} outside it"
    )
    console.print(f"wrote {out}" + (f" and {plan}" if plan else ""))
    write_report(report_json, result.report())
