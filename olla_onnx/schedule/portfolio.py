"""The order-search portfolio: :func:`optimize_order` runs the methods of :mod:`olla_onnx.schedule` in turn.

The stages share one state (:class:`_Search`: the problem, the deadline, the best order, the best
bound). Past the first three, a stage runs only while the best order is above the bound, and its
deadline is a fixed share of the time *left* when it starts (``now + share * (end - now)``, never
past the end): time a stage does not use goes to the next ones. The shares were set on the ordering
benchmark (``benchmarks/ordering.py``, 6 s default limit, 2 shared cores); the commit named with
each is where its value came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from olla_onnx.ir.graph import Graph, reachability
from olla_onnx.ir.memory import ancestor_bound, simulate
from olla_onnx.ort_facts.default_order import ort_default_order
from olla_onnx.progress import Progress, silent
from olla_onnx.schedule.bounds import final_step_bound, min_cut_bound, pair_cut_bound
from olla_onnx.schedule.chain import chain_step
from olla_onnx.schedule.decompose import solve_segments
from olla_onnx.schedule.fastdp import exact_order_fast as exact_order
from olla_onnx.schedule.heuristics import RULES, beam_search, list_schedule
from olla_onnx.schedule.ilp import solve_ilp
from olla_onnx.schedule.local import cut_restarts, improve_moves, improve_windows
from olla_onnx.schedule.reduce import Problem, pin_constants, reduce_graph, topo_order
from olla_onnx.schedule.relax import region_bound

#: Moves at the peak from the input order (an exporter's order is often a good basin) and the
#: MOVES_OTHER_STARTS best other orders, split equally. The first search stage, the cheapest large win
#: on the corpus (deferred weight-gradient branches; 0.35 in 38e3b91, 0.4 once three starts shared it, b91d2a0).
MOVES_SHARE = 0.4
MOVES_OTHER_STARTS = 2
#: The per-node min-cut bound: often proves the moved order at once (ResNet-18), and then nothing else
#: runs; 0.3 since it moved before the beam (38e3b91; 0.2 before).
MIN_CUT_SHARE = 0.3
#: The pair min-cut bound, first pass: a bound only, kept short (07d420a; proves VGG-16 within rounding).
PAIR_CUT_SHARE = 0.15
#: The nested down-set program (CVXPY + SCIP) at the peak, first pass (4fc3760; proves cnn_tiny), but at
#: least CHAIN_MIN_SECONDS when the time allows: the first call pays for importing CVXPY (about 1 s).
#: At most CHAIN_ROUNDS rounds, while each lowers the peak; each new order is repaired by
#: CHAIN_REPAIR_SECONDS of moves (other steps than the old peak may rise).
CHAIN_SHARE = 0.2
CHAIN_MIN_SECONDS = 2.0
CHAIN_ROUNDS = 3
CHAIN_REPAIR_SECONDS = 0.5
#: The program runs only where a node at one of the HEAVY_PEAK_NODES highest steps makes 1/HEAVY_PEAK_RATIO
#: of the peak or more itself (a kernel workspace): such nodes each need a low-load moment; elsewhere it
#: cost ~1-2 s for nothing (b47dcd5).
HEAVY_PEAK_NODES = 4
HEAVY_PEAK_RATIO = 4
#: Exact DPs on relaxed regions around the peak, first pass: a bound (d1dd5d9; proves the layered
#: n1000/n2000 width-10 DAGs).
REGION_SHARE = 0.3
#: Beam search (``beam_width`` states per level), since the first version (4353533).
BEAM_SHARE = 0.15
#: The exact DP over the whole graph, a proof when it finishes: most of the time left on graphs of up to
#: WIDE_GRAPH nodes (0.6 in 4353533, 0.75 with the 6 s default, effd994); wider graphs rarely finish, so
#: there the time stays for the local search (b91d2a0). The same for the DP with shared constants pinned
#: (da3d323), whose constants add at most 1/PIN_SLACK_DIVISOR of the bound (the bound opt' - slack it
#: gives loses at most 0.1% to them).
DP_SHARE = 0.75
DP_SHARE_WIDE = 0.2
WIDE_GRAPH = 1000
PINNED_DP_SHARE = 0.6
PINNED_DP_SHARE_WIDE = 0.2
PIN_SLACK_DIVISOR = 1000
#: The time-indexed ILP on graphs of at most ``ilp_max_nodes`` nodes the DP did not settle (4353533).
ILP_SHARE = 0.5
#: Segments of the best order re-solved apart (4353533).
SEGMENTS_SHARE = 0.4
#: Graphs over ``big_graph`` nodes: restarts from min-cut splits before the final loop instead of after
#: it stalls (b47dcd5: mobilenetv2_tiny proven in 6 s, 3 of 3 runs; was 0.6-2.8%).
BIG_RESTARTS_SHARE = 0.5
#: The final loop: moves, then exact windows, each half of the time left (4831af2), so the loop goes
#: round again while they gain; when a round gains nothing, restarts from min-cut splits (fb089bf).
LOOP_MOVES_SHARE = 0.5
LOOP_WINDOWS_SHARE = 0.5
LOOP_RESTARTS_SHARE = 0.4
#: When those gain nothing either: wider windows with more states (d1dd5d9, widened in fb089bf), leaving
#: 0.3 of the time to the last bounds: pair min cuts (07d420a), the nested down-set program (4fc3760) and
#: the region DPs, which take all that is left (d1dd5d9).
WIDE_WINDOWS_SHARE = 0.7
WIDE_WINDOW_SIZES = (24, 48, 96, 160, 256)
WIDE_WINDOW_STATES = 2_000_000
LAST_PAIR_CUT_SHARE = 0.5
LAST_CHAIN_SHARE = 0.5
LAST_REGION_SHARE = 1.0

#: What ``progress`` is told as each stage starts: (message, fraction). The fractions are positions in
#: the stage list, not measured time (stages end early, are skipped or repeat); they never decrease.
PROGRESS_MARKS: dict[str, tuple[str, float]] = {
    "reduce": ("reducing the graph", 0.0),
    "list": ("list scheduling", 0.05),
    "bounds": ("lower bound", 0.1),
    "moves": ("moving nodes at the peak", 0.1),
    "min-cut": ("min-cut lower bound", 0.25),
    "pair min-cut": ("min cuts on both sides of a precedence", 0.28),
    "chains": ("nested down-sets at the peak (integer program)", 0.29),
    "regions": ("exact search on relaxed regions", 0.3),
    "beam": ("beam search", 0.35),
    "dp": ("exact search over down-sets", 0.45),
    "pinned dp": ("exact search, constants pinned", 0.6),
    "ilp": ("integer program", 0.7),
    "segments": ("segments", 0.8),
    "big restarts": ("restarts from min-cut splits at the peak", 0.85),
    "loop": ("windows and moves around the peak", 0.9),
    "loop restarts": ("restarts from min-cut splits at the peak", 0.9),
    "last pair min-cut": ("min cuts on both sides of a precedence", 0.95),
    "last chains": ("nested down-sets at the peak (integer program)", 0.96),
    "last regions": ("exact search on relaxed regions", 0.97),
    "done": ("done", 1.0),
}

#: Orders kept as starts for the moves (with the list schedules, ``list/<rule>``).
_STOCK = ("input order", "ort default")


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

    Stages, in order (module, and what each gives; "small": at most ``big_graph`` nodes):

    1. the compact problem (:mod:`.reduce`); the input order is the first incumbent;
    2. onnxruntime's default order (:mod:`olla_onnx.ort_facts.default_order`) and the list
       schedules of every rule (:mod:`.heuristics`): orders, O((n + E) log n) each;
    3. the ancestor/descendant bound (:mod:`olla_onnx.ir.memory`) and the last-step bound
       (:mod:`.bounds`), O(n + E); from here on every stage is skipped once the best
       order meets the bound;
    4. node and group moves at the peak (:mod:`.local`) from the input order and the two
       best other orders: ``MOVES_SHARE``;
    5. the per-node min-cut bound (:mod:`.bounds`; a max flow per node tried): ``MIN_CUT_SHARE``;
    6. the pair min-cut bound (:mod:`.bounds`; four max flows per pair): ``PAIR_CUT_SHARE``;
    7. small graphs whose peak nodes make a large part of the peak: the nested down-set
       program at the peak (:mod:`.chain`, CVXPY + SCIP), a bound and an order repaired by
       moves: ``CHAIN_SHARE``, at least ``CHAIN_MIN_SECONDS``;
    8. small graphs: exact DPs on relaxed regions around the peak (:mod:`.relax`), a bound:
       ``REGION_SHARE``;
    9. small graphs: beam search (:mod:`.heuristics`), an order: ``BEAM_SHARE``;
    10. small graphs: the exact DP over the whole graph (:mod:`.fastdp`, up to
        ``exact_states`` states), the optimum when it finishes: ``DP_SHARE``;
    11. small graphs: the same DP with shared constants pinned (:mod:`.reduce`,
        :mod:`.fastdp`), an order and the bound ``opt' - slack``: ``PINNED_DP_SHARE``;
    12. graphs of at most ``ilp_max_nodes`` nodes: the time-indexed ILP (:mod:`.ilp`,
        CVXPY + SCIP), an order, a bound, the optimum when SCIP proves it: ``ILP_SHARE``;
    13. small graphs: segments re-solved apart (:mod:`.decompose`): ``SEGMENTS_SHARE``;
    14. big graphs: restarts from min-cut splits at the peak (:mod:`.local`): ``BIG_RESTARTS_SHARE``;
    15. until the time is up: moves and exact windows around the peak (:mod:`.local`); when a
        round gains nothing, restarts from min-cut splits; when those gain nothing, wider
        windows, then the last bounds (stages 6, 7 and 8 again) and the end.

    Guarantees: the returned order has been checked by :func:`olla_onnx.ir.memory.simulate`;
    its peak never exceeds the input order's; ``lower_bound`` holds for every order and
    ``optimal`` is True only with a proof. Cost: stages 1-3 always run (near-linear); the
    others stop at their deadlines, all within ``time_limit`` seconds, but for a step that
    overruns its own (SCIP's model building, one DP level); then one simulation.
    """
    t0 = time.perf_counter()
    end = t0 + max(0.0, time_limit)
    s = _Search.start(graph, end, progress or silent, big_graph)
    s.stock_orders(graph)
    s.first_bounds(graph)
    if not s.done():
        s.moves_from_starts()
    if not s.done():
        s.min_cut()
    if not s.done():
        s.pair_cuts(PAIR_CUT_SHARE, "pair min-cut")
    if not s.done() and s.small and s.heavy_peak():
        s.chains(CHAIN_SHARE, "chains")
    if not s.done() and s.small:
        s.regions(REGION_SHARE, "regions")
    if not s.done() and s.small:
        s.beam(beam_width)
    if not s.done() and s.small:
        s.whole_dp(exact_states)
    if not s.done() and s.small:
        s.pinned_dp(exact_states)
    if not s.done() and s.problem.n <= ilp_max_nodes and s.time_left():
        s.ilp()
    if not s.done() and s.small and s.time_left():
        s.segments()
    if not s.done() and not s.small and s.time_left():
        s.big_restarts()
    s.final_loop()
    return s.result(graph, t0)


@dataclass
class _Search:
    """What the stages share: the problem, the deadline, the best order and the best bound so far.

    Peaks and bounds are scaled (``problem.to_bytes`` gives bytes); ``peaks`` is in bytes.
    """

    problem: Problem
    end: float  # the deadline, a time.perf_counter() value
    note: Progress
    small: bool  # at most big_graph nodes: the whole-graph stages run
    best: list[int]
    best_peak: int
    method: str
    peaks: dict[str, int]
    starts: dict[str, list[int]]  # the stock orders and list schedules: starts of the moves
    lb: int = 0
    lb_method: str = ""
    proof: str = ""

    @classmethod
    def start(cls, graph: Graph, end: float, note: Progress, big_graph: int) -> _Search:
        note(*PROGRESS_MARKS["reduce"])
        problem = reduce_graph(graph)
        best = graph.topological_order()
        best_peak = problem.peak(best)
        method = "input order"
        return cls(problem, end, note, problem.n <= big_graph, best, best_peak, method,
                   {method: problem.to_bytes(best_peak)}, {method: best})

    def say(self, stage: str) -> None:
        self.note(*PROGRESS_MARKS[stage])

    def budget(self, share: float) -> float:
        """The deadline ``share`` of the way from now to the end."""
        now = time.perf_counter()
        return min(self.end, now + share * max(0.0, self.end - now))

    def time_left(self) -> bool:
        return time.perf_counter() < self.end

    def done(self) -> bool:
        """The best order meets the bound, or a method proved it optimal."""
        return self.best_peak <= self.lb or bool(self.proof)

    def offer(self, name: str, order: list[int] | None) -> None:
        """Keep ``order`` if it beats the best; record each method's best peak."""
        if order is None:
            return
        if name in _STOCK or name.startswith("list/"):
            self.starts[name] = list(order)
        p = self.problem.peak(order)
        self.peaks[name] = min(self.peaks.get(name, self.problem.to_bytes(p)), self.problem.to_bytes(p))
        if p < self.best_peak:
            self.best, self.best_peak, self.method = list(order), p, name

    def raise_bound(self, value: int, method: str, cap: bool = True) -> None:
        """Keep ``value`` as the bound if it is higher; capped at the best peak unless ``cap`` is False."""
        if value > self.lb:
            self.lb, self.lb_method = (min(value, self.best_peak) if cap else value), method

    def heavy_peak(self) -> bool:
        """A node at one of the highest steps makes a large part of the peak itself (see HEAVY_PEAK_NODES)."""
        p = self.problem
        live = p.live_per_step(self.best)
        top = [self.best[int(st)] for st in np.argsort(-live, kind="stable")[:HEAVY_PEAK_NODES]]
        return max(sum(p.size[t] for t in p.outs[v]) for v in top) * HEAVY_PEAK_RATIO >= self.best_peak

    # the stages, in the order optimize_order runs them

    def stock_orders(self, graph: Graph) -> None:
        self.offer("ort default", list(ort_default_order(graph)))
        self.say("list")
        for rule in RULES:
            self.offer(f"list/{rule}", list_schedule(self.problem, rule))

    def first_bounds(self, graph: Graph) -> None:
        self.say("bounds")
        p = self.problem
        anc = ancestor_bound(graph)
        self.lb = max(0, -(-(anc.value - p.base) // p.scale))  # scaled, rounded up: peaks are multiples of scale
        self.lb_method = anc.method
        self.raise_bound(final_step_bound(p), "last step", cap=False)

    def moves_from_starts(self) -> None:
        self.say("moves")
        p = self.problem
        others = sorted((kv for kv in self.starts.items() if kv[0] != "input order"), key=lambda kv: p.peak(kv[1]))
        starts = [self.starts["input order"]] + [o for _, o in others[:MOVES_OTHER_STARTS]]
        phase_end = self.budget(MOVES_SHARE)
        for k, start in enumerate(starts):
            if self.done():
                break
            now = time.perf_counter()
            self.offer("moves", improve_moves(p, start, now + (phase_end - now) / (len(starts) - k)))

    def min_cut(self) -> None:
        self.say("min-cut")
        cut = min_cut_bound(self.problem, self.best, self.lb, self.budget(MIN_CUT_SHARE))
        self.raise_bound(cut.value, "min-cut", cap=False)

    def pair_cuts(self, share: float, stage: str) -> None:
        self.say(stage)
        pb = pair_cut_bound(self.problem, self.best, self.lb, self.budget(share))
        self.raise_bound(pb.value, "pair min-cut")

    def chains(self, share: float, stage: str) -> None:
        self.say(stage)
        stop = min(self.end, max(self.budget(share), time.perf_counter() + CHAIN_MIN_SECONDS))
        reach = None
        for _ in range(CHAIN_ROUNDS):
            if self.done() or time.perf_counter() >= stop:
                return
            before = self.best_peak
            if reach is None:
                reach = reachability(self.problem.preds, self.problem.succs, topo_order(self.problem))
            new, bound = chain_step(self.problem, self.best, self.lb, stop, reach=reach)
            self.raise_bound(bound, "nested down-sets")
            if new is None:
                return
            self.offer("nested down-sets", new)
            if not self.done():
                repair_end = min(stop, time.perf_counter() + CHAIN_REPAIR_SECONDS)
                self.offer("nested down-sets", improve_moves(self.problem, self.best, repair_end))
            if self.best_peak >= before:
                return

    def regions(self, share: float, stage: str) -> None:
        self.say(stage)
        rb = region_bound(self.problem, self.best, self.budget(share), at_least=self.lb)
        self.raise_bound(rb.value, "region dp")

    def beam(self, width: int) -> None:
        self.say("beam")
        self.offer("beam", beam_search(self.problem, self.best, width, self.budget(BEAM_SHARE)))

    def whole_dp(self, states: int) -> None:
        self.say("dp")
        share = DP_SHARE if self.problem.n <= WIDE_GRAPH else DP_SHARE_WIDE
        res = exact_order(self.problem, self.best, self.best_peak, self.budget(share), states)
        self.offer("dp", list(res.order) if res.order is not None else None)
        if res.exhaustive:
            self.proof = "dp"
            self.lb, self.lb_method = self.best_peak, "dp"

    def pinned_dp(self, states: int) -> None:
        # exact DP on the relaxation with shared constants pinned: an order, and opt >= opt' - slack
        relaxed = pin_constants(self.problem, self.lb // PIN_SLACK_DIVISOR)
        if relaxed is None or not self.time_left():
            return
        self.say("pinned dp")
        rp, slack = relaxed
        upper_r = rp.peak(self.best)
        share = PINNED_DP_SHARE if self.problem.n <= WIDE_GRAPH else PINNED_DP_SHARE_WIDE
        res = exact_order(rp, self.best, upper_r, self.budget(share), states)
        self.offer("dp (constants pinned)", list(res.order) if res.order is not None else None)
        if res.exhaustive:
            opt_r = res.window_peak if res.order is not None else upper_r
            self.raise_bound(opt_r - slack, "dp (constants pinned) - slack")

    def ilp(self) -> None:
        self.say("ilp")
        ires = solve_ilp(self.problem, self.best, deadline=self.budget(ILP_SHARE))
        self.offer("ilp", ires.order)
        if ires.optimal and ires.peak is not None and ires.peak >= self.best_peak:
            self.proof = "ilp"
        if ires.bound is not None:
            self.raise_bound(ires.bound, "ilp")

    def segments(self) -> None:
        self.say("segments")
        self.offer("segments", solve_segments(self.problem, self.best, self.budget(SEGMENTS_SHARE)))

    def big_restarts(self) -> None:
        self.say("big restarts")
        self.offer("cut restarts", cut_restarts(self.problem, self.best, self.budget(BIG_RESTARTS_SHARE)))

    def final_loop(self) -> None:
        """Moves and windows while they gain; then restarts; then wider windows and the last bounds."""
        p = self.problem
        while not self.done() and self.time_left():
            self.say("loop")
            before = self.best_peak
            self.offer("moves", improve_moves(p, self.best, self.budget(LOOP_MOVES_SHARE)))
            self.offer("windows", improve_windows(p, self.best, self.budget(LOOP_WINDOWS_SHARE)))
            if self.best_peak == before and not self.done() and self.time_left():
                self.say("loop restarts")
                self.offer("cut restarts", cut_restarts(p, self.best, self.budget(LOOP_RESTARTS_SHARE)))
                if self.best_peak < before:
                    continue
            if self.best_peak == before and self.time_left():
                wide_end = self.budget(WIDE_WINDOWS_SHARE)
                self.offer("windows", improve_windows(p, self.best, wide_end, sizes=WIDE_WINDOW_SIZES, max_total=WIDE_WINDOW_STATES))
                if not self.done() and self.time_left():
                    self.pair_cuts(LAST_PAIR_CUT_SHARE, "last pair min-cut")
                if not self.done() and self.small and self.heavy_peak() and self.time_left():
                    self.chains(LAST_CHAIN_SHARE, "last chains")
                if not self.done() and self.time_left():
                    self.regions(LAST_REGION_SHARE, "last regions")
                break

    def result(self, graph: Graph, t0: float) -> ScheduleResult:
        """The best order, checked by the simulator (the referee), with its bound and proof."""
        p = self.problem
        sim = simulate(graph, self.best, validate=True)
        if sim.peak != p.to_bytes(self.best_peak):
            raise AssertionError(f"reduced peak {p.to_bytes(self.best_peak)} != simulated {sim.peak}")
        lower = p.to_bytes(min(self.lb, self.best_peak))
        optimal = bool(self.proof) or self.best_peak <= self.lb
        proof = self.proof or ("bound" if optimal else "")
        self.say("done")
        return ScheduleResult(
            order=tuple(self.best),
            peak=sim.peak,
            lower_bound=lower,
            optimal=optimal,
            method=self.method,
            seconds=time.perf_counter() - t0,
            peaks=self.peaks,
            lower_bound_method=self.lb_method,
            proof=proof,
        )
