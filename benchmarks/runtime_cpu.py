"""Measured peaks in onnxruntime (CPU): the default session against the planned arena, per corpus model.

For every ``models/*.onnx`` (or the models given) whose onnxruntime-default
peak (predicted) is below --run-limit-mib: `run` on the file as it is (no plan,
file order); `optimize --no-inplace` (order + plan, --time-limit seconds) and
`run` on the reordered model with its plan; `optimize` (order + plan with
in-place updates) and `run` with that plan (updates written into their inputs'
buffers through IO binding). Then ``--steps`` (100) training steps of the hand-written
MLP of the corpus (``models/mlp_sgd_handwritten.onnx``, SGD with momentum,
seeded scaled-normal weights, one-hot targets) in the default session, the
planned session (parameters and momentum fed back by copy) and the planned
in-place session (no copy: the updates are already in the input buffers):
RSS per step, results.

Usage::

    nice python benchmarks/runtime_cpu.py [--time-limit 10] [--run-limit-mib 2048] [--steps 100] [--out benchmarks/results/runtime_cpu.md] [MODEL ...]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
from common import MODELS, RESULTS, ROOT, command, machine, write_results

from olla_onnx.formats import load_graph
from olla_onnx.ir.memory import simulate
from olla_onnx.optimize import optimize_model, write_outputs
from olla_onnx.ort_facts.default_order import ort_default_order
from olla_onnx.run import run_model

#: The training loop's model: a training step written by hand (models/handmade/make_mlp_sgd.py).
LOOP_MODEL = MODELS / "mlp_sgd_handwritten.onnx"


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


def loop_feeds(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded feeds a training loop converges from: weights normal / sqrt(fan-in), biases and optimizer
    state zero, a one-hot target; the rest (the batch's input) as :func:`olla_onnx.run.random_inputs` makes it."""
    from olla_onnx.runtime.feeds import random_feeds as random_inputs

    rng = np.random.default_rng(seed)
    feeds = random_inputs(model, None, seed)
    for name, a in feeds.items():
        if name.startswith("param.") and a.ndim == 2:
            feeds[name] = (rng.standard_normal(a.shape) / np.sqrt(a.shape[0])).astype(a.dtype)
        elif name.startswith(("param.", "state.")):
            feeds[name] = np.zeros_like(a)
        elif name == "batch.target":
            feeds[name] = np.eye(a.shape[1], dtype=a.dtype)[rng.integers(0, a.shape[1], a.shape[0])]
    return feeds


def loop_pairs(model, feeds) -> tuple[dict[str, str], dict[str, str]]:
    """(every output -> the input of ``feeds`` it feeds back into, the pairs the planned session's order keeps safe
    in place)."""
    from olla_onnx.formats.onnx.read import graph_from_model
    from olla_onnx.ort_facts.default_order import ort_priority_order
    from olla_onnx.passes.inplace import find_inplace_pairs, respected_pairs

    graph = graph_from_model(model)
    found = find_inplace_pairs(graph, feedable=feeds).pairs
    safe = respected_pairs(graph, found, ort_priority_order(graph))
    return {p.output: p.input for p in found}, {p.output: p.input for p in safe}


def loop_rows(steps: int = 100) -> list[str]:
    import onnx

    from olla_onnx.runtime.measure import compare_outputs, open_planned
    from olla_onnx.runtime.loop import train_loop
    from olla_onnx.runtime.session import new_allocators, open_session

    model = onnx.load(str(LOOP_MODEL))
    data = model.SerializeToString()
    feeds = loop_feeds(model)
    pairs, inplace = loop_pairs(model, feeds)
    host, _ = new_allocators("default", "cpu")
    d = open_session(data, "default", host)
    ref = train_loop(d, feeds, pairs, steps)
    d.close()
    rows = [_loop_row("default", ref, steps, "| | | ")]
    notes, final = [], []
    for label, bound in (("planned", None), ("planned + in-place", inplace)):
        s, info = open_planned(data, feeds, inplace=bound)
        got = train_loop(s, feeds, pairs, steps)
        st = s.measured.stats()
        s.close()
        gc.collect()
        final.append(got.outputs)
        equal, diff = compare_outputs(ref.outputs, got.outputs)
        rows.append(_loop_row(label, got, steps, f"| {st.arena_bytes / 2**20:.2f} | {st.planned_allocs} / {steps * info['allocs_per_run']} | {st.fallbacks} "))
        notes.append(f"Final parameters and loss, {label} vs default: equal = {equal}, max abs diff = {diff:.3g}.")
    equal, diff = compare_outputs(final[0], final[1])
    notes.append(f"Final parameters and loss, planned + in-place vs planned: equal = {equal}, max abs diff = {diff:.3g}.")
    notes.append(f"Outputs fed back: {len(pairs)}; written in place in the in-place session: {len(inplace)}.")
    return rows + [""] + notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--run-limit-mib", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=100, help="training steps of the loop (at least 11)")
    ap.add_argument("--out", type=Path, default=RESULTS / "runtime_cpu.md")
    args = ap.parse_args()
    if args.steps < 11:
        ap.error("--steps: at least 11 (RSS is compared from step 10 on)")
    t0 = time.time()
    paths = args.models or sorted(MODELS.glob("*.onnx"))
    rows = corpus_rows(paths, args.time_limit, args.run_limit_mib * 2**20)
    loop = loop_rows(args.steps)
    given = [str(p.relative_to(ROOT) if p.is_absolute() else p) for p in args.models]
    steps = [] if args.steps == 100 else ["--steps", str(args.steps)]
    run = command("runtime_cpu.py", ["--time-limit", f"{args.time_limit:g}", "--run-limit-mib", str(args.run_limit_mib), *steps, *given])
    lines = [
        "# onnxruntime on CPU: default session vs planned arena (measured)",
        "",
        f"Command: `{run}` ({machine(start=t0)}).",
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
        f"## {args.steps} training steps ({LOOP_MODEL.name}: MLP 256-512-512-256-10, batch 64, SGD with momentum;"
        " parameters and momentum fed back)",
        "",
        "*planned*: parameters and momentum copied back into the feeds after each step; *planned + in-place*: the",
        "updates that the file's order keeps safe in place are written into the bound input buffers, not copied back.",
        "",
        f"| session | RSS step 1 (MiB) | step 10 | step {args.steps} | growth 10->{args.steps} (KiB) | arena MiB | planned requests "
        "| fallbacks | loss |",
        "|---|---|---|---|---|---|---|---|---|",
        *loop,
        "",
    ]
    write_results(args.out, lines)


if __name__ == "__main__":
    main()
