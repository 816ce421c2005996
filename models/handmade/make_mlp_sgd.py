"""Write a hand-built MLP training step (forward, backward, SGD with momentum) with onnx.helper.

This graph does not come from the PyTorch exporter: every gradient is written
out by hand, so it shows olla-onnx reading a training graph from another
source. Regenerate with:

    python models/handmade/make_mlp_sgd.py --out models/mlp_sgd_handwritten.onnx

Inputs follow the corpus naming: ``param.<layer>.weight|bias``,
``state.momentum_buffer.<...>``, ``batch.input``, ``batch.target`` (one-hot);
outputs ``loss``, ``param_out.<...>``, ``state_out.momentum_buffer.<...>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LR, MOMENTUM = 0.05, 0.9


def build(batch: int = 64, dims: tuple[int, ...] = (256, 512, 512, 256, 10)) -> onnx.ModelProto:
    f = TensorProto.FLOAT
    nodes: list[onnx.NodeProto] = []
    inits = [
        numpy_helper.from_array(np.array(-1.0 / batch, dtype=np.float32), "c.neg_inv_batch"),
        numpy_helper.from_array(np.array(1.0 / batch, dtype=np.float32), "c.inv_batch"),
        numpy_helper.from_array(np.array(LR, dtype=np.float32), "c.lr"),
        numpy_helper.from_array(np.array(MOMENTUM, dtype=np.float32), "c.momentum"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "c.axis0"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "c.zero"),
    ]
    inputs = [
        helper.make_tensor_value_info("batch.input", f, [batch, dims[0]]),
        helper.make_tensor_value_info("batch.target", f, [batch, dims[-1]]),
    ]
    outputs = [helper.make_tensor_value_info("loss", f, [])]
    layers = len(dims) - 1

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", **attrs))
        return outs[0]

    # forward
    act = "batch.input"
    pre: list[str] = []
    acts = [act]
    for i in range(layers):
        w, b = f"param.fc{i}.weight", f"param.fc{i}.bias"
        inputs += [helper.make_tensor_value_info(w, f, [dims[i], dims[i + 1]]), helper.make_tensor_value_info(b, f, [dims[i + 1]])]
        mm = node("MatMul", [act, w], [f"fc{i}.mm"])
        h = node("Add", [mm, b], [f"fc{i}.out"])
        pre.append(h)
        if i < layers - 1:
            act = node("Relu", [h], [f"fc{i}.relu"])
            acts.append(act)
    logits = pre[-1]
    lsm = node("LogSoftmax", [logits], ["logsoftmax"], axis=1)
    prod = node("Mul", [lsm, "batch.target"], ["nll.prod"])
    total = node("ReduceSum", [prod], ["nll.sum"], keepdims=0)
    node("Mul", [total, "c.neg_inv_batch"], ["loss"])
    # backward: d logits = (softmax - target) / batch
    sm = node("Softmax", [logits], ["softmax"], axis=1)
    diff = node("Sub", [sm, "batch.target"], ["grad.logits.raw"])
    grad = node("Mul", [diff, "c.inv_batch"], ["grad.fc%d.out" % (layers - 1)])
    for i in reversed(range(layers)):
        w, b = f"param.fc{i}.weight", f"param.fc{i}.bias"
        xt = node("Transpose", [acts[i]], [f"fc{i}.in.T"], perm=[1, 0])
        gw = node("MatMul", [xt, grad], [f"grad.fc{i}.weight"])
        gb = node("ReduceSum", [grad, "c.axis0"], [f"grad.fc{i}.bias"], keepdims=0)
        if i > 0:
            wt = node("Transpose", [w], [f"fc{i}.weight.T"], perm=[1, 0])
            gact = node("MatMul", [grad, wt], [f"grad.fc{i - 1}.relu"])
            mask = node("Greater", [pre[i - 1], "c.zero"], [f"fc{i - 1}.mask"])
            maskf = node("Cast", [mask], [f"fc{i - 1}.maskf"], to=f)
            next_grad = node("Mul", [gact, maskf], [f"grad.fc{i - 1}.out"])
        # SGD with momentum: m' = mu * m + g ; p' = p - lr * m'
        for p, g, shape in ((w, gw, [dims[i], dims[i + 1]]), (b, gb, [dims[i + 1]])):
            path = p[len("param."):]
            m = f"state.momentum_buffer.{path}"
            inputs.append(helper.make_tensor_value_info(m, f, shape))
            mm = node("Mul", [m, "c.momentum"], [f"{m}.scaled"])
            m_new = node("Add", [mm, g], [f"state_out.momentum_buffer.{path}"])
            step = node("Mul", [m_new, "c.lr"], [f"{p}.step"])
            node("Sub", [p, step], [f"param_out.{path}"])
            outputs += [
                helper.make_tensor_value_info(f"param_out.{path}", f, shape),
                helper.make_tensor_value_info(f"state_out.momentum_buffer.{path}", f, shape),
            ]
        if i > 0:
            grad = next_grad
    graph = helper.make_graph(nodes, "mlp_sgd_handwritten", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="olla-onnx handmade")
    onnx.checker.check_model(model, full_check=True)
    return model


def reference_step(feeds: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """The same step in plain numpy (float64), for checking what onnxruntime computes."""
    x = feeds["batch.input"].astype(np.float64)
    y = feeds["batch.target"].astype(np.float64)
    batch = x.shape[0]
    acts, pres = [x], []
    for i in range(layers):
        h = acts[-1] @ feeds[f"param.fc{i}.weight"] + feeds[f"param.fc{i}.bias"]
        pres.append(h)
        if i < layers - 1:
            acts.append(np.maximum(h, 0))
    z = pres[-1]
    zs = z - z.max(axis=1, keepdims=True)
    lsm = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))
    out = {"loss": np.array(-(lsm * y).sum() / batch)}
    grad = (np.exp(lsm) - y) / batch
    for i in reversed(range(layers)):
        gw, gb = acts[i].T @ grad, grad.sum(axis=0)
        for name, g in ((f"fc{i}.weight", gw), (f"fc{i}.bias", gb)):
            m_new = MOMENTUM * feeds[f"state.momentum_buffer.{name}"] + g
            out[f"state_out.momentum_buffer.{name}"] = m_new
            out[f"param_out.{name}"] = feeds[f"param.{name}"] - LR * m_new
        if i > 0:
            grad = (grad @ feeds[f"param.fc{i}.weight"].T) * (pres[i - 1] > 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models/mlp_sgd_handwritten.onnx"))
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    model = build(args.batch)
    onnx.save(model, args.out)
    print(f"wrote {args.out}: {len(model.graph.node)} nodes")


if __name__ == "__main__":
    main()
