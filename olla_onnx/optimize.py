"""The `optimize` job as a library call: order, place, check, and return everything to write.

``optimize_model`` never writes files and never prints; :func:`write_outputs`
writes the reordered model and the plan, refusing to overwrite the input.

In-place updates (:mod:`olla_onnx.passes.inplace`, on by default): the order search,
the bound and the placement run on the graph in which each safe updated
parameter/state output lives in its input's buffer (and the input's other
readers run before the update). The plan records the pairs; ``olla-onnx run``
makes onnxruntime write those outputs into the input buffers (IO binding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from olla_onnx.errors import OllaInputError
from olla_onnx.files import refuse_input_path
from olla_onnx.progress import Progress, silent
from olla_onnx.formats import LoadedModel
from olla_onnx.ir.graph import Graph, Tensor, check_order
from olla_onnx.passes.inplace import InplacePair, InplaceSearch, Refusal, apply_inplace, find_inplace_pairs, is_order_token, respected_pairs
from olla_onnx.ir.memory import Lifetimes, lower_bound as memory_lower_bound, simulate
from olla_onnx.plan import Plan, make_plan, save_plan

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
    inplace: tuple[InplacePair, ...] = ()
    inplace_refused: tuple[Refusal, ...] = ()
    peak_optimized_without_inplace: int | None = None
    graph: Graph | None = field(default=None, repr=False)  # the graph ``order`` and ``plan`` are for: the input's, ``inplace`` applied
    arena_lower_bound: int = 0  # the most alignment-rounded transient bytes alive at once: no aligned arena is smaller

    @property
    def inplace_bytes(self) -> int:
        """Bytes of the outputs written into their inputs' buffers."""
        return sum(p.bytes for p in self.inplace)

    @property
    def fragmentation(self) -> float:
        """Arena bytes above the transient peak, as a fraction of that peak."""
        transient = self.peak_optimized - self.resident_bytes
        return (self.arena_bytes - transient) / transient if transient > 0 else 0.0

    @property
    def alignment_padding(self) -> float:
        """The part of :attr:`fragmentation` that no placement can avoid: the aligned max-load bound
        above the transient peak, as a fraction of that peak (tiny models at 256-byte alignment: a few %)."""
        transient = self.peak_optimized - self.resident_bytes
        padding = min(self.arena_lower_bound, self.arena_bytes) - transient  # the arena's last buffer may end unaligned
        return max(padding, 0) / transient if transient > 0 else 0.0

    def report(self) -> dict[str, Any]:
        """The ``--report-json`` object (the contract keys of docs/design.md first, then extras)."""
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
            "arena_lower_bound": self.arena_lower_bound,
            "alignment_padding": self.alignment_padding,
            "placement_optimal": self.placement_optimal,
            "method": self.method,
            "order_seconds": round(self.order_seconds, 3),
            "place_seconds": round(self.place_seconds, 3),
        }
        if self.peak_ort_default is not None:
            out["peak_ort_default"] = self.peak_ort_default
        out["inplace_pairs"] = len(self.inplace)
        out["inplace_bytes"] = self.inplace_bytes
        out["inplace_refused"] = len(self.inplace_refused)
        out["peak_optimized_without_inplace"] = (
            self.peak_optimized if self.peak_optimized_without_inplace is None else self.peak_optimized_without_inplace
        )
        out.update(self.details)
        return out


def optimize_model(
    loaded: LoadedModel,
    time_limit: float = DEFAULT_TIME_LIMIT,
    alignment: int = 64,
    place_time_limit: float | None = None,
    progress: Progress | None = None,
    *,
    inplace: bool = True,
    inplace_pairs: Sequence[tuple[str, str]] = (),
) -> OptimizeResult:
    """Find a low-peak order and a fragmentation-free arena plan for ``loaded``.

    With ``inplace`` (the default), safe in-place updates are found
    (:func:`olla_onnx.passes.inplace.find_inplace_pairs`; ``inplace_pairs`` adds
    explicit ``(input, output)`` pairs, an unsafe one being an
    :class:`OllaInputError`) and the search runs on the graph with them applied.

    Guarantees: the order is validated by the simulator on the graph it is
    for (``result.graph``); the plan by :func:`olla_onnx.plan.check_plan` (no
    overlaps, aligned, inside the arena); ``peak_optimized`` is never above the
    input order's or onnxruntime's default order's peak (each stock order is
    also tried with the pairs it keeps safe); ``lower_bound`` holds for every
    order of ``result.graph`` (all pairs in place; when a stock order won with
    fewer pairs, for every order with any of them in place); ``optimal`` is
    True only with a proof.
    ``peak_optimized_without_inplace`` is the plan's order simulated on the
    graph without aliasing (no separate search).
    """
    from olla_onnx.place import buffers_from_lifetimes, place
    from olla_onnx.schedule import optimize_order

    if inplace_pairs and not inplace:
        raise OllaInputError("explicit in-place pairs were given with in-place updates turned off")
    t0 = time.perf_counter()
    graph = loaded.graph
    note = progress or silent
    note("finding in-place updates", 0.0)
    found = find_pairs(loaded, inplace_pairs) if inplace else InplaceSearch((), ())
    work = apply_inplace(graph, found.pairs)
    note("simulating the stock orders", 0.0)
    stock = loaded.stock_orders()
    input_order = stock["input_order"]
    peak_input = simulate(graph, input_order).peak
    peak_ort = simulate(graph, stock["ort_default"]).peak if "ort_default" in stock else None

    sched = optimize_order(work, time_limit=time_limit, progress=progress)
    graphs = {found.pairs: work}

    def aliased(pairs: tuple[InplacePair, ...]) -> Graph:
        if pairs not in graphs:
            graphs[pairs] = apply_inplace(graph, pairs)
        return graphs[pairs]

    order, used = list(sched.order), found.pairs
    best = simulate(work, order)  # the referee, whatever the scheduler claims
    for name, o in stock.items():  # never worse than what the user already had, with the pairs it allows
        keep = respected_pairs(graph, found.pairs, o)
        sim = simulate(aliased(keep), o)
        if sim.peak < best.peak:
            order, used, best = o, keep, sim
    chosen = aliased(used)
    # the order the runtime will really run once written (onnxruntime runs ready Shape/Size/Constant nodes
    # early), so that the simulator and the runtime agree; pairs never have such a producer, and moving a
    # reader earlier keeps it before the update
    as_run = loaded.order_as_run(order)
    if as_run != order:
        order = as_run
        check_order(chosen, order)
        best = simulate(chosen, order)
    t_order = time.perf_counter() - t0

    note("placing tensors in the arena", 0.9)
    t1 = time.perf_counter()
    buffers = buffers_from_lifetimes(_without_tokens(best.lifetimes))
    # stop once within 0.1% of the max-load bound (the acceptance bar); "optimal" stays a proof
    placement = place(buffers, alignment=alignment, time_limit=place_time_limit or max(1.0, time_limit), tolerance=0.001)
    offsets = {str(bid): int(off) for bid, off in zip(buffers.ids, placement.offsets)}
    plan = make_plan(graph, order, offsets, alignment, inplace=used)  # checked: no overlap, aligned, in the arena
    t_place = time.perf_counter() - t1
    note("done", 1.0)

    lb = max(int(sched.lower_bound), 0)
    proven = bool(sched.optimal and best.peak == sched.peak)
    if used != found.pairs:
        # a stock order kept only some pairs: the search's bound (all pairs in place) need not hold
        # for it; every order with any subset in place is an order of the relaxation below
        lb = min(lb, memory_lower_bound(_relaxed(graph, found.pairs)).value)
        proven = False
    optimal = proven or best.peak <= lb
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
        inplace=used,
        inplace_refused=found.refused,
        peak_optimized_without_inplace=simulate(graph, order).peak,
        graph=chosen,
        arena_lower_bound=int(placement.lower_bound),
    )


def find_pairs(loaded: LoadedModel, explicit: Sequence[tuple[str, str]] = ()) -> InplaceSearch:
    """:func:`~olla_onnx.passes.inplace.find_inplace_pairs` with what the model file tells (for ONNX: only
    graph inputs the caller feeds, not initializers, and equal element type and shape)."""
    feedable, signatures = loaded.inplace_hints()
    return find_inplace_pairs(loaded.graph, explicit, feedable=feedable, signatures=signatures)


def _without_tokens(lt: Lifetimes) -> Lifetimes:
    """``lt`` less the zero-byte order tokens of :mod:`olla_onnx.passes.inplace` (they are not buffers)."""
    keep = [i for i, n in enumerate(lt.names) if not is_order_token(n)]
    if len(keep) == len(lt.names):
        return lt
    return Lifetimes(tuple(lt.names[i] for i in keep), lt.sizes[keep], lt.start[keep], lt.end[keep])


def _relaxed(graph: Graph, pairs: Sequence[InplacePair]) -> Graph:
    """``graph`` with the paired outputs at 0 bytes and no order tokens: its orders include every
    order of ``graph`` with any subset of ``pairs`` in place, at a peak no higher."""
    tensors = dict(graph.tensors)
    for p in pairs:
        t = tensors[p.output]
        tensors[p.output] = Tensor(t.name, 0, t.kind)
    return Graph(graph.nodes, tensors, graph.outputs, graph.name)


def write_outputs(loaded: LoadedModel, result: OptimizeResult, out: Path, plan_path: Path | None) -> None:
    """Write the reordered model (same format as the input) and, if asked, the plan; never over the input."""
    for target in (out, plan_path):
        refuse_input_path(target, loaded.path)
    loaded.write(result.order, out)
    if plan_path is not None:
        save_plan(result.plan, plan_path)
