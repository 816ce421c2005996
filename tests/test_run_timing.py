"""`run`'s step times and how it judges output differences against onnxruntime's own run-to-run variation.

No assertion here depends on how fast anything ran: step times are only checked positive and finite.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from olla_onnx.run import CLEARLY_BEYOND, VERDICTS, explain_difference, judge_difference, run_model
from olla_onnx.runtime.measure import OutputDiff, diff_outputs, interleaved_step_seconds, measure_default

ROOT = Path(__file__).resolve().parents[1]
MLP_TINY = ROOT / "models" / "mlp_tiny.onnx"
ROWS, WIDTH = 256, 1024  # ScatterND parallelizes over its updates from 2**18 elements up (onnxruntime 1.32)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "olla_onnx", *args], capture_output=True, text=True, cwd=ROOT)


def _scatter_add_model() -> onnx.ModelProto:
    """``ScatterND(reduction="add")`` of ROWS x WIDTH updates into one row: every index is 0 (as the seeded
    feeds give), so all updates add into the same row. With more than one intra-op thread onnxruntime's
    CPU kernel adds from several threads at once, unsynchronized: the result changes from run to run."""
    node = helper.make_node("ScatterND", ["data", "idx", "upd"], ["out"], reduction="add")
    g = helper.make_graph(
        [node], "scatter_add",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, WIDTH]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [ROWS, 1]),
         helper.make_tensor_value_info("upd", TensorProto.FLOAT, [ROWS, WIDTH])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, WIDTH])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _scatter_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)  # magnitudes 1e-4 .. 1e4: the sum depends on the order of the additions
    upd = rng.standard_normal((ROWS, WIDTH)) * 10.0 ** rng.integers(-4, 5, (ROWS, WIDTH))
    return {"data": np.zeros((1, WIDTH), np.float32), "idx": np.zeros((ROWS, 1), np.int64), "upd": upd.astype(np.float32)}


def _distinct_results(threads: int, runs: int) -> int:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(_scatter_add_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = _scatter_feeds()
    return len({s.run(None, feeds)[0].tobytes() for _ in range(runs)})


# ---------------------------------------------------------------- the decision, from injected numbers


def _diff(rel: float, complete: bool = True) -> OutputDiff:
    return OutputDiff(rel == 0.0 and complete, rel, rel, complete)


@pytest.mark.parametrize(
    "rel, variation, rewrites, verdict",
    [
        (0.0, 0.0, None, "equal"),
        (4.1e-5, 4.1e-5, None, "within_variation"),  # GPT-2: planned vs default as large as two plain runs differ
        (2e-5, 4.1e-5, 1.2e-6, "within_variation"),
        (1.2e-5, 0.0, 1.3e-5, "within_rewrites"),  # ViT-B/16: the default session's fusions, deterministic runs
        (4.2e-5, 4.1e-5, None, "near"),  # a race's differences change from pair to pair: not clearly beyond
        (CLEARLY_BEYOND * 4.1e-5, 4.1e-5, None, "near"),
        (1e-3, 4.1e-5, None, "beyond"),
        (1e-3, 1e-6, 2e-5, "beyond"),
        (1e-9, 0.0, None, "beyond"),  # bitwise-deterministic runs: any difference is real
        (1e-9, 0.0, 0.0, "beyond"),
        (math.inf, 1.0, None, "beyond"),
    ],
)
def test_judge_difference_from_the_measured_numbers(rel, variation, rewrites, verdict):
    assert judge_difference(_diff(rel), variation, rewrites) == verdict


def test_a_difference_the_relative_figure_misses_is_real():
    # an integer output, a NaN pattern or a shape differs: max_rel_diff does not see it
    assert judge_difference(_diff(0.0, complete=False), 1.0) == "beyond"
    a, b = [np.array([1.0, np.nan], np.float32)], [np.array([1.0, 2.0], np.float32)]
    d = diff_outputs(a, b)
    assert not d.equal and d.max_rel_diff == 0.0 and not d.rel_complete
    d = diff_outputs([np.array([1, 2])], [np.array([1, 3])])
    assert not d.equal and not d.rel_complete
    d = diff_outputs([np.array([1.0, 2.0])], [np.array([1.0, 2.5])])
    assert not d.equal and d.rel_complete and d.max_rel_diff == 0.25


@pytest.mark.parametrize("verdict", VERDICTS)
@pytest.mark.parametrize("culprit", [None, "olla-onnx's arena"])
def test_only_a_real_difference_asks_for_a_report(verdict, culprit):
    text = explain_difference(verdict, 4.1e-5, 4.1e-5, 4.1e-5, 1.2e-6 if culprit is None else None, True, culprit)
    asks = "report" in text.lower()
    assert asks == (verdict == "beyond" and culprit is not None), text


def test_explanations_name_the_variation():
    text = explain_difference("within_variation", 4.11e-5, 4.1e-5, 4.1e-5, None, True)
    assert text.startswith("within onnxruntime's own run-to-run variation here (4.1e-05")
    assert "one intra-op thread" in text
    text = explain_difference("beyond", 0.5, 0.5, 0.0, None, None, "olla-onnx's arena")
    assert "bitwise equal" in text and "please report" in text
    assert explain_difference("equal", 0.0, 0.0, 0.0) == "bitwise equal"


def test_interleaved_step_seconds_alternates_and_takes_medians():
    calls, seen = [], []
    medians = interleaved_step_seconds([lambda: calls.append("a") or 1, lambda: calls.append("b") or 2], 5, [seen.append, None])
    assert calls == ["a", "b"] * 5 and seen == [1] * 5
    assert len(medians) == 2 and all(math.isfinite(t) and t >= 0 for t in medians)
    with pytest.raises(ValueError):
        interleaved_step_seconds([lambda: None], 0)


# ---------------------------------------------------------------- onnxruntime itself, on a scatter-add


def test_scatter_add_is_deterministic_with_one_thread():
    assert _distinct_results(threads=1, runs=10) == 1


def test_scatter_add_varies_with_two_threads():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores: onnxruntime's two threads must run at once to race")
    distinct = _distinct_results(threads=2, runs=40)
    if distinct == 1:  # a machine too busy to run both threads at once never shows the race
        pytest.skip("onnxruntime's two threads never overlapped here (machine busy?)")
    assert distinct > 1


def test_run_on_a_scatter_add_blames_no_one_for_onnxruntime_variation(tmp_path):
    path = tmp_path / "scatter_add.onnx"
    onnx.save(_scatter_add_model(), path)
    r = run_model(path)
    v = r.ort_run_to_run_variation
    assert math.isfinite(v) and v >= 0.0
    if v > 0:
        assert r.ort_one_thread_deterministic is True  # the variation is onnxruntime's threads'
    for (what, verdict, words), rel in zip(r.output_checks(), (r.max_rel_diff, r.arena_max_rel_diff)):
        if rel <= v:
            assert verdict in ("equal", "within_variation") and "report" not in words, (what, words)
        if verdict != "beyond":
            assert "report" not in words.lower()


# ---------------------------------------------------------------- end to end


def test_run_reports_step_times_and_variation(tmp_path):
    out = tmp_path / "r.json"
    res = _cli("run", str(MLP_TINY), "--report-json", str(out))
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    for key in ("step_seconds_default", "step_seconds_planned", "step_time_ratio"):
        assert math.isfinite(rep[key]) and rep[key] > 0, key
    assert rep["step_time_ratio"] == pytest.approx(rep["step_seconds_planned"] / rep["step_seconds_default"])
    assert rep["timed_steps"] == 5
    assert rep["ort_run_to_run_variation"] == 0.0  # a small MLP: onnxruntime's runs are bitwise equal
    assert rep["outputs_verdict"] == rep["arena_verdict"] == "equal"
    text = " ".join(res.stdout.split())  # rich wraps long lines
    assert "step time (median of 5, interleaved)" in text and "planned / default" in text
    assert "outputs vs the default session: bitwise equal" in text
    assert "report" not in text.lower()


def test_steps_below_five_are_refused():
    res = _cli("run", str(MLP_TINY), "--steps", "4")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: --steps 4: at least 5 (the step times are medians)"]


def test_library_may_skip_the_timing():
    r = run_model(MLP_TINY, steps=0)
    assert r.timed_steps == 0 and r.step_seconds_default is None and r.step_time_ratio is None
    assert r.report()["step_time_ratio"] is None


def test_a_real_difference_is_called_one(monkeypatch):
    """An arena that changed the results (simulated) is reported, after onnxruntime's variation was sampled again."""
    import olla_onnx.run as run

    real_measure, real_sample = run.measure_open_planned, run.plain_planned_variation
    sampled = []

    def corrupting(*a, **k):
        s, m = real_measure(*a, **k)
        return s, dataclasses.replace(m, outputs=[o + np.ones_like(o) for o in m.outputs])

    def sample(*a, **k):
        sampled.append(1)
        return real_sample(*a, **k)

    monkeypatch.setattr(run, "measure_open_planned", corrupting)
    monkeypatch.setattr(run, "plain_planned_variation", sample)
    r = run_model(MLP_TINY)
    assert sampled == [1] and r.ort_run_to_run_variation == 0.0
    assert r.arena_verdict == "beyond" and r.outputs_verdict == "beyond"
    checks = {what: words for what, _, words in r.output_checks()}
    assert "please report" in checks["outputs vs the same session without the arena"]
    assert "report" not in checks["outputs vs the default session"]


def test_a_given_default_measurement_is_reused_and_the_steps_still_timed():
    model = onnx.load(MLP_TINY)
    from olla_onnx.runtime.feeds import random_feeds

    default = measure_default(model.SerializeToString(), random_feeds(model, None, 0))
    default = dataclasses.replace(default, peak_bytes=default.peak_bytes + 1)  # tell it from a fresh one
    r = run_model(MLP_TINY, default=default)
    assert r.peak_ort_default_bytes == default.peak_bytes
    assert r.timed_steps == 5 and r.step_seconds_default > 0 and r.step_seconds_planned > 0
