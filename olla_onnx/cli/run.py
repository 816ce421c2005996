"""`olla-onnx run MODEL.onnx [--plan PLAN.json]`: measure onnxruntime's default session against the planned arena."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from olla_onnx.cli.common import app, console, fail, parse_dims, write_report
from olla_onnx.units import human_bytes


@app.command()
def run(
    model: Path = typer.Argument(..., help="An .onnx model (typically the output of `olla-onnx optimize`)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="A plan from `olla-onnx optimize --plan`: validated, and its node order used."),
    provider: str = typer.Option("cpu", "--provider", help="cpu or cuda (cuda needs onnxruntime-gpu)."),
    dim: Optional[list[str]] = typer.Option(None, "--dim", help="Pin a symbolic dimension: NAME=VALUE (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
    no_inplace: bool = typer.Option(False, "--no-inplace", help="Run the plan's order without writing its in-place outputs into their inputs."),
    steps: int = typer.Option(5, "--steps", help="Timed steps per session, interleaved; step times are their medians (at least 5)."),
    report_json: Optional[Path] = typer.Option(None, "--report-json", help="Write the figures as one JSON object."),
) -> None:
    """Run MODEL in onnxruntime twice — default options, and nodes in order with every tensor in one planned
    arena — and compare the measured peaks, the step times and the outputs (against onnxruntime's own
    run-to-run variation)."""
    from olla_onnx.run import run_model

    if provider not in ("cpu", "cuda"):
        fail(f"--provider {provider!r}: choose cpu or cuda")
    if steps < 5:
        fail(f"--steps {steps}: at least 5 (the step times are medians)")
    with console.status(f"running {model.name} in onnxruntime ({provider}) ..."):
        r = run_model(model, plan, provider=provider, dims=parse_dims(dim), seed=seed, inplace=not no_inplace, steps=steps)

    t = Table(title=f"{model.name} on {provider}: peak bytes held while onnxruntime ran")
    t.add_column("session")
    t.add_column("peak", justify="right")
    t.add_column("bytes", justify="right")
    t.add_row("onnxruntime default (2nd run)", human_bytes(r.peak_ort_default_bytes), f"{r.peak_ort_default_bytes:,}")
    t.add_row("[bold]planned arena", human_bytes(r.peak_planned_bytes), f"{r.peak_planned_bytes:,}")
    t.add_row("  of which arena", human_bytes(r.arena_bytes), f"{r.arena_bytes:,}")
    t.add_row("  of which resident", human_bytes(r.resident_bytes), f"{r.resident_bytes:,}")
    if r.predicted_peak_bytes is not None:
        t.add_row("memory model's prediction (incl. inputs)", human_bytes(r.predicted_peak_bytes), f"{r.predicted_peak_bytes:,}")
    console.print(t)
    console.print(
        f"planned / default: {r.ratio:.3f}   (inputs, read in place by onnxruntime: {human_bytes(r.input_bytes)}; "
        f"initializers held outside its allocator: {human_bytes(r.initializer_bytes_outside)})"
    )
    if r.prediction_error is not None:
        console.print(f"measured (planned + inputs + those initializers) vs prediction: {r.prediction_error * 100:+.2f}%")
    if r.fallbacks:
        console.print(f"[yellow]{r.fallbacks} request(s) left the plan and were served from the fallback heap; first: {r.first_fallback}")
    else:
        console.print(f"all {r.planned_allocs} requests of the measured run were served from the plan")
    if not r.trace_stable:
        console.print("[yellow]onnxruntime's request sequence changed between two recorded runs")
    if r.step_time_ratio is not None:
        console.print(
            f"step time (median of {r.timed_steps}, interleaved): default {r.step_seconds_default * 1e3:.3g} ms, "
            f"planned {r.step_seconds_planned * 1e3:.3g} ms, planned / default {r.step_time_ratio:.3f}"
        )
    if r.inplace_pairs:
        console.print(
            f"in place: {r.inplace_pairs} output(s), {human_bytes(r.inplace_bytes)}, written into their inputs' buffers (IO binding)"
        )
    for what, verdict, words in r.output_checks():
        style = "[bold red]" if verdict == "beyond" else ""
        console.print(f"{style}{what}: {words}", highlight=False)
    write_report(report_json, r.report())
