"""The README's results table: one row per corpus model, measured in onnxruntime (CPU).

Usage:
    python benchmarks/readme_table.py            # prints the markdown table

It only reads recorded results, it measures nothing: ``benchmarks/results/bench.json`` (``olla-onnx bench``: the
models whose default session fits in 2 GiB are run there) and ``benchmarks/results/runtime_full.json``
(``benchmarks/runtime_full.py``: the full-size models above that, one at a time). *default session*: the bytes
onnxruntime's default session held (second run, through the recording allocator); *olla-onnx*: the bytes the
planned session held (the optimized order, every tensor served from the plan's arena, in-place updates);
*gap*: the optimized peak over the sound lower bound, minus one (no order goes below the bound);
*proven optimal*: the order search closed its proof; *seconds*: ``optimize`` wall time of the order-only run in
``bench.json`` (order search 6 s, then placement).
"""

from __future__ import annotations

import json

from common import RESULTS

MIB = 2**20


def rows() -> list[dict]:
    bench = {r["model"]: r for r in json.loads((RESULTS / "bench.json").read_text())["rows"]}
    full = json.loads((RESULTS / "runtime_full.json").read_text())
    out = []
    for name, r in sorted(bench.items()):
        default, planned, source = r.get("peak_ort_default_bytes"), r.get("peak_planned_bytes_inplace"), "bench"
        f = full.get(name)
        if planned is None and f is not None:
            default, planned, source = f["peak_ort_default_bytes"], f["planned_inplace"]["peak_planned_bytes"], "runtime_full"
        gap = (r["peak_inplace"] - r["lower_bound_inplace"]) / r["lower_bound_inplace"]
        out.append({
            "model": name, "default": default, "planned": planned, "gap": gap, "optimal": r["optimal_inplace"],
            "seconds": r["seconds"], "source": source,
        })  # fmt: skip
    return out


def markdown(table: list[dict]) -> str:
    lines = [
        "| model | default session, MiB | olla-onnx, MiB | olla-onnx / default | gap to lower bound | proven optimal | seconds |",
        "|---|---:|---:|---:|---:|:-:|---:|",
    ]
    for r in table:
        measured = r["default"] is not None and r["planned"] is not None
        d = f"{r['default'] / MIB:,.1f}" if measured else "not run"
        p = f"{r['planned'] / MIB:,.1f}" if measured else "not run"
        ratio = f"{r['planned'] / r['default']:.2f}" if measured else ""
        lines.append(
            f"| {r['model']} | {d} | {p} | {ratio} | {100 * r['gap']:.3f}% | {'yes' if r['optimal'] else 'no'} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(rows()))
