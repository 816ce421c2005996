"""Seeded inputs for a corpus graph, running it in onnxruntime, and comparing outputs.

Needs numpy and onnxruntime only (no torch), so the corpus tests run in the
default test environment against the PyTorch outputs recorded in
``models/reference/<name>.npz``.

Inputs are a pure function of the graph's input list, its metadata and a
seed (numpy's PCG64, stable across numpy versions):

- ``param.*``: 1-D ``...weight`` (norm scales) ``1 + 0.1 N(0,1)``; other 1-D
  ``0.1 N(0,1)``; ``k``-D ``N(0,1) / sqrt(prod(shape[1:]))``.
- ``state.momentum_buffer.*`` and ``state.exp_avg.*``: ``0.01 N(0,1)``;
  ``state.exp_avg_sq.*``: ``1e-4 U(0,1)`` (non-negative, as Adam keeps it).
- ``step``: 3.0 (three steps already taken).
- float ``batch.*``: ``N(0,1)``; integer ``batch.*``: uniform in
  ``[0, high)`` with ``high`` from the metadata key ``olla.high.<name>``.

The numerical check does not use this point as it is: ReLU and max-pool
decisions that lie within float32 rounding make the step discontinuous there,
so ``olla_onnx.export.testpoint`` moves it slightly (some biases, the image
batch) to where every decision has a margin. The moved inputs of the tiny
variants are stored beside their PyTorch outputs (``input:<name>`` entries of
``models/reference/<file>.npz``); :func:`load_reference` puts the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

STEP_BEFORE = 3.0


def _dims(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            raise ValueError(f"input {vi.name} has a non-static dimension")
        dims.append(d.dim_value)
    return tuple(dims)


def make_inputs(model: onnx.ModelProto, seed: int = 0, batch: int | None = None) -> dict[str, np.ndarray]:
    """The seeded inputs of a corpus graph, in graph-input order (see module docstring).

    With ``batch`` the ``batch.*`` inputs get that many samples instead of the
    graph's: the inputs the same graph exported at that batch would get (the
    ``batch.*`` inputs come after every parameter and state input, so those
    are drawn the same).
    """
    rng = np.random.default_rng(seed)
    meta = {p.key: p.value for p in model.metadata_props}
    out: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        name, shape = vi.name, _dims(vi)
        if batch is not None and name.startswith("batch."):
            shape = (batch,) + shape[1:]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if name.startswith("param."):
            if len(shape) == 1:
                base = 1.0 if name.endswith(".weight") else 0.0
                a = base + 0.1 * rng.standard_normal(shape)
            else:
                a = rng.standard_normal(shape) / np.sqrt(max(1, int(np.prod(shape[1:]))))
        elif name.startswith("state.exp_avg_sq."):
            a = 1e-4 * rng.random(shape)
        elif name.startswith("state."):
            a = 0.01 * rng.standard_normal(shape)
        elif name == "step":
            a = np.full(shape, STEP_BEFORE)
        elif np.issubdtype(dtype, np.integer):
            high = int(meta[f"olla.high.{name}"])
            a = rng.integers(0, high, size=shape)
        else:
            a = rng.standard_normal(shape)
        out[name] = np.array(a, dtype=dtype, order="C")  # (ascontiguousarray would make 0-d 1-d)
    return out


INPUT_PREFIX = "input:"


def load_reference(path: str | Path, model: onnx.ModelProto, seed: int = 0
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The inputs and PyTorch outputs recorded for a tiny corpus graph: ``(inputs, outputs)``.

    Inputs are :func:`make_inputs` ``(model, seed)`` with the recorded
    ``input:<name>`` entries (the moved test point) put in their place.
    """
    data = dict(np.load(path))
    inputs = make_inputs(model, seed)
    for key in [k for k in data if k.startswith(INPUT_PREFIX)]:
        name = key[len(INPUT_PREFIX):]
        if name not in inputs or data[key].shape != inputs[name].shape or data[key].dtype != inputs[name].dtype:
            raise ValueError(f"{path}: recorded input {name!r} does not fit the graph")
        inputs[name] = data.pop(key)
    return inputs, data


def run_onnxruntime(model: onnx.ModelProto | str | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All graph outputs of one run in onnxruntime's CPU provider, by name."""
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


@dataclass(frozen=True)
class Comparison:
    """Per-output relative errors ``max|a - b| / max(max|b|, tiny)`` (infinity norm per tensor).

    ``ok`` is the corpus criterion: the loss and every updated parameter
    (``param_out.*``) within ``tolerance``. The updated optimizer state and the
    change each output made to its input (``param_out.x - param.x``, a much
    stricter view of the step) are reported beside it.
    """

    tolerance: float
    loss_rel: float
    param_name: str
    param_rel: float
    state_name: str
    state_rel: float
    update_name: str
    update_rel: float
    outputs: int

    @property
    def ok(self) -> bool:
        return bool(self.loss_rel <= self.tolerance and self.param_rel <= self.tolerance)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok, "tolerance": self.tolerance, "loss_rel_err": self.loss_rel,
            "max_param_rel_err": self.param_rel, "max_param_rel_err_output": self.param_name,
            "max_state_rel_err": self.state_rel, "max_state_rel_err_output": self.state_name,
            "max_update_rel_err": self.update_rel, "max_update_rel_err_output": self.update_name,
            "outputs_compared": self.outputs,
        }


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not np.all(np.isfinite(a)):
        return float("inf")
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


def compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
            tolerance: float = 1e-4) -> Comparison:
    """Compare every output in ``ref`` with ``got``; a missing output counts as infinitely wrong."""
    worst = {"param": ("", 0.0), "state": ("", 0.0), "update": ("", 0.0)}

    def note(kind: str, name: str, r: float) -> None:
        if r >= worst[kind][1]:
            worst[kind] = (name, r)

    for name, b in ref.items():
        if name == "loss":
            continue
        a = got.get(name)
        r = float("inf") if a is None else _rel(a, b)
        note("param" if name.startswith("param_out.") else "state", name, r)
        src = name.replace("param_out.", "param.", 1).replace("state_out.", "state.", 1)
        if a is not None and src in inputs and name != "step_out":
            note("update", name, _rel(a.astype(np.float64) - inputs[src], b.astype(np.float64) - inputs[src]))
    loss_rel = _rel(got["loss"], ref["loss"]) if "loss" in got else float("inf")
    return Comparison(tolerance, loss_rel, *worst["param"], *worst["state"], *worst["update"], len(ref))
