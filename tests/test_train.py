"""olla_onnx.train.Trainer on the committed make_fx training steps (models/exporters/), without torch.

Each step file was written by ``olla_onnx.export.training_step`` (``models/exporters/make_fx_steps.py``) and
carries its ``TrainingStep``; ``<name>.reference.json`` holds the losses of 20 eager PyTorch steps on the fixed
data its ``data`` field describes, made again with numpy alone (``models/exporters/reference_data.py``).

Two comparisons, and why their tolerances:

- against a plain loop over onnxruntime's default session (written out below: feed each output back as its
  input): **bitwise**. The same kernels compute the same float32 operations on the same inputs, with the same
  (default) thread count; the planned arena and IO binding change where tensors live, not what is computed, and
  the default session's graph rewrites do not change these graphs' float results (``olla-onnx run`` finds
  ``outputs_equal`` for one step of them). Equal inputs and equal steps give equal results, step after step.
- against eager PyTorch: **1e-5 relative** per loss. PyTorch's kernels and the exported graph's decomposed ops
  (log-softmax, mean, addmm vs MatMul+Add, the optimizer's scalar arithmetic) round differently in float32
  (2^-24 = 6e-8 relative per operation); over 20 steps those differences reach 3.3e-7 here, well inside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from olla_onnx.errors import OllaInputError
from olla_onnx.export.step import TrainingStep
from olla_onnx.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models" / "exporters"))
from reference_data import fixed_data  # noqa: E402  (numpy only, no torch)

ROOT = Path(__file__).resolve().parents[1]
EXPORTERS = ROOT / "models" / "exporters"
STEPS = 20
PAIRS = {"mlp_adam_fx": 13, "mlp_sgdm_fx": 8}  # 4 parameters, their state, Adam's step count


def plain_loop(path: Path, step: TrainingStep, init, batches):
    """onnxruntime's default session, each output fed back as the input it updates: (losses, final values)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cur, losses = dict(init), []
    for batch in batches:
        outs = dict(zip(step.outputs, sess.run(None, {**cur, **dict(zip(step.batch, batch))})))
        losses.append(float(outs[step.loss]))
        cur.update({inp: outs[out] for out, inp in step.updates.items()})
    return np.array(losses), cur


@pytest.fixture(scope="module", params=sorted(PAIRS))
def case(request):
    name = request.param
    path = EXPORTERS / f"{name}.onnx"
    ref = json.loads((EXPORTERS / f"{name}.reference.json").read_text())
    model = onnx.load(path)
    step = TrainingStep.from_model(model)
    init, batches = fixed_data(model, step, ref["seed"], ref["steps"])
    before = {k: v.copy() for k, v in init.items()}
    with Trainer(path, init=init, time_limit=1.0) as trainer:
        losses = trainer.run(batches)
        live = trainer.parameters(copy=False)
        info = dict(trainer.info, stats=trainer.stats(), inplace=dict(trainer.inplace), steps=trainer.steps)
        final = trainer.parameters()
    assert all(np.array_equal(before[k], init[k]) for k in init)  # the caller's arrays are never written
    return dict(name=name, path=path, ref=ref, step=step, init=init, batches=batches, losses=losses,
                final=final, live=live, info=info, after_close=trainer.parameters())


def test_trainer_equals_a_plain_onnxruntime_loop_bitwise(case):
    losses, final = plain_loop(case["path"], case["step"], case["init"], case["batches"])
    assert len(case["losses"]) == STEPS
    assert np.array_equal(case["losses"], losses)
    assert sorted(case["final"]) == sorted(case["step"].updates.values())
    for name, value in case["final"].items():
        assert value.dtype == final[name].dtype and np.array_equal(value, final[name]), name


def test_trainer_matches_eager_pytorch(case):
    eager = np.array(case["ref"]["eager_losses"])
    assert len(eager) == STEPS and case["ref"]["steps"] == STEPS
    np.testing.assert_allclose(case["losses"], eager, rtol=1e-5, atol=0)
    assert case["losses"][-1] < case["losses"][0]  # it trains


def test_every_step_is_served_from_the_arena_with_updates_in_place(case):
    info, stats = case["info"], case["info"]["stats"]
    assert info["steps"] == STEPS and info["trace_stable"]
    assert len(info["inplace"]) == PAIRS[case["name"]] == len(case["step"].updates)  # every update in place
    assert stats.fallbacks == 0 and stats.planned_allocs == STEPS * info["allocs_per_run"] > 0
    assert stats.arena_bytes == info["arena_bytes"]


def test_parameters_views_copies_and_after_close(case):
    for name, view in case["live"].items():
        assert not view.flags.writeable
        assert np.array_equal(view, case["final"][name])  # the live buffers held the final values
        assert not np.shares_memory(view, case["final"][name])  # parameters() copies by default
    for name, value in case["after_close"].items():
        assert np.array_equal(value, case["final"][name])
    by_param = case["step"].by_parameter(case["final"])
    assert sorted(by_param) == sorted(case["step"].parameters.values())


def test_optimized_file_and_plan_file_train_alike(tmp_path):
    """An optimized model + plan file, and the copy-back path (in-place off), give the same losses."""
    from olla_onnx import load_graph, optimize_model, write_outputs

    path = EXPORTERS / "mlp_sgdm_fx.onnx"
    model = onnx.load(path)
    step = TrainingStep.from_model(model)
    init, batches = fixed_data(model, step, 1, 5)
    expected, final = plain_loop(path, step, init, batches)
    loaded = load_graph(path)
    out, plan = tmp_path / "opt.onnx", tmp_path / "plan.json"
    write_outputs(loaded, optimize_model(loaded, time_limit=0.5), out, plan)
    with Trainer(out, plan, init=init) as t:
        assert t.optimized is None and len(t.inplace) == 8
        assert np.array_equal(t.run(batches[:2]), expected[:2])
        assert np.array_equal(t.run(batches[2:], steps=3), expected[2:])
        assert t.stats().fallbacks == 0
    with Trainer(out, plan, init=init, inplace=False) as t:
        assert np.array_equal(t.run([dict(zip(step.batch, b)) for b in batches]), expected)
        assert t.inplace == {} and all(np.array_equal(v, final[k]) for k, v in t.parameters().items())


def test_bad_input_is_a_one_line_error(tmp_path):
    path = EXPORTERS / "mlp_sgdm_fx.onnx"
    model = onnx.load(path)
    step = TrainingStep.from_model(model)
    init, batches = fixed_data(model, step, 0, 1)
    some = dict(list(init.items())[1:])
    with pytest.raises(OllaInputError, match="init lacks"):
        Trainer(path, init=some, time_limit=0.2)
    t = Trainer(path, init=init, time_limit=0.2)
    with pytest.raises(OllaInputError, match="shape"):
        t.step((batches[0][0][:4], batches[0][1][:4]))
    with pytest.raises(OllaInputError, match="is float32"):
        t.step((batches[0][0], batches[0][1].astype(np.float32)))  # labels must stay integers
    t.close()
    bare = tmp_path / "bare.onnx"
    del model.metadata_props[:]
    onnx.save(model, bare)
    with pytest.raises(OllaInputError, match="updates="):
        Trainer(bare, init=init, time_limit=0.2)
    with Trainer(bare, init=init, time_limit=0.2, updates=step.updates, loss="loss") as t:
        assert np.isfinite(t.step(batches[0]))


def test_importing_the_package_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None; import olla_onnx, olla_onnx.train, olla_onnx.export; "
            "from olla_onnx.export import TrainingStep; from olla_onnx import Trainer; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
