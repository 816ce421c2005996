"""Ordering: every method against brute force on tiny DAGs and against the simulator on random ones."""

import random
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dags import all_topological_orders, random_graphs, random_topological_order
from olla_onnx.formats.nodelink import graph_from_node_link
from olla_onnx.ir.graph import is_topological
from olla_onnx.ir.memory import ancestor_bound, simulate
from olla_onnx.schedule import optimize_order
from olla_onnx.schedule.bounds import _CutNetwork, final_step_bound, min_cut_bound, pair_cut_bound
from olla_onnx.schedule.decompose import solve_segments
from olla_onnx.schedule.dp import exact_order, solve_window
from olla_onnx.schedule.heuristics import RULES, beam_search, list_schedule
from olla_onnx.schedule.local import _FastLive, cut_restarts, improve_moves, improve_windows
from olla_onnx.formats.nodelink import graph_to_node_link as to_node_link
from olla_onnx.synthetic import layered_dag, training_graph
from olla_onnx.schedule.reduce import reduce_graph, windows


def brute_force(g):
    return min(simulate(g, o, validate=False).peak for o in all_topological_orders(g))


@settings(max_examples=150, deadline=None)
@given(random_graphs(max_nodes=12))
def test_reduced_peak_equals_simulator(g):
    p = reduce_graph(g)
    order = g.topological_order()
    assert p.to_bytes(p.peak(order)) == simulate(g, order).peak
    live = p.live_per_step(order)
    if g.num_nodes:
        assert (p.base + p.scale * live == simulate(g, order).live).all()


@settings(max_examples=120, deadline=None)
@given(random_graphs(max_nodes=8))
def test_exact_dp_equals_brute_force(g):
    p = reduce_graph(g)
    inc = g.topological_order()
    res = exact_order(p, inc, upper=p.peak(inc) + 1)  # allow ties, so an order always comes back
    assert res.exhaustive and res.order is not None
    assert is_topological(g, res.order)
    assert simulate(g, res.order).peak == brute_force(g) == p.to_bytes(res.window_peak) == subset_brute_force(g)


@settings(max_examples=120, deadline=None)
@given(random_graphs(max_nodes=8))
def test_optimize_order_is_optimal_on_tiny_graphs(g):
    r = optimize_order(g, time_limit=5)
    assert simulate(g, r.order).peak == r.peak == brute_force(g)
    assert r.optimal and r.proof and r.lower_bound == r.peak


@settings(max_examples=100, deadline=None)
@given(random_graphs(max_nodes=8))
def test_min_cut_per_node_equals_best_over_orders(g):
    """The min cut for node v is exactly the least live total any order has while v runs."""
    p = reduce_graph(g)
    if p.n == 0 or sum(p.size) == 0:
        return
    net = _CutNetwork(p)
    assert net.q == 1
    best = [None] * p.n
    for o in all_topological_orders(g):
        live = p.live_per_step(o)
        for s, v in enumerate(o):
            best[v] = live[s] if best[v] is None else min(best[v], live[s])
    order = g.topological_order()
    for v in range(p.n):
        fixed = sum(p.size[t] for t in set(p.outs[v]) | set(p.ins[v]))
        assert fixed + net.min_cut(p, v) == best[v]
        # the cut's down-set attains it: run it first (v last), then the rest
        value, down = net.min_cut(p, v, want_set=True)
        first = [u for u in order if down >> u & 1 and u != v] + [v]
        split = first + [u for u in order if not down >> u & 1]
        assert is_topological(g, split) and not down & net.desc[v]
        assert fixed + value == best[v] == p.live_per_step(split)[len(first) - 1]


@settings(max_examples=100, deadline=None)
@given(random_graphs(max_nodes=8))
def test_bounds_are_sound_and_ordered(g):
    p = reduce_graph(g)
    opt = brute_force(g)
    anc = ancestor_bound(g).value
    cut = p.to_bytes(min_cut_bound(p).value)
    cut_pruned = p.to_bytes(min_cut_bound(p, g.topological_order()).value)
    assert anc <= cut <= opt
    assert cut_pruned == cut
    if p.n >= 2:
        assert p.to_bytes(pair_cut_bound(p, g.topological_order(), heads=4, partners=4, group=4).value) <= opt
    assert p.to_bytes(final_step_bound(p)) <= opt if p.n else True
    # the last-step bound is exact for the last step: some order's last step holds exactly that much
    if p.n:
        last = min(int(p.live_per_step(o)[-1]) for o in all_topological_orders(g))
        assert final_step_bound(p) == last


@settings(max_examples=40, deadline=None)
@given(random_graphs(max_nodes=7))
def test_pair_bound_is_sound_for_every_pair(g):
    """Every incomparable pair's bound lies between the two per-node min cuts and the optimum,
    and each of its cases bounds the orders that take that case."""
    import itertools

    from olla_onnx.schedule.bounds import _pair_value, _set_order_value

    p = reduce_graph(g)
    if p.n < 2 or sum(p.size) == 0:
        return
    net = _CutNetwork(p)
    fixed = [sum(p.size[t] for t in set(p.outs[v]) | set(p.ins[v])) for v in range(p.n)]
    orders = list(all_topological_orders(g))
    opt = min(p.peak(o) for o in orders)
    for a in range(p.n):
        for b in range(p.n):
            if a == b or (net.anc[a] | net.desc[a]) >> b & 1:
                continue
            val = _pair_value(p, net, fixed, a, b)
            assert max(fixed[a] + net.min_cut(p, a), fixed[b] + net.min_cut(p, b)) <= val <= opt
            a_first = _pair_value(p, net, fixed, a, b, at_least=10**12)  # the case "a before b" alone
            assert a_first <= min(p.peak(o) for o in orders if o.index(a) < o.index(b))
    # any set of nodes, ordered every way the graph allows: between its pairs' bounds and the optimum
    for trio in itertools.islice(itertools.combinations(range(p.n), 3), 8):
        val = _set_order_value(p, net, fixed, list(trio))
        assert val <= opt
        for a, b in itertools.combinations(trio, 2):
            if not (net.anc[a] | net.desc[a]) >> b & 1:
                assert _pair_value(p, net, fixed, a, b) <= val


@settings(max_examples=80, deadline=None)
@given(random_graphs(max_nodes=14), st.integers(0, 13), st.integers(1, 8))
def test_window_dp_is_exact_on_its_window(g, a, k):
    """Re-solving a window gives the best order among those that permute only that window."""
    p = reduce_graph(g)
    order = g.topological_order()
    n = p.n
    a = min(a, max(0, n - 1))
    b = min(n, a + k)
    res = solve_window(p, order, a, b, p.peak(order) + 1)
    assert res.exhaustive and res.order is not None
    assert is_topological(g, res.order) and list(res.order[:a]) == order[:a] and list(res.order[b:]) == order[b:]
    # brute force over the window: all topological orders of the whole graph that keep the outside fixed
    best = min(
        p.peak(o) for o in all_topological_orders_fixed(g, order, a, b)
    )
    assert p.peak(res.order) == best


def all_topological_orders_fixed(g, order, a, b):
    import itertools

    inside = order[a:b]
    for perm in itertools.permutations(inside):
        o = order[:a] + list(perm) + order[b:]
        if is_topological(g, o):
            yield o


@settings(max_examples=80, deadline=None)
@given(random_graphs(max_nodes=20))
def test_every_method_returns_valid_orders_never_worse(g):
    p = reduce_graph(g)
    inc = g.topological_order()
    for rule in RULES:
        assert is_topological(g, list_schedule(p, rule))
    b = beam_search(p, inc, 4)
    if b is not None:
        assert is_topological(g, b) and p.peak(b) < p.peak(inc)
    far = time.perf_counter() + 5
    for o in (
        improve_windows(p, inc, far, sizes=(3, 5)),
        solve_segments(p, inc, far, segment=4),
        improve_moves(p, inc, far),
        cut_restarts(p, inc, far, rounds=3),
    ):
        assert is_topological(g, o) and p.peak(o) <= p.peak(inc)
    if p.n:
        pos = np.empty(p.n, dtype=np.int64)
        pos[np.asarray(inc)] = np.arange(p.n)
        assert (_FastLive(p).live(pos) == p.live_per_step(inc)).all()


def test_windows_are_sound():
    g = layered_dag(30, width=4, seed=3)
    p = reduce_graph(g)
    asap, alap = windows(p)
    rnd = random.Random(0)
    for _ in range(50):  # random topological orders stay inside the windows
        order = random_topological_order(g, rnd)
        for s, v in enumerate(order):
            assert asap[v] <= s <= alap[v]


@pytest.mark.parametrize("seed", [0, 1])
def test_ilp_equals_brute_force(seed):
    from olla_onnx.schedule.ilp import solve_ilp

    g = layered_dag(8, width=3, seed=seed)
    p = reduce_graph(g)
    res = solve_ilp(p, list_schedule(p), time.perf_counter() + 30)
    assert res.optimal and res.status == "optimal"
    opt = brute_force(g)
    assert p.to_bytes(res.peak) == opt and p.to_bytes(res.bound) == opt
    assert is_topological(g, res.order)


def test_ilp_time_limit_is_not_a_proof():
    from olla_onnx.schedule.ilp import solve_ilp

    g = layered_dag(60, width=6, seed=4)
    p = reduce_graph(g)
    inc = list_schedule(p)
    res = solve_ilp(p, inc, time.perf_counter() + 0.5)
    assert not res.optimal and res.status != "optimal"
    if res.order is not None:
        assert is_topological(g, res.order) and res.peak <= p.peak(inc)
    if res.bound is not None:
        assert res.bound <= p.peak(inc)


def test_training_graph_updates_run_early_and_are_proven():
    g = training_graph(12, seed=3, param_kib=(512, 2048))
    r = optimize_order(g, time_limit=10)
    assert r.optimal
    assert r.peak <= simulate(g, g.topological_order()).peak
    pos = {g.nodes[v].name: s for s, v in enumerate(r.order)}
    # the largest gradient's update comes before the backward pass ends
    assert min(pos[f"upd{i}"] for i in range(12)) < pos["bw0"]


def test_layered_dag_generator_and_node_link_round_trip():
    g = layered_dag(200, width=6, seed=7)
    assert g.num_nodes == 200
    assert any(len(c) > 1 for c in g.consumers.values())
    h = graph_from_node_link(to_node_link(g))
    assert h.num_nodes == 200
    order = g.topological_order()
    assert simulate(h, order).peak == simulate(g, order).peak
    assert layered_dag(200, width=6, seed=7).tensors == g.tensors  # deterministic


def test_optimize_order_medium_graph_never_worse_than_stock():
    g = layered_dag(300, width=6, seed=11)
    r = optimize_order(g, time_limit=5)
    assert is_topological(g, r.order)
    assert r.peak <= r.peaks["input order"] and r.lower_bound <= r.peak
    if "ort default" in r.peaks:
        assert r.peak <= r.peaks["ort default"]


@st.composite
def graphs_with_free_sources(draw):
    """Random DAGs where many nodes read only resident tensors (transposes of weights, scaled state)."""
    from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind

    n = draw(st.integers(2, 8))
    tensors = [Tensor("w", draw(st.integers(0, 30)), TensorKind.PARAMETER)]
    made: list[str] = []
    nodes = []
    for i in range(n):
        if not made or draw(st.booleans()):
            ins = ("w",)
        else:
            ins = tuple(draw(st.lists(st.sampled_from(made), min_size=1, max_size=3)))
        name = f"t{i}"
        tensors.append(Tensor(name, draw(st.integers(1, 60))))
        nodes.append(Node(f"n{i}", "op", ins, (name,)))
        made.append(name)
    outs = draw(st.lists(st.sampled_from(made), max_size=2, unique=True))
    return Graph.build(nodes, tensors, outs)


@pytest.mark.parametrize("dp", ["dict", "numpy"])
@settings(max_examples=150, deadline=None)
@given(g=graphs_with_free_sources())
def test_exact_dp_with_deferrable_sources_equals_brute_force(dp, g):
    from olla_onnx.schedule.fastdp import exact_order_fast

    p = reduce_graph(g)
    inc = g.topological_order()
    res = (exact_order if dp == "dict" else exact_order_fast)(p, inc, upper=p.peak(inc) + 1)
    assert res.exhaustive and res.order is not None
    assert simulate(g, res.order).peak == brute_force(g)


@settings(max_examples=150, deadline=None)
@given(graphs_with_free_sources())
def test_pinned_constants_relaxation_is_sound(g):
    from olla_onnx.schedule.reduce import pin_constants

    p = reduce_graph(g)
    relaxed = pin_constants(p, 10**9)
    if relaxed is None:
        return
    rp, slack = relaxed
    for o in all_topological_orders(g):
        assert p.peak(o) <= rp.peak(o) <= p.peak(o) + slack
    inc = g.topological_order()
    res = exact_order(rp, inc, rp.peak(inc) + 1)
    assert res.exhaustive
    opt = brute_force(g)
    assert p.to_bytes(res.window_peak - slack) <= opt


def subset_brute_force(g) -> int:
    """Least peak over all orders by plain recursion over sets of nodes run (no pruning, no reduction):
    an independent check of the DP that reaches 10-node graphs with many orders."""
    from functools import lru_cache

    n = g.num_nodes
    prod = g.producer
    outs = set(g.outputs)
    resident = g.resident_bytes

    def live_while(done: frozenset, v: int) -> int:
        total = resident
        now = done | {v}
        for name, p in prod.items():
            if p not in now:
                continue
            cons = g.consumers[name]
            if p == v or name in outs or v in cons or any(c not in now for c in cons):
                total += g.tensors[name].size
        return total

    @lru_cache(maxsize=None)
    def best(done: frozenset) -> int:
        if len(done) == n:
            return 0
        out = None
        for v in range(n):
            if v in done or any(p not in done for p in g.preds[v]):
                continue
            val = max(live_while(done, v), best(done | {v}))
            out = val if out is None or val < out else out
        return out

    return best(frozenset()) if n else resident


@settings(max_examples=60, deadline=None)
@given(random_graphs(min_nodes=9, max_nodes=10))
def test_exact_dp_equals_subset_brute_force_on_10_nodes(g):
    p = reduce_graph(g)
    inc = g.topological_order()
    res = exact_order(p, inc, upper=p.peak(inc) + 1)
    assert res.exhaustive and simulate(g, res.order).peak == subset_brute_force(g)
    r = optimize_order(g, time_limit=5)
    assert r.optimal and r.peak == subset_brute_force(g)


@settings(max_examples=150, deadline=None)
@given(random_graphs(max_nodes=14), st.integers(0, 13), st.integers(1, 14), st.integers(-3, 1))
def test_fast_dp_equals_dp_on_windows(g, a, k, slack):
    """The numpy level DP finds the same window optimum as the dict DP (and a valid order with it)."""
    from olla_onnx.schedule.fastdp import solve_window_fast

    p = reduce_graph(g)
    order = g.topological_order()
    if p.n == 0:
        return
    a = min(a, p.n - 1)
    b = min(p.n, a + k)
    upper = p.peak(order) + slack
    slow = solve_window(p, order, a, b, upper)
    fast = solve_window_fast(p, order, a, b, upper)
    assert slow.exhaustive and fast.exhaustive and (slow.order is None) == (fast.order is None)
    if fast.order is not None:
        assert fast.window_peak == slow.window_peak
        assert is_topological(g, fast.order) and list(fast.order[:a]) == order[:a] and list(fast.order[b:]) == order[b:]
        assert int(p.live_per_step(list(fast.order))[a:b].max()) <= fast.window_peak


@settings(max_examples=150, deadline=None)
@given(random_graphs(max_nodes=8), st.randoms(use_true_random=False))
def test_region_relaxation_is_a_lower_bound(g, rnd):
    """Brute force over the relaxed problem's own orders: its optimum never exceeds the graph's;
    with every node in the region it equals it."""
    from olla_onnx.schedule.relax import region_relaxation

    p = reduce_graph(g)
    if p.n == 0:
        return
    opt = min(p.peak(o) for o in all_topological_orders(g))
    region = [v for v in range(p.n) if rnd.random() < 0.6]
    rel = region_relaxation(p, region).problem
    if rel.n:
        assert min(rel.peak(o) for o in problem_orders(rel)) <= opt
    whole = region_relaxation(p, range(p.n)).problem
    assert min(whole.peak(o) for o in problem_orders(whole)) == opt


def test_region_bound_proves_a_layered_dag():
    from olla_onnx.schedule.relax import region_bound

    g = layered_dag(120, width=8, seed=5)
    p = reduce_graph(g)
    best = improve_windows(p, list_schedule(p), time.perf_counter() + 5)
    rb = region_bound(p, best, time.perf_counter() + 10, at_least=0)
    assert 0 < rb.value <= p.peak(best) and rb.regions_tried >= 1
    assert rb.value <= p.peak(exact_order(p, best, upper=p.peak(best) + 1).order)


def problem_orders(p):
    """Every topological order of a scheduling problem (exponential: tiny problems only)."""
    from types import SimpleNamespace

    return all_topological_orders(SimpleNamespace(num_nodes=p.n, preds=p.preds, succs=p.succs))
