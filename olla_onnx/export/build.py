"""Export corpus entries to ``models/`` and check them against PyTorch (the manifest and README:
:mod:`olla_onnx.export.manifest`).

Used by ``python -m olla_onnx.export`` and ``benchmarks/corpus_check.py``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import onnx

from olla_onnx.export.compare import INPUT_PREFIX, compare, make_inputs, run_onnxruntime
from olla_onnx.export.manifest import regen_command

SEED = 0


def static_shape_problems(model: onnx.ModelProto) -> list[str]:
    """Names of values (inputs, outputs, intermediates) without a fully static shape after
    strict shape inference with data propagation; empty when every size is known."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    g = inferred.graph
    known: dict[str, onnx.ValueInfoProto] = {vi.name: vi for vi in list(g.input) + list(g.output) + list(g.value_info)}
    problems = []
    inits = {t.name for t in g.initializer}
    for node in g.node:
        for out in node.output:
            if out and out not in known and out not in inits:
                problems.append(out)
    for name, vi in known.items():
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            problems.append(name)
        elif any(not d.HasField("dim_value") for d in tt.shape.dim):
            problems.append(name)
    return problems


def tensor_bytes(vi: onnx.ValueInfoProto) -> int:
    dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).itemsize
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def describe(model: onnx.ModelProto) -> dict:
    g = model.graph
    ops: dict[str, int] = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    pbytes = sum(tensor_bytes(vi) for vi in g.input if vi.name.startswith("param."))
    sbytes = sum(tensor_bytes(vi) for vi in g.input if vi.name.startswith("state."))
    return {
        "nodes": len(g.node),
        "parameters": sum(1 for vi in g.input if vi.name.startswith("param.")),
        "parameter_bytes": pbytes,
        "optimizer_state_bytes": sbytes,
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "domains": sorted({n.domain or "ai.onnx" for n in g.node}),
        "op_types": dict(sorted(ops.items())),
    }


def check_inputs(entry, tiny: bool, model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """The check's inputs: the seeded point (``make_inputs``, seed ``SEED``) moved to where every
    ReLU/max-pool decision has a margin (``testpoint.decision_margin_point``).

    A variant with ``test_point_batch`` ``b`` (a divisor of its batch ``B``) gets the point
    found for its own graph at batch ``b`` (``make_inputs(model, SEED, batch=b)``, the same
    parameters and state), its ``batch.*`` inputs tiled ``B / b`` times along the batch axis.
    With batch statistics (train-mode batch norm: mean and biased variance) and a mean loss,
    the tiled step is the batch-``b`` step: every activation is a batch-``b`` one repeated,
    the loss and every gradient are the batch-``b`` ones, and every margin is a batch-``b``
    margin. The record is the batch-``b`` one (margins and counts at batch ``b``) with
    ``tiled`` added; re-measuring at batch ``B`` (``testpoint.measure_point``) would cost a
    float64 forward pass at the full batch (U-Net at 32: ~19 GiB).

    Returns ``(inputs, moved, record)``: all inputs, the ones that differ from the
    seeded point, and the margins record.
    """
    from olla_onnx.export.testpoint import decision_margin_point

    variant = entry.variant(tiny)
    seeded = make_inputs(model, SEED)
    full, base = variant.input_shape[0], variant.test_point_batch
    if base is None or base == full:
        inputs, record = decision_margin_point(variant.make, seeded)
    else:
        if full % base:
            raise ValueError(f"{entry.name}: test-point batch {base} does not divide the batch {full}")
        small = make_inputs(model, SEED, batch=base)
        point, found = decision_margin_point(variant.make, small)
        del small
        inputs = {k: np.concatenate([v] * (full // base), axis=0) if k.startswith("batch.") else v
                  for k, v in point.items()}
        del point
        record = found | {"tiled": {"test_point_batch": base, "copies": full // base,
                                    "margins": f"found and measured at batch {base}; the tiled batch repeats "
                                               f"its values (near ties: {full // base} x the count)"}}
    moved = {k: v for k, v in inputs.items() if not np.array_equal(v, seeded[k])}
    return inputs, moved, record


def check_against_torch(entry, tiny: bool, model: onnx.ModelProto, float64: bool = True
                        ) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run one step in onnxruntime and in PyTorch from the same inputs (:func:`check_inputs`).

    With ``float64`` a third, double-precision PyTorch step measures how far
    each float32 answer is from the exact one (``*_vs_float64``): the scale of
    float32 rounding in this model, against which the ONNX error can be read.
    Returns the check record, the PyTorch outputs and the moved inputs.
    """
    import torch

    from olla_onnx.export.corpus import reference_step

    inputs, moved, point = check_inputs(entry, tiny, model)
    t0 = time.perf_counter()
    ref = reference_step(entry, entry.variant(tiny), inputs)
    t1 = time.perf_counter()
    got = run_onnxruntime(model, inputs)
    t2 = time.perf_counter()
    cmp = compare(got, ref, inputs)
    result = cmp.as_dict() | {"seed": SEED, "test_point": point,
                              "torch_seconds": round(t1 - t0, 2), "onnxruntime_seconds": round(t2 - t1, 2)}
    if float64:
        exact = reference_step(entry, entry.variant(tiny), inputs, dtype=torch.float64)
        for label, answer in (("onnxruntime", got), ("torch_float32", ref)):
            c = compare(answer, exact, inputs)
            result[f"{label}_vs_float64"] = {"loss_rel_err": c.loss_rel, "max_param_rel_err": c.param_rel,
                                             "max_state_rel_err": c.state_rel, "max_update_rel_err": c.update_rel}
    return result, ref, moved


def export_one(entry, tiny: bool, models_dir: Path) -> tuple[onnx.ModelProto, dict]:
    """Export one variant, check it is valid and static, save it; returns the model and its manifest record."""
    from olla_onnx.export.corpus import build_module, example_inputs, metadata
    from olla_onnx.export.trainstep import export_train_step
    from olla_onnx.export.corpus import cross_entropy

    variant = entry.variant(tiny)
    t0 = time.perf_counter()
    module = build_module(variant, "meta")
    model = export_train_step(module, cross_entropy, entry.optimizer, example_inputs(entry, variant, module))
    for k, v in metadata(entry, variant).items():
        model.metadata_props.add(key=k, value=v)
    # keep the file lean: value_info is recomputed by anyone who loads it
    del model.graph.value_info[:]
    problems = static_shape_problems(model)
    if problems:
        raise RuntimeError(f"{entry.name}: {len(problems)} values without a static shape, e.g. {problems[:5]}")
    onnx.checker.check_model(model, full_check=True)
    seconds = time.perf_counter() - t0
    fname = entry.file_name(tiny)
    path = models_dir / f"{fname}.onnx"
    onnx.save(model, path)
    rec = {
        "file": path.name,
        "model": entry.name,
        "variant": "tiny" if tiny else "full",
        "architecture": entry.architecture,
        "batch": variant.batch_desc(),
        "loss": entry.loss,
        "optimizer": entry.optimizer.describe(),
        **describe(model),
        "file_bytes": path.stat().st_size,
        "all_shapes_static": True,
        "export_seconds": round(seconds, 1),
        "command": regen_command(entry.name, tiny),
    }
    return model, rec


def save_reference(path: Path, ref: dict[str, np.ndarray], moved: dict[str, np.ndarray] | None = None) -> None:
    """PyTorch outputs by graph name, plus the moved test-point inputs as ``input:<name>``
    (read back with ``compare.load_reference``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **ref, **{INPUT_PREFIX + k: v for k, v in (moved or {}).items()})


def environment() -> dict:
    import onnxruntime
    import onnxscript
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxscript": onnxscript.__version__, "python": platform.python_version()}

