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

A plan file is validated against the model (:func:`olla_onnx.plan.load_plan`)
before anything runs. When the plan has in-place pairs (:mod:`olla_onnx.passes.inplace`),
the planned session writes each paired output into its input's buffer
(IO binding, :class:`~olla_onnx.runtime.session.InplaceBinding`); its outputs
are then also compared bitwise with one run of the plain planned session
(same order, no binding): ``inplace_equals_plain``.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from olla_onnx.errors import OllaInputError
from olla_onnx.plan import plan_uses_workspace
from olla_onnx.runtime.feeds import random_feeds
from olla_onnx.runtime.measure import (
    DefaultMeasurement,
    diff_outputs,
    measure_default,
    measure_planned,
    outside_allocator,
    run_plain_planned,
)



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

    @property
    def ratio(self) -> float:
        return self.peak_planned_bytes / self.peak_ort_default_bytes if self.peak_ort_default_bytes else float("nan")

    def report(self) -> dict[str, Any]:
        """The ``--report-json`` object: the contract keys of docs/design.md, then the details."""
        out = asdict(self)
        out["ratio"] = self.ratio
        out["seconds"] = round(self.seconds, 3)
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
    import onnx

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
    try:
        model = onnx.load(str(model_path))
    except Exception as exc:
        raise OllaInputError(f"{model_path} is not a readable ONNX model: {exc}") from None
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
    training steps). ``mem_reuse``: see :func:`~olla_onnx.runtime.measure.open_planned` (``None`` records
    both ways, twice the cost, and keeps the smaller).
    """
    from olla_onnx.runtime.session import check_provider

    t0 = time.perf_counter()
    check_provider(provider)
    model, graph, plan, source = load_model_for_run(Path(model_path), plan_path, dims)
    feeds = random_feeds(model, dims, seed)
    data = model.SerializeToString()
    pairs = {p.output: p.input for p in plan.inplace} if plan is not None and inplace else {}
    if default is None:
        default = measure_default(data, feeds, provider)
    planned = measure_planned(data, feeds, provider, time_limit, mem_reuse, inplace=pairs)
    gc.collect()
    plain = diff_outputs(planned.outputs, run_plain_planned(data, feeds, provider)) if pairs else None
    vs_default = diff_outputs(default.outputs, planned.outputs)
    same_session = diff_outputs(planned.recorded_outputs, planned.outputs)
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
        **{k: getattr(planned, k) for k in PLANNED_FIELDS},
    )
