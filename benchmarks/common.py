"""What the benchmark scripts share: the repository's folders, the record of a run, writing results.

The scripts import it as ``common``: Python puts a script's own folder first on ``sys.path``,
so ``python benchmarks/X.py`` finds it from any working directory. Everything else comes from
the installed package (``pip install -e .``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent  # benchmarks/
ROOT = HERE.parent  # the repository
MODELS = ROOT / "models"
RESULTS = HERE / "results"

#: Why the recorded times vary: said once in every record.
SHARED = "2-core machine shared with other engineers' jobs; run under nice; times are wall clock"


def command(script: str, args: list[str] | None = None) -> str:
    """How to run this again: ``nice python benchmarks/<script> ARGS`` (default: the arguments given now)."""
    return " ".join(["nice python", f"benchmarks/{script}", *(sys.argv[1:] if args is None else args)])


def run_meta(script: str, **extra: Any) -> dict[str, Any]:
    """The record of a run for a results JSON: command, date, Python, cores, :data:`SHARED`, then ``extra``."""
    return {
        "command": command(script),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "note": SHARED,
        **extra,
    }


def machine(*details: str, start: float | None = None) -> str:
    """One line for a results header: architecture, cores, onnxruntime's version, ``details``, and the
    seconds since ``start`` (a ``time.time()``) when given."""
    import onnxruntime as ort

    parts = [platform.machine(), f"{os.cpu_count()} cores (shared)", f"onnxruntime {ort.__version__}", *details]
    if start is not None:
        parts.append(f"{time.time() - start:.0f} s")
    return ", ".join(parts)


def write_results(out: Path, lines: list[str], rows: Any = None) -> None:
    """Write the markdown ``lines`` to ``out`` and, given ``rows``, the JSON beside it (``out`` with
    suffix ``.json``); print the markdown."""
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if rows is not None:
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)
