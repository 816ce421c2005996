"""`olla-onnx run` as a library call: onnxruntime's default session against the planned one.

Both sessions get the same seeded random inputs
(:func:`olla_onnx.runtime.feeds.random_feeds`); both peaks are measured while
onnxruntime runs, through olla-onnx's own allocators, so they compare like for
like (:mod:`olla_onnx.runtime.measure`):

- default: onnxruntime's default options; the peak of bytes in use during
  the second run (steady state, memory pattern in use), initializers included.
- planned: nodes in the plan's (or the file's) order; run 1 warms up, runs 2
  and 3 are recorded (the request sequence must repeat), run 3's trace is
  placed in one arena (:func:`~olla_onnx.runtime.allocator.plan_trace`), and
  run 4 is served from it. Its peak is the arena plus the heap bytes held
  (initializers and other resident allocations, and any fallback).

``planned_equals_unplanned`` compares the arena-served run with a run of the
same session served from the heap (bitwise): the allocator's own check.
``outputs_equal``/``max_abs_diff`` compare with the default session, whose
graph optimizations (fusions) may change the rounding of float results.

A difference is judged (:func:`judge_difference`) against what onnxruntime
does on its own: ``ort_run_to_run_variation``, the largest difference between
two runs of one session on the same feeds before any arena serves it (with
more than one intra-op thread some kernels, e.g. ``ScatterND`` adding at
repeated indices, are not deterministic), and, against the default session,
``graph_rewrites_rel_diff``: the same order without olla-onnx's arena and
in-place binding against the default session. Only a difference clearly beyond
both is called a real one, and only after onnxruntime's variation was sampled
again (:data:`CONFIRM_RUNS` runs of a plain planned session).

Step times: after the measurement (whose first runs warm both sessions up) the
same two sessions run ``steps`` more times each, interleaved (default, planned,
default, ...); ``step_seconds_*`` are the medians. The planned session's
timed steps with in-place pairs are training-like steps (the updates stay in
their buffers, :meth:`~olla_onnx.runtime.session.Session.step`).

A plan file is validated against the model (:func:`olla_onnx.plan.load_plan`)
before anything runs. When the plan has in-place pairs (:mod:`olla_onnx.passes.inplace`),
the planned session writes each paired output into its input's buffer
(IO binding, :class:`~olla_onnx.runtime.session.InplaceBinding`); its outputs
are then also compared bitwise with one run of the plain planned session
(same order, no binding): ``inplace_equals_plain``.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from olla_onnx.errors import OllaInputError
from olla_onnx.plan import plan_uses_workspace
from olla_onnx.runtime.feeds import random_feeds
from olla_onnx.runtime.measure import (
    DefaultMeasurement,
    OutputDiff,
    diff_outputs,
    interleaved_step_seconds,
    measure_open_planned,
    one_thread_deterministic,
    open_default,
    outside_allocator,
    plain_planned_variation,
    run_plain_planned,
    run_variation,
)

#: Steps each session runs for ``step_seconds_*`` (the CLI refuses fewer).
STEPS = 5

#: A difference counts as a real one only above this many times onnxruntime's own run-to-run variation
#: (and the graph rewrites' difference): a thread race's differences change from one pair of runs to the next.
CLEARLY_BEYOND = 10.0

#: Runs of a plain planned session that sample onnxruntime's run-to-run variation again before a
#: difference is called a real one (a kernel that races now and then may not have raced in the first pairs).
CONFIRM_RUNS = 5

#: What :func:`judge_difference` can say, from best to worst.
VERDICTS = ("equal", "within_variation", "within_rewrites", "near", "beyond")


def judge_difference(diff: OutputDiff, variation: float, rewrites: float | None = None) -> str:
    """One of :data:`VERDICTS` for two runs' outputs that differ by ``diff``, where onnxruntime's own
    run-to-run variation is ``variation`` and (against the default session) the graph rewrites'
    difference is ``rewrites`` (both normwise relative, as ``diff.max_rel_diff``).

    ``equal``: bitwise. ``within_variation``: no more than the variation. ``within_rewrites``: no
    more than the rewrites' difference. ``near``: above both but within :data:`CLEARLY_BEYOND` times
    the larger: not clearly beyond them. ``beyond``: a real difference (also any difference the
    relative figure does not measure: integer outputs, NaN patterns, shapes). Pure.
    """
    if diff.equal:
        return "equal"
    rel = diff.max_rel_diff
    if not diff.rel_complete or not math.isfinite(rel):
        return "beyond"
    if rel <= variation:
        return "within_variation"
    if rewrites is not None and rel <= rewrites:
        return "within_rewrites"
    if rel <= CLEARLY_BEYOND * max(variation, rewrites or 0.0):
        return "near"
    return "beyond"


def explain_difference(
    verdict: str,
    max_abs_diff: float,
    max_rel_diff: float,
    variation: float,
    rewrites: float | None = None,
    one_thread: bool | None = None,
    culprit: str | None = None,
) -> str:
    """The words for a :func:`judge_difference` verdict. ``one_thread``: whether one-thread runs are
    bitwise equal (None: not checked). ``culprit``: what a real difference would be caused by, e.g.
    "olla-onnx's arena" (None: say no more than that it is beyond). Pure."""
    if verdict == "equal":
        return "bitwise equal"
    ort = f"onnxruntime's own run-to-run variation here ({variation:.2g}"
    if variation > 0 and one_thread is not None:
        ort += "; with one intra-op thread its runs are " + (
            "bitwise equal, so its multithreaded kernels vary" if one_thread else "not bitwise equal either")
    ort += ")" if variation > 0 else ": its repeated runs were bitwise equal)"
    diff = f"max abs diff {max_abs_diff:.3g}, normwise relative {max_rel_diff:.2g}"
    if verdict == "within_variation":
        return f"within {ort}: {diff}"
    rw = None if rewrites is None else (
        f"the difference onnxruntime's graph rewrites make here ({rewrites:.2g}: the same order without "
        "olla-onnx's arena and in-place outputs against the default session)")
    if verdict == "within_rewrites":
        return f"within {rw or ort}: {diff}; the default session fuses nodes, so it rounds differently"
    if verdict == "near":
        ref = rw if rw is not None and rewrites > variation else ort
        return f"differ ({diff}): above {ref}, but not clearly beyond it"
    text = f"DIFFERENT ({diff}): clearly beyond {ort}" + (f" and {rw}" if rw is not None else "")
    if culprit is not None:
        text += f"; so most likely caused by {culprit}: please report it, with the model"
    return text



@dataclass(frozen=True)
class RunReport:
    """Figures of one `olla-onnx run` (bytes unless named otherwise)."""

    model: str
    provider: str
    peak_ort_default_bytes: int
    peak_planned_bytes: int
    outputs_equal: bool
    max_abs_diff: float
    max_rel_diff: float
    planned_equals_unplanned: bool
    arena_bytes: int
    arena_lower_bound: int
    placement_method: str
    resident_bytes: int
    default_resident_bytes: int
    input_bytes: int
    initializer_bytes_outside: int
    allocs_per_run: int
    planned_allocs: int
    fallbacks: int
    first_fallback: str | None
    trace_stable: bool
    ort_mem_reuse: bool
    order_source: str
    predicted_peak_bytes: int | None
    prediction_error: float | None
    seconds: float
    inplace_pairs: int = 0
    inplace_bytes: int = 0
    inplace_equals_plain: bool | None = None
    inplace_max_abs_diff: float | None = None
    inplace_max_rel_diff: float | None = None
    arena_max_abs_diff: float = 0.0
    arena_max_rel_diff: float = 0.0
    ort_run_to_run_variation: float = 0.0
    ort_one_thread_deterministic: bool | None = None
    graph_rewrites_rel_diff: float | None = None
    outputs_verdict: str = "equal"
    arena_verdict: str = "equal"
    inplace_verdict: str | None = None
    timed_steps: int = 0
    step_seconds_default: float | None = None
    step_seconds_planned: float | None = None

    @property
    def ratio(self) -> float:
        return self.peak_planned_bytes / self.peak_ort_default_bytes if self.peak_ort_default_bytes else float("nan")

    @property
    def step_time_ratio(self) -> float | None:
        """Planned step time / default step time (None when not timed)."""
        if self.step_seconds_planned is None or not self.step_seconds_default:
            return None
        return self.step_seconds_planned / self.step_seconds_default

    def report(self) -> dict[str, Any]:
        """The ``--report-json`` object: the contract keys of docs/design.md, then the details."""
        out = asdict(self)
        out["ratio"] = self.ratio
        out["step_time_ratio"] = self.step_time_ratio
        out["seconds"] = round(self.seconds, 3)
        return out

    def output_checks(self) -> list[tuple[str, str, str]]:
        """(what is compared, verdict, words) for each comparison of outputs, as the CLI prints them."""
        v, one = self.ort_run_to_run_variation, self.ort_one_thread_deterministic
        out = [("outputs vs the default session", self.outputs_verdict, explain_difference(
            self.outputs_verdict, self.max_abs_diff, self.max_rel_diff, v, self.graph_rewrites_rel_diff, one))]
        if self.inplace_verdict is not None:
            out.append(("outputs vs the same order without in-place", self.inplace_verdict, explain_difference(
                self.inplace_verdict, self.inplace_max_abs_diff or 0.0, self.inplace_max_rel_diff or 0.0, v, None, one,
                "olla-onnx's in-place binding")))
        out.append(("outputs vs the same session without the arena", self.arena_verdict, explain_difference(
            self.arena_verdict, self.arena_max_abs_diff, self.arena_max_rel_diff, v, None, one, "olla-onnx's arena")))
        return out


#: Fields of :class:`RunReport` taken as they are from the planned session's
#: :class:`~olla_onnx.runtime.measure.PlannedMeasurement`.
PLANNED_FIELDS = (
    "arena_bytes",
    "arena_lower_bound",
    "placement_method",
    "resident_bytes",
    "allocs_per_run",
    "planned_allocs",
    "fallbacks",
    "first_fallback",
    "trace_stable",
)


def load_model_for_run(model_path: Path, plan_path: Path | None, dims: Mapping[str, int] | None):
    """Read the model; with a plan, validate it (a :class:`PlanError` before anything runs) and
    put the nodes in its order. Returns (model proto, graph or None, plan or None, order source).

    The graph is built with the workspace model (:mod:`olla_onnx.ort_facts.workspace`) on, unless
    the plan was made without it (`optimize --no-workspace`: none of its buffers is a workspace),
    so that the plan is checked against the graph it was made for.
    """
    from olla_onnx.formats.onnx.read import read_onnx_with_data
    from olla_onnx.formats.onnx.write import reordered_model
    from olla_onnx.plan import check_plan, load_plan

    model_path = Path(model_path)
    if not model_path.exists():
        raise OllaInputError(f"{model_path} does not exist")
    if model_path.suffix.lower() != ".onnx":
        raise OllaInputError(f"{model_path}: `run` needs an .onnx model")
    plan = load_plan(plan_path) if plan_path is not None else None  # format checks only, before the model
    graph = None
    try:
        from olla_onnx.formats.onnx.read import load_onnx

        graph, _ = load_onnx(model_path, dims, workspace=plan is None or plan_uses_workspace(plan))
    except ImportError:
        graph = None
    except OllaInputError:
        if plan_path is not None:
            raise
        graph = None
    model = read_onnx_with_data(model_path)
    if plan is None:
        return model, graph, None, "file"
    if graph is None:
        raise OllaInputError("validating a plan needs the ONNX frontend (olla_onnx.formats.onnx.read)")
    check_plan(plan, graph)
    return reordered_model(model, plan.order_indices(graph)), graph, plan, "plan"


def predicted_peak(graph, plan, inplace: bool) -> int | None:
    """The simulator's peak for the run: the plan's arena plus its resident bytes (the plan's order
    simulated without its in-place pairs when ``inplace`` is off and it has some), else the memory
    model's peak of the file's order; None without a graph."""
    if plan is not None and (inplace or not plan.inplace):
        return plan.arena_bytes + plan.resident_bytes
    if graph is None:
        return None
    from olla_onnx.ir.memory import simulate

    order = plan.order_indices(graph) if plan is not None else graph.topological_order()
    return simulate(graph, order).peak


def run_model(
    model_path: Path,
    plan_path: Path | None = None,
    provider: str = "cpu",
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    time_limit: float = 5.0,
    inplace: bool = True,
    *,
    default: DefaultMeasurement | None = None,
    mem_reuse: bool | None = None,
    steps: int = STEPS,
    check_one_thread: bool = True,
) -> RunReport:
    """Run ``model_path`` in onnxruntime's default session and in the planned session; measure both.

    The planned session writes the plan's in-place pairs into their inputs'
    buffers unless ``inplace`` is False (then the plan's order runs plainly).
    The prediction is the simulator's (:func:`predicted_peak`). ``prediction_error``
    compares it with the planned peak plus the
    input bytes plus the initializers above 127 bytes (both resident in the
    model, and seen by no allocator: onnxruntime reads inputs in place from the
    caller's arrays, or from the in-place session's own input buffers, and
    holds big initializers outside its allocator,
    :func:`~olla_onnx.runtime.measure.outside_allocator`).

    ``default``: a :func:`~olla_onnx.runtime.measure.measure_default` of the same model and feeds (seed),
    reused instead of measured again (a big model's default session costs two
    training steps; with ``steps`` a default session is still opened to time it). ``mem_reuse``: see
    :func:`~olla_onnx.runtime.measure.open_planned` (``None`` records both ways, twice the cost, and keeps
    the smaller). ``steps``: timed steps per session, interleaved (module docstring; 0: not timed).
    ``check_one_thread``: when runs vary (CPU), run a plain one-thread session twice to say whether
    the variation is onnxruntime's threads' (``ort_one_thread_deterministic``).
    """
    from olla_onnx.runtime.session import check_provider

    t0 = time.perf_counter()
    if steps < 0:
        raise OllaInputError(f"steps {steps}: must be at least 0")
    check_provider(provider)
    model, graph, plan, source = load_model_for_run(Path(model_path), plan_path, dims)
    feeds = random_feeds(model, dims, seed)
    data = model.SerializeToString()
    pairs = {p.output: p.input for p in plan.inplace} if plan is not None and inplace else {}
    sessions = []  # closed in this order at the end
    try:
        s_plan, planned = measure_open_planned(data, feeds, provider, time_limit, mem_reuse, inplace=pairs)
        sessions.append(s_plan)
        gc.collect()
        plain_outputs = run_plain_planned(data, feeds, provider) if pairs else planned.recorded_outputs
        variations = [planned.run_to_run_rel_diff]
        if default is not None:
            variations.append(default.run_to_run_rel_diff)
        timed: tuple[float | None, float | None] = (None, None)
        if default is None or steps:
            s_def, fresh = open_default(data, feeds, provider)
            sessions.insert(0, s_def)
            if default is None:
                default = fresh
            variations.append(fresh.run_to_run_rel_diff)
            if steps:
                ref = fresh.outputs

                def compare(outs: list) -> None:  # each timed default run against its second: more pairs
                    variations.append(run_variation(diff_outputs(ref, outs)))

                planned_step = s_plan.step if pairs else (lambda: s_plan.run(feeds))
                medians = interleaved_step_seconds([lambda: s_def.run(feeds), planned_step], steps, [compare, None])
                timed = (medians[0], medians[1])
                del ref
    finally:
        for s in sessions:
            s.close()
    gc.collect()
    vs_default = diff_outputs(default.outputs, planned.outputs)
    rewrites = run_variation(diff_outputs(default.outputs, plain_outputs))
    plain = diff_outputs(plain_outputs, planned.outputs) if pairs else None
    same_session = diff_outputs(planned.recorded_outputs, planned.outputs)

    def verdicts(variation: float) -> tuple[str, str, str | None]:
        return (judge_difference(vs_default, variation, rewrites), judge_difference(same_session, variation),
                judge_difference(plain, variation) if plain is not None else None)

    judged = verdicts(max(variations))
    if "beyond" in judged:  # before calling it real: sample onnxruntime's variation again
        variations.append(plain_planned_variation(data, feeds, provider, CONFIRM_RUNS))
        judged = verdicts(max(variations))
    variation = max(variations)
    one_thread = None
    if variation > 0 and check_one_thread and provider == "cpu":
        one_thread = one_thread_deterministic(data, feeds, optimized=planned.run_to_run_rel_diff == 0)
    input_bytes = int(sum(a.nbytes for a in feeds.values()))
    predicted = predicted_peak(graph, plan, bool(pairs))
    outside = outside_allocator(model, {n: t.size for n, t in graph.tensors.items()})[0] if graph is not None else 0
    err = (planned.peak_bytes + input_bytes + outside) / predicted - 1.0 if predicted else None
    return RunReport(
        model=Path(model_path).name,
        provider=provider,
        peak_ort_default_bytes=default.peak_bytes,
        peak_planned_bytes=planned.peak_bytes,
        outputs_equal=vs_default.equal,
        max_abs_diff=vs_default.max_abs_diff,
        max_rel_diff=vs_default.max_rel_diff,
        planned_equals_unplanned=same_session.equal,
        default_resident_bytes=default.resident_bytes,
        input_bytes=input_bytes,
        initializer_bytes_outside=outside,
        ort_mem_reuse=planned.mem_reuse,
        order_source=source,
        predicted_peak_bytes=predicted,
        prediction_error=err,
        seconds=time.perf_counter() - t0,
        inplace_pairs=len(pairs),
        inplace_bytes=sum(p.bytes for p in plan.inplace) if pairs else 0,
        inplace_equals_plain=plain.equal if plain is not None else None,
        inplace_max_abs_diff=plain.max_abs_diff if plain is not None else None,
        inplace_max_rel_diff=plain.max_rel_diff if plain is not None else None,
        arena_max_abs_diff=same_session.max_abs_diff,
        arena_max_rel_diff=same_session.max_rel_diff,
        ort_run_to_run_variation=variation,
        ort_one_thread_deterministic=one_thread,
        graph_rewrites_rel_diff=rewrites,
        outputs_verdict=judged[0],
        arena_verdict=judged[1],
        inplace_verdict=judged[2],
        timed_steps=steps if timed[0] is not None else 0,
        step_seconds_default=timed[0],
        step_seconds_planned=timed[1],
        **{k: getattr(planned, k) for k in PLANNED_FIELDS},
    )
