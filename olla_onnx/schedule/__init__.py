"""Node ordering for minimal peak memory: heuristics, bounds, exact search, decomposition.

One entry point, :func:`optimize_order`. The pieces, each usable alone:

* :mod:`.reduce`: the compact problem (resident tensors out, sizes / GCD), ASAP/ALAP windows;
* :mod:`.heuristics`: memory-aware list scheduling, beam search;
* :mod:`.bounds`: the per-node min-cut lower bound (dominates the ancestor bound), the last-step bound;
* :mod:`.dp`: exact DP over down-sets, on the whole graph or a window of an order;
* :mod:`.local`: exact re-solving of windows around the peak;
* :mod:`.decompose`: segments of an order solved apart and stitched;
* :mod:`.ilp`: the time-indexed integer program (CVXPY + SCIP), warm-started;
* :mod:`.random_graphs`: layered and training-like random graphs for tests and benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from olla_onnx.ir.graph import Graph
from olla_onnx.ir.memory import ancestor_bound, simulate

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class ScheduleResult:
    """A validated order and what is known about it.

    ``peak`` and ``lower_bound`` are in bytes, resident included. ``optimal`` is
    True only with a proof, named in ``proof``: ``"bound"`` (peak equals a sound
    lower bound) or ``"dp"`` (the exact DP over the whole graph finished) or
    ``"ilp"`` (SCIP reported optimality). ``peaks`` holds the peak each method
    reached at best (methods that returned no order are absent).
    """

    order: tuple[int, ...]
    peak: int
    lower_bound: int
    optimal: bool
    method: str
    seconds: float
    peaks: dict[str, int] = field(default_factory=dict)
    lower_bound_method: str = "ancestor/descendant"
    proof: str = ""

    @property
    def gap(self) -> float:
        """(peak - lower bound) / lower bound; 0 when proven optimal."""
        return (self.peak - self.lower_bound) / self.lower_bound if self.lower_bound else 0.0


def optimize_order(
    graph: Graph,
    time_limit: float = 6.0,
    progress: Progress | None = None,
    *,
    beam_width: int = 64,
    exact_states: int = 1_500_000,
    ilp_max_nodes: int = 40,
    big_graph: int = 2500,
) -> ScheduleResult:
    """The lowest-peak order found within ``time_limit`` seconds, with a lower bound and, if proven, optimality.

    Steps: stock orders (input, onnxruntime's default when available) and list
    schedules; the ancestor/descendant and last-step bounds; node and group
    moves at the peak, from three starts; the min-cut bound and the pair
    min-cut bound (both sides of a precedence choice); the nested down-set
    integer program over the nodes at the peak (a bound and an order,
    :mod:`.chain`); then, on graphs
    of at most ``big_graph`` nodes, exact DPs on relaxed regions around the
    peak (a bound), beam search, the exact DP over the whole graph (up to
    ``exact_states`` states), and on the relaxation with shared constants
    pinned, the ILP on small graphs the DP could not settle, segment
    re-solving; finally moves, exact windows and restarts from min-cut splits
    at the peak until the time is up. Stops as soon as the best
    order meets a bound. The returned order has been checked by
    :func:`olla_onnx.ir.memory.simulate`; its peak never exceeds the input order's.
    """
    from olla_onnx.schedule.bounds import final_step_bound, min_cut_bound, pair_cut_bound
    from olla_onnx.schedule.decompose import solve_segments
    from olla_onnx.schedule.fastdp import exact_order_fast as exact_order
    from olla_onnx.schedule.heuristics import RULES, beam_search, list_schedule
    from olla_onnx.schedule.local import cut_restarts, improve_moves, improve_windows
    from olla_onnx.schedule.reduce import pin_constants, reduce_graph
    from olla_onnx.schedule.relax import region_bound

    t0 = time.perf_counter()
    end = t0 + max(0.0, time_limit)
    note = progress or (lambda msg, frac: None)

    def budget(frac: float) -> float:
        now = time.perf_counter()
        return min(end, now + frac * max(0.0, end - now))

    note("reducing the graph", 0.0)
    problem = reduce_graph(graph)
    peaks: dict[str, int] = {}
    best: list[int] = graph.topological_order()
    best_peak = problem.peak(best)
    method = "input order"
    peaks[method] = problem.to_bytes(best_peak)

    starts_by_name: dict[str, list[int]] = {method: best}

    def offer(name: str, order: list[int] | None) -> None:
        nonlocal best, best_peak, method
        if order is None:
            return
        if name in ("input order", "ort default") or name.startswith("list/"):
            starts_by_name[name] = list(order)
        p = problem.peak(order)
        peaks[name] = min(peaks.get(name, problem.to_bytes(p)), problem.to_bytes(p))
        if p < best_peak:
            best, best_peak, method = list(order), p, name

    try:
        from olla_onnx.ort_facts.default_order import ort_default_order
    except ImportError:
        ort_default_order = None
    if ort_default_order is not None:
        offer("ort default", list(ort_default_order(graph)))
    note("list scheduling", 0.05)
    for rule in RULES:
        offer(f"list/{rule}", list_schedule(problem, rule))

    note("lower bound", 0.1)
    anc = ancestor_bound(graph)
    scale = problem.scale
    lb = max(0, -(-(anc.value - problem.base) // scale))  # scaled, rounded up: peaks are multiples of scale
    lb_method = anc.method
    final = final_step_bound(problem)
    if final > lb:
        lb, lb_method = final, "last step"
    proof = ""

    def done() -> bool:
        return best_peak <= lb or bool(proof)

    if not done():
        # local search from several starts: the input order (an exporter's order is often a good
        # basin), and the two best other orders; each gets an equal share of the phase
        note("moving nodes at the peak", 0.1)
        others = sorted((kv for kv in starts_by_name.items() if kv[0] != "input order"), key=lambda kv: problem.peak(kv[1]))
        starts = [starts_by_name["input order"]] + [o for _, o in others[:2]]
        phase_end = budget(0.4)
        for k, start in enumerate(starts):
            if done():
                break
            now = time.perf_counter()
            offer("moves", improve_moves(problem, start, now + (phase_end - now) / (len(starts) - k)))
    if not done():
        note("min-cut lower bound", 0.25)
        cut = min_cut_bound(problem, best, lb, budget(0.3))
        if cut.value > lb:
            lb, lb_method = cut.value, "min-cut"

    def pairs(frac: float) -> None:
        nonlocal lb, lb_method
        pb = pair_cut_bound(problem, best, lb, budget(frac))
        if pb.value > lb:
            lb, lb_method = min(pb.value, best_peak), "pair min-cut"

    if not done():
        note("min cuts on both sides of a precedence", 0.28)
        pairs(0.15)

    def chains(frac: float, rounds: int = 3) -> None:
        # the nested down-set program (CVXPY + SCIP) over the nodes at the peak: a bound, and an order
        nonlocal lb, lb_method
        from olla_onnx.ir.graph import reachability
        from olla_onnx.schedule.chain import chain_step
        from olla_onnx.schedule.reduce import topo_order

        # at least 2 s when the time allows: the first call pays for importing CVXPY (about 1 s)
        stop = min(end, max(budget(frac), time.perf_counter() + 2.0))
        reach = None
        for _ in range(rounds):
            if done() or time.perf_counter() >= stop:
                return
            before = best_peak
            if reach is None:
                reach = reachability(problem.preds, problem.succs, topo_order(problem))
            new, bound = chain_step(problem, best, lb, stop, reach=reach)
            if bound > lb:
                lb, lb_method = min(bound, best_peak), "nested down-sets"
            if new is None:
                return
            offer("nested down-sets", new)
            if not done():
                offer("nested down-sets", improve_moves(problem, best, min(stop, time.perf_counter() + 0.5)))
            if best_peak >= before:
                return

    # on big graphs (thousands of nodes: the full-size corpus) the whole-graph DPs, the beam, the
    # segments and the nested down-set program rarely pay; their time goes to the moves and restarts
    # of the loop below
    small = problem.n <= big_graph

    def heavy_peak() -> bool:
        # the program pays where a node's own outputs (a kernel workspace, say) are a large part of the
        # peak, so that a few such nodes each need a low-load moment; elsewhere it costs ~1 s for nothing
        live = problem.live_per_step(best)
        top = [best[int(st)] for st in np.argsort(-live, kind="stable")[:4]]
        return max(sum(problem.size[t] for t in problem.outs[v]) for v in top) * 4 >= best_peak

    if not done() and small and heavy_peak():
        note("nested down-sets at the peak (integer program)", 0.29)
        chains(0.2)

    def regions(frac: float) -> None:
        nonlocal lb, lb_method
        rb = region_bound(problem, best, budget(frac), at_least=lb)
        if rb.value > lb:
            lb, lb_method = min(rb.value, best_peak), "region dp"

    if not done() and small:
        note("exact search on relaxed regions", 0.3)
        regions(0.3)
    if not done() and small:
        note("beam search", 0.35)
        offer("beam", beam_search(problem, best, beam_width, budget(0.15)))
    if not done() and small:
        note("exact search over down-sets", 0.45)
        # wide graphs rarely finish: keep most of the time for the local search there
        res = exact_order(problem, best, best_peak, budget(0.75 if problem.n <= 1000 else 0.2), exact_states)
        offer("dp", list(res.order) if res.order is not None else None)
        if res.exhaustive:
            proof = "dp"
            lb, lb_method = best_peak, "dp"
    relaxed = pin_constants(problem, lb // 1000) if not done() and small else None
    if relaxed is not None and time.perf_counter() < end:
        # exact DP on the relaxation with shared constants pinned: an order, and opt >= opt' - slack
        note("exact search, constants pinned", 0.6)
        rp, slack = relaxed
        upper_r = rp.peak(best)
        res = exact_order(rp, best, upper_r, budget(0.6 if problem.n <= 1000 else 0.2), exact_states)
        offer("dp (constants pinned)", list(res.order) if res.order is not None else None)
        if res.exhaustive:
            opt_r = res.window_peak if res.order is not None else upper_r
            if opt_r - slack > lb:
                lb, lb_method = min(opt_r - slack, best_peak), "dp (constants pinned) - slack"
    if not done() and problem.n <= ilp_max_nodes and time.perf_counter() < end:
        note("integer program", 0.7)
        from olla_onnx.schedule.ilp import solve_ilp

        ires = solve_ilp(problem, best, deadline=budget(0.5))
        offer("ilp", ires.order)
        if ires.optimal and ires.peak is not None and ires.peak >= best_peak:
            proof = "ilp"
        if ires.bound is not None and ires.bound > lb:
            lb, lb_method = min(ires.bound, best_peak), "ilp"
    if not done() and small and time.perf_counter() < end:
        note("segments", 0.8)
        offer("segments", solve_segments(problem, best, budget(0.4)))
    if not done() and not small and time.perf_counter() < end:
        note("restarts from min-cut splits at the peak", 0.85)
        offer("cut restarts", cut_restarts(problem, best, budget(0.5)))
    while not done() and time.perf_counter() < end:
        note("windows and moves around the peak", 0.9)
        before = best_peak
        offer("moves", improve_moves(problem, best, budget(0.5)))
        offer("windows", improve_windows(problem, best, budget(0.5)))
        if best_peak == before and not done() and time.perf_counter() < end:
            note("restarts from min-cut splits at the peak", 0.9)
            offer("cut restarts", cut_restarts(problem, best, budget(0.4)))
            if best_peak < before:
                continue
        if best_peak == before and time.perf_counter() < end:
            offer("windows", improve_windows(problem, best, budget(0.7), sizes=(24, 48, 96, 160, 256), max_total=2_000_000))
            if not done() and time.perf_counter() < end:
                note("min cuts on both sides of a precedence", 0.95)
                pairs(0.5)
            if not done() and small and heavy_peak() and time.perf_counter() < end:
                note("nested down-sets at the peak (integer program)", 0.96)
                chains(0.5)
            if not done() and time.perf_counter() < end:
                note("exact search on relaxed regions", 0.97)
                regions(1.0)
            break

    sim = simulate(graph, best, validate=True)  # the referee
    if sim.peak != problem.to_bytes(best_peak):
        raise AssertionError(f"reduced peak {problem.to_bytes(best_peak)} != simulated {sim.peak}")
    lower = problem.to_bytes(min(lb, best_peak))
    optimal = bool(proof) or best_peak <= lb
    if optimal and not proof:
        proof = "bound"
    note("done", 1.0)
    return ScheduleResult(
        order=tuple(best),
        peak=sim.peak,
        lower_bound=lower,
        optimal=optimal,
        method=method,
        seconds=time.perf_counter() - t0,
        peaks=peaks,
        lower_bound_method=lb_method,
        proof=proof,
    )


__all__ = ["ScheduleResult", "optimize_order"]
