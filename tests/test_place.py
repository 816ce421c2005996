"""Placement: trace I/O, the checker, greedy, exact search against brute force, place(), the CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from olla_onnx.errors import OllaInputError
from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind
from olla_onnx.ir.memory import lifetimes
from olla_onnx.place import (
    Buffers,
    best_fit,
    best_greedy,
    buffers_from_lifetimes,
    check_placement,
    independent_windows,
    max_load,
    place,
    search_placement,
)
from olla_onnx.place.greedy import ORDERS
from olla_onnx.formats.trace import parse_trace, read_trace, write_trace

REPO = Path(__file__).resolve().parents[1]
CHALLENGING = REPO / "benchmarks" / "data" / "minimalloc-challenging"


def overlaps(lo, up, i, j) -> bool:
    return lo[i] < up[j] and lo[j] < up[i]


def brute_force_min_arena(lo, up, sz) -> int:
    """Smallest arena over all orders, each buffer at its lowest free offset (0 or a top).

    Complete: an optimal placement pushed down as far as it goes has every buffer
    at 0 or on a top; taking buffers by offset, lowest-free placement reproduces
    a placement no higher.
    """
    n = len(sz)
    best = None
    for perm in itertools.permutations(range(n)):
        off = [0] * n
        done: list[int] = []
        for i in perm:
            cands = sorted({0} | {off[j] + sz[j] for j in done if overlaps(lo, up, i, j)})
            for c in cands:
                if all(
                    not overlaps(lo, up, i, j) or c + sz[i] <= off[j] or off[j] + sz[j] <= c for j in done
                ):
                    off[i] = c
                    break
            done.append(i)
        h = max((off[i] + sz[i] for i in range(n)), default=0)
        best = h if best is None else min(best, h)
    return best or 0


@st.composite
def traces(draw, max_n: int = 12, max_time: int = 10, max_size: int = 20):
    n = draw(st.integers(1, max_n))
    lo = [draw(st.integers(0, max_time)) for _ in range(n)]
    up = [l + draw(st.integers(1, 5)) for l in lo]
    sz = [draw(st.integers(0, max_size)) for _ in range(n)]
    return np.array(lo), np.array(up), np.array(sz)


# --- trace I/O and validation ---------------------------------------------------


def test_trace_round_trip(tmp_path):
    b = Buffers.build(["a", "b", "c"], [0, 1, 5], [2, 4, 6], [10, 0, 7])
    path = tmp_path / "t.csv"
    write_trace(path, b, np.array([0, 10, 3]))
    b2, off = read_trace(path)
    assert b2.ids == b.ids and b2.lower.tolist() == [0, 1, 5] and b2.sizes.tolist() == [10, 0, 7]
    assert off is not None and off.tolist() == [0, 10, 3]


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty file"),
        ("id,lower,size\n0,1,2\n", "lacks column"),
        ("id,lower,upper,size\n0,1,x,3\n", ":2: upper 'x' is not an integer"),
        ("id,lower,upper,size\n0,1,2,-3\n", "negative size"),
        ("id,lower,upper,size\n0,4,4,3\n", "upper 4 <= lower 4"),
        ("id,lower,upper,size\n0,1,2,3\n0,2,3,3\n", "appears twice"),
        ("id,lower,upper,size\n0,1,2\n", "3 fields, expected 4"),
    ],
)
def test_bad_traces_are_refused(text, message):
    with pytest.raises(OllaInputError, match=message):
        parse_trace(text, "t.csv")


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(OllaInputError, match="no such file"):
        read_trace(tmp_path / "nope.csv")


# --- bound and checker -----------------------------------------------------------


def test_max_load_by_hand():
    # [0,2) 5 bytes, [1,3) 7 bytes, [2,4) 4 bytes: at time 1: 12, at time 2: 11.
    assert max_load(np.array([0, 1, 2]), np.array([2, 3, 4]), np.array([5, 7, 4])) == 12
    # Half-open: [0,1) and [1,2) never coexist.
    assert max_load(np.array([0, 1]), np.array([1, 2]), np.array([5, 7])) == 7


def test_checker_catches_every_kind_of_mistake():
    lo, up, sz = np.array([0, 1, 3]), np.array([2, 3, 4]), np.array([4, 4, 8])
    assert check_placement(lo, up, sz, np.array([0, 4, 0])) == 8
    with pytest.raises(ValueError, match="overlap"):
        check_placement(lo, up, sz, np.array([0, 3, 0]))
    with pytest.raises(ValueError, match="above the capacity"):
        check_placement(lo, up, sz, np.array([0, 4, 0]), capacity=7)
    with pytest.raises(ValueError, match="not a multiple"):
        check_placement(lo, up, sz, np.array([0, 4, 0]), alignment=8)
    with pytest.raises(ValueError, match="negative"):
        check_placement(lo, up, sz, np.array([0, 4, -1]))
    # Buffers that touch in time ([1,3) ends where [3,4) starts) may share bytes.
    check_placement(lo, up, sz, np.array([0, 4, 4]))


@given(traces(max_n=10))
@settings(max_examples=60, deadline=None)
def test_checker_agrees_with_pairwise_definition(t):
    lo, up, sz = t
    rng = np.random.default_rng(int(sz.sum()) + len(sz))
    off = rng.integers(0, 30, size=len(sz))
    bad = any(
        overlaps(lo, up, i, j) and sz[i] > 0 and sz[j] > 0 and off[i] < off[j] + sz[j] and off[j] < off[i] + sz[i]
        for i in range(len(sz))
        for j in range(i)
    )
    if bad:
        with pytest.raises(ValueError):
            check_placement(lo, up, sz, off)
    else:
        assert check_placement(lo, up, sz, off) == int((off + sz).max())


# --- greedy, search and place() against brute force ------------------------------------


@given(traces(max_n=40, max_time=30))
@settings(max_examples=40, deadline=None)
def test_greedy_orders_are_valid(t):
    lo, up, sz = t
    for name, key in ORDERS.items():
        off = best_fit(lo, up, sz, key(lo, up, sz))
        assert check_placement(lo, up, sz, off) >= max_load(lo, up, sz)
    _, arena, _ = best_greedy(lo, up, sz)
    assert arena >= max_load(lo, up, sz)


@given(traces(max_n=6, max_time=6, max_size=9))
@settings(max_examples=80, deadline=None)
def test_search_decides_exactly_like_brute_force(t):
    lo, up, sz = t
    opt = brute_force_min_arena(lo.tolist(), up.tolist(), sz.tolist())
    ok = search_placement(lo, up, sz, opt, time_limit=10)
    assert ok.status == "feasible"
    assert check_placement(lo, up, sz, ok.offsets, capacity=opt) <= opt
    if opt > 0:
        assert search_placement(lo, up, sz, opt - 1, time_limit=10).status == "infeasible"


@given(traces(max_n=6, max_time=6, max_size=9))
@settings(max_examples=60, deadline=None)
def test_place_finds_the_brute_force_optimum(t):
    lo, up, sz = t
    opt = brute_force_min_arena(lo.tolist(), up.tolist(), sz.tolist())
    b = Buffers.build(range(len(sz)), lo, up, sz)
    p = place(b, time_limit=10)
    assert p.arena_bytes == opt
    assert p.optimal
    assert p.lower_bound == max_load(lo, up, sz) <= opt
    assert check_placement(lo, up, sz, p.offsets) == opt


@given(traces(max_n=60, max_time=40, max_size=1000))
@settings(max_examples=30, deadline=None)
def test_place_results_pass_the_checker(t):
    lo, up, sz = t
    b = Buffers.build(range(len(sz)), lo, up, sz)
    p = place(b, alignment=64, time_limit=2)
    a = check_placement(lo, up, (sz + 63) // 64 * 64, p.offsets, alignment=64)
    assert a == p.arena_bytes >= p.lower_bound
    assert p.feasible
    if p.arena_bytes == p.lower_bound:
        assert p.optimal


def test_capacity_below_the_bound_is_infeasible():
    b = Buffers.build(["a", "b"], [0, 0], [2, 2], [10, 10])
    p = place(b, capacity=15, time_limit=2, minimize=False)
    assert not p.feasible and p.arena_bytes == 20 and p.lower_bound == 20 and p.optimal


def test_search_beats_greedy_where_greedy_fragments():
    """A case where best-fit by size leaves a hole but the optimum is the max load."""
    path = CHALLENGING / "K.1048576.csv"
    b, _ = read_trace(path)
    _, greedy_arena, _ = best_greedy(b.lower, b.upper, b.sizes)
    assert greedy_arena > 1_048_576
    p = place(b, capacity=1_048_576, time_limit=30, minimize=False)
    assert p.feasible and p.arena_bytes <= 1_048_576
    check_placement(b.lower, b.upper, b.sizes, p.offsets, capacity=1_048_576)


def test_alignment_rounds_sizes_and_offsets():
    b = Buffers.build(["a", "b", "c"], [0, 0, 1], [2, 3, 3], [10, 70, 1])
    p = place(b, alignment=64, time_limit=2)
    assert (p.offsets % 64 == 0).all()
    assert p.lower_bound == 64 + 128 + 64 and p.arena_bytes == p.lower_bound and p.optimal


def test_independent_windows_split_where_nothing_is_alive():
    lo, up, sz = np.array([0, 1, 5, 6, 9]), np.array([3, 4, 7, 8, 10]), np.array([1, 1, 1, 1, 1])
    groups = [sorted(g.tolist()) for g in independent_windows(lo, up, sz)]
    assert groups == [[0, 1], [2, 3], [4]]


def test_time_limit_must_be_positive():
    b = Buffers.build(["a"], [0], [1], [1])
    with pytest.raises(OllaInputError, match="time limit"):
        place(b, time_limit=0)


# --- the graph side -------------------------------------------------------------------


def test_buffers_from_lifetimes_of_an_order():
    g = Graph.build(
        [
            Node("a", "X", ("x",), ("t1",)),
            Node("b", "X", ("t1",), ("t2",)),
            Node("c", "X", ("t1", "t2"), ("y",)),
        ],
        [Tensor("x", 10, TensorKind.INPUT), Tensor("t1", 5), Tensor("t2", 7), Tensor("y", 1)],
        outputs=["y"],
    )
    b = buffers_from_lifetimes(lifetimes(g, [0, 1, 2]))
    got = {name: (int(l), int(u), int(s)) for name, l, u, s in zip(b.ids, b.lower, b.upper, b.sizes)}
    assert got == {"t1": (0, 3, 5), "t2": (1, 3, 7), "y": (2, 3, 1)}  # x is resident: not placed
    p = place(b)
    assert p.arena_bytes == p.lower_bound == 13 and p.optimal


# --- command line ---------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from olla_onnx.cli import place; from olla_onnx.cli import app; "
        "sys.argv = ['olla-onnx'] + sys.argv[1:]; app()"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)


def test_cli_place_writes_offsets_and_report(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("id,lower,upper,size\n0,0,2,100\n1,1,3,50\n2,2,4,100\n")
    out, rep = tmp_path / "o.csv", tmp_path / "r.json"
    proc = run_cli("place", str(trace), "-o", str(out), "--report-json", str(rep), "--capacity", "1000")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    for key in ("buffers", "lower_bound", "arena_bytes", "optimal", "feasible", "seconds"):
        assert key in report
    assert report["buffers"] == 3 and report["lower_bound"] == 150 and report["arena_bytes"] == 150
    assert report["optimal"] is True and report["feasible"] is True
    b, off = read_trace(out)
    assert off is not None
    check_placement(b.lower, b.upper, b.sizes, off, capacity=150)


@pytest.mark.parametrize(
    "content,needle",
    [(None, "no such file"), ("id,lower,upper,size\n0,1,2,-5\n", "negative size"), ("id,lower,upper,size\n0,3,2,5\n", "upper 2 <= lower 3")],
)
def test_cli_place_bad_input_is_one_line_exit_2(tmp_path, content, needle):
    trace = tmp_path / "bad.csv"
    if content is not None:
        trace.write_text(content)
    proc = run_cli("place", str(trace))
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- the MIP model (CVXPY + SCIP) as an independent oracle for medium sizes --------------


@given(traces(max_n=16, max_time=8, max_size=60))
@settings(max_examples=15, deadline=None)
def test_search_agrees_with_the_mip_model(t):
    from olla_onnx.place.ilp import solve_ilp

    lo, up, sz = t
    r = solve_ilp(lo, up, sz, time_limit=20)
    if not r.optimal:  # no proof, nothing to compare
        return
    assert check_placement(lo, up, sz, r.offsets) == r.arena
    assert search_placement(lo, up, sz, r.arena, time_limit=10).status == "feasible"
    if r.arena > 0:
        assert search_placement(lo, up, sz, r.arena - 1, time_limit=10).status == "infeasible"
    assert place(Buffers.build(range(len(sz)), lo, up, sz), time_limit=10).arena_bytes == r.arena


def test_time_limit_keeps_a_checked_incumbent():
    """A hard instance with a tiny limit: a valid placement comes back, labelled honestly."""
    b, _ = read_trace(CHALLENGING / "H.1048576.csv")
    p = place(b, time_limit=0.3)
    check_placement(b.lower, b.upper, b.sizes, p.offsets)
    assert p.arena_bytes >= p.lower_bound
    if not p.optimal:  # never labelled unproven when the bound is reached
        assert p.arena_bytes > p.lower_bound
    assert p.seconds < 10


def test_tolerance_stops_early_but_stays_honest():
    b, _ = read_trace(CHALLENGING / "C.1048576.csv")
    p = place(b, time_limit=20, tolerance=0.5)
    check_placement(b.lower, b.upper, b.sizes, p.offsets)
    assert p.arena_bytes <= 1.5 * p.lower_bound
    assert p.optimal == (p.arena_bytes == p.lower_bound)
    with pytest.raises(OllaInputError, match="tolerance"):
        place(b, tolerance=-1)


# --- fixed buffers, the window decomposition ---------------------------------------------


def _lowest_free(lo, up, sz, off, placed, i) -> int:
    """The lowest offset where buffer i overlaps none of ``placed`` (0 or a top: enough)."""
    for c in sorted({0} | {off[j] + sz[j] for j in placed if overlaps(lo, up, i, j)}):
        if all(not overlaps(lo, up, i, j) or c + sz[i] <= off[j] or off[j] + sz[j] <= c for j in placed):
            return c
    raise AssertionError("unreachable: above every top is free")


def brute_force_with_fixed(lo, up, sz, fixed) -> int:
    """Smallest arena with the buffers ``fixed[i] >= 0`` held at those offsets.

    Complete for the same reason as :func:`brute_force_min_arena`: taking the
    free buffers of a pushed-down optimum by offset, lowest-free placement
    puts each no higher than the optimum does.
    """
    n = len(sz)
    free = [i for i in range(n) if fixed[i] < 0]
    held = [i for i in range(n) if fixed[i] >= 0]
    best = None
    for perm in itertools.permutations(free):
        off, done = list(fixed), list(held)
        for i in perm:
            off[i] = _lowest_free(lo, up, sz, off, done, i)
            done.append(i)
        h = max((off[i] + sz[i] for i in range(n)), default=0)
        best = h if best is None else min(best, h)
    return best or 0


@st.composite
def traces_with_fixed(draw, max_n: int = 7):
    lo, up, sz = draw(traces(max_n=max_n, max_time=6, max_size=9))
    l, u, s = lo.tolist(), up.tolist(), sz.tolist()
    fixed, done = [-1] * len(s), []
    for i in range(len(s)):
        if s[i] > 0 and draw(st.booleans()):
            c = _lowest_free(l, u, s, fixed, done, i) + draw(st.integers(0, 4))
            if all(not overlaps(l, u, i, j) or c + s[i] <= fixed[j] or fixed[j] + s[j] <= c for j in done):
                fixed[i] = c
                done.append(i)
    return lo, up, sz, np.array(fixed)


@given(traces_with_fixed())
@settings(max_examples=120, deadline=None)
def test_search_with_fixed_buffers_decides_like_brute_force(t):
    lo, up, sz, fixed = t
    opt = brute_force_with_fixed(lo.tolist(), up.tolist(), sz.tolist(), fixed.tolist())
    res = search_placement(lo, up, sz, opt, time_limit=10, fixed=fixed)
    assert res.status == "feasible"
    assert check_placement(lo, up, sz, res.offsets, capacity=opt) <= opt
    held = fixed >= 0
    assert (res.offsets[held] == fixed[held]).all()
    if opt > 0:
        assert search_placement(lo, up, sz, opt - 1, time_limit=10, fixed=fixed).status == "infeasible"


def test_search_refuses_fixed_buffers_above_the_capacity():
    lo, up, sz = np.array([0, 0]), np.array([2, 2]), np.array([4, 4])
    assert search_placement(lo, up, sz, 8, fixed=np.array([6, -1])).status == "infeasible"
    res = search_placement(lo, up, sz, 8, fixed=np.array([4, -1]))
    assert res.status == "feasible" and res.offsets.tolist() == [4, 0]


@given(traces_with_fixed(max_n=30))
@settings(max_examples=40, deadline=None)
def test_best_fit_around_fixed_buffers_is_valid(t):
    lo, up, sz, fixed = t
    for key in ORDERS.values():
        off = best_fit(lo, up, sz, key(lo, up, sz), fixed=fixed)
        check_placement(lo, up, sz, off)
        assert (off[fixed >= 0] == fixed[fixed >= 0]).all()


@given(traces(max_n=6, max_time=6, max_size=9), st.integers(0, 6), st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_rank_span_changes_the_order_not_the_answer(t, start, width):
    lo, up, sz = t
    opt = brute_force_min_arena(lo.tolist(), up.tolist(), sz.tolist())
    span = (start, start + width)
    res = search_placement(lo, up, sz, opt, time_limit=10, rank_span=span)
    assert res.status == "feasible"
    check_placement(lo, up, sz, res.offsets, capacity=opt)
    if opt > 0:
        assert search_placement(lo, up, sz, opt - 1, time_limit=10, rank_span=span).status == "infeasible"


def test_dust_is_the_smallest_buffers_within_the_budget():
    from olla_onnx.place.decompose import dust_mask

    lo, up = np.array([0, 0, 0, 0, 5]), np.array([4, 4, 4, 4, 9])
    sz = np.array([1, 2, 2, 100, 3])
    assert dust_mask(lo, up, sz, 0).tolist() == [False] * 5
    assert dust_mask(lo, up, sz, 4).tolist() == [True, False, False, False, False]  # 1 + 2 + 2 > 4
    assert dust_mask(lo, up, sz, 5).tolist() == [True, True, True, False, True]  # size 3 lives apart
    assert dust_mask(lo, up, sz, 10**6).all()
