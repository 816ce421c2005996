"""`olla-onnx bench [MODEL...]`: the whole pipeline over the corpus, as a markdown table and JSON.

Defaults fit the repository's layout when run from its root: the corpus in ``models/``, the table
and rows written to ``benchmarks/results/bench.md`` and ``.json``; ``--models-dir`` and
``--results-dir`` point elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from olla_onnx.optimize import DEFAULT_TIME_LIMIT
from olla_onnx.cli.common import app, console, fail


@app.command()
def bench(
    models: Optional[list[Path]] = typer.Argument(None, help="Models to run (default: every full-size *.onnx of --models-dir, no *_tiny)."),
    models_dir: Path = typer.Option(Path("models"), "--models-dir", help="Folder of the models run when none are given."),
    results_dir: Path = typer.Option(Path("benchmarks/results"), "--results-dir", help="Folder for bench.md and bench.json."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help="Order-search seconds per model."),
    run: bool = typer.Option(True, "--run/--no-run", help="Also measure peaks in onnxruntime (default and planned)."),
    out_md: Optional[Path] = typer.Option(None, "--out-md", help="Markdown table to write (default: RESULTS_DIR/bench.md)."),
    out_json: Optional[Path] = typer.Option(None, "--out-json", help="JSON rows to write (default: RESULTS_DIR/bench.json)."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Also draw a PNG per model into this folder."),
    run_limit_mib: int = typer.Option(2048, "--run-limit-mib", help="Measure in onnxruntime only models whose default peak is below this."),
) -> None:
    """Run inspect, optimize, place and run on every model; write one table."""
    from olla_onnx.bench import bench as run_bench
    from olla_onnx.bench import corpus_models, markdown_table

    paths = list(models) if models else corpus_models(models_dir)
    if not paths:
        fail(f"no models given and no full-size model in {models_dir}/*.onnx (give --models-dir DIR, or models as arguments)")
    out_md = out_md or results_dir / "bench.md"
    out_json = out_json or results_dir / "bench.json"
    for p in paths:
        if not p.exists():
            fail(f"{p} does not exist")
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("bench", total=len(paths))

        def progress(name: str, i: int) -> None:
            bar.update(task, description=name, completed=i)

        rows = run_bench(paths, time_limit=time_limit, run=run, progress=progress, plot_dir=plots, run_limit_bytes=run_limit_mib << 20)
        bar.update(task, completed=len(paths), description="done")
    table = markdown_table(rows)
    command = "olla-onnx bench " + " ".join(
        [f"--time-limit {time_limit:g}", f"--run-limit-mib {run_limit_mib}"] + ([] if run else ["--no-run"])
        + ([f"--plots {plots}"] if plots else []) + ([str(p) for p in models] if models else [])
        + ([f"--models-dir {models_dir}"] if not models and models_dir != Path("models") else [])
    )
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(f"# olla-onnx bench\n\nCommand: `{command}`\n\nPeaks include resident bytes; MiB = 2^20 bytes.\n\n{table}")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    console.print(table)
    console.print(f"wrote {out_md} and {out_json}")

