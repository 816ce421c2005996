"""In-place optimizer updates on the corpus: predicted and measured peaks with and without them.

For every ``models/*.onnx`` (or the models given):

1. `optimize` twice with the same time limit: order only (``--no-inplace``) and
   order + in-place (the default), each with its plan;
2. for models whose onnxruntime-default peak (predicted) is below
   ``--run-limit-mib``: `run --plan` on both (onnxruntime's default session, the
   planned session; for the in-place plan the planned session writes the
   updates into the input buffers with IO binding and is also compared bitwise
   with the plain planned session).

Usage::

    nice python benchmarks/inplace.py [--time-limit 6] [--run-limit-mib 2048] [MODEL ...]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

from common import MODELS, RESULTS, ROOT, command, machine, write_results

from olla_onnx.formats import load_graph
from olla_onnx.optimize import DEFAULT_TIME_LIMIT, optimize_model, write_outputs
from olla_onnx.run import run_model
from olla_onnx.units import MiB, mib



def saving(base: int, peak: int, resident: int) -> float:
    """Transient saving of ``peak`` against ``base`` (both include ``resident``)."""
    t = base - resident
    return (t - (peak - resident)) / t if t > 0 else 0.0


def measure(path: Path, time_limit: float, run_limit: int) -> dict:
    loaded = load_graph(path)
    plain = optimize_model(loaded, time_limit=time_limit, inplace=False)
    inpl = optimize_model(loaded, time_limit=time_limit)
    base = plain.peak_ort_default if plain.peak_ort_default is not None else plain.peak_input_order
    row = {
        "model": path.stem,
        "nodes": plain.nodes,
        "resident_bytes": plain.resident_bytes,
        "inplace_pairs": len(inpl.inplace),
        "inplace_bytes": inpl.inplace_bytes,
        "inplace_refused": [f"{r.input} -> {r.output}: {r.reason}" for r in inpl.inplace_refused],
        "peak_ort_default": plain.peak_ort_default,
        "peak_order_only": plain.peak_optimized,
        "lower_bound_order_only": plain.lower_bound,
        "optimal_order_only": plain.optimal,
        "peak_inplace": inpl.peak_optimized,
        "lower_bound_inplace": inpl.lower_bound,
        "optimal_inplace": inpl.optimal,
        "peak_inplace_order_without_inplace": inpl.peak_optimized_without_inplace,
        "saving_order_only": saving(base, plain.peak_optimized, plain.resident_bytes),
        "saving_inplace": saving(base, inpl.peak_optimized, plain.resident_bytes),
        "order_seconds": [round(plain.order_seconds, 2), round(inpl.order_seconds, 2)],
    }
    if base > run_limit:
        row["run"] = f"not run: predicted onnxruntime-default peak above {run_limit / MiB:,.0f} MiB"
        return row
    with tempfile.TemporaryDirectory() as tmp:
        for label, res in (("order_only", plain), ("inplace", inpl)):
            out, plan = Path(tmp) / f"{label}.onnx", Path(tmp) / f"{label}.json"
            write_outputs(loaded, res, out, plan)
            r = run_model(out, plan)
            row[f"measured_{label}"] = {
                k: getattr(r, k)
                for k in ("peak_ort_default_bytes", "peak_planned_bytes", "arena_bytes", "resident_bytes", "input_bytes",
                          "predicted_peak_bytes", "prediction_error", "fallbacks", "outputs_equal", "max_abs_diff",
                          "max_rel_diff", "planned_equals_unplanned", "inplace_pairs", "inplace_equals_plain",
                          "inplace_max_abs_diff")
            }
            gc.collect()
    return row


def cell(b) -> str:
    return "" if b is None else mib(b, ",.3f")


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | nodes | resident | in place (pairs) | ORT default order | optimized, order only | order + in-place | "
        "bound, in-place | proven, in-place | same order, no in-place | saving order only | saving order + in-place |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['nodes']:,} | {cell(r['resident_bytes'])} | {cell(r['inplace_bytes'])} ({r['inplace_pairs']}) "
            f"| {cell(r['peak_ort_default'])} | {cell(r['peak_order_only'])} | {cell(r['peak_inplace'])} "
            f"| {cell(r['lower_bound_inplace'])} | {'yes' if r['optimal_inplace'] else 'no'} "
            f"| {cell(r['peak_inplace_order_without_inplace'])} | {r['saving_order_only']:.1%} | {r['saving_inplace']:.1%} |"
        )
    lines += [
        "",
        f"Average transient saving against onnxruntime's default order over {len(rows)} models: order only "
        f"{sum(r['saving_order_only'] for r in rows) / len(rows):.1%}, order + in-place "
        f"{sum(r['saving_inplace'] for r in rows) / len(rows):.1%}.",
        "",
        "## Measured in onnxruntime (CPU)",
        "",
        "| model | ORT default session | planned, order only | planned, order + in-place | in-place / default | "
        "prediction (in-place) | pred. err | fallbacks | in-place run = plain planned run | outputs vs default session |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|",
    ]
    for r in rows:
        if "measured_inplace" not in r:
            lines.append(f"| {r['model']} | {r.get('run', '')} | | | | | | | | |")
            continue
        a, b = r["measured_order_only"], r["measured_inplace"]
        eq = "equal" if b["outputs_equal"] else f"differ by {b['max_rel_diff']:.1e} (normwise)"
        same = "" if b["inplace_equals_plain"] is None else ("yes (bitwise)" if b["inplace_equals_plain"] else f"NO ({b['inplace_max_abs_diff']:.3g})")
        err = "" if b["prediction_error"] is None else f"{b['prediction_error'] * 100:+.2f}%"
        lines.append(
            f"| {r['model']} | {cell(b['peak_ort_default_bytes'])} | {cell(a['peak_planned_bytes'])} | {cell(b['peak_planned_bytes'])} "
            f"| {b['peak_planned_bytes'] / b['peak_ort_default_bytes']:.3f} | {cell(b['predicted_peak_bytes'])} | {err} "
            f"| {a['fallbacks']} / {b['fallbacks']} | {same} | {eq} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT)
    ap.add_argument("--run-limit-mib", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=RESULTS / "inplace.md")
    args = ap.parse_args()
    paths = args.models or sorted(MODELS.glob("*.onnx"))
    t0 = time.time()
    rows = []
    for p in paths:
        print(f"{p.stem} ...", file=sys.stderr, flush=True)
        rows.append(measure(p, args.time_limit, args.run_limit_mib * MiB))
    given = [str(p.relative_to(ROOT) if p.is_absolute() else p) for p in args.models]
    run = command("inplace.py", ["--time-limit", f"{args.time_limit:g}", "--run-limit-mib", str(args.run_limit_mib), *given])
    lines = [
        "# In-place optimizer updates: predicted and measured peaks",
        "",
        f"Command: `{run}` ({machine(start=t0)}).",
        "",
        "MiB; peaks include resident bytes (parameters, optimizer state, batch). *Order only*: `optimize --no-inplace`;",
        "*order + in-place*: `optimize` (default), where each updated parameter/state output (`param_out.X`, `state_out.X`)",
        "is written into its input's buffer (see `olla_onnx/passes/inplace.py`), the search running on that graph; *same order, no",
        "in-place*: the in-place plan's order simulated with every output in a buffer of its own. *Saving*: transient",
        "(peak minus resident) saving against onnxruntime's default order. *Bound, proven*: for the in-place problem",
        "(orders that keep every pair safe).",
        "",
        *table(rows),
        "",
        "*Measured*: bytes held through olla-onnx's allocators while onnxruntime ran (default session: 2nd run;",
        "planned: the run served from the arena planned from onnxruntime's own trace). The in-place session binds each",
        "paired output to its input's buffer (IO binding), so onnxruntime allocates nothing for it. Inputs (parameters,",
        "state, batch) are not seen by any allocator; *prediction* = plan arena + resident, *pred. err* compares it with",
        "measured planned + inputs. *In-place run = plain planned run*: the in-place session's outputs bitwise equal to",
        "one run of the same order without IO binding.",
        "",
    ]
    write_results(args.out, lines, rows)


if __name__ == "__main__":
    main()
