"""`olla-onnx place TRACE.csv`: offsets for a buffer trace, checked, with the max-load bound."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from olla_onnx.cli.common import app, console, fail, refuse_overwrite, write_report
from olla_onnx.units import human_bytes


@app.command()
def place(
    trace: Path = typer.Argument(..., help="Buffer trace CSV: id,lower,upper,size (live on [lower, upper))."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the solution CSV (the trace plus an offset column)."),
    capacity: Optional[int] = typer.Option(
        None, "--capacity", help="Arena size to fit in (bytes); the search stops at the first placement within it."
    ),
    time_limit: float = typer.Option(60.0, "--time-limit", help="Seconds for the search; the best placement so far is kept."),
    alignment: int = typer.Option(1, "--alignment", help="Every offset a multiple of this (64 on CPU, 256 on CUDA)."),
    minimize: bool = typer.Option(
        False, "--minimize", help="With --capacity: keep shrinking the arena after it fits, until the time limit."
    ),
    tolerance: float = typer.Option(
        0.0, "--tolerance", help="Stop once the arena is within this fraction of the lower bound (e.g. 0.001)."
    ),
    report_json: Optional[Path] = typer.Option(None, "--report-json", help="Write the figures as one JSON object."),
) -> None:
    """Place every buffer of a trace in one arena: no two buffers alive together overlap."""
    from olla_onnx.place import place as place_buffers
    from olla_onnx.formats.trace import read_trace, write_trace

    refuse_overwrite(trace, out)
    if time_limit <= 0:
        fail(f"--time-limit {time_limit}: expected a positive number of seconds")
    if alignment < 1:
        fail(f"--alignment {alignment}: expected a positive integer (64 on CPU, 256 on CUDA)")
    if tolerance < 0:
        fail(f"--tolerance {tolerance}: expected a fraction >= 0, e.g. 0.001")
    if capacity is not None and capacity < 0:
        fail(f"--capacity {capacity}: expected a number of bytes >= 0")
    buffers, _ = read_trace(trace)
    with console.status(
        f"placing {len(buffers):,} buffers (greedy, then exact search up to {time_limit:g} s) ..."
    ):
        result = place_buffers(
            buffers, capacity=capacity, alignment=alignment, time_limit=time_limit,
            minimize=minimize or capacity is None, tolerance=tolerance,
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_trace(out, buffers, result.offsets)

    t = Table(title=f"{trace.name}: {len(buffers):,} buffers in {result.windows:,} independent window(s)")
    t.add_column("figure")
    t.add_column("bytes", justify="right")
    t.add_column("", justify="right")
    t.add_row("lower bound (most bytes alive at once)", f"{result.lower_bound:,}", human_bytes(result.lower_bound))
    t.add_row("[bold]arena", f"{result.arena_bytes:,}", human_bytes(result.arena_bytes))
    if capacity is not None:
        t.add_row("capacity", f"{capacity:,}", human_bytes(capacity))
    console.print(t)
    verdict = "optimal (proven)" if result.optimal else "not proven optimal"
    fit = "" if capacity is None else ("; fits the capacity" if result.feasible else "; [bold red]does not fit the capacity[/]")
    console.print(
        f"{verdict}{fit}; fragmentation {100 * result.fragmentation:.3f}%; {result.method}; {result.seconds:.2f} s"
        + (f"; offsets written to {out}" if out else ""),
        highlight=False,
    )
    write_report(
        report_json,
        {
            "trace": str(trace),
            "buffers": len(buffers),
            "lower_bound": result.lower_bound,
            "arena_bytes": result.arena_bytes,
            "optimal": result.optimal,
            "feasible": result.feasible,
            "capacity": capacity,
            "alignment": alignment,
            "method": result.method,
            "windows": result.windows,
            "seconds": round(result.seconds, 3),
        },
    )
