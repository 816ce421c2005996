"""Small but real ONNX graphs built with onnx.helper, for the frontend, order and rewrite tests."""

from __future__ import annotations

import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _init(name, shape, seed=0):
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)


def mlp_training(batch: int | str = 8, d_in: int = 16, hidden: int = 32, d_out: int = 4, lr: float = 0.01) -> onnx.ModelProto:
    """One SGD step of a 2-layer MLP with MSE loss, written out: forward, backward, update.

    Graph inputs use the corpus's names: ``batch.x``, ``batch.y``, ``param.*``;
    outputs ``loss`` and ``param_out.*``.
    """
    P = {"w1": [d_in, hidden], "b1": [hidden], "w2": [hidden, d_out], "b2": [d_out]}
    inputs = [_vi("batch.x", [batch, d_in]), _vi("batch.y", [batch, d_out])]
    inputs += [_vi(f"param.{k}", s) for k, s in P.items()]
    inits = [
        numpy_helper.from_array(np.array(lr, np.float32), "lr"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    N = helper.make_node
    nodes = [
        N("MatMul", ["batch.x", "param.w1"], ["h1"], name="fc1"),
        N("Add", ["h1", "param.b1"], ["a1"], name="fc1_bias"),
        N("Relu", ["a1"], ["r1"], name="relu1"),
        N("MatMul", ["r1", "param.w2"], ["h2"], name="fc2"),
        N("Add", ["h2", "param.b2"], ["pred"], name="fc2_bias"),
        N("Sub", ["pred", "batch.y"], ["diff"], name="err"),
        N("Mul", ["diff", "diff"], ["sq"], name="square"),
        N("ReduceMean", ["sq"], ["loss"], keepdims=0, name="mse"),
        # backward (d loss / d pred up to a constant factor folded into lr)
        N("Mul", ["diff", "two"], ["pred_grad"], name="dpred"),
        N("ReduceSum", ["pred_grad", "axes0"], ["b2_grad"], keepdims=0, name="db2"),
        N("Transpose", ["r1"], ["r1_t"], perm=[1, 0], name="r1T"),
        N("MatMul", ["r1_t", "pred_grad"], ["w2_grad"], name="dw2"),
        N("Transpose", ["param.w2"], ["w2_t"], perm=[1, 0], name="w2T"),
        N("MatMul", ["pred_grad", "w2_t"], ["r1_grad"], name="dr1"),
        N("Relu", ["a1"], ["mask_src"], name="relu1_again"),
        N("Sign", ["mask_src"], ["mask"], name="relu_mask"),
        N("Mul", ["r1_grad", "mask"], ["a1_grad"], name="da1"),
        N("ReduceSum", ["a1_grad", "axes0"], ["b1_grad"], keepdims=0, name="db1"),
        N("Transpose", ["batch.x"], ["x_t"], perm=[1, 0], name="xT"),
        N("MatMul", ["x_t", "a1_grad"], ["w1_grad"], name="dw1"),
    ]
    nodes.insert(9, N("Constant", [], ["axes0"], value=numpy_helper.from_array(np.array([0], np.int64)), name="axes"))
    outputs = [_vi("loss", [])]
    for k, s in P.items():
        nodes.append(N("Mul", [f"{k}_grad", "lr"], [f"{k}_step"], name=f"scale_{k}"))
        nodes.append(N("Sub", [f"param.{k}", f"{k}_step"], [f"param_out.{k}"], name=f"update_{k}"))
        outputs.append(_vi(f"param_out.{k}", s))
    g = helper.make_graph(nodes, "mlp_training", inputs, outputs, initializer=inits)
    return helper.make_model(g, opset_imports=OPSET)


def transformer_block(batch: int = 2, seq: int = 8, d: int = 16, heads: int = 2) -> onnx.ModelProto:
    """A pre-norm transformer block: LayerNorm, multi-head self-attention, residual, LayerNorm, MLP, residual."""
    hd = d // heads
    N = helper.make_node
    I64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    inits = [
        _init("ln1_g", [d], 1), _init("ln1_b", [d], 2), _init("wq", [d, d], 3), _init("wk", [d, d], 4),
        _init("wv", [d, d], 5), _init("wo", [d, d], 6), _init("ln2_g", [d], 7), _init("ln2_b", [d], 8),
        _init("w_up", [d, 4 * d], 9), _init("w_down", [4 * d, d], 10),
        I64("heads_shape", [batch, seq, heads, hd]), I64("merge_shape", [batch, seq, d]),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(hd), np.float32), "scale"),
    ]  # fmt: skip
    nodes = [N("LayerNormalization", ["x", "ln1_g", "ln1_b"], ["n1"], axis=-1, name="ln1")]
    for p in ("q", "k", "v"):
        nodes += [
            N("MatMul", ["n1", f"w{p}"], [f"{p}_proj"], name=f"{p}_proj"),
            N("Reshape", [f"{p}_proj", "heads_shape"], [f"{p}_split"], name=f"{p}_split"),
            N("Transpose", [f"{p}_split"], [f"{p}_h"], perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3], name=f"{p}_heads"),
        ]
    nodes += [
        N("MatMul", ["q_h", "k_h"], ["scores_raw"], name="qk"),
        N("Mul", ["scores_raw", "scale"], ["scores"], name="scale_scores"),
        N("Softmax", ["scores"], ["probs"], axis=-1, name="softmax"),
        N("MatMul", ["probs", "v_h"], ["ctx_h"], name="attn_v"),
        N("Transpose", ["ctx_h"], ["ctx_t"], perm=[0, 2, 1, 3], name="merge_heads"),
        N("Reshape", ["ctx_t", "merge_shape"], ["ctx"], name="merge"),
        N("MatMul", ["ctx", "wo"], ["attn_out"], name="o_proj"),
        N("Add", ["x", "attn_out"], ["res1"], name="residual1"),
        N("LayerNormalization", ["res1", "ln2_g", "ln2_b"], ["n2"], axis=-1, name="ln2"),
        N("MatMul", ["n2", "w_up"], ["up"], name="mlp_up"),
        N("Gelu" if False else "Sigmoid", ["up"], ["up_sig"], name="mlp_gate"),
        N("Mul", ["up", "up_sig"], ["act"], name="silu"),
        N("MatMul", ["act", "w_down"], ["down"], name="mlp_down"),
        N("Add", ["res1", "down"], ["y"], name="residual2"),
    ]
    g = helper.make_graph(nodes, "transformer_block", [_vi("x", [batch, seq, d])], [_vi("y", [batch, seq, d])], initializer=inits)
    return helper.make_model(g, opset_imports=OPSET)


def resnet_block(batch: int = 2, c: int = 8, hw: int = 8) -> onnx.ModelProto:
    """Two ResNet basic blocks (Conv-BN-Relu-Conv-BN + identity, then Relu), a pooled head and two outputs."""
    N = helper.make_node
    inits, nodes = [], []
    x = "x"
    for b in range(2):
        for j in range(2):
            pre = f"b{b}c{j}"
            inits += [_init(f"{pre}_w", [c, c, 3, 3], 10 * b + j)]
            inits += [numpy_helper.from_array(np.ones(c, np.float32), f"{pre}_{s}") for s in ("scale", "var")]
            inits += [numpy_helper.from_array(np.zeros(c, np.float32), f"{pre}_{s}") for s in ("bias", "mean")]
            src = x if j == 0 else f"b{b}r0"
            nodes.append(N("Conv", [src, f"{pre}_w"], [f"{pre}_conv"], pads=[1, 1, 1, 1], name=f"{pre}_conv"))
            nodes.append(N("BatchNormalization", [f"{pre}_conv", f"{pre}_scale", f"{pre}_bias", f"{pre}_mean", f"{pre}_var"],
                           [f"{pre}_bn"], name=f"{pre}_bn"))  # fmt: skip
            if j == 0:
                nodes.append(N("Relu", [f"{pre}_bn"], [f"b{b}r0"], name=f"{pre}_relu"))
        nodes.append(N("Add", [f"b{b}c1_bn", x], [f"b{b}sum"], name=f"b{b}_add"))
        nodes.append(N("Relu", [f"b{b}sum"], [f"b{b}out"], name=f"b{b}_relu"))
        x = f"b{b}out"
    inits.append(_init("fc_w", [c, 10], 99))
    nodes += [
        N("GlobalAveragePool", [x], ["pooled"], name="gap"),
        N("Flatten", ["pooled"], ["flat"], name="flatten"),
        N("MatMul", ["flat", "fc_w"], ["logits"], name="fc"),
        N("ReduceMax", ["b0out"], ["feat_max"], keepdims=0, name="side_output"),
    ]
    g = helper.make_graph(nodes, "resnet_blocks", [_vi("x", [batch, c, hw, hw])],
                          [_vi("logits", [batch, 10]), _vi("feat_max", [])], initializer=inits)  # fmt: skip
    return helper.make_model(g, opset_imports=OPSET)


def random_dag(
    n: int, seed: int, shuffle_names: bool = True, n_inputs: int = 3, window: int = 6, shapes: bool = False
) -> onnx.ModelProto:
    """A random DAG of elementwise ops on [4, 4] float tensors, listed topologically.

    Node names are random strings (so the file order, not the names, decides
    onnxruntime's tie-breaking), some empty and some repeated. With ``shapes``,
    some steps are a Shape node feeding an Expand (onnxruntime runs ready Shape
    nodes early under PRIORITY_BASED).
    """
    rnd = random.Random(seed)
    names = [f"in{i}" for i in range(n_inputs)]
    nodes = []
    for i in range(n):
        op = rnd.choice(["Add", "Mul", "Sub", "Relu", "Neg", "Sigmoid", "Max"])
        pool = names[-window:]
        ins = [rnd.choice(pool)] if op in ("Relu", "Neg", "Sigmoid") else [rnd.choice(pool), rnd.choice(pool)]
        if op == "Max" and rnd.random() < 0.5:
            ins.append(rnd.choice(names))
        nm = rnd.choice(["", "dup", f"n{rnd.randrange(10**6)}", f"z{i}"]) if shuffle_names else f"n{i}"
        if shapes and rnd.random() < 0.3:
            nodes.append(helper.make_node("Shape", [rnd.choice(names)], [f"s{i}"], name=f"shape{i}"))
            op, ins = "Expand", [rnd.choice(pool), f"s{i}"]
        nodes.append(helper.make_node(op, ins, [f"t{i}"], name=nm))
        names.append(f"t{i}")
    read = {x for nd in nodes for x in nd.input}
    outs = [t for t in names[n_inputs:] if t not in read]
    extra = rnd.sample(names[n_inputs:], k=min(2, n))
    out_names = list(dict.fromkeys(outs + extra))
    g = helper.make_graph(
        nodes, f"random{seed}", [_vi(f"in{i}", [4, 4]) for i in range(n_inputs)], [_vi(t, [4, 4]) for t in out_names]
    )
    return helper.make_model(g, opset_imports=OPSET)
