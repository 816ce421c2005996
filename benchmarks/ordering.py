"""Ordering benchmark: optimize_order on random layered DAGs (node-link JSON), training-like graphs and the ONNX corpus.

Usage:
    nice python benchmarks/ordering.py [--time-limit S] [--quick] [--inplace] [--out benchmarks/results/ordering.md]

The random layered DAGs are written as node-link JSON (fixed seeds) to
benchmarks/ordering_graphs/ and read back through the node-link frontend;
training-like graphs are generated in memory (their nodes have two outputs,
which node-link JSON cannot express); every models/**/*.onnx is read through
the ONNX frontend. Per model: peaks of the input order, onnxruntime's default
order and the optimized order, the lower bound, whether optimality is proven,
the gap to the bound, the saving in transient memory (peak minus resident)
against onnxruntime's default order, and the wall time. With ``--inplace`` the
ONNX models are searched with their safe in-place updates applied (as the
``optimize`` pipeline does by default); the stock orders then keep the pairs
they leave safe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from common import HERE, MODELS, RESULTS, ROOT, command

from olla_onnx.bench import transient_saving
from olla_onnx.formats import load_graph
from olla_onnx.formats.nodelink import graph_to_node_link as to_node_link
from olla_onnx.ir.memory import simulate
from olla_onnx.ort_facts.default_order import ort_default_order
from olla_onnx.schedule import optimize_order
from olla_onnx.synthetic import layered_dag, training_graph

LAYERED = [(n, w, seed) for n in (100, 200, 500, 1000, 2000) for (w, seed) in ((4, 1), (6, 2), (10, 3))]
TRAINING = [(12, 1, (4, 256)), (50, 2, (64, 1024)), (200, 3, (64, 1024)), (500, 4, (4, 256))]


def cases(quick: bool):
    gdir = HERE / "ordering_graphs"
    gdir.mkdir(exist_ok=True)
    layered = [c for c in LAYERED if not quick or c[0] <= 500]
    for n, w, seed in layered:
        path = gdir / f"layered_n{n}_w{w}_s{seed}.json"
        if not path.exists():
            path.write_text(json.dumps(to_node_link(layered_dag(n, width=w, seed=seed))))
        yield f"ordering_graphs/{path.name}", "node-link", lambda p=path: load_graph(p).graph
    for layers, seed, pk in TRAINING:
        if quick and layers > 50:
            continue
        yield f"training(layers={layers}, seed={seed}, param_kib={pk})", "generated", lambda a=(layers, seed, pk): training_graph(a[0], seed=a[1], param_kib=a[2])
    for path in sorted(MODELS.rglob("*.onnx")):
        yield str(path.relative_to(ROOT)), "onnx", lambda p=path: load_graph(p).graph


def run_case(name: str, fmt: str, make, time_limit: float | None, inplace: bool = False) -> dict:
    graph = make()
    work = graph
    pairs = ()
    if inplace and fmt == "onnx":
        # the graph the pipeline searches by default: updates written over their inputs (olla_onnx.passes.inplace)
        from olla_onnx.passes.inplace import apply_inplace, find_inplace_pairs

        pairs = find_inplace_pairs(graph).pairs
        work = apply_inplace(graph, pairs)
    kw = {} if time_limit is None else {"time_limit": time_limit}
    t0 = time.perf_counter()
    res = optimize_order(work, **kw)
    wall = time.perf_counter() - t0

    def stock_peak(order) -> int:
        # a stock order keeps the pairs it leaves safe (as the pipeline does); never fewer bytes than on ``work``
        if not pairs:
            return simulate(graph, order).peak
        from olla_onnx.passes.inplace import apply_inplace, respected_pairs

        return simulate(apply_inplace(graph, respected_pairs(graph, pairs, order)), order).peak

    peak_in = stock_peak(graph.topological_order())
    peak_ort = stock_peak(ort_default_order(graph))
    assert simulate(work, res.order).peak == res.peak
    graph = work
    resident = graph.resident_bytes
    saving = transient_saving(peak_ort - resident, res.peak - resident)
    # No order peaks below the sound lower bound, so no order saves more than this.
    saving_bound = transient_saving(peak_ort - resident, res.lower_bound - resident)
    return {
        "model": name,
        "format": fmt,
        "nodes": graph.num_nodes,
        "resident_bytes": resident,
        "peak_input_order": peak_in,
        "peak_ort_default": peak_ort,
        "peak_optimized": res.peak,
        "lower_bound": res.lower_bound,
        "lower_bound_method": res.lower_bound_method,
        "optimal": res.optimal,
        "proof": res.proof,
        "gap": res.gap,
        "transient_saving_vs_ort": saving,
        "transient_saving_bound": saving_bound,
        "method": res.method,
        "seconds": wall,
        "inplace_pairs": len(pairs),
        "ok": res.peak <= peak_in and res.peak <= peak_ort and (res.optimal or res.peak <= 1.01 * res.lower_bound),
    }


def mib(b: int) -> str:
    return f"{b / 2**20:.2f}"


def markdown(rows: list[dict], args, total: float) -> str:
    lines = [
        "# Ordering benchmark",
        "",
        f"Command: `{command('ordering.py')}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}; "
        f"time limit per model: {args.time_limit if args.time_limit is not None else 'default'} s; total {total:.0f} s.",
        "",
        *(
            [f"ONNX models searched with their safe in-place updates applied ({sum(r.get('inplace_pairs', 0) for r in rows)} "
             "pairs over the corpus); the input and onnxruntime orders keep the pairs they leave safe.", ""]
            if getattr(args, "inplace", False) else []
        ),
        "Peaks in MiB, resident included. gap = (peak - lower bound) / lower bound. saving = transient memory "
        "(peak - resident) saved against onnxruntime's default order. ok = not above the input or onnxruntime "
        "order, and proven optimal or within 1% of the bound.",
        "",
        "| model | nodes | resident | input order | ort default | optimized | lower bound (method) | optimal (proof) | gap | saving vs ort | method | s | ok |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['nodes']} | {mib(r['resident_bytes'])} | {mib(r['peak_input_order'])} | {mib(r['peak_ort_default'])} "
            f"| {mib(r['peak_optimized'])} | {mib(r['lower_bound'])} ({r['lower_bound_method']}) | {'yes (' + r['proof'] + ')' if r['optimal'] else 'no'} "
            f"| {100 * r['gap']:.2f}% | {100 * r['transient_saving_vs_ort']:.1f}% | {r['method']} | {r['seconds']:.2f} | {'yes' if r['ok'] else 'NO'} |"
        )
    secs = [r["seconds"] for r in rows]
    onnx = [r for r in rows if r["format"] == "onnx"]
    lines += [
        "",
        f"Models: {len(rows)}; proven optimal: {sum(r['optimal'] for r in rows)}; ok: {sum(r['ok'] for r in rows)}; "
        f"median time {statistics.median(secs):.2f} s, max {max(secs):.2f} s.",
    ]
    for label, group in (("all models", rows), ("ONNX corpus", onnx), ("random layered DAGs", [r for r in rows if r["format"] == "node-link"])):
        if group:
            lines.append(
                f"Average saving of transient memory vs onnxruntime's default order, {label}: "
                f"{100 * statistics.mean(r['transient_saving_vs_ort'] for r in group):.1f}% over {len(group)} "
                f"(the lower bounds allow at most {100 * statistics.mean(r['transient_saving_bound'] for r in group):.1f}%)."
            )
    if not onnx:
        lines.append("No ONNX model was found under models/.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds per model (default: optimize_order's default)")
    ap.add_argument("--quick", action="store_true", help="graphs up to 500 nodes only")
    ap.add_argument("--inplace", action="store_true", help="ONNX models: search the graph with in-place updates applied (the pipeline's default)")
    ap.add_argument("--only", default=None, help="run only models whose name contains this")
    ap.add_argument("--out", default=str(RESULTS / "ordering.md"))
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    for name, fmt, make in cases(args.quick):
        if args.only and args.only not in name:
            continue
        row = run_case(name, fmt, make, args.time_limit, args.inplace)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, args, time.perf_counter() - t0))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
