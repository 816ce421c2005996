"""`olla-onnx inspect MODEL`: counts, bytes by kind, stock-order peaks, lower bound."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from olla_onnx.cli.common import app, console, parse_dims, write_report
from olla_onnx.units import human_bytes


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="An .onnx model or a networkx node-link .json graph."),
    dim: Optional[list[str]] = typer.Option(None, "--dim", help="Pin a symbolic dimension: NAME=VALUE (repeatable)."),
    size_attr: str = typer.Option("size", "--size-attr", help="Node attribute holding output bytes (node-link JSON)."),
    top: int = typer.Option(10, "--top", help="How many of the biggest tensors live at the peak to list."),
    report_json: Optional[Path] = typer.Option(None, "--report-json", help="Write the figures as one JSON object."),
) -> None:
    """Show node and tensor counts, bytes by kind, peaks under the stock orders and a lower bound."""
    from olla_onnx.formats import load_graph
    from olla_onnx.inspect import summarize

    with console.status(f"loading {model} ..."):
        loaded = load_graph(model, dims=parse_dims(dim), size_attr=size_attr)
    with console.status("simulating orders and bounding the peak ..."):
        summary = summarize(loaded.graph, loaded.stock_orders(), top=top)

    t = Table(title=f"{model.name}: {summary.nodes} nodes, {summary.tensors} tensors", show_header=True)
    t.add_column("figure")
    t.add_column("bytes", justify="right")
    t.add_column("", justify="right")
    for kind, b in sorted(summary.bytes_by_kind.items(), key=lambda kv: -kv[1]):
        t.add_row(f"all {kind} tensors", f"{b:,}", human_bytes(b))
    t.add_row("[bold]resident (inputs, parameters, state)", f"{summary.resident_bytes:,}", human_bytes(summary.resident_bytes))
    for p in summary.peaks:
        t.add_row(f"[bold]peak, {p.name.replace('_', ' ')}", f"{p.peak:,}", human_bytes(p.peak))
    lb = summary.lower_bound
    t.add_row(f"[bold]lower bound ({lb.method})", f"{lb.value:,}", human_bytes(lb.value))
    console.print(t)

    worst = max(summary.peaks, key=lambda p: p.peak)
    tt = Table(title=f"biggest tensors live at the peak ({worst.name.replace('_', ' ')}, step {worst.peak_step})")
    tt.add_column("tensor")
    tt.add_column("kind")
    tt.add_column("bytes", justify="right")
    for name, b in worst.top_tensors:
        tt.add_row(name, loaded.graph.tensors[name].kind.value, human_bytes(b))
    console.print(tt)
    write_report(report_json, summary.to_json())
