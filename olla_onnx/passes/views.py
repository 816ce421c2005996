"""onnxruntime's views as a pass over the IR: a view shares its input's buffer.

onnxruntime's
allocation planner always places the output of Reshape, Flatten, Squeeze,
Unsqueeze and Identity (:data:`olla_onnx.ort_facts.VIEW_OPS`) in its input's
buffer, its own buffer reuse off or on (the kernels declare the alias;
seen with the recording allocator: such a node requests nothing), unless
the output is a graph output (then it is its own request, a copy). The
buffer is released after the last reader of the input *and* of every view
of it. So a view output is a 0-byte tensor, and every node reading a view
also reads the view's root (the first non-view tensor down the chain)
when that root is produced by a node: the root lives until the last reader
of any of its views. The added inputs are data dependencies the graph
already implies (the root's producer runs before the view), so no order
changes. Without this rule the model counted a saved attention matrix
twice (softmax output and its reshaped view, both read by the backward
pass): +20% on the full-size BERT (``docs/investigations/aliasing/view_aliasing.md``).
"""

from __future__ import annotations

from typing import Iterable

from olla_onnx.ir.graph import Node, Tensor
from olla_onnx.ort_facts import VIEW_OPS

def alias_views(nodes: list[Node], tensors: list[Tensor], graph_outputs: Iterable[str]) -> tuple[list[Node], list[Tensor]]:
    """onnxruntime's views (module docstring): each view output that is not a graph output at 0 bytes,
    and the view's root added to the inputs of every node that reads the view (when a node produces it).

    Only the default domain's :data:`~olla_onnx.ort_facts.VIEW_OPS` are views. O(n + E + length of view chains).
    """
    keep = set(graph_outputs)
    view_of = {
        n.outputs[0]: n.inputs[0]
        for n in nodes
        if n.op_type in VIEW_OPS and n.inputs and n.inputs[0] and n.outputs and n.outputs[0] not in keep
    }
    if not view_of:
        return nodes, tensors
    produced = {t for n in nodes for t in n.outputs}
    root: dict[str, str] = {}
    for v in view_of:
        chain_, t = [], v
        while t in view_of and t not in root:
            chain_.append(t)
            t = view_of[t]
        r = root.get(t, t)
        for c in chain_:
            root[c] = r
    out = []
    for n in nodes:
        extra = [root[x] for x in n.inputs if x in root and root[x] in produced]
        extra = [r for r in dict.fromkeys(extra) if r not in n.inputs]
        out.append(Node(n.name, n.op_type, n.inputs + tuple(extra), n.outputs) if extra else n)
    sized = [Tensor(t.name, 0, t.kind) if t.name in view_of else t for t in tensors]
    return out, sized
