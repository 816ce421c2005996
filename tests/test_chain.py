"""The nested down-set program (olla_onnx.schedule.chain) against brute force over every order."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olla_onnx.ir.memory import simulate
from olla_onnx.schedule.chain import chain_bound, chain_step, chain_value, order_from_downsets
from olla_onnx.schedule.reduce import reduce_graph
from dags import all_topological_orders, random_graphs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _chain_peak(problem, order, chain) -> int:
    """Largest scaled live total while a node of ``chain`` runs in ``order``."""
    live = problem.live_per_step(order)
    pos = {v: s for s, v in enumerate(order)}
    return max(int(live[pos[v]]) for v in chain)


def _runs_in_sequence(order, chain) -> bool:
    pos = {v: s for s, v in enumerate(order)}
    return all(pos[a] < pos[b] for a, b in zip(chain, chain[1:]))


@st.composite
def graph_and_chain(draw):
    g = draw(random_graphs(min_nodes=2, max_nodes=7))
    k = draw(st.integers(1, min(3, g.num_nodes)))
    chain = draw(st.lists(st.integers(0, g.num_nodes - 1), min_size=k, max_size=k, unique=True))
    return g, chain


@SETTINGS
@given(graph_and_chain())
def test_chain_value_is_the_best_over_orders_running_the_chain_in_sequence(case):
    g, chain = case
    problem = reduce_graph(g)
    orders = [o for o in all_topological_orders(g) if _runs_in_sequence(o, chain)]
    cv = chain_value(problem, chain, time_limit=30)
    if not orders:
        assert cv.value is None and cv.downsets is None
        return
    want = min(_chain_peak(problem, o, chain) for o in orders)
    assert cv.exact and cv.value == want
    # the down-sets it found give an order that runs the chain there with exactly that load
    order = order_from_downsets(cv.chain, cv.downsets, g.topological_order())
    simulate(g, order, validate=True)
    assert _runs_in_sequence(order, chain) and _chain_peak(problem, order, chain) == want


@SETTINGS
@given(graph_and_chain())
def test_chain_bound_never_exceeds_the_optimal_peak(case):
    g, chain = case
    problem = reduce_graph(g)
    opt = min(problem.peak(o) for o in all_topological_orders(g))
    cb = chain_bound(problem, chain, time_limit=30)
    assert cb is not None and cb.value is not None
    assert cb.value <= opt
    # with a cutoff below the optimum, nothing is found and the bound reaches the cutoff + 1 at most
    cut = chain_bound(problem, chain, time_limit=30, upper=opt - 1) if opt > 0 else None
    if cut is not None and cut.value is not None:
        assert cut.value <= opt


@SETTINGS
@given(random_graphs(min_nodes=2, max_nodes=7))
def test_chain_step_gives_a_sound_bound_and_a_valid_better_order(g):
    problem = reduce_graph(g)
    orders = list(all_topological_orders(g))
    opt = min(problem.peak(o) for o in orders)
    worst = max(orders, key=problem.peak)
    import time

    new, bound = chain_step(problem, worst, 0, time.perf_counter() + 30)
    assert bound <= opt
    if new is not None:
        simulate(g, new, validate=True)
        # the chain's nodes run below the old peak in the new order
        assert sorted(new) == list(range(g.num_nodes))


def test_chain_proves_cnn_tiny_optimal():
    """cnn_tiny: four convolutions with 128 KiB workspaces each want a low-load moment; the per-node
    min cut is attainable jointly only through nested down-sets, which the program finds."""
    from pathlib import Path

    from olla_onnx.formats import load_graph
    from olla_onnx.schedule import optimize_order

    g = load_graph(Path(__file__).resolve().parents[1] / "models" / "cnn_tiny.onnx").graph
    r = optimize_order(g, time_limit=30)
    assert r.optimal and r.peak == r.lower_bound
