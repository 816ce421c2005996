"""The typer application shared by every command module, and the helpers they share."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from olla_onnx.files import same_file

app = typer.Typer(
    name="olla-onnx",
    help="Lower the peak memory of ONNX training graphs: order, place, run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Print a one-line error naming the problem and exit with code 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def parse_dims(dims: list[str] | None) -> dict[str, int]:
    """Parse repeated ``--dim NAME=VALUE`` options into a dict; bad syntax is a user error."""
    out: dict[str, int] = {}
    for item in dims or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().lstrip("-").isdigit() or int(value) <= 0:
            fail(f"--dim {item!r}: expected NAME=VALUE with a positive integer VALUE, e.g. --dim batch=32")
        out[name.strip()] = int(value)
    return out


def refuse_overwrite(inp: Path, out: Path | None, what: str = "-o") -> None:
    """Refuse an output path that is the input file (the input is never overwritten)."""
    if out is not None and same_file(out, inp):
        fail(f"{what} {out} is the input file; choose another output path (the input is never overwritten)")


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    """Write the ``--report-json`` object (if asked for), creating parent folders."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


@app.callback()
def _main() -> None:
    """olla-onnx: memory-optimal node order and arena plan for ONNX training graphs.

    Typical use: `olla-onnx optimize train.onnx -o opt.onnx --plan plan.json`,
    then `olla-onnx run opt.onnx --plan plan.json` to measure it in onnxruntime.
    """


@contextmanager
def progress_bar(description: str, total: float = 1.0, counts: bool = False) -> Iterator[Callable[[str, float], None]]:
    """A progress bar on the console; yields ``update(message, completed)`` (``completed`` out of ``total``).

    ``counts`` shows "M/N" (whole steps, e.g. models); otherwise the bar is a fraction and vanishes when done.
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn()] + ([MofNCompleteColumn()] if counts else [])
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=not counts) as bar:
        task = bar.add_task(description, total=total)

        def update(message: str, completed: float) -> None:
            bar.update(task, description=message, completed=max(0.0, min(total, completed)))

        yield update
