"""Measured peaks in onnxruntime (CPU): the default session against the planned arena, per corpus model.

For every ``models/*.onnx`` (or the models given) whose onnxruntime-default
peak (predicted) is below --run-limit-mib: `run` on the file as it is (no plan,
file order); `optimize --no-inplace` (order + plan, --time-limit seconds) and
`run` on the reordered model with its plan; `optimize` (order + plan with
in-place updates) and `run` with that plan (updates written into their inputs'
buffers through IO binding). Then 100 training steps of the example MLP
(:mod:`mlp_example`) in the default session, the planned
session (parameters fed back by copy) and the planned in-place session (no
copy: the updates are already in the input buffers): RSS per step, results.

Usage::

    nice python benchmarks/runtime_cpu.py [--time-limit 10] [--run-limit-mib 2048] [--out benchmarks/results/runtime_cpu.md] [MODEL ...]
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from olla_onnx.formats import load_graph  # noqa: E402
from olla_onnx.ir.memory import simulate  # noqa: E402
from olla_onnx.ort_facts.default_order import ort_default_order  # noqa: E402
from olla_onnx.optimize import optimize_model, write_outputs  # noqa: E402
from olla_onnx.run import run_model  # noqa: E402


def mib(b: int | None) -> str:
    return "" if b is None else f"{b / 2**20:.3f}"


def corpus_rows(paths: list[Path], time_limit: float, run_limit: int) -> list[str]:
    rows = []
    for path in paths:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load_graph(path)
            if simulate(loaded.graph, ort_default_order(loaded.graph)).peak > run_limit:
                continue
            runs: list[tuple[str, Path, Path | None]] = [("file order", path, None)]
            for label, inplace in (("optimized + plan", False), ("optimized + plan + in-place", True)):
                res = optimize_model(loaded, time_limit=time_limit, inplace=inplace)
                opt, plan = Path(tmp) / f"opt{int(inplace)}.onnx", Path(tmp) / f"plan{int(inplace)}.json"
                write_outputs(loaded, res, opt, plan)
                runs.append((label, opt, plan))
            for label, model, p in runs:
                r = run_model(model, p)
                rows.append(
                    f"| {path.name} | {label} | {mib(r.peak_ort_default_bytes)} | {mib(r.peak_planned_bytes)} | {r.ratio:.3f} "
                    f"| {mib(r.arena_bytes)} | {mib(r.resident_bytes)} | {mib(r.input_bytes)} | {mib(r.predicted_peak_bytes)} "
                    f"| {'' if r.prediction_error is None else f'{r.prediction_error * 100:+.2f}%'} | {r.fallbacks} "
                    f"| {r.outputs_equal} | {r.max_abs_diff:.3g} | {r.max_rel_diff:.2g} | {r.planned_equals_unplanned} | {r.ort_mem_reuse} "
                    f"| {'' if r.inplace_equals_plain is None else r.inplace_equals_plain} |"
                )
                gc.collect()
    return rows


def _loop_row(label: str, res, steps: int, extra: str = "") -> str:
    return (
        f"| {label} | {res.rss[0] / 2**20:.1f} | {res.rss[9] / 2**20:.1f} | {res.rss[-1] / 2**20:.1f} "
        f"| {res.rss_growth() / 2**10:+.0f} {extra}| {res.losses[0]:.5f} -> {res.losses[-1]:.5f} |"
    )


def loop_rows(steps: int = 100) -> list[str]:
    from mlp_example import feedback_pairs, mlp_parameters, mlp_training_model
    from olla_onnx.runtime.loop import train_loop
    from olla_onnx.run import compare_outputs, open_planned, random_inputs
    from olla_onnx.runtime.session import new_allocators, open_session

    widths = (256, 1024, 1024, 256)
    model = mlp_training_model(batch=64, widths=widths, lr=0.05)
    data = model.SerializeToString()
    feeds = random_inputs(model)
    feeds.update(mlp_parameters(widths))
    pairs = feedback_pairs(model)
    host, _ = new_allocators("default", "cpu")
    d = open_session(data, "default", host)
    ref = train_loop(d, feeds, pairs, steps)
    d.close()
    rows = [_loop_row("default", ref, steps, "| | | ")]
    notes = []
    for label, inplace in (("planned", None), ("planned + in-place", pairs)):
        s, info = open_planned(data, feeds, inplace=inplace)
        got = train_loop(s, feeds, pairs, steps)
        st = s.measured.stats()
        s.close()
        gc.collect()
        equal, diff = compare_outputs(ref.outputs, got.outputs)
        rows.append(_loop_row(label, got, steps, f"| {st.arena_bytes / 2**20:.2f} | {st.planned_allocs} / {steps * info['allocs_per_run']} | {st.fallbacks} "))
        notes.append(f"Final parameters and loss, {label} vs default: equal = {equal}, max abs diff = {diff:.3g}.")
    return rows + [""] + notes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--run-limit-mib", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtime_cpu.md")
    args = ap.parse_args()
    t0 = time.time()
    paths = args.models or sorted((ROOT / "models").glob("*.onnx"))
    rows = corpus_rows(paths, args.time_limit, args.run_limit_mib * 2**20)
    loop = loop_rows()
    lines = [
        "# onnxruntime on CPU: default session vs planned arena (measured)",
        "",
        f"Command: `nice python benchmarks/runtime_cpu.py --time-limit {args.time_limit:g} --run-limit-mib {args.run_limit_mib}"
        f"{''.join(' ' + str(p) for p in args.models)}` "
        f"({platform.machine()}, onnxruntime {ort.__version__}, {time.time() - t0:.0f} s).",
        "",
        "MiB. *default* = peak bytes held in the 2nd run of a session with onnxruntime's default options, seen",
        "through the recording allocator; *planned* = the planned arena plus heap bytes held (resident allocations,",
        "fallbacks) in a run served from the arena. Inputs are read in place by onnxruntime (no allocator sees them);",
        "*prediction* is the memory model's peak (inputs and parameters included) — the plan's arena + resident for",
        "'optimized + plan', the file order's simulated peak otherwise — and *pred. err* compares planned + inputs",
        "with it. *planned = unplanned*: the arena-served run is bitwise equal to the same session served from the",
        "heap. *ort reuse*: whether onnxruntime's own buffer reuse was left on (the smaller arena is kept).",
        "*+ in-place*: the plan of `optimize` with in-place updates, run with each updated parameter/state written",
        "into its input's buffer (IO binding); its outputs are also compared bitwise with the plain planned session.",
        "",
        "| model | order | default | planned | planned/default | arena | resident | inputs | prediction | pred. err | fallbacks | outputs equal | max abs diff | max rel diff | planned = unplanned | ort reuse | in-place = plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## 100 training steps (example MLP 256-1024-1024-256, batch 64, SGD; parameters fed back)",
        "",
        "*planned*: parameters copied back into the feeds after each step; *planned + in-place*: the updates are",
        "written into the bound input buffers, nothing is copied back.",
        "",
        "| session | RSS step 1 (MiB) | step 10 | step 100 | growth 10->100 (KiB) | arena MiB | planned requests | fallbacks | loss |",
        "|---|---|---|---|---|---|---|---|---|",
        *loop,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
