"""A training graph from onnxruntime-training's artifact generator (not from PyTorch, not from olla_onnx.export).

onnxruntime-training 1.19.2 (its last release on the package index, a cp311
wheel) installs beside numpy<2 and onnx 1.16 -- in a separate virtual
environment, because it replaces the `onnxruntime` package:

    python -m venv --system-site-packages /tmp/ortt
    /tmp/ortt/bin/pip install onnxruntime-training==1.19.2 "numpy<2" onnx==1.16.2
    /tmp/ortt/bin/python models/ortraining/make_ort_training.py --out models/ortraining

The forward graph (an MLP 64-128-10 with fixed batch 16) is written with
onnx.helper; `onnxruntime.training.artifacts.generate_artifacts` adds the
cross-entropy loss and the backward pass (gradient ops in the com.microsoft
domain) and writes a separate AdamW optimizer graph. The training graph is
kept as `mlp_ort_training.onnx`; the checkpoint and optimizer/eval graphs
are deleted (the optimizer update is a separate graph in this route).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def forward_model(batch: int = 16, dims: tuple[int, ...] = (64, 128, 10)) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "input"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        w = numpy_helper.from_array((rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32), f"fc{i}.weight")
        bb = numpy_helper.from_array(np.zeros(b, np.float32), f"fc{i}.bias")
        inits += [w, bb]
        y = f"fc{i}_out" if i + 2 < len(dims) else "logits"
        nodes.append(helper.make_node("Gemm", [x, w.name, bb.name], [y], name=f"fc{i}", transB=1))
        if i + 2 < len(dims):
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}"], name=f"relu{i}"))
            y = f"relu{i}"
        x = y
    graph = helper.make_graph(
        nodes, "mlp_forward",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, dims[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, dims[-1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    from onnxruntime.training import artifacts

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("models/ortraining"))
    args = ap.parse_args()
    model = forward_model()
    params = [t.name for t in model.graph.initializer]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts.generate_artifacts(model, requires_grad=params, frozen_params=[],
                                     loss=artifacts.LossType.CrossEntropyLoss,
                                     optimizer=artifacts.OptimType.AdamW, artifact_directory=tmp)
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "training_model.onnx", args.out / "mlp_ort_training.onnx")


if __name__ == "__main__":
    main()
