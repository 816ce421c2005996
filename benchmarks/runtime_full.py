"""Measured peaks in onnxruntime (CPU) on the full-size corpus models: default session against the plan.

The full-size models whose onnxruntime default peak is above 2 GiB (bert,
gpt2, mobilenetv2, resnet50, unet, vgg16, vit_b16), which
``benchmarks/runtime_cpu.py`` leaves out. Per model, in one process:

1. ``optimize`` with its default settings (in-place updates on,
   :func:`olla_onnx.optimize.optimize_model`), the reordered model and plan
   written as ``olla-onnx optimize -o --plan`` writes them;
2. onnxruntime's default session, measured once through the recording
   allocator (:func:`olla_onnx.run.measure_default`, 2nd run);
3. ``olla-onnx run`` on that model and plan (:func:`~olla_onnx.run.run_model`),
   reusing the default measurement: *planned* = the plan's order without the
   in-place pairs (``--no-inplace``), *planned + in-place* = the plan as
   ``run`` uses it (updates written into their inputs' buffers). onnxruntime's
   own buffer reuse is left off in both (the memory model's assumption; `run`
   would also try it on and keep the smaller arena, which costs four more
   training steps per session here).

Peaks are bytes held through the allocators; inputs (parameters, optimizer
state, the batch) are read in place by onnxruntime and initializers above
127 bytes are held outside its allocator, so neither is in either peak; the
prediction errors add both to the measured peak (as ``run`` does).

One model per call, so that each heavy step holds the shared lock only for
one model; every call replaces that model's row in the JSON file, and
``--report`` writes the markdown from it.

Usage::

    for m in resnet50 mobilenetv2 unet vgg16 vit_b16 bert gpt2; do
        flock /tmp/olla-heavy.lock nice python benchmarks/runtime_full.py --models $m
    done
    python benchmarks/runtime_full.py --report
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from common import MODELS as MODELS_DIR
from common import RESULTS, ROOT

from olla_onnx.formats import load_graph
from olla_onnx.optimize import DEFAULT_TIME_LIMIT, optimize_model, write_outputs
from olla_onnx.run import load_model_for_run, run_model
from olla_onnx.runtime.feeds import random_feeds as random_inputs
from olla_onnx.runtime.measure import measure_default, outside_allocator
from olla_onnx.units import mib

MODELS = ["resnet50", "mobilenetv2", "unet", "vgg16", "vit_b16", "bert", "gpt2"]
#: What the determinism investigation measured with plain onnxruntime sessions (read to explain output differences).
DETERMINISM = ROOT / "docs" / "investigations" / "determinism" / "output_determinism.json"
TARGET = 0.7
#: Run a model only if this many times its simulated default peak is available: the processes
#: measured so far peaked at 2.0-3.5 x (MobileNetV2 2.6 x with freed memory returned to the OS; ResNet-50 3.46 x before).
HEADROOM = 2.6


def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    """Bytes the kernel reports as available (``MemAvailable``)."""
    return _meminfo("MemAvailable")


def mem_total() -> int:
    """The machine's memory in bytes (``MemTotal``)."""
    return _meminfo("MemTotal")


def peak_composition(graph, order) -> dict[str, int]:
    """Live bytes by tensor kind at the simulated peak of ``order`` on ``graph`` (resident kinds included)."""
    from olla_onnx.plot import live_by_kind

    live, per_kind = live_by_kind(graph, order)
    at = int(live.argmax())
    return {k: int(v[at]) for k, v in per_kind.items() if int(v[at])}


def _run_figures(r, measured_extra: int) -> dict[str, Any]:
    rep = r.report()
    keep = ("peak_planned_bytes", "arena_bytes", "arena_lower_bound", "resident_bytes", "fallbacks", "first_fallback",
            "planned_allocs", "allocs_per_run", "trace_stable", "outputs_equal", "max_abs_diff", "max_rel_diff",
            "planned_equals_unplanned", "predicted_peak_bytes", "prediction_error", "inplace_pairs", "inplace_bytes",
            "inplace_equals_plain", "inplace_max_abs_diff", "seconds")
    out = {k: rep[k] for k in keep}
    out["measured_total_bytes"] = r.peak_planned_bytes + measured_extra
    return out


def measure_model(
    name: str, time_limit: float = DEFAULT_TIME_LIMIT, headroom: float = HEADROOM, inplace_only: bool = False,
    optimize_only: str | None = None,
) -> dict[str, Any]:
    """One row: optimize, the default session, the plan without (unless ``inplace_only``) and with its
    in-place pairs. Cost: 2 training steps (default) + 4 (planned) + 5 (planned + in-place, with one
    heap-served run of the same order to compare with); 7 with ``inplace_only``."""
    path = MODELS_DIR / f"{name}.onnx"
    t0 = time.perf_counter()
    row: dict[str, Any] = {"model": name, "load_start": os.getloadavg(), "mem_available_start": mem_available()}
    loaded = load_graph(path)
    res = optimize_model(loaded, time_limit=time_limit)
    row.update({
        "nodes": res.nodes, "resident_bytes": res.resident_bytes, "sim_peak_ort_default": res.peak_ort_default,
        "sim_peak_optimized": res.peak_optimized, "sim_peak_optimized_without_inplace": res.peak_optimized_without_inplace,
        "lower_bound": res.lower_bound, "optimal": res.optimal, "plan_arena_bytes": res.arena_bytes,
        "plan_resident_bytes": res.plan.resident_bytes, "inplace_pairs": len(res.inplace), "inplace_bytes": res.inplace_bytes,
        "optimize_seconds": round(res.seconds, 2),
        "plan_peak_by_kind": peak_composition(res.graph, res.order),
    })
    if optimize_only:
        row["run_error"] = f"not run in onnxruntime: {optimize_only}"
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["command"] = f"nice python benchmarks/runtime_full.py --models {name} --optimize-only {shlex.quote(optimize_only)}"
        return row
    row["command"] = f"flock /tmp/olla-heavy.lock nice python benchmarks/runtime_full.py --models {name}" + (
        " --inplace-only" if inplace_only else "") + (f" --headroom {headroom:g}" if headroom != HEADROOM else "")
    need = int(headroom * (res.peak_ort_default or res.peak_input_order))
    if row["mem_available_start"] < need:
        row["run_error"] = (f"not run: needs about {need / 2**30:.1f} GiB ({headroom:g} x the simulated default peak), "
                            f"{row['mem_available_start'] / 2**30:.1f} GiB available of {mem_total() / 2**30:.1f} GiB in all")
        return row
    with tempfile.TemporaryDirectory() as tmp:
        opt, plan = Path(tmp) / f"{name}.opt.onnx", Path(tmp) / f"{name}.plan.json"
        write_outputs(loaded, res, opt, plan)
        graph = loaded.graph
        del loaded
        model, _, _, _ = load_model_for_run(opt, plan, None)
        feeds = random_inputs(model, None, 0)
        inputs = int(sum(a.nbytes for a in feeds.values()))
        outside = outside_allocator(model, {n: t.size for n, t in graph.tensors.items()})[0]
        t1 = time.perf_counter()
        default = measure_default(model.SerializeToString(), feeds)
        del model, feeds
        gc.collect()
        row.update({
            "input_bytes": inputs, "initializer_bytes_outside": outside,
            "peak_ort_default_bytes": default.peak_bytes, "default_resident_bytes": default.resident_bytes,
            "default_allocs_per_run": default.allocs_per_run, "default_seconds": round(time.perf_counter() - t1, 1),
        })
        extra = inputs + outside
        if not inplace_only:
            plain = run_model(opt, plan, inplace=False, default=default, mem_reuse=False)
            row["planned"] = _run_figures(plain, extra)
            row["planned"]["simulator_error"] = row["planned"]["measured_total_bytes"] / res.peak_optimized_without_inplace - 1.0
            gc.collect()
        if res.inplace:
            ip = run_model(opt, plan, inplace=True, default=default, mem_reuse=False)
            row["planned_inplace"] = _run_figures(ip, extra)
            # the run's own prediction is the plan's arena + resident; the simulator's is the aliased graph's peak
            row["planned_inplace"]["simulator_error"] = row["planned_inplace"]["measured_total_bytes"] / res.peak_optimized - 1.0
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["load_end"] = os.getloadavg()
    row["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return row


def _mib(b: Any) -> str:
    return "" if b is None else mib(b)


def _pct(x: Any) -> str:
    return "" if x is None else f"{x * 100:+.2f}%"


def _diff(p: dict[str, Any]) -> str:
    if p["outputs_equal"]:
        return "0 (bitwise)"
    return f"{p['max_abs_diff']:.3g} (rel {p['max_rel_diff']:.1e})"


def _output_causes(model: str, fallback: str) -> str:
    """What ``docs/investigations/determinism/output_determinism.py`` measured for ``model`` with plain onnxruntime
    sessions, else ``fallback``."""
    det = json.loads(DETERMINISM.read_text()).get(model) if DETERMINISM.exists() else None
    if not det:
        return fallback
    runs = [det[k] for k in ("off_2threads_run1_vs_run2", "plan_order_off_2threads_run1_vs_run2") if k in det]
    racy = [d["max_abs_diff"] for d in runs if not d["bitwise"]]
    fus = det["default_1thread_vs_off_1thread"]
    said = []
    if racy and det["off_1thread_run1_vs_run2"]["bitwise"]:
        said.append(f"plain onnxruntime sessions of this model (no olla-onnx allocator) differ from run to run by up to "
                    f"{max(racy):.2g} with 2 threads and not with 1")
    said.append("the default options differ from optimizations off by "
                + ("nothing" if fus["bitwise"] else f"{fus['max_abs_diff']:.2g}") + " at 1 thread (graph rewrites)")
    return "measured (`docs/investigations/determinism/output_determinism.md`): " + "; ".join(said) + "."


def _why(r: dict[str, Any]) -> str:
    """What the figures say about the ratio (no judgement beyond them)."""
    d = r["peak_ort_default_bytes"]
    extra = r["input_bytes"] + r["initializer_bytes_outside"]
    best = r["planned_inplace"]["peak_planned_bytes"] if "planned_inplace" in r else r["planned"]["peak_planned_bytes"]
    bound = r["lower_bound"] - extra  # no order of the in-place graph peaks below it (memory model)
    kinds = r.get("plan_peak_by_kind")
    comp = ""
    if kinds:
        total = sum(kinds.values())
        comp = (" At the plan's simulated peak" + (" (fresh optimize)" if r.get("plan_peak_by_kind_note") else "") + ": " + ", ".join(
            f"{k.replace('_', ' ')} {_mib(v)} MiB ({v / total:.0%})" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) + ".")
    sim_default = r["sim_peak_ort_default"] - r["resident_bytes"]
    parts = [
        f"default {_mib(d)} MiB, best planned {_mib(best)} MiB ({best / d:.3f}).{comp}",
        f"onnxruntime's default order, simulated, peaks at {_mib(sim_default)} MiB less resident bytes; its default "
        f"session held {d / sim_default - 1:+.1%} against that (not broken down here: its memory-pattern placement "
        f"and its graph rewrites are the candidates); the plan saves {1 - best / d:.1%} against the default session, "
        f"{1 - best / sim_default:.1%} against that order.",
        f"The sound lower bound of the in-place graph, less the inputs and big initializers that neither peak counts, "
        f"is {_mib(bound)} MiB = {bound / d:.3f} of the default peak: "
        + ("no order and placement can reach the 0.7 target under the memory model"
           + (" (which overestimates this model, below)." if "planned_inplace" in r and r["planned_inplace"]["simulator_error"] < -0.02 else ".")
           if bound > TARGET * d
           else "the target is not excluded by the bound."),
    ]
    q = r.get("planned_inplace")
    if q and abs(q["simulator_error"]) > 0.02:
        parts.append(
            f"**Prediction off by {q['simulator_error']:+.1%}** (outside the 2% of #7): onnxruntime's own trace peaks at "
            f"{_mib(q['arena_lower_bound'])} MiB live against the plan's arena of {_mib(r['plan_arena_bytes'])} MiB, so it "
            f"{'requested less' if q['simulator_error'] < 0 else 'requested more'} than the memory model says; not diagnosed here."
        )
    if q and q["inplace_equals_plain"] is False:
        parts.append(
            f"**The in-place run differs from the plain planned run** (same order, no IO binding) by up to "
            f"{q['inplace_max_abs_diff']:.2g}, and the arena-served run "
            f"{'equals' if q['planned_equals_unplanned'] else 'also differs from'} the heap-served recording run of the "
            f"same session: {_output_causes(r['model'], 'not diagnosed here (an unsafe pair, or results that change from run to run).')}"
        )
    elif q and not q["outputs_equal"]:
        parts.append(
            f"Outputs differ from the default session by at most {q['max_abs_diff']:.2g} ({q['max_rel_diff']:.1e} normwise) "
            f"while the planned run equals the same session served from the heap and the plain planned run bitwise; "
            + _output_causes(r["model"], "most likely the default session's graph rewrites (fusions) round differently.")
        )
    return " ".join(parts)


def write_report(rows: dict[str, dict[str, Any]], out: Path) -> None:
    import onnxruntime as ort

    from olla_onnx.ort_facts.workspace import default_threads

    order = [m for m in MODELS if m in rows] + sorted(set(rows) - set(MODELS))
    lines = [
        "# onnxruntime on CPU, full-size corpus models: default session vs planned arena (measured)",
        "",
        "Commands (one model per call, each under the shared lock; the report step only reads the JSON):",
        "",
        "```",
        *[rows[m].get("command", f"flock /tmp/olla-heavy.lock nice python benchmarks/runtime_full.py --models {m}") for m in order],
        "python benchmarks/runtime_full.py --report",
        "```",
        "",
        f"{platform.machine()}, onnxruntime {ort.__version__}, intra-op threads {default_threads()}, "
        f"{os.cpu_count()} cores shared with other jobs (load average at start/end of each model below). "
        "CPU only: no GPU was available, the CUDA figures of #7 stay unmeasured.",
        "",
        "MiB. *default*: bytes held in the 2nd run of a session with onnxruntime's default options, through the",
        "recording allocator. *planned*: the plan's order (`optimize` default settings) without its in-place pairs",
        "(`run --no-inplace`), every request served from one arena placed from onnxruntime's own trace, plus heap",
        "bytes (resident allocations, fallbacks). *+ in-place*: the plan as `run` uses it (updated parameters and",
        "optimizer state written into their inputs' buffers). Inputs (parameters, optimizer state, batch) and",
        "initializers above 127 bytes are in neither peak (onnxruntime reads/holds them outside its allocator);",
        "*err* columns add them to the measured peak and compare with the prediction: *sim.* = the simulator's",
        "peak of the plan's order (on the graph without / with the pairs), *plan* = the plan's arena + resident",
        "bytes (`run`'s prediction with in-place). *bound/default*: the sound lower bound of the in-place graph",
        "less inputs and big initializers, over the default peak (no order can go below it in the memory model).",
        "onnxruntime's own buffer reuse is off in the planned sessions. *n/m*: not measured (`--inplace-only`: only",
        "the plan as `run` uses it, to save four training steps).",
        "",
        "| model | default | planned | planned/default | planned + in-place | (+ in-place)/default | bound/default "
        "| fallbacks (plain, in-place) | outputs vs default: max abs diff (plain; in-place) | in-place = plain "
        "| err vs sim. (plain) | err vs sim. (in-place) | err vs plan (in-place) | inputs | s | load start/end | max RSS GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|:-:|---:|---:|---:|---:|---:|---|---:|",
    ]
    notes = []
    for m in order:
        r = rows[m]
        if "peak_ort_default_bytes" in r and "plan_peak_by_kind" not in r:  # rows measured before it was recorded
            res = optimize_model(load_graph(MODELS_DIR / f"{m}.onnx"))
            r["plan_peak_by_kind"] = peak_composition(res.graph, res.order)
            r["plan_peak_by_kind_note"] = "from a fresh optimize (same settings) in the report step"
        if "run_error" in r or "peak_ort_default_bytes" not in r:
            why = "not run in onnxruntime (simulator figures below)" if "sim_peak_optimized" in r else r.get("error", "not run")
            lines.append(f"| {m} | {why} |" + " |" * 16)
            continue
        d, p, q = r["peak_ort_default_bytes"], r.get("planned"), r.get("planned_inplace")
        bound = (r["lower_bound"] - r["input_bytes"] - r["initializer_bytes_outside"]) / d
        lines.append(
            f"| {m} | {_mib(d)} | {_mib(p['peak_planned_bytes']) if p else 'n/m'} "
            f"| {'n/m' if not p else format(p['peak_planned_bytes'] / d, '.3f')} "
            f"| {_mib(q['peak_planned_bytes']) if q else ''} | {'' if not q else format(q['peak_planned_bytes'] / d, '.3f')} | {bound:.3f} "
            f"| {p['fallbacks'] if p else 'n/m'}, {q['fallbacks'] if q else ''} | {_diff(p) if p else 'n/m'}; {_diff(q) if q else ''} "
            f"| {'' if not q else ('yes' if q['inplace_equals_plain'] else 'NO')} "
            f"| {_pct(p['simulator_error']) if p else 'n/m'} | {_pct(q['simulator_error']) if q else ''} | {_pct(q['prediction_error']) if q else ''} "
            f"| {_mib(r['input_bytes'])} | {r['seconds']:.0f} "
            f"| {r['load_start'][0]:.1f} / {r['load_end'][0]:.1f} | {r['max_rss_bytes'] / 2**30:.1f} |"
        )
        notes.append(f"- **{m}**: {_why(r)}")
    sim_only = [m for m in order if "peak_ort_default_bytes" not in rows[m] and "sim_peak_optimized" in rows[m]]
    if sim_only:
        held = ", ".join(
            f"{m} {rows[m]['peak_ort_default_bytes'] / (rows[m]['sim_peak_ort_default'] - rows[m]['resident_bytes']) - 1:+.1%}"
            for m in order if "peak_ort_default_bytes" in rows[m])
        lines += [
            "",
            "## Not run in onnxruntime: the simulator's figures",
            "",
            "MiB, from `optimize` (default settings) and the simulator only, resident bytes (inputs, initializers) left out",
            "(as the measured peaks leave out inputs and big initializers). *sim. default*: onnxruntime's default order",
            f"simulated (the measured default sessions above held, against it: {held or 'none measured'}); *plan*: the plan's",
            "arena (order + in-place); *bound*: the",
            "in-place graph's lower bound.",
            "",
            "| model | why not run | sim. default | plan | plan/sim. default | bound/sim. default |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for m in sim_only:
            r = rows[m]
            # inputs are resident in the simulator; big initializers are not known without loading: use resident bytes
            base = r["sim_peak_ort_default"] - r["resident_bytes"]
            lines.append(
                f"| {m} | {r['run_error']} | {_mib(base)} | {_mib(r['plan_arena_bytes'])} "
                f"| {r['plan_arena_bytes'] / base:.3f} | {(r['lower_bound'] - r['resident_bytes']) / base:.3f} |"
            )
            kinds = r.get("plan_peak_by_kind") or {}
            total = sum(kinds.values()) or 1
            notes.append(f"- **{m}** (not run): at the plan's simulated peak: " + ", ".join(
                f"{k.replace('_', ' ')} {_mib(v)} MiB ({v / total:.0%})" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) + ".")
    lines += ["", "## Per model", "", *notes, ""]
    out.write_text("\n".join(lines))


def _load(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else {}


def return_freed_memory() -> None:
    """Serve allocations of 1 MiB and more by mmap, so that freed tensors go back to the OS at once.

    glibc keeps freed heap chunks below its (growing, up to 32 MiB) mmap threshold for reuse, so a
    process that opens several sessions in turn holds the high-water mark of all of them. The
    measured peaks are the allocators' byte counts and do not depend on this; only the RSS does.
    """
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main() -> None:
    return_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=[], help=f"models/<name>.onnx to measure, one per call is best ({' '.join(MODELS)})")
    ap.add_argument("--report", action="store_true", help="write the markdown from the JSON")
    ap.add_argument("--optimize-only", metavar="REASON", default=None,
                    help="record only optimize's and the simulator's figures (light), with REASON for not running")
    ap.add_argument("--inplace-only", action="store_true",
                    help="measure the plan only as `run` uses it (with its in-place pairs): 7 training steps instead of 11")
    ap.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="optimize's order search seconds (its default)")
    ap.add_argument("--headroom", type=float, default=HEADROOM,
                    help="run only if this many times the simulated default peak is available (RSS seen: 2.0-3.5 x)")
    ap.add_argument("--json", type=Path, default=RESULTS / "runtime_full.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "runtime_full.md")
    args = ap.parse_args()
    for name in args.models:
        try:
            row = measure_model(name, args.time_limit, args.headroom, inplace_only=args.inplace_only,
                                optimize_only=args.optimize_only)
        except Exception as exc:  # a failed model is recorded, not hidden
            row = {"model": name, "error": f"{type(exc).__name__}: {exc}"}
        rows = _load(args.json)  # re-read: another call may have written meanwhile
        rows[name] = row
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps(row, indent=1), flush=True)
    if args.report:
        write_report(_load(args.json), args.out)
        print(args.out.read_text())


if __name__ == "__main__":
    main()
