"""`olla-onnx run` as a library call: onnxruntime's default session against the planned one.

Both sessions get the same seeded random inputs; both peaks are measured
while onnxruntime runs, through olla-onnx's own allocators, so they compare
like for like:

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

import numpy as np

from olla_onnx.runtime.feeds import random_feeds

from olla_onnx.errors import OllaInputError
from olla_onnx.plan import plan_uses_workspace
from olla_onnx.runtime.allocator import ArenaAllocator, RecordingAllocator, plan_trace
from olla_onnx.runtime.session import Session, new_allocators, open_session


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
        """The ``--report-json`` object: DESIGN.md's keys, then the details."""
        out = asdict(self)
        out["ratio"] = self.ratio
        out["seconds"] = round(self.seconds, 3)
        return out


def random_inputs(model, dims: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs (see :func:`olla_onnx.runtime.feeds.random_feeds`); a symbolic dimension needs ``dims``."""
    return random_feeds(model, dims, seed)


def compare_outputs(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[bool, float]:
    """(all outputs bitwise equal, largest absolute difference over all outputs; NaNs equal NaNs)."""
    equal, worst = len(a) == len(b), 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, float("inf")
        if not np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.inexact)):
            equal = False
        if x.size and np.issubdtype(x.dtype, np.number):
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            d = d[~np.isnan(d)] if np.issubdtype(x.dtype, np.inexact) else d
            if d.size:
                worst = max(worst, float(d.max()))
    return equal, worst


def relative_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest normwise relative difference over the floating outputs: ``max|x - y| / max|x|`` per output.

    Normwise, not elementwise: rounding differences of a value near zero
    (a tiny gradient entry) say nothing about the output as a whole. 0 for equal lists.
    """
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape == y.shape and x.size and np.issubdtype(x.dtype, np.floating):
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            finite = np.isfinite(x64) & np.isfinite(y64)
            if not finite.any():
                continue
            scale = max(float(np.abs(x64[finite]).max()), float(np.finfo(np.float32).tiny))
            worst = max(worst, float(np.abs(x64[finite] - y64[finite]).max()) / scale)
    return worst


#: onnxruntime's kSmallTensorExternalDataThreshold: initializers above it never reach the allocator.
SMALL_INITIALIZER = 127


def outside_allocator(model, sizes: Mapping[str, int]) -> tuple[int, int]:
    """(bytes of the initializers onnxruntime holds outside the session's allocator, bytes it allocates
    through the allocator for the small initializers and the Constant nodes' values).

    onnxruntime keeps initializers above :data:`SMALL_INITIALIZER` bytes as in-memory tensors made
    when it builds its graph, so no allocator (recording or planned) sees them; they are resident in
    the memory model. ``sizes``: tensor name -> bytes (the IR's sizes). O(initializers + nodes).
    """
    big = small = 0
    for t in model.graph.initializer:
        b = sizes[t.name]
        if b > SMALL_INITIALIZER:
            big += b
        else:
            small += b
    small += sum(sizes[o] for n in model.graph.node if n.op_type == "Constant" for o in n.output if o)
    return big, small


@dataclass(frozen=True)
class DefaultMeasurement:
    peak_bytes: int
    resident_bytes: int
    allocs_per_run: int
    outputs: list


def measure_default(model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "cpu") -> DefaultMeasurement:
    """Peak bytes of onnxruntime's default session in its second run (steady state)."""
    host, device = new_allocators("default", provider)
    s = open_session(model_bytes, "default", host, device, provider)
    try:
        rec: RecordingAllocator = s.measured  # type: ignore[assignment]
        s.run(feeds)
        rec.reset_peak()
        resident = rec.in_use
        before = rec.allocs
        outs = s.run(feeds)
        return DefaultMeasurement(rec.peak, resident, rec.allocs - before, outs)
    finally:
        s.close()


@dataclass(frozen=True)
class PlannedMeasurement:
    peak_bytes: int
    arena_bytes: int
    arena_lower_bound: int
    placement_method: str
    resident_bytes: int
    allocs_per_run: int
    planned_allocs: int
    fallbacks: int
    first_fallback: str | None
    trace_stable: bool
    mem_reuse: bool
    outputs: list
    recorded_outputs: list


def open_planned(
    model_bytes: bytes,
    feeds: Mapping[str, np.ndarray],
    provider: str = "cpu",
    time_limit: float = 5.0,
    mem_reuse: bool | None = None,
    inplace: Mapping[str, str] | None = None,
) -> tuple[Session, dict[str, Any]]:
    """A planned session, recorded and switched to replay: the next run is served from the arena.

    ``inplace`` (output -> input) makes it an IO-binding session whose paired
    outputs are written into their inputs' buffers (see the module docstring).

    ``mem_reuse`` sets onnxruntime's own buffer reuse in the planned session;
    ``None`` records both ways and keeps the session whose arena plus
    resident bytes is smaller (onnxruntime's reuse saves in-place copies but
    stretches lifetimes: a reused buffer lives from its first to its last tenant).
    Returns the session (close it!) and what recording found.
    """
    if mem_reuse is None:
        best = None
        for reuse in (False, True):
            s, info = open_planned(model_bytes, feeds, provider, time_limit, reuse, inplace)
            held = info["arena_bytes"] + info["resident_bytes"]
            if best is None or held < best[2]:
                if best is not None:
                    best[0].close()
                best = (s, info, held)
            else:
                s.close()
        return best[0], best[1]
    host, device = new_allocators("planned", provider)
    s = open_session(model_bytes, "planned", host, device, provider, mem_reuse, inplace)
    arena: ArenaAllocator = s.measured  # type: ignore[assignment]
    try:
        s.run(feeds)  # warm-up: lazy one-time allocations happen here
        m1 = arena.log.mark()
        s.run(feeds)
        m2 = arena.log.mark()
        recorded = s.run(feeds)
        t2, t3 = arena.log.window(m1, m2), arena.log.window(m2)
        plan = plan_trace(t3, time_limit=time_limit)
        arena.install(plan)
    except BaseException:
        s.close()
        raise
    info = {
        "trace_stable": t2.same_requests(t3),
        "allocs_per_run": len(t3),
        "arena_bytes": plan.arena_bytes,
        "arena_lower_bound": plan.lower_bound,
        "placement_method": plan.method,
        "resident_bytes": arena.heap_in_use,
        "mem_reuse": bool(mem_reuse),
        "recorded_outputs": recorded,
    }
    return s, info


def measure_planned(
    model_bytes: bytes,
    feeds: Mapping[str, np.ndarray],
    provider: str = "cpu",
    time_limit: float = 5.0,
    mem_reuse: bool | None = None,
    inplace: Mapping[str, str] | None = None,
) -> PlannedMeasurement:
    """Record, plan, then measure one run served from the planned arena."""
    s, info = open_planned(model_bytes, feeds, provider, time_limit, mem_reuse, inplace)
    try:
        arena: ArenaAllocator = s.measured  # type: ignore[assignment]
        resident = arena.heap_in_use
        arena.reset_peak()
        outs = s.run(feeds)
        st = arena.stats()
        return PlannedMeasurement(
            st.peak_bytes, st.arena_bytes, info["arena_lower_bound"], info["placement_method"], resident,
            info["allocs_per_run"], st.planned_allocs, st.fallbacks, st.first_fallback, info["trace_stable"],
            info["mem_reuse"], outs, info["recorded_outputs"],
        )
    finally:
        s.close()


def load_model_for_run(model_path: Path, plan_path: Path | None, dims: Mapping[str, int] | None):
    """Read the model; with a plan, validate it (a :class:`PlanError` before anything runs) and
    put the nodes in its order. Returns (model proto, graph or None, plan or None, order source).

    The graph is built with the workspace model (:mod:`olla_onnx.ort_facts.workspace`) on, unless
    the plan was made without it (`optimize --no-workspace`: none of its buffers is a workspace),
    so that the plan is checked against the graph it was made for.
    """
    import onnx

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
    order = plan.order_indices(graph)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)
    return model, graph, plan, "plan"


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
    The prediction is the simulator's: the plan's arena plus its resident
    bytes when a plan is given (the plan's order simulated without the pairs
    when they are turned off), else the memory model's peak of the file's
    order. ``prediction_error`` compares it with the planned peak plus the
    input bytes plus the initializers above 127 bytes (both resident in the
    model, and seen by no allocator: onnxruntime reads inputs in place from the
    caller's arrays, or from the in-place session's own input buffers, and
    holds big initializers outside its allocator, :func:`outside_allocator`).

    ``default``: a :func:`measure_default` of the same model and feeds (seed),
    reused instead of measured again (a big model's default session costs two
    training steps). ``mem_reuse``: see :func:`open_planned` (``None`` records
    both ways, twice the cost, and keeps the smaller).
    """
    from olla_onnx.runtime.session import check_provider

    t0 = time.perf_counter()
    check_provider(provider)
    model, graph, plan, source = load_model_for_run(Path(model_path), plan_path, dims)
    feeds = random_inputs(model, dims, seed)
    data = model.SerializeToString()
    pairs = {p.output: p.input for p in plan.inplace} if plan is not None and inplace else {}
    if default is None:
        default = measure_default(data, feeds, provider)
    planned = measure_planned(data, feeds, provider, time_limit, mem_reuse, inplace=pairs)
    gc.collect()
    plain_equal, plain_diff = None, None
    if pairs:
        plain_equal, plain_diff = compare_outputs(planned.outputs, run_plain_planned(data, feeds, provider))
    equal, diff = compare_outputs(default.outputs, planned.outputs)
    rel = relative_diff(default.outputs, planned.outputs)
    same_session_equal, _ = compare_outputs(planned.recorded_outputs, planned.outputs)
    input_bytes = int(sum(a.nbytes for a in feeds.values()))
    predicted = None
    if plan is not None and (pairs or not plan.inplace):
        predicted = plan.arena_bytes + plan.resident_bytes
    elif plan is not None and graph is not None:
        from olla_onnx.ir.memory import simulate

        predicted = simulate(graph, plan.order_indices(graph)).peak
    elif graph is not None:
        from olla_onnx.ir.memory import simulate

        predicted = simulate(graph, graph.topological_order()).peak
    outside = outside_allocator(model, {n: t.size for n, t in graph.tensors.items()})[0] if graph is not None else 0
    err = None
    if predicted:
        err = (planned.peak_bytes + input_bytes + outside) / predicted - 1.0
    return RunReport(
        model=Path(model_path).name,
        provider=provider,
        peak_ort_default_bytes=default.peak_bytes,
        peak_planned_bytes=planned.peak_bytes,
        outputs_equal=equal,
        max_abs_diff=diff,
        max_rel_diff=rel,
        planned_equals_unplanned=same_session_equal,
        arena_bytes=planned.arena_bytes,
        arena_lower_bound=planned.arena_lower_bound,
        placement_method=planned.placement_method,
        resident_bytes=planned.resident_bytes,
        default_resident_bytes=default.resident_bytes,
        input_bytes=input_bytes,
        initializer_bytes_outside=outside,
        allocs_per_run=planned.allocs_per_run,
        planned_allocs=planned.planned_allocs,
        fallbacks=planned.fallbacks,
        first_fallback=planned.first_fallback,
        trace_stable=planned.trace_stable,
        ort_mem_reuse=planned.mem_reuse,
        order_source=source,
        predicted_peak_bytes=predicted,
        prediction_error=err,
        seconds=time.perf_counter() - t0,
        inplace_pairs=len(pairs),
        inplace_bytes=sum(p.bytes for p in plan.inplace) if pairs else 0,
        inplace_equals_plain=plain_equal,
        inplace_max_abs_diff=plain_diff,
    )


def run_plain_planned(model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "cpu") -> list[np.ndarray]:
    """The outputs of one run of a plain planned session (file order, no IO binding, heap-served)."""
    host, device = new_allocators("default", provider)
    s = open_session(model_bytes, "planned", host, device, provider)
    try:
        return s.run(feeds)
    finally:
        s.close()
