"""Placement on the model corpus: arena versus peak for each model and stock order.

Usage (from the repository root)::

    nice python benchmarks/placement_corpus.py [--models 'models/*.onnx'] [--time-limit 10]
                                                [--out benchmarks/results/placement_corpus]

For each model, each order available (the file's order, the optimized order
from ``olla_onnx.schedule.optimize_order``, onnxruntime's default order, and
``pipeline``: the order ``olla-onnx optimize`` places) and
each alignment (64 on CPU, 256 on CUDA; ``--alignments``): the non-resident tensors'
lifetimes under that order are placed; the table shows the peak of that order
(without resident bytes), the max-load bound (sizes rounded up to the
alignment), the arena and the seconds. Goal: arena equals the peak (zero
fragmentation), or is within 0.1% of it, in under 10 s; an arena above that
which the search proved optimal (nothing smaller fits) meets it too and is
listed as "optimal, X% above the max-load bound".
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

from common import MODELS, RESULTS, run_meta

from olla_onnx.formats import load_graph
from olla_onnx.ir.memory import lifetimes, simulate
from olla_onnx.place import buffers_from_lifetimes, check_placement, place
from olla_onnx.place.problem import aligned_sizes


def orders_of(loaded, optimize_seconds: float) -> dict[str, list[int]]:
    graph = loaded.graph
    out = {"input_order": graph.topological_order()}
    if optimize_seconds > 0:
        try:
            from olla_onnx.schedule import optimize_order

            out["optimized"] = list(optimize_order(graph, time_limit=optimize_seconds).order)
        except Exception:  # noqa: BLE001 - optional piece owned by another module
            pass
    if loaded.runs_in_onnxruntime:
        try:
            from olla_onnx.ort_facts.default_order import ort_default_order, written_order_as_run

            out["ort_default"] = ort_default_order(graph)
            # What `olla-onnx optimize` places (olla_onnx/pipeline.py): the lowest-peak
            # order of the above, as onnxruntime will run it.
            best = min(out.values(), key=lambda o: simulate(graph, o).peak)
            out["pipeline"] = written_order_as_run(graph, best)
        except Exception:  # noqa: BLE001 - optional piece owned by another module
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(MODELS / "*.onnx"), help="a glob of models (default: the repository's models/*.onnx)")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--optimize-seconds", type=float, default=6.0, help="time for optimize_order (0: skip)")
    ap.add_argument("--tolerance", type=float, default=0.001, help="stop once within this fraction of the bound")
    ap.add_argument("--alignments", default="64,256", help="comma-separated alignments")
    ap.add_argument("--out", type=Path, default=RESULTS / "placement_corpus")
    ap.add_argument("--report", action="store_true", help="only rewrite the markdown from the recorded JSON")
    args = ap.parse_args()
    if args.report:
        recorded = json.loads(args.out.with_suffix(".json").read_text())
        write_report(args, recorded["meta"], recorded["rows"])
        return
    load_start = os.getloadavg()[0]
    rows = []
    for f in sorted(glob.glob(args.models)):
        loaded = load_graph(f)
        g = loaded.graph
        for oname, order in orders_of(loaded, args.optimize_seconds).items():
            sim = simulate(g, order)
            b = buffers_from_lifetimes(lifetimes(g, order))
            for al in [int(a) for a in args.alignments.split(",")]:
                p = place(b, alignment=al, time_limit=args.time_limit, tolerance=args.tolerance)
                check_placement(b.lower, b.upper, aligned_sizes(b.sizes, al), p.offsets, alignment=al)
                row = {
                    "model": Path(f).name,
                    "order": oname,
                    "tensors": len(b),
                    "alignment": al,
                    "peak_bytes": int(sim.peak - sim.resident_bytes),
                    "lower_bound": p.lower_bound,
                    "arena_bytes": p.arena_bytes,
                    "gap_percent": round(100 * p.fragmentation, 4),
                    "optimal": p.optimal,
                    "seconds": round(p.seconds, 3),
                    "method": p.method,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = run_meta("placement_corpus.py", tolerance=args.tolerance,
                    load_average=[round(load_start, 2), round(os.getloadavg()[0], 2)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    write_report(args, meta, rows)


def write_report(args: argparse.Namespace, meta: dict, rows: list[dict]) -> None:
    """The markdown table and summary of one recorded run."""
    lines = [
        "# Placement on the model corpus",
        "",
        f"Command: `{meta['command']}` ({meta['date']}, Python {meta['python']}, {meta['cpus']} cores, shared, under `nice`; "
        f"load average {meta['load_average'][0]} at the start, {meta['load_average'][1]} at the end).",
        "",
        "peak = most non-resident bytes alive under that order (the simulator's peak minus resident bytes);",
        "bound = the same with every size rounded up to the alignment. gap = arena / bound - 1.",
        f"Search stops once the arena is within {100 * args.tolerance:g}% of the bound (`--tolerance {args.tolerance:g}`);",
        "optimal = proven (arena equals the bound, or the search proved nothing smaller fits).",
        "Every placement passed `check_placement`.",
        "",
    ]
    def met(r: dict) -> bool:
        """In time, and within the tolerance or proven optimal (no smaller arena exists)."""
        return r["seconds"] < args.time_limit and (r["gap_percent"] <= 100 * args.tolerance or r["optimal"])

    miss = [r for r in rows if not met(r)]
    above = [r for r in rows if met(r) and r["gap_percent"] > 100 * args.tolerance]
    lines += [
        f"Within {100 * args.tolerance:g}% of the bound, or proven optimal, in under {args.time_limit:g} s: "
        f"{len(rows) - len(miss)} of {len(rows)} placements"
        + (f" ({len(above)} of them proven optimal above the bound)" if above else "")
        + ". Misses:"
        + ("" if miss else " none."),
        "",
    ]
    lines += [f"- {r['model']} {r['order']} alignment {r['alignment']}: {r['gap_percent']:.4f}% in {r['seconds']:.1f} s ({r['method']})" for r in miss]
    # against the unaligned peak: what is above it and not above the aligned bound is padding no placement avoids
    tol = 1 + args.tolerance
    raw_ok = [r for r in rows if r["arena_bytes"] <= tol * r["peak_bytes"]]
    padded = [r for r in rows if r["lower_bound"] > tol * r["peak_bytes"]]
    both = [r for r in rows if r not in raw_ok and r not in padded]
    lines += [
        "",
        f"Within {100 * args.tolerance:g}% of the unaligned peak itself: {len(raw_ok)} of {len(rows)}. Of the others, "
        f"{len(padded)} have the bound alone (every size rounded up to the alignment) more than {100 * args.tolerance:g}% "
        "above the peak (alignment padding, which no aligned placement avoids; largest: " + _largest_padding(padded) + ")"
        + (f"; in {len(both)} the padding and the gap to the bound add up to more: "
           + ", ".join(f"{r['model']} {r['order']} at {r['alignment']} ({100 * (r['arena_bytes'] / r['peak_bytes'] - 1):.3f}%)"
                       for r in both) if both else "") + ".",
    ]
    if above:
        lines += ["", "Proven optimal above the max-load bound (the search proved nothing smaller fits):", ""]
        lines += [
            f"- {r['model']} {r['order']} alignment {r['alignment']}: optimal, {r['gap_percent']:.4f}% above the max-load bound"
            for r in above
        ]
    lines += [
        "",
        "| model | order | tensors | alignment | peak | bound | arena | gap % | optimal | seconds | method |",
        "|---|---|---:|---:|---:|---:|---:|---:|:---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['order']} | {r['tensors']} | {r['alignment']} | {r['peak_bytes']:,} | "
            f"{r['lower_bound']:,} | {r['arena_bytes']:,} | {r['gap_percent']:.4f} | {'yes' if r['optimal'] else 'no'} | "
            f"{r['seconds']:.3f} | {r['method']} |"
        )
    md = args.out.with_suffix(".md")
    old = md.read_text().splitlines() if md.exists() else []
    notes = next((i for i, line in enumerate(old) if line.startswith("Notes (")), None)  # written by hand: kept
    md.write_text("\n".join(lines + ([""] + old[notes:] if notes is not None else [])) + "\n")


def _largest_padding(rows: list[dict]) -> str:
    if not rows:
        return "none"
    r = max(rows, key=lambda r: r["lower_bound"] / r["peak_bytes"])
    return f"{100 * (r['lower_bound'] / r['peak_bytes'] - 1):.2f}% on {r['model']} {r['order']} at {r['alignment']} bytes"


if __name__ == "__main__":
    main()
