"""The training-graph corpus in models/: valid, static, runs in onnxruntime, matches PyTorch.

The main check needs no torch: onnxruntime's outputs for the tiny variants are
compared with the PyTorch outputs recorded in models/reference/<file>.npz
(inputs are regenerated from the seed, then the recorded test-point moves --
ReLU margins, max-pool tie breaking -- are put in). Tests that need torch skip
without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from olla_onnx.export.build import static_shape_problems
from olla_onnx.export.compare import compare, load_reference, make_inputs, run_onnxruntime

MODELS = Path(__file__).resolve().parent.parent / "models"
MANIFEST = json.loads((MODELS / "manifest.json").read_text())
TINY = sorted(f for f, r in MANIFEST["models"].items() if r["variant"] == "tiny")
ALL = sorted(MANIFEST["models"])
NAME_PREFIXES_IN = ("param.", "state.momentum_buffer.", "state.exp_avg.", "state.exp_avg_sq.")
NAME_PREFIXES_OUT = ("param_out.", "state_out.momentum_buffer.", "state_out.exp_avg.", "state_out.exp_avg_sq.")


def test_manifest_lists_every_onnx_file_and_corpus_is_small():
    on_disk = {p.name for p in MODELS.glob("*.onnx")} - {"mlp_sgd_handwritten.onnx"}
    assert on_disk == set(ALL)
    assert sum((MODELS / f).stat().st_size for f in ALL) < 30 * 2**20
    tiny_names = {MANIFEST["models"][f]["model"] for f in TINY}
    assert {"mlp", "cnn"} <= tiny_names
    for f, r in MANIFEST["models"].items():
        assert r["file_bytes"] == (MODELS / f).stat().st_size, f


def test_full_size_vision_graphs_take_224_images_at_batch_32_or_more():
    """The issue's realistic sizes; a check whose test point was tiled says so consistently."""
    vision = 0
    for fname, r in MANIFEST["models"].items():
        model = onnx.load(MODELS / fname, load_external_data=False)
        x = next(vi for vi in model.graph.input if vi.name == "batch.input")
        dims = [d.dim_value for d in x.type.tensor_type.shape.dim]
        if r["variant"] != "full" or len(dims) != 4:
            continue
        vision += 1
        assert dims[0] >= 32, (fname, dims)
        assert dims[2:] == [224, 224] or fname == "cnn.onnx", (fname, dims)  # (the small CNN is CIFAR-sized)
        tiled = r["check"]["test_point"].get("tiled") if r.get("check") and r["check"].get("test_point") else None
        if tiled:
            assert tiled["test_point_batch"] * tiled["copies"] == dims[0], fname
    assert vision >= 7


@pytest.mark.parametrize("fname", ALL)
def test_graph_valid_default_domain_static_and_named(fname):
    model = onnx.load(MODELS / fname)
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    # weights are graph inputs; initializers are only the exporter's small folded constants
    assert sum(len(t.raw_data) for t in model.graph.initializer) < 2**20
    assert not any(t.name.startswith(("param", "state")) for t in model.graph.initializer)
    assert static_shape_problems(model) == []
    ins = [vi.name for vi in model.graph.input]
    outs = [vi.name for vi in model.graph.output]
    assert "batch.input" in ins and "batch.target" in ins and outs[0] == "loss"
    params = [n[len("param."):] for n in ins if n.startswith("param.")]
    assert params and all(n.startswith(NAME_PREFIXES_IN) or n in ("batch.input", "batch.target", "step") for n in ins)
    assert all(n.startswith(NAME_PREFIXES_OUT) or n in ("loss", "step_out") for n in outs)
    # every parameter comes back updated, and every state slot for every parameter
    assert sorted(n[len("param_out."):] for n in outs if n.startswith("param_out.")) == sorted(params)
    for s in {n.split(".")[1] for n in ins if n.startswith("state.")}:
        assert sorted(n[len(f"state_out.{s}."):] for n in outs if n.startswith(f"state_out.{s}.")) == sorted(params)
    assert MANIFEST["models"][fname]["nodes"] == len(model.graph.node)


@pytest.mark.parametrize("fname", TINY)
def test_tiny_step_matches_recorded_pytorch_step(fname):
    model = onnx.load(MODELS / fname)
    inputs, ref = load_reference(MODELS / "reference" / fname.replace(".onnx", ".npz"), model,
                                 MANIFEST["models"][fname]["check"]["seed"])
    got = run_onnxruntime(model, inputs)
    assert set(ref) == set(got)
    cmp = compare(got, ref, inputs)
    assert cmp.ok, cmp.as_dict()
    # the step really changed the parameters (the check is not comparing inputs with inputs)
    moved = [np.max(np.abs(got[k] - inputs[k.replace("param_out.", "param.")])) for k in got if k.startswith("param_out.")]
    assert max(moved) > 1e-6


def test_recorded_test_point_moves_only_biases_and_images_a_little():
    """The recorded inputs are the seeded ones except some biases (shifted by at most 0.05 std of the
    ReLU input they feed) and the image batch (~1e-4 on N(0,1) pixels), as the manifest records."""
    moved_any = False
    for fname in TINY:
        model = onnx.load(MODELS / fname)
        seeded = make_inputs(model, 0)
        data = np.load(MODELS / "reference" / fname.replace(".onnx", ".npz"))
        point = MANIFEST["models"][fname]["check"]["test_point"]
        shifts = {"bias": 0.0, "input": 0.0}
        for key in (k for k in data.files if k.startswith("input:")):
            name = key[len("input:"):]
            assert name.startswith("param.") and name.endswith(".bias") or name == "batch.input", (fname, name)
            kind = "input" if name == "batch.input" else "bias"
            shifts[kind] = max(shifts[kind], float(np.max(np.abs(data[key].astype(np.float64) - seeded[name]))))
            moved_any = True
        if point["decisions"]:
            assert shifts["bias"] == pytest.approx(point["max_bias_shift"], rel=1e-5, abs=1e-9), fname
            assert shifts["input"] == pytest.approx(point["max_input_shift"], rel=1e-5, abs=1e-9), fname
            assert shifts["bias"] < 0.2 and shifts["input"] < 1e-3, fname
            assert point["relu_min_margin"] is None or point["relu_min_margin"] > 1e-5, fname
            assert point["pool_near_ties_left"] == 0, fname
        else:  # nothing to decide (no ReLU, no max-pool): the seeded point itself
            assert shifts == {"bias": 0.0, "input": 0.0}, fname
    assert moved_any


def test_compare_catches_a_wrong_update():
    model = onnx.load(MODELS / "mlp_tiny.onnx")
    inputs, ref = load_reference(MODELS / "reference" / "mlp_tiny.npz", model, 0)
    got = run_onnxruntime(model, inputs)
    key = next(k for k in got if k.startswith("param_out."))
    got[key] = got[key] + 1e-3 * np.max(np.abs(ref[key]))
    assert not compare(got, ref, inputs).ok
    # other seeds give other inputs, and the recorded outputs no longer match
    other = make_inputs(model, 1)
    assert not compare(run_onnxruntime(model, other), ref, other).ok


def test_mlp_tiny_export_matches_eager_pytorch():
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from olla_onnx.export.build import check_against_torch
    from olla_onnx.export.corpus import BY_NAME
    from olla_onnx.export.trainstep import export_train_step

    entry = BY_NAME["mlp"]
    import dataclasses

    from olla_onnx.export.corpus import ADAMW, build_module, cross_entropy, example_inputs, metadata

    entry = dataclasses.replace(entry, optimizer=ADAMW)  # the other optimizer family than the committed file
    variant = entry.tiny
    module = build_module(variant, "meta")
    model = export_train_step(module, cross_entropy, entry.optimizer, example_inputs(entry, variant, module))
    for k, v in metadata(entry, variant).items():
        model.metadata_props.add(key=k, value=v)
    result, _, _ = check_against_torch(entry, True, model)
    assert result["ok"], result
    assert any(vi.name == "step" for vi in model.graph.input)


def test_graph_from_onnxruntime_training_goes_through_the_frontend():
    """A training graph not from this exporter: gradient ops in com.microsoft (see models/ortraining)."""
    from olla_onnx.formats.onnx.read import load_onnx

    path = MODELS / "ortraining" / "mlp_ort_training.onnx"
    graph, model = load_onnx(path)
    assert any(n.domain == "com.microsoft" for n in model.graph.node)
    assert len(graph.nodes) == len(model.graph.node) == 17
    grad = graph.tensors["fc0.weight_grad"]
    assert grad.size == 128 * 64 * 4
    # parameters are recognised by their gradient's name (onnxruntime-training's `<name>_grad`)
    assert graph.tensors["fc0.weight"].kind.value == "parameter"
    assert grad.kind.value == "gradient"


@pytest.mark.parametrize("fname", [f for f in ("gpt2_tiny.onnx", "gpt2.onnx") if f in ALL])
def test_gpt2_tied_embedding_is_one_parameter(fname):
    """The token embedding and the output projection share one weight: one input, one update."""
    model = onnx.load(MODELS / fname)
    ins = {vi.name for vi in model.graph.input}
    outs = {vi.name for vi in model.graph.output}
    assert "param.wte.weight" in ins and "param_out.wte.weight" in outs and "step" in ins
    assert not any("lm_head" in n for n in ins | outs)
