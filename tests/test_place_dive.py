"""Dives at the goal (olla_onnx.place.steps.goal_dives), the search's first node limit, the dust share."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st

from olla_onnx.formats import load_graph
from olla_onnx.ir.memory import lifetimes
from olla_onnx.place import Buffers, best_greedy, buffers_from_lifetimes, check_placement, max_load, place, search_placement
from olla_onnx.place.steps import dust_share, goal_dives
from olla_onnx.place.problem import aligned_sizes
from test_place import brute_force_min_arena, traces

MODELS = Path(__file__).resolve().parent.parent / "models"


@given(traces(max_n=6, max_time=6, max_size=9), st.sampled_from([0.1, 0.5, 1.0, 1.7, 4.0]))
@settings(max_examples=60, deadline=None)
def test_first_limit_changes_the_budget_never_the_answer(t, first_limit):
    lo, up, sz = t
    opt = brute_force_min_arena(lo.tolist(), up.tolist(), sz.tolist())
    ok = search_placement(lo, up, sz, opt, time_limit=10, first_limit=first_limit)
    assert ok.status == "feasible"
    assert check_placement(lo, up, sz, ok.offsets, capacity=opt) <= opt
    if opt > 0:
        assert search_placement(lo, up, sz, opt - 1, time_limit=10, first_limit=first_limit).status == "infeasible"


@given(traces(max_n=6, max_time=6, max_size=9), st.integers(0, 3), st.sampled_from([1, 2, 4]))
@settings(max_examples=80, deadline=None)
def test_dives_land_within_the_goal_and_refute_only_what_is_infeasible(t, extra, unit):
    lo, up, sz = t
    sz = aligned_sizes(sz, unit)
    if max_load(lo, up, sz) == 0:
        return
    opt = brute_force_min_arena(lo.tolist(), up.tolist(), sz.tolist())  # aligned offsets: opt is a multiple of unit
    goal = max_load(lo, up, sz) + extra * unit
    off, refuted = goal_dives(lo, up, sz, goal, time.perf_counter() + 10, unit)
    assert refuted < opt  # a refuted capacity is a proof: nothing fits there
    if off is not None:
        assert check_placement(lo, up, sz, off, alignment=unit) <= goal
    elif goal >= opt:  # the dives on tiny traces are exhaustive: no landing means none exists
        assert refuted >= goal


def _corpus_trace(name: str) -> Buffers:
    loaded = load_graph(str(MODELS / name))
    return buffers_from_lifetimes(lifetimes(loaded.graph, loaded.graph.topological_order()))


def test_dives_settle_a_tiny_unet_that_greedy_misses():
    """U-Net tiny in file order, 1,728 buffers at alignment 64: greedy is 1.7% above the bound, a dive lands within 0.1%."""
    b = _corpus_trace("unet_tiny.onnx")
    sz = aligned_sizes(b.sizes, 64)
    bound = max_load(b.lower, b.upper, sz)
    goal = bound + bound // 1000 // 64 * 64
    assert best_greedy(b.lower, b.upper, sz)[1] > goal
    off, _ = goal_dives(b.lower, b.upper, sz, goal, time.perf_counter() + 60, 64)
    assert off is not None
    assert check_placement(b.lower, b.upper, sz, off, alignment=64) <= goal
    p = place(b, alignment=64, time_limit=60, tolerance=0.001)
    assert check_placement(b.lower, b.upper, sz, p.offsets, alignment=64) == p.arena_bytes <= goal


@given(traces(max_n=30, max_time=20, max_size=50), st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_zero_size_buffers_do_not_make_a_window_dusty(t, zeros):
    lo, up, sz = t
    goal = max_load(lo, up, sz) * 2
    share = dust_share(lo, up, sz, goal, 1)
    live = sz > 0
    lo2 = np.r_[lo[live], np.zeros(zeros, dtype=np.int64)]
    up2 = np.r_[up[live], np.ones(zeros, dtype=np.int64)]
    sz2 = np.r_[sz[live], np.zeros(zeros, dtype=np.int64)]
    assert dust_share(lo2, up2, sz2, goal, 1) == dust_share(lo[live], up[live], sz[live], goal, 1) == share
