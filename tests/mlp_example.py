"""Small training graphs written with ``onnx.helper``, for the tests of the runtime.

:func:`mlp_training_model` is one SGD step of a multilayer perceptron with a
squared-error loss: forward, hand-written backward, update. The parameters are
graph inputs and their updated values graph outputs (``<name>_new``), so a
training loop feeds the outputs back in (:func:`feedback_pairs`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as h


def mlp_training_model(batch: int = 32, widths: tuple[int, ...] = (256, 512, 512, 128), lr: float = 0.01) -> onnx.ModelProto:
    """One SGD step of an MLP (ReLU between layers) on ``0.5 * mean((f(x) - y)^2)``; opset 17.

    Inputs ``x [batch, widths[0]]``, ``y [batch, widths[-1]]``, ``W0..W{L-1}``;
    outputs ``loss`` and ``W{i}_new``. Nodes are listed forward, backward, update.
    """
    L = len(widths) - 1
    nodes: list[onnx.NodeProto] = []
    inits = [
        h.make_tensor("lr", TP.FLOAT, [], [lr]),
        h.make_tensor("zero", TP.FLOAT, [], [0.0]),
        h.make_tensor("scale", TP.FLOAT, [], [1.0 / (batch * widths[-1])]),
    ]
    inputs = [h.make_tensor_value_info("x", TP.FLOAT, [batch, widths[0]]), h.make_tensor_value_info("y", TP.FLOAT, [batch, widths[-1]])]
    act = "x"
    for i in range(L):
        inputs.append(h.make_tensor_value_info(f"W{i}", TP.FLOAT, [widths[i], widths[i + 1]]))
        nodes.append(h.make_node("MatMul", [act, f"W{i}"], [f"z{i}"], name=f"fwd_matmul{i}"))
        if i < L - 1:
            nodes.append(h.make_node("Relu", [f"z{i}"], [f"a{i}"], name=f"fwd_relu{i}"))
            act = f"a{i}"
        else:
            act = f"z{i}"
    nodes.append(h.make_node("Sub", [act, "y"], ["diff"], name="loss_sub"))
    nodes.append(h.make_node("Mul", ["diff", "diff"], ["sq"], name="loss_sq"))
    nodes.append(h.make_node("ReduceMean", ["sq"], ["msq"], name="loss_mean", keepdims=0))
    nodes.append(h.make_node("Mul", ["msq", "half"], ["loss"], name="loss_half"))
    inits.append(h.make_tensor("half", TP.FLOAT, [], [0.5]))
    nodes.append(h.make_node("Mul", ["diff", "scale"], [f"dz{L - 1}"], name="bwd_loss"))
    for i in reversed(range(L)):
        a_in = "x" if i == 0 else f"a{i - 1}"
        nodes.append(h.make_node("Transpose", [a_in], [f"{a_in}_T"], name=f"bwd_T{i}"))
        nodes.append(h.make_node("MatMul", [f"{a_in}_T", f"dz{i}"], [f"gW{i}"], name=f"bwd_gW{i}"))
        if i > 0:
            nodes.append(h.make_node("Transpose", [f"W{i}"], [f"W{i}_T"], name=f"bwd_WT{i}"))
            nodes.append(h.make_node("MatMul", [f"dz{i}", f"W{i}_T"], [f"da{i - 1}"], name=f"bwd_da{i - 1}"))
            nodes.append(h.make_node("Greater", [f"z{i - 1}", "zero"], [f"m{i - 1}"], name=f"bwd_mask{i - 1}"))
            nodes.append(h.make_node("Where", [f"m{i - 1}", f"da{i - 1}", "zero"], [f"dz{i - 1}"], name=f"bwd_relu{i - 1}"))
    outputs = [h.make_tensor_value_info("loss", TP.FLOAT, [])]
    for i in range(L):
        nodes.append(h.make_node("Mul", [f"gW{i}", "lr"], [f"step{i}"], name=f"upd_scale{i}"))
        nodes.append(h.make_node("Sub", [f"W{i}", f"step{i}"], [f"W{i}_new"], name=f"upd_sub{i}"))
        outputs.append(h.make_tensor_value_info(f"W{i}_new", TP.FLOAT, [widths[i], widths[i + 1]]))
    graph = h.make_graph(nodes, "mlp_train", inputs, outputs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="olla-onnx-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_parameters(widths: tuple[int, ...] = (256, 512, 512, 128), seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded initial weights ``W{i}`` (scaled normal) for :func:`mlp_training_model`."""
    rng = np.random.default_rng(seed)
    return {
        f"W{i}": (rng.standard_normal((widths[i], widths[i + 1])) / np.sqrt(widths[i])).astype(np.float32)
        for i in range(len(widths) - 1)
    }


def feedback_pairs(model: onnx.ModelProto) -> dict[str, str]:
    """Output -> input pairs of a training step: every output ``NAME_new`` whose ``NAME`` is a graph input."""
    inputs = {vi.name for vi in model.graph.input}
    return {o.name: o.name[: -len("_new")] for o in model.graph.output if o.name.endswith("_new") and o.name[: -len("_new")] in inputs}
