"""Placement benchmark: the eleven MiniMalloc "challenging" problems, each into 1,048,576 bytes.

Usage (from the repository root)::

    nice python benchmarks/placement_challenging.py [--time-limit 60] [--data DIR] [--only A,B]
                                                     [--out benchmarks/results/placement_challenging]

Per problem: buffers, the max-load bound, the best greedy arena, whether the
placement fits 1,048,576 bytes, the arena, seconds, and MiniMalloc's reference
time from the README in the data folder. Every placement goes through the
checker. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from common import HERE, RESULTS, run_meta
from rich.console import Console
from rich.table import Table

from olla_onnx.formats.trace import read_trace
from olla_onnx.place import best_greedy, check_placement, max_load, place

CAPACITY = 1_048_576


def reference_times(readme: Path) -> dict[str, float]:
    """MiniMalloc's seconds per problem from the README's two-row table."""
    rows = [ln for ln in readme.read_text().splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    if len(rows) < 2:
        return {}
    names = [c.strip() for c in rows[0].strip("|").split("|")]
    vals = [c.strip() for c in rows[1].strip("|").split("|")]
    return {n: float(v) for n, v in zip(names, vals) if re.fullmatch(r"[\d.]+", v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE / "data" / "minimalloc-challenging")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--only", default="", help="comma-separated problem names, e.g. A,C")
    ap.add_argument("--out", type=Path, default=RESULTS / "placement_challenging")
    args = ap.parse_args()

    refs = reference_times(args.data / "README.md")
    files = sorted(args.data.glob("*.csv"))
    if args.only:
        keep = set(args.only.split(","))
        files = [f for f in files if f.name.split(".")[0] in keep]
    console = Console()
    rows = []
    for f in files:
        name = f.name.split(".")[0]
        buffers, _ = read_trace(f)
        lo, up, sz = buffers.lower, buffers.upper, buffers.sizes
        _, greedy_arena, _ = best_greedy(lo, up, sz)
        with console.status(f"{name}: {len(buffers)} buffers ..."):
            t = time.perf_counter()
            res = place(buffers, capacity=CAPACITY, time_limit=args.time_limit, minimize=False)
            seconds = time.perf_counter() - t
        arena = check_placement(lo, up, sz, res.offsets)
        assert arena == res.arena_bytes
        row = {
            "problem": name,
            "buffers": len(buffers),
            "lower_bound": max_load(lo, up, sz),
            "greedy_arena": greedy_arena,
            "arena_bytes": arena,
            "feasible": arena <= CAPACITY,
            "seconds": round(seconds, 2),
            "method": res.method,
            "minimalloc_seconds": refs.get(name),
        }
        rows.append(row)
        console.print(
            f"{name}: {row['buffers']} buffers, feasible={row['feasible']}, arena {arena:,}, {seconds:.2f} s "
            f"(MiniMalloc {row['minimalloc_seconds']} s)",
            highlight=False,
        )

    table = Table(title=f"MiniMalloc challenging suite, capacity {CAPACITY:,} bytes, time limit {args.time_limit:g} s")
    for col in ("problem", "buffers", "max-load bound", "greedy arena", "feasible", "arena", "seconds", "MiniMalloc s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["problem"], str(r["buffers"]), f"{r['lower_bound']:,}", f"{r['greedy_arena']:,}",
            "yes" if r["feasible"] else "[red]no", f"{r['arena_bytes']:,}", f"{r['seconds']:.2f}",
            "" if r["minimalloc_seconds"] is None else f"{r['minimalloc_seconds']:.1f}",
        )
    total = sum(r["seconds"] for r in rows)
    ref_total = sum(r["minimalloc_seconds"] or 0 for r in rows)
    solved = sum(r["feasible"] for r in rows)
    table.add_row("total", "", "", "", f"{solved}/{len(rows)}", "", f"{total:.2f}", f"{ref_total:.1f}")
    console.print(table)

    meta = run_meta(
        "placement_challenging.py",
        load_average_before=os.getloadavg() if hasattr(os, "getloadavg") else None,
        capacity=CAPACITY,
        time_limit=args.time_limit,
        solved=solved,
        total_seconds=round(total, 2),
        minimalloc_total_seconds=ref_total,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "problems": rows}, indent=2) + "\n")
    lines = [
        "# Placement: MiniMalloc challenging suite",
        "",
        f"Command: `{meta['command']}` ({meta['date']}, Python {meta['python']}, {meta['cpus']} cores).",
        "",
        "The machine has 2 cores shared with other engineers' jobs (tests, benchmarks) running at the same",
        "time; the benchmark ran under `nice`, so wall-clock seconds are pessimistic and vary between runs.",
        "MiniMalloc's times are the C++ reference figures from `data/minimalloc-challenging/README.md`.",
        "Every placement passed `check_placement` (no overlap of buffers alive together, all inside the arena).",
        "",
        "| problem | buffers | max-load bound | greedy arena | fits 1 MiB | arena | seconds | MiniMalloc s | method |",
        "|---|---:|---:|---:|:---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['buffers']} | {r['lower_bound']:,} | {r['greedy_arena']:,} | "
            f"{'yes' if r['feasible'] else '**no**'} | {r['arena_bytes']:,} | {r['seconds']:.2f} | "
            f"{'' if r['minimalloc_seconds'] is None else r['minimalloc_seconds']} | {r['method']} |"
        )
    lines.append(f"| **total** | | | | {solved}/{len(rows)} | | **{total:.2f}** | **{ref_total:.1f}** | |")
    lines.append("")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
