"""Placement by windows (place/decompose.py): valid, never better than the optimum, at the bound on training traces."""


from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st

from olla_onnx.place import (
    Buffers,
    best_greedy,
    check_placement,
    max_load,
    place,
)
from test_place import brute_force_min_arena, traces
from olla_onnx.place.problem import aligned_sizes

REPO = Path(__file__).resolve().parents[1]
CHALLENGING = REPO / "benchmarks" / "data" / "minimalloc-challenging"


@given(traces(max_n=7, max_time=8, max_size=9), st.integers(1, 3), st.booleans())
@settings(max_examples=60, deadline=None)
def test_windows_are_valid_and_never_beat_the_optimum(t, per_window, give_up):
    from olla_onnx.place.decompose import place_by_windows

    lo, up, sz = t
    opt = brute_force_min_arena(lo.tolist(), up.tolist(), sz.tolist())
    off, rep = place_by_windows(
        lo, up, sz, max_load(lo, up, sz), time.perf_counter() + 10, per_window=per_window, give_up=give_up
    )
    assert check_placement(lo, up, sz, off) >= opt
    assert rep.solved + rep.fallbacks >= rep.windows - rep.merged


@given(traces(max_n=80, max_time=60, max_size=2000), st.integers(1, 40), st.integers(0, 3000))
@settings(max_examples=40, deadline=None)
def test_windows_results_pass_the_checker(t, per_window, dust_budget):
    from olla_onnx.place.decompose import place_by_windows

    lo, up, sz = t
    bound = max_load(lo, up, sz)
    off, _ = place_by_windows(
        lo, up, sz, bound, time.perf_counter() + 10, per_window=per_window, max_rounds=2, dust_budget=dust_budget
    )
    assert check_placement(lo, up, sz, off) >= bound


def test_windows_reach_the_bound_on_a_training_trace():
    """Nested activations, short temporaries, gradients to the end: the hottest window first fits them all."""
    from olla_onnx.synthetic import training_trace

    from olla_onnx.place.decompose import place_by_windows

    b = training_trace(2800, seed=1)  # 2,840 buffers: the instance these tests were written on
    sz = aligned_sizes(b.sizes, 256) // 256
    bound = max_load(b.lower, b.upper, sz)
    goal = bound + bound // 1000
    off, rep = place_by_windows(b.lower, b.upper, sz, goal, time.perf_counter() + 60, dust_budget=(goal - bound) // 2)
    assert check_placement(b.lower, b.upper, sz, off) <= goal
    assert rep.windows > 1 and rep.fallbacks == 0


def test_place_decomposes_a_big_trace_full_of_dust():
    """A training trace plus 2,000 tiny buffers: greedy misses 0.1%, place() meets it (by windows)."""
    from olla_onnx.synthetic import training_trace

    b = training_trace(2800, seed=1)  # 2,840 buffers: the instance these tests were written on
    rng = np.random.default_rng(0)
    k, end = 2000, int(b.upper.max())
    lo = rng.integers(0, end - 1, k)
    up = np.minimum(lo + rng.integers(1, 400, k), end)
    bb = Buffers.build(
        list(b.ids) + [f"dust{i}" for i in range(k)],
        np.r_[b.lower, lo],
        np.r_[b.upper, up],
        np.r_[b.sizes, np.full(k, 64)],
    )
    sz = aligned_sizes(bb.sizes, 256)
    bound = max_load(bb.lower, bb.upper, sz)
    assert best_greedy(bb.lower, bb.upper, sz)[1] > bound * 1.001
    p = place(bb, alignment=256, time_limit=60, tolerance=0.001)
    assert check_placement(bb.lower, bb.upper, sz, p.offsets, alignment=256) == p.arena_bytes <= bound * 1.001
    assert p.method == "windows"
