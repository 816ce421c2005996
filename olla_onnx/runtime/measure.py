"""Measuring onnxruntime sessions through olla-onnx's own allocators, so that peaks compare like for like.

- default (:func:`measure_default`): onnxruntime's default options; the peak
  of bytes in use during the second run (steady state, memory pattern in
  use), initializers included.
- planned (:func:`open_planned`, :func:`measure_planned`): nodes in the
  model's order; run 1 warms up, runs 2 and 3 are recorded (the request
  sequence must repeat), run 3's trace is placed in one arena
  (:func:`~olla_onnx.runtime.allocator.plan_trace`), and run 4 is served from
  it. Its peak is the arena plus the heap bytes held (initializers and other
  resident allocations, and any fallback). With in-place pairs the session
  writes each paired output into its input's buffer (IO binding,
  :class:`~olla_onnx.runtime.session.InplaceBinding`).

onnxruntime holds initializers above :data:`SMALL_INITIALIZER` bytes outside
any allocator (:func:`outside_allocator`). :func:`diff_outputs` compares two
runs' outputs. Both measurements also compare two runs of their session on the
same feeds before any arena serves it (onnxruntime's own run-to-run variation:
with more than one intra-op thread some kernels, e.g. ``ScatterND`` adding at
repeated indices, are not deterministic); :func:`open_default` and
:func:`measure_open_planned` leave their session open for
:func:`interleaved_step_seconds` (step times) and close it on error only.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from olla_onnx.ort_facts import SMALL_INITIALIZER
from olla_onnx.runtime.allocator import ArenaAllocator, RecordingAllocator, plan_trace
from olla_onnx.runtime.session import Session, new_allocators, open_session, session_options



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


# ----------------------------------------------------------------------------- comparing outputs


@dataclass(frozen=True)
class OutputDiff:
    """How two runs' output lists differ.

    ``equal``: all outputs bitwise equal (NaNs equal NaNs). ``max_abs_diff``:
    the largest absolute difference over all outputs (NaN differences left
    out; infinite when the lists differ in length, or two outputs in shape or
    dtype). ``max_rel_diff``: the largest normwise relative difference over
    the floating outputs of the same shape, ``max|x - y| / max|x|`` over the
    elements finite in both (0 for equal lists). ``rel_complete``: every
    difference lies in such elements, so ``max_rel_diff`` measures all of it
    (False when an integer or bool output, a NaN/infinity pattern, a shape, a
    dtype or the number of outputs differs).
    """

    equal: bool
    max_abs_diff: float
    max_rel_diff: float
    rel_complete: bool = True


def diff_outputs(a: list[np.ndarray], b: list[np.ndarray]) -> OutputDiff:
    """Compare two runs' outputs, pairwise in order (see :class:`OutputDiff`). O(total elements).

    Normwise, not elementwise: rounding differences of a value near zero
    (a tiny gradient entry) say nothing about the output as a whole.
    """
    equal, worst, rel, comparable = len(a) == len(b), 0.0, 0.0, True
    complete = len(a) == len(b)
    for x, y in zip(a, b):
        if x.shape == y.shape and x.size and np.issubdtype(x.dtype, np.floating):
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            finite = np.isfinite(x64) & np.isfinite(y64)
            if finite.any():
                scale = max(float(np.abs(x64[finite]).max()), float(np.finfo(np.float32).tiny))
                rel = max(rel, float(np.abs(x64[finite] - y64[finite]).max()) / scale)
            if not finite.all() and not np.array_equal(x64[~finite], y64[~finite], equal_nan=True):
                complete = False
        elif x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            complete = False
        if not comparable:
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            comparable = False
            continue
        if not np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.inexact)):
            equal = False
        if x.size and np.issubdtype(x.dtype, np.number):
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            d = d[~np.isnan(d)] if np.issubdtype(x.dtype, np.inexact) else d
            if d.size:
                worst = max(worst, float(d.max()))
    if not comparable:
        equal, worst, complete = False, float("inf"), False
    return OutputDiff(equal, worst, rel, complete or equal)


def compare_outputs(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[bool, float]:
    """``(equal, max_abs_diff)`` of :func:`diff_outputs` (for callers that want the pair)."""
    d = diff_outputs(a, b)
    return d.equal, d.max_abs_diff


def relative_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """``max_rel_diff`` of :func:`diff_outputs` (for callers that want it alone)."""
    return diff_outputs(a, b).max_rel_diff


# ----------------------------------------------------------------------------- the two sessions


@dataclass(frozen=True)
class DefaultMeasurement:
    """The default session's figures; ``run_to_run_rel_diff``: ``max_rel_diff`` of its first run
    against its second (onnxruntime's own run-to-run variation; 0.0 when they are bitwise equal)."""

    peak_bytes: int
    resident_bytes: int
    allocs_per_run: int
    outputs: list
    run_to_run_rel_diff: float = 0.0


def open_default(model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "cpu") -> tuple[Session, DefaultMeasurement]:
    """onnxruntime's default session, measured (peak bytes of its second run, steady state) and left
    open (close it!): two runs on ``feeds``, compared with each other."""
    host, device = new_allocators("default", provider)
    s = open_session(model_bytes, "default", host, device, provider)
    try:
        rec: RecordingAllocator = s.measured  # type: ignore[assignment]
        first = s.run(feeds)
        rec.reset_peak()
        resident = rec.in_use
        before = rec.allocs
        outs = s.run(feeds)
        spread = diff_outputs(first, outs)
        del first
        return s, DefaultMeasurement(rec.peak, resident, rec.allocs - before, outs, run_variation(spread))
    except BaseException:
        s.close()
        raise


def measure_default(model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "cpu") -> DefaultMeasurement:
    """Peak bytes of onnxruntime's default session in its second run (steady state)."""
    s, m = open_default(model_bytes, feeds, provider)
    s.close()
    return m


def run_variation(d: OutputDiff) -> float:
    """How much two runs on the same feeds differ, as one number: ``max_rel_diff`` (0.0 when bitwise
    equal). Differences outside finite floating elements are not counted (so a variation is never
    overstated: what it is meant to excuse stays small)."""
    return 0.0 if d.equal else d.max_rel_diff


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
    run_to_run_rel_diff: float = 0.0  # recorded runs 2 and 3 (heap-served, before the arena), see DefaultMeasurement


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
    Returns the session (close it!) and what recording found (``run_to_run_rel_diff``: recorded
    runs 2 and 3 compared, :func:`run_variation`; the larger of the two sessions' with ``None``).
    """
    if mem_reuse is None:
        best = None
        spread = 0.0
        for reuse in (False, True):
            s, info = open_planned(model_bytes, feeds, provider, time_limit, reuse, inplace)
            spread = max(spread, info["run_to_run_rel_diff"])
            held = info["arena_bytes"] + info["resident_bytes"]
            if best is None or held < best[2]:
                if best is not None:
                    best[0].close()
                best = (s, info, held)
            else:
                s.close()
        best[1]["run_to_run_rel_diff"] = spread
        return best[0], best[1]
    host, device = new_allocators("planned", provider)
    s = open_session(model_bytes, "planned", host, device, provider, mem_reuse, inplace)
    arena: ArenaAllocator = s.measured  # type: ignore[assignment]
    try:
        s.run(feeds)  # warm-up: lazy one-time allocations happen here
        m1 = arena.log.mark()
        second = s.run(feeds)
        m2 = arena.log.mark()
        recorded = s.run(feeds)
        spread = run_variation(diff_outputs(second, recorded))
        del second
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
        "run_to_run_rel_diff": spread,
    }
    return s, info


def measure_open_planned(
    model_bytes: bytes,
    feeds: Mapping[str, np.ndarray],
    provider: str = "cpu",
    time_limit: float = 5.0,
    mem_reuse: bool | None = None,
    inplace: Mapping[str, str] | None = None,
) -> tuple[Session, PlannedMeasurement]:
    """Record, plan, then measure one run served from the planned arena; the session is left open
    (close it!), its arena installed."""
    s, info = open_planned(model_bytes, feeds, provider, time_limit, mem_reuse, inplace)
    try:
        arena: ArenaAllocator = s.measured  # type: ignore[assignment]
        resident = arena.heap_in_use
        arena.reset_peak()
        outs = s.run(feeds)
        st = arena.stats()
        return s, PlannedMeasurement(
            st.peak_bytes, st.arena_bytes, info["arena_lower_bound"], info["placement_method"], resident,
            info["allocs_per_run"], st.planned_allocs, st.fallbacks, st.first_fallback, info["trace_stable"],
            info["mem_reuse"], outs, info["recorded_outputs"], info["run_to_run_rel_diff"],
        )
    except BaseException:
        s.close()
        raise


def measure_planned(
    model_bytes: bytes,
    feeds: Mapping[str, np.ndarray],
    provider: str = "cpu",
    time_limit: float = 5.0,
    mem_reuse: bool | None = None,
    inplace: Mapping[str, str] | None = None,
) -> PlannedMeasurement:
    """Record, plan, then measure one run served from the planned arena."""
    s, m = measure_open_planned(model_bytes, feeds, provider, time_limit, mem_reuse, inplace)
    s.close()
    return m


def run_plain_planned(model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "cpu") -> list[np.ndarray]:
    """The outputs of one run of a plain planned session (file order, no IO binding, heap-served)."""
    host, device = new_allocators("default", provider)
    s = open_session(model_bytes, "planned", host, device, provider)
    try:
        return s.run(feeds)
    finally:
        s.close()


def plain_planned_variation(model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "cpu", runs: int = 5) -> float:
    """onnxruntime's run-to-run variation under the planned session's settings, sampled again: the largest
    :func:`run_variation` of ``runs`` runs of a plain planned session (heap-served, no arena, no
    binding) against its first run. O(runs + 1 runs)."""
    host, device = new_allocators("default", provider)
    s = open_session(model_bytes, "planned", host, device, provider)
    try:
        first = s.run(feeds)
        return max((run_variation(diff_outputs(first, s.run(feeds))) for _ in range(runs)), default=0.0)
    finally:
        s.close()


# ----------------------------------------------------------------------------- step times, determinism


def interleaved_step_seconds(
    runs: Sequence[Callable[[], Any]], steps: int, after: Sequence[Callable[[Any], None] | None] | None = None
) -> list[float]:
    """The median wall seconds of each of ``runs`` (one step each), called in turn ``steps`` times:
    a, b, a, b, ... so that both see the same machine load. ``after[i]`` (optional) gets what run i
    returned, outside the timed span. Call on warm sessions (first runs allocate lazily)."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    hooks = list(after) if after is not None else [None] * len(runs)
    seconds: list[list[float]] = [[] for _ in runs]
    for _ in range(steps):
        for i, fn in enumerate(runs):
            t0 = time.perf_counter()
            out = fn()
            seconds[i].append(time.perf_counter() - t0)
            if hooks[i] is not None:
                hooks[i](out)
            del out
    return [statistics.median(t) for t in seconds]


def one_thread_deterministic(model_bytes: bytes, feeds: Mapping[str, np.ndarray], optimized: bool) -> bool:
    """Whether two runs of a plain CPU onnxruntime session with one intra-op thread give bitwise the same
    outputs (no olla-onnx allocator; ``optimized``: onnxruntime's default graph rewrites, else none and
    the file's order, as the planned session runs). O(two runs)."""
    import onnxruntime as ort

    so = session_options("default" if optimized else "planned", env_allocators=False, threads=1)
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    first = [np.array(a, copy=True) for a in sess.run(None, dict(feeds))]
    return diff_outputs(first, [np.array(a, copy=True) for a in sess.run(None, dict(feeds))]).equal

