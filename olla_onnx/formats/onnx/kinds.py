"""Tensor kinds of an ONNX training graph (parameter, optimizer state, gradient, activation, ...), for reports.

Tensor kinds, first rule that applies wins:

1. The team corpus's names: resident ``param.*`` -> parameter,
   ``state.*`` -> optimizer_state, ``batch.*`` and ``step`` -> input.
2. Graph outputs -> output; outputs of Constant nodes -> constant.
3. A name containing ``grad`` (any case) -> gradient.
4. Other resident tensors: a graph input with a tensor named after it plus
   ``_grad`` (onnxruntime-training's convention) -> parameter; other graph
   inputs -> input. Initializers -> constant
   when the graph names its parameters ``param.*`` (the corpus); otherwise an
   initializer of a floating type with more than one element -> parameter,
   others -> constant.
5. Produced tensors that the loss depends on (the ``loss`` output, else the
   first graph output) -> activation (the forward pass).
6. Other produced tensors -> gradient when the graph looks like a training
   graph (some ``param.``/``state.``/``param_out.``/``state_out.`` name or a
   ``grad`` name), activation otherwise. Backward and optimizer-update
   temporaries are both counted as gradient.

Cost: O(nodes + edges).
"""

from __future__ import annotations

from itertools import chain
from typing import Mapping

from onnx import ModelProto

from olla_onnx.formats.onnx.shapes import ELEMENT_BITS, FLOAT_TYPES
from olla_onnx.ir.graph import Node, TensorKind


_TRAINING_PREFIXES = ("param.", "state.", "param_out.", "state_out.")


def tensor_kinds(
    model: ModelProto,
    graph_nodes: list[Node],
    resident: list[str],
    produced_by: Mapping[str, int],
    outputs: list[str],
    elem: Mapping[str, int],
    sizes: Mapping[str, int],
) -> dict[str, TensorKind]:
    """Tensor kinds by the rules in the module docstring. O(nodes + edges)."""
    g = model.graph
    inits = {t.name for t in g.initializer} | {sp.values.name for sp in g.sparse_initializer}
    out_set = set(outputs)
    every = list(resident) + list(produced_by)
    training = any(n.startswith(_TRAINING_PREFIXES) or "grad" in n.lower() for n in chain(every, outputs))
    named_params = any(n.startswith("param.") for n in resident)
    has_grad = {n[: -len("_grad")] for n in every if n.endswith("_grad")}

    forward: set[int] = set()
    loss = "loss" if "loss" in produced_by else next((o for o in outputs if o in produced_by), None)
    if loss is not None:
        stack = [produced_by[loss]]
        while stack:
            v = stack.pop()
            if v in forward:
                continue
            forward.add(v)
            stack.extend(produced_by[x] for x in graph_nodes[v].inputs if x in produced_by)

    kinds: dict[str, TensorKind] = {}
    for name in resident:
        if name.startswith("param."):
            k = TensorKind.PARAMETER
        elif name.startswith("state."):
            k = TensorKind.OPTIMIZER_STATE
        elif name.startswith("batch.") or name == "step":
            k = TensorKind.INPUT
        elif name in out_set:
            k = TensorKind.OUTPUT
        elif "grad" in name.lower():
            k = TensorKind.GRADIENT
        elif name in inits:
            big_float = elem.get(name) in FLOAT_TYPES and sizes[name] * 8 > ELEMENT_BITS.get(elem.get(name, 0), 8)
            k = TensorKind.PARAMETER if big_float and not named_params else TensorKind.CONSTANT
        elif name in has_grad:
            k = TensorKind.PARAMETER
        else:
            k = TensorKind.INPUT
        kinds[name] = k
    for name, v in produced_by.items():
        if name in out_set:
            k = TensorKind.OUTPUT
        elif graph_nodes[v].op_type == "Constant":
            k = TensorKind.CONSTANT
        elif "grad" in name.lower():
            k = TensorKind.GRADIENT
        elif v in forward or not training:
            k = TensorKind.ACTIVATION
        else:
            k = TensorKind.GRADIENT
        kinds[name] = k
    return kinds
