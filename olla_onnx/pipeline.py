"""The `optimize` job as a library call: order, place, check, and return everything to write.

``optimize_model`` never writes files and never prints; :func:`write_outputs`
writes the reordered model and the plan, refusing to overwrite the input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from olla_onnx.errors import OllaInputError
from olla_onnx.frontends import LoadedModel
from olla_onnx.memory import simulate
from olla_onnx.plan import Plan, make_plan, save_plan

Progress = Callable[[str, float], None]

#: Seconds of order search by default: the median corpus model finishes well inside it.
DEFAULT_TIME_LIMIT = 6.0


@dataclass(frozen=True)
class OptimizeResult:
    """Everything `optimize` reports; every figure was checked by the simulator."""

    order: tuple[int, ...]
    plan: Plan
    nodes: int
    resident_bytes: int
    peak_input_order: int
    peak_ort_default: int | None
    peak_optimized: int
    lower_bound: int
    optimal: bool
    arena_bytes: int
    placement_optimal: bool
    method: str
    seconds: float
    order_seconds: float
    place_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def fragmentation(self) -> float:
        """Arena bytes above the transient peak, as a fraction of that peak."""
        transient = self.peak_optimized - self.resident_bytes
        return (self.arena_bytes - transient) / transient if transient > 0 else 0.0

    def report(self) -> dict[str, Any]:
        """The ``--report-json`` object (DESIGN.md keys first, then extras)."""
        out: dict[str, Any] = {
            "nodes": self.nodes,
            "resident_bytes": self.resident_bytes,
            "peak_input_order": self.peak_input_order,
            "peak_optimized": self.peak_optimized,
            "lower_bound": self.lower_bound,
            "optimal": self.optimal,
            "arena_bytes": self.arena_bytes,
            "seconds": round(self.seconds, 3),
            "gap": (self.peak_optimized - self.lower_bound) / self.lower_bound if self.lower_bound else 0.0,
            "fragmentation": self.fragmentation,
            "placement_optimal": self.placement_optimal,
            "method": self.method,
            "order_seconds": round(self.order_seconds, 3),
            "place_seconds": round(self.place_seconds, 3),
        }
        if self.peak_ort_default is not None:
            out["peak_ort_default"] = self.peak_ort_default
        out.update(self.details)
        return out


def optimize_model(
    loaded: LoadedModel,
    time_limit: float = DEFAULT_TIME_LIMIT,
    alignment: int = 64,
    place_time_limit: float | None = None,
    progress: Progress | None = None,
) -> OptimizeResult:
    """Find a low-peak order and a fragmentation-free arena plan for ``loaded``.

    Guarantees: the order is validated by the simulator; the plan by
    :func:`olla_onnx.plan.check_plan` (no overlaps, aligned, inside the arena);
    ``peak_optimized`` is never above the input order's or onnxruntime's
    default order's peak; ``optimal`` is True only with a proof.
    """
    from olla_onnx.place import buffers_from_lifetimes, place
    from olla_onnx.schedule import optimize_order
    from olla_onnx.schedule.ort_default import ort_default_order, written_order_as_run

    t0 = time.perf_counter()
    graph = loaded.graph
    note = progress or (lambda msg, frac: None)
    note("simulating the stock orders", 0.0)
    input_order = graph.topological_order()
    peak_input = simulate(graph, input_order).peak
    peak_ort = None
    stock = {"input_order": input_order}
    if loaded.format == "onnx":
        ort = ort_default_order(graph)
        peak_ort = simulate(graph, ort).peak
        stock["ort_default"] = ort

    sched = optimize_order(graph, time_limit=time_limit, progress=progress)
    order = list(sched.order)
    best = simulate(graph, order)  # the referee, whatever the scheduler claims
    for name, o in stock.items():  # never worse than what the user already had
        p = simulate(graph, o).peak
        if p < best.peak:
            order, best = o, simulate(graph, o)
    if loaded.format == "onnx":
        # onnxruntime (ORT_DISABLE_ALL + PRIORITY_BASED) runs ready Shape/Size and Constant nodes
        # early; write the order it will really run, so that the simulator and onnxruntime agree.
        order = written_order_as_run(graph, order)
        best = simulate(graph, order)
    t_order = time.perf_counter() - t0

    note("placing tensors in the arena", 0.9)
    t1 = time.perf_counter()
    buffers = buffers_from_lifetimes(best.lifetimes)
    # stop once within 0.1% of the max-load bound (the acceptance bar); "optimal" stays a proof
    placement = place(buffers, alignment=alignment, time_limit=place_time_limit or max(1.0, time_limit), tolerance=0.001)
    offsets = {str(bid): int(off) for bid, off in zip(buffers.ids, placement.offsets)}
    plan = make_plan(graph, order, offsets, alignment)  # checked: no overlap, aligned, in the arena
    t_place = time.perf_counter() - t1
    note("done", 1.0)

    lb = max(int(sched.lower_bound), 0)
    optimal = bool(sched.optimal and best.peak == sched.peak) or best.peak <= lb
    return OptimizeResult(
        order=tuple(order),
        plan=plan,
        nodes=graph.num_nodes,
        resident_bytes=graph.resident_bytes,
        peak_input_order=peak_input,
        peak_ort_default=peak_ort,
        peak_optimized=best.peak,
        lower_bound=lb,
        optimal=optimal,
        arena_bytes=plan.arena_bytes,
        placement_optimal=bool(placement.optimal),
        method=str(sched.method),
        seconds=time.perf_counter() - t0,
        order_seconds=t_order,
        place_seconds=t_place,
    )


def write_outputs(loaded: LoadedModel, result: OptimizeResult, out: Path, plan_path: Path | None) -> None:
    """Write the reordered model (same format as the input) and, if asked, the plan."""
    out, src = Path(out), Path(loaded.path)
    for target in (out, plan_path):
        if target is not None and target.resolve() == src.resolve():
            raise OllaInputError(f"{target} is the input file; choose another output path (the input is never overwritten)")
    if loaded.format == "onnx":
        from olla_onnx.rewrite import write_reordered_onnx

        write_reordered_onnx(loaded.model, list(result.order), out, source=loaded.path)
    elif loaded.format == "node-link":
        from olla_onnx.frontends.networkx import write_node_link

        write_node_link(loaded.raw, loaded.graph, list(result.order), out)
    else:
        raise OllaInputError(f"cannot write models of format {loaded.format!r}")
    if plan_path is not None:
        save_plan(result.plan, plan_path)
