"""The size split (big buffers by exact search, small ones by best fit): candidates, validity, brute force."""

from __future__ import annotations

import time

import numpy as np
from hypothesis import given, settings, strategies as st

from olla_onnx.place import check_placement, max_load
from olla_onnx.place.split import place_split, split_candidates
from test_place import brute_force_min_arena, traces


@given(traces(max_n=30, max_time=20, max_size=50), st.integers(0, 40))
@settings(max_examples=60, deadline=None)
def test_candidates_are_the_pareto_front_of_the_qualifying_splits(t, extra):
    lo, up, sz = t
    goal = max_load(lo, up, sz) + extra
    cands = split_candidates(lo, up, sz, goal)
    qualifying = {}
    for c in np.unique(sz)[1:].tolist():
        big = sz >= c
        small_load = max_load(lo[~big], up[~big], sz[~big])
        slack = goal - max_load(lo[big], up[big], sz[big]) - small_load
        if small_load > 0 and slack >= 0:
            qualifying[c] = (int(big.sum()), slack, small_load)
    for c, nb, small_load in cands:
        assert qualifying[c][0] == nb and qualifying[c][2] == small_load
        # Nothing qualifying has as few big buffers and more slack.
        assert not any(q[0] <= nb and q[1] > qualifying[c][1] for q in qualifying.values())
    assert [nb for _, nb, _ in cands] == sorted(nb for _, nb, _ in cands)
    if qualifying:
        assert cands


@given(traces(max_n=7, max_time=8, max_size=9), st.integers(0, 6))
@settings(max_examples=80, deadline=None)
def test_split_is_valid_and_never_beats_the_optimum(t, extra):
    lo, up, sz = t
    opt = brute_force_min_arena(lo.tolist(), up.tolist(), sz.tolist())
    goal = max_load(lo, up, sz) + extra
    off, arena = place_split(lo, up, sz, goal, time.perf_counter() + 10)
    if off is None:
        assert arena == 0
        return
    assert check_placement(lo, up, sz, off) == arena >= opt


@given(traces(max_n=120, max_time=80, max_size=3000), st.integers(0, 500))
@settings(max_examples=30, deadline=None)
def test_split_results_pass_the_checker(t, extra):
    lo, up, sz = t
    # Mostly tiny buffers with a few large ones, as in training traces.
    sz = np.where(sz % 7 == 0, sz, sz % 13)
    goal = max_load(lo, up, sz) + extra
    off, arena = place_split(lo, up, sz, goal, time.perf_counter() + 10)
    if off is not None:
        assert check_placement(lo, up, sz, off) == arena >= max_load(lo, up, sz)


def test_split_places_big_buffers_exactly_and_dust_in_the_band():
    """Three big buffers searched within 8, the dust buffer alive throughout goes in the band on top."""
    # Big: a [0,2) 4, b [1,3) 4, c [2,4) 4 -> bound 8; dust d [0,4) 1.
    lo, up = np.array([0, 1, 2, 0]), np.array([2, 3, 4, 4])
    sz = np.array([4, 4, 4, 1])
    assert split_candidates(lo, up, sz, 9) == [(4, 3, 1)]
    off, arena = place_split(lo, up, sz, 9, time.perf_counter() + 10)
    assert off is not None and check_placement(lo, up, sz, off) == arena == 9
