"""The planned-arena runtime: shim, allocators, trace plans, sessions, the run command, bad plans."""

from __future__ import annotations

import gc
import itertools
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from olla_onnx.errors import OllaInputError, PlanError
from olla_onnx.runtime.allocator import (
    AllocTrace,
    ArenaAllocator,
    RecordingAllocator,
    greedy_offsets,
    plan_trace,
    round_up,
)
from mlp_example import feedback_pairs, mlp_parameters, mlp_training_model

WIDTHS = (64, 128, 96, 32)


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("rt") / "mlp.onnx"
    onnx.save(mlp_training_model(batch=16, widths=WIDTHS), path)
    return path


# ---------------------------------------------------------------- shim and C API


def test_shim_reaches_the_running_onnxruntime():
    from olla_onnx.runtime.ortapi import ort_api, shim_path

    assert shim_path().exists()
    api = ort_api()
    assert api.version == ort.__version__.split("+")[0]
    assert api.env and api.cpu_memory_info


# ---------------------------------------------------------------- allocators without onnxruntime


def test_recording_allocator_counts_exact_bytes_and_trace():
    rec = RecordingAllocator()
    a = rec.alloc(100)
    b = rec.alloc(300)
    assert (rec.in_use, rec.peak) == (400, 400)
    rec.free(a)
    c = rec.alloc(50)
    assert (rec.in_use, rec.peak) == (350, 400)
    rec.free(b)
    rec.free(c)
    assert rec.in_use == 0 and rec.close()
    t = rec.log.window(0)
    assert t.sizes.tolist() == [100, 300, 50]
    assert t.lower.tolist() == [0, 1, 3] and t.upper.tolist() == [2, 4, 5]
    assert not t.escaped.any() and t.peak_live_bytes == 400


def _overlapping_pairs(lower, upper, sizes, offsets):
    """Brute force: pairs live at the same time that share a byte."""
    bad = []
    for i, j in itertools.combinations(range(len(sizes)), 2):
        if sizes[i] and sizes[j] and lower[i] < upper[j] and lower[j] < upper[i]:
            if offsets[i] < offsets[j] + sizes[j] and offsets[j] < offsets[i] + sizes[i]:
                bad.append((i, j))
    return bad


@st.composite
def traces(draw, max_n=12):
    """Random alloc/free sequences as onnxruntime would produce them (frees of live buffers only)."""
    n = draw(st.integers(1, max_n))
    sizes = draw(st.lists(st.integers(1, 5000), min_size=n, max_size=n))
    events: list[tuple[bool, int]] = []
    live: list[int] = []
    nxt = 0
    while nxt < n or live:
        if nxt < n and (not live or draw(st.booleans())):
            events.append((True, nxt))
            live.append(nxt)
            nxt += 1
        else:
            k = draw(st.integers(0, len(live) - 1))
            if draw(st.integers(0, 9)) == 0 and nxt >= n:  # sometimes a buffer outlives the run
                live.pop(k)
                continue
            events.append((False, live.pop(k)))
    return sizes, events


def _record(sizes, events) -> tuple[RecordingAllocator, list[int]]:
    rec = RecordingAllocator()
    ptr: dict[int, int] = {}
    for is_alloc, i in events:
        if is_alloc:
            ptr[i] = rec.alloc(sizes[i])
        else:
            rec.free(ptr.pop(i))
    leftover = list(ptr.values())
    for p in leftover:
        rec.free(p)
    return rec, leftover


@settings(max_examples=60, deadline=None)
@given(traces())
def test_trace_plan_has_no_overlap_and_respects_the_bound(tr):
    sizes, events = tr
    rec, _ = _record(sizes, events)
    window = rec.log.window(0, len(events))
    plan = plan_trace(window, time_limit=1.0)
    aligned = np.array([round_up(s) if keep else 0 for s, keep in zip(window.sizes, plan.in_arena)])
    assert not _overlapping_pairs(window.lower, window.upper, aligned, plan.offsets)
    assert (plan.offsets % 64 == 0).all()
    assert plan.arena_bytes >= plan.lower_bound
    assert plan.arena_bytes == (int((plan.offsets + aligned).max()) if aligned.size else 0)


def test_greedy_matches_brute_force_optimum_on_a_tiny_case():
    # three buffers: A and B overlap in time, C only with B; optimum arena = max(A+B, B+C)
    lower, upper = np.array([0, 1, 3]), np.array([2, 4, 5])
    sizes = np.array([128, 64, 192])
    off = greedy_offsets(lower, upper, sizes)
    assert not _overlapping_pairs(lower, upper, sizes, off)
    best = min(
        max(int(o + s) for o, s in zip(offs, sizes))
        for offs in itertools.product(range(0, 512, 64), repeat=3)
        if not _overlapping_pairs(lower, upper, sizes, offs)
    )
    assert int((off + sizes).max()) == best == 256


def test_arena_replays_and_counts_deviations():
    arena = ArenaAllocator()
    arena.begin_run()
    p = [arena.alloc(s) for s in (1000, 2000)]
    arena.free(p[0])
    q = arena.alloc(500)
    arena.free(p[1])
    arena.free(q)
    plan = plan_trace(arena.log.window(0))
    arena.install(plan)
    assert arena.arena_bytes == plan.arena_bytes == round_up(2000) + round_up(1000)
    # the same sequence: every request from the arena
    arena.begin_run()
    p = [arena.alloc(s) for s in (1000, 2000)]
    assert all(arena.base <= x < arena.base + arena.arena_bytes for x in p)
    arena.free(p[0])
    q = arena.alloc(500)
    arena.free(p[1])
    arena.free(q)
    assert arena.fallbacks == 0 and arena.planned_allocs == 3
    # a different size: served from the heap, counted, said why
    arena.begin_run()
    x = arena.alloc(999)
    assert not (arena.base <= x < arena.base + arena.arena_bytes)
    assert arena.fallbacks == 1 and "999" in arena.first_fallback
    y = arena.alloc(2000)  # back in step: its planned slot
    assert arena.base <= y < arena.base + arena.arena_bytes
    # next run while y still holds its bytes: the same slot is refused, served from the heap
    arena.begin_run()
    a = arena.alloc(1000)
    b = arena.alloc(2000)
    assert arena.base <= a < arena.base + arena.arena_bytes
    assert not (arena.base <= b < arena.base + arena.arena_bytes)
    assert arena.fallbacks == 2 and arena.heap_in_use == 999 + 2000
    assert arena.stats().peak_bytes == arena.arena_bytes + 999 + 2000
    for ptr in (x, y, a, b):
        arena.free(ptr)
    assert arena.close()


# ---------------------------------------------------------------- onnxruntime sessions


def test_planned_session_matches_default_and_is_served_from_the_plan(mlp_path):
    from olla_onnx.run import run_model

    r = run_model(mlp_path)
    assert r.planned_equals_unplanned
    assert r.outputs_equal and r.max_abs_diff == 0.0
    assert r.trace_stable and r.fallbacks == 0 and r.planned_allocs == r.allocs_per_run > 0
    assert r.peak_planned_bytes == r.arena_bytes + r.resident_bytes
    assert r.arena_bytes >= r.arena_lower_bound
    assert r.peak_ort_default_bytes > 0
    assert r.prediction_error is not None and abs(r.prediction_error) <= 0.02
    keys = {"peak_ort_default_bytes", "peak_planned_bytes", "outputs_equal", "max_abs_diff", "provider"}
    assert keys <= set(r.report())


def test_default_peak_is_what_the_recording_allocator_saw(mlp_path):
    """Independent check of the measuring device: the peak of live bytes from the raw trace."""
    from olla_onnx.runtime.feeds import random_feeds
    from olla_onnx.runtime.session import new_allocators, open_session

    model = onnx.load(mlp_path)
    feeds = random_feeds(model)
    host, _ = new_allocators("default", "cpu")
    s = open_session(model.SerializeToString(), "default", host)
    try:
        s.run(feeds)
        resident = host.in_use
        start = host.log.mark()
        host.reset_peak()
        s.run(feeds)
        window = host.log.window(start)
        assert host.peak == resident + window.peak_live_bytes
    finally:
        s.close()
    gc.collect()
    assert host.in_use == 0


@pytest.mark.parametrize("inplace", [False, True], ids=["copy-back", "in-place"])
def test_hundred_training_steps_flat_memory_same_results(inplace):
    """100 steps; with ``inplace`` the planned session writes the updated weights into its bound input
    buffers (IO binding) and nothing is copied back. The caller's arrays are never modified."""
    from olla_onnx.runtime.loop import train_loop
    from olla_onnx.runtime.feeds import random_feeds
    from olla_onnx.runtime.measure import open_planned
    from olla_onnx.runtime.session import new_allocators, open_session

    model = mlp_training_model(batch=16, widths=WIDTHS, lr=0.05)
    data = model.SerializeToString()
    feeds = random_feeds(model)
    feeds.update(mlp_parameters(WIDTHS))
    before = {k: v.copy() for k, v in feeds.items()}
    pairs = feedback_pairs(model)
    assert len(pairs) == len(WIDTHS) - 1
    host, _ = new_allocators("default", "cpu")
    d = open_session(data, "default", host)
    try:
        ref = train_loop(d, feeds, pairs, 100)
    finally:
        d.close()
    s, info = open_planned(data, feeds, inplace=pairs if inplace else None)
    try:
        assert s.inplace == (pairs if inplace else {})
        got = train_loop(s, feeds, pairs, 100)
        stats = s.measured.stats()
        if inplace:
            with pytest.raises(ValueError, match="in place"):
                train_loop(s, feeds, {}, 1)  # the session would feed the weights back anyway
    finally:
        s.close()
    assert all(np.array_equal(before[k], feeds[k]) for k in feeds)
    assert stats.fallbacks == 0 and stats.planned_allocs == 100 * info["allocs_per_run"] > 0
    assert stats.heap_in_use == stats.peak_bytes - stats.arena_bytes  # nothing grew past the resident set
    assert ref.losses[-1] < ref.losses[0]  # it trains
    for a, b in zip(ref.outputs, got.outputs):
        assert np.array_equal(a, b)
    assert got.rss_growth() < 1 << 20


# ---------------------------------------------------------------- plans refused before anything runs


@pytest.fixture(scope="module")
def plan_file(mlp_path, tmp_path_factory):
    from olla_onnx.formats.onnx.read import load_onnx
    from olla_onnx.ir.memory import lifetimes
    from olla_onnx.plan import make_plan, save_plan

    graph, _ = load_onnx(mlp_path)
    order = list(range(graph.num_nodes))
    lt = lifetimes(graph, order)
    offsets, top = {}, 0
    for name, size in zip(lt.names, lt.sizes):  # no reuse at all: trivially valid
        offsets[name] = top
        top += round_up(int(size))
    plan = make_plan(graph, order, offsets, 64)
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    save_plan(plan, path)
    return path


def _forbid_sessions(monkeypatch):
    import olla_onnx.run as run
    import olla_onnx.runtime.measure as measure

    def boom(*a, **k):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(measure, "open_session", boom)
    monkeypatch.setattr(run, "open_default", boom)


def test_good_plan_is_used(mlp_path, plan_file):
    from olla_onnx.run import run_model

    r = run_model(mlp_path, plan_file)
    assert r.order_source == "plan" and r.fallbacks == 0 and r.planned_equals_unplanned
    assert r.predicted_peak_bytes is not None


@pytest.mark.parametrize("defect", ["other_model", "truncated", "overlap"])
def test_bad_plans_are_refused_before_anything_runs(defect, mlp_path, plan_file, tmp_path, monkeypatch):
    from olla_onnx.run import run_model

    raw = json.loads(plan_file.read_text())
    bad = tmp_path / "bad.json"
    model = mlp_path
    if defect == "other_model":
        model = tmp_path / "other.onnx"
        onnx.save(mlp_training_model(batch=8, widths=WIDTHS), model)
        bad.write_text(plan_file.read_text())
    elif defect == "truncated":
        bad.write_text(plan_file.read_text()[: len(plan_file.read_text()) // 2])
    else:
        for b in raw["buffers"]:
            b["offset"] = 0
        bad.write_text(json.dumps(raw))
    _forbid_sessions(monkeypatch)
    with pytest.raises(PlanError):
        run_model(model, bad)


def test_unknown_dimension_and_provider_are_user_errors(tmp_path):
    from olla_onnx.run import run_model

    m = mlp_training_model(batch=4, widths=(8, 4))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tmp_path / "sym.onnx"
    onnx.save(m, path)
    with pytest.raises(OllaInputError, match="--dim"):
        run_model(path)
    with pytest.raises(OllaInputError, match="provider"):
        run_model(path, provider="tpu")


def test_run_command_writes_the_report(mlp_path, tmp_path):
    from typer.testing import CliRunner

    import olla_onnx.cli.run  # noqa: F401  (registers the command)
    from olla_onnx.cli.common import app

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["run", str(mlp_path), "--report-json", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["provider"] == "cpu" and rep["outputs_equal"] is True and rep["peak_planned_bytes"] > 0


# ---------------------------------------------------------------- CUDA (not run without a GPU)


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a CUDA device"
)
def test_cuda_planned_session(mlp_path):
    from olla_onnx.run import run_model

    r = run_model(mlp_path, provider="cuda")
    assert r.provider == "cuda" and r.planned_equals_unplanned and r.fallbacks == 0
    assert r.peak_planned_bytes == r.arena_bytes + r.resident_bytes
