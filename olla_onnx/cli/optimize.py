"""`olla-onnx optimize MODEL -o OUT`: the main job — best order, arena plan, reordered model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from olla_onnx.optimize import DEFAULT_TIME_LIMIT
from olla_onnx.cli.common import app, console, fail, parse_dims, progress_bar, refuse_overwrite, write_report
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
    no_inplace: bool = typer.Option(False, "--no-inplace", help="Keep every updated parameter/state in a buffer of its own (no in-place updates)."),
    inplace: Optional[list[str]] = typer.Option(None, "--inplace", help="Also write output OUT into input IN's buffer: IN=OUT (repeatable; refused if unsafe)."),
    no_workspace: bool = typer.Option(False, "--no-workspace", help="Leave out onnxruntime's CPU kernel scratch (Conv im2col buffers, ...) from the memory model."),
    report_json: Optional[Path] = typer.Option(None, "--report-json", help="Write the figures as one JSON object."),
) -> None:
    """Find the node order with the lowest peak memory, place every tensor in one arena, write both."""
    from olla_onnx.formats import load_graph
    from olla_onnx.passes.inplace import parse_pair
    from olla_onnx.optimize import optimize_model, write_outputs

    if time_limit <= 0:
        fail(f"--time-limit {time_limit}: must be positive")
    if alignment <= 0 or alignment & (alignment - 1):
        fail(f"--alignment {alignment}: must be a power of two")
    if inplace and no_inplace:
        fail("--inplace and --no-inplace contradict each other; give one")
    explicit = [parse_pair(p) for p in inplace or []]
    refuse_overwrite(model, out, "-o")
    refuse_overwrite(model, plan, "--plan")
    with console.status(f"loading {model} ..."):
        loaded = load_graph(model, dims=parse_dims(dim), size_attr=size_attr, workspace=not no_workspace)
    if out.suffix.lower() != model.suffix.lower():
        fail(f"-o {out}: the output has the input's format; use a {model.suffix} file name")

    with progress_bar("ordering") as progress:
        result = optimize_model(
            loaded, time_limit=time_limit, alignment=alignment, progress=progress, inplace=not no_inplace, inplace_pairs=explicit
        )
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
    if result.inplace:
        rows.append(("optimized order, no in-place", result.peak_optimized_without_inplace))
        rows.append(("[bold]optimized + in-place", result.peak_optimized))
    else:
        rows.append(("[bold]optimized", result.peak_optimized))
    rows.append(("lower bound", result.lower_bound))
    for label, p in rows:
        t.add_row(label, human_bytes(p), human_bytes(p - r), "" if "optimized" in label or "bound" in label else _pct(result.peak_optimized - r, p - r))
    console.print(t)
    status = "proven optimal" if result.optimal else (
        f"not proven optimal: within {(result.peak_optimized - result.lower_bound) / max(result.lower_bound, 1) * 100:.2f}% of the lower bound"
    )
    console.print(f"order: {status} ({result.method}, {result.order_seconds:.1f} s)")
    if no_inplace:
        console.print("in place: off (--no-inplace)")
    else:
        line = (
            f"in place: {len(result.inplace)} updated tensor(s), {human_bytes(result.inplace_bytes)}, written over the inputs they replace"
            if result.inplace else "in place: no output is written over its input"
        )
        if result.inplace_refused:
            first = result.inplace_refused[0]
            line += f"; {len(result.inplace_refused)} candidate(s) refused (first: {first.input} -> {first.output}: {first.reason})"
        console.print(line)
    console.print(
        f"arena: {human_bytes(result.arena_bytes)} for the transient tensors, fragmentation {result.fragmentation * 100:.2f}%"
        + (f", {result.alignment_padding * 100:.2f}% of it padding to {alignment}-byte alignment that no placement avoids"
           if result.alignment_padding >= 5e-5 else "")
        + f" ({result.place_seconds:.1f} s); resident {human_bytes(r)} outside it"
    )
    console.print(f"wrote {out}" + (f" and {plan}" if plan else ""))
    write_report(report_json, result.report())
