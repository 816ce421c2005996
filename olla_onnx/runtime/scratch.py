"""Measure the scratch onnxruntime's CPU kernels request: each node run alone, through the recording allocator.

The check behind :mod:`olla_onnx.ort_facts.workspace`: a node is cut out of
its model into a model of its own (its inputs fed with the values they have
when the whole model runs, constants kept as initializers), run in a session
set up like the planned one (file order, memory pattern and onnxruntime's own
buffer reuse off), and every request that is freed again before the run
returns is scratch (the outputs stay allocated until the caller drops them).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np


def scratch_bytes(model_bytes: bytes, feeds: Mapping[str, np.ndarray], threads: int | None = None) -> int:
    """Bytes requested and freed inside one (second) run of ``model_bytes``; ``threads`` None is onnxruntime's default."""
    import onnxruntime as ort

    from olla_onnx.runtime.allocator import RecordingAllocator, env_allocator
    from olla_onnx.runtime.session import session_options

    so = session_options("planned", mem_reuse=False)
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    rec = RecordingAllocator()
    with env_allocator().serving(rec):
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        try:
            sess.run(None, dict(feeds))  # warm-up
            start = rec.log.mark()
            raw = sess.run(None, dict(feeds))
            stop = rec.log.mark()
            del raw
        finally:
            del sess
    log = rec.log
    sizes = {log.ident[t]: log.size[t] for t in range(start, stop) if log.kind[t]}
    freed = {log.ident[t] for t in range(start, stop) if not log.kind[t]}
    return int(sum(s for i, s in sizes.items() if i in freed))


def all_values(model, feeds: Mapping[str, np.ndarray], types: Mapping) -> dict[str, np.ndarray]:
    """Every value of one run of ``model`` (plain onnxruntime, optimizations off), the feeds included.

    ``types`` maps value names to ``onnx.TypeProto`` (the frontend's inferred types). Holds all at once:
    for small models.
    """
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for o in node.output:
            if o and o not in have and o in types:
                vi = onnx.ValueInfoProto()
                vi.name = o
                vi.type.CopyFrom(types[o])
                m.graph.output.append(vi)
                have.add(o)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, dict(feeds))))
    values.update(feeds)
    return values


def single_node_models(model, values: Mapping[str, np.ndarray], types: Mapping) -> Iterator[tuple[int, object, dict]]:
    """``(node index, one-node model, its feeds)`` for every non-Constant node of ``model``.

    Inputs that are initializers or Constant nodes' values stay initializers
    (onnxruntime treats them so in the whole model too); the others become
    graph inputs fed with ``values`` (from :func:`all_values`).
    """
    import onnx
    from onnx import helper, numpy_helper

    inits_of = {t.name: t for t in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            continue
        inits, inputs, feeds = [], [], {}
        for x in dict.fromkeys(x for x in node.input if x):
            if x in inits_of and x not in values:
                inits.append(inits_of[x])
                continue
            v = values[x]
            if x in consts:
                inits.append(numpy_helper.from_array(np.asarray(v), x))
            else:
                inputs.append(helper.make_tensor_value_info(x, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
                feeds[x] = v
        outputs = []
        for o in node.output:
            if o:
                vi = onnx.ValueInfoProto()
                vi.name = o
                vi.type.CopyFrom(types[o])
                outputs.append(vi)
        graph = helper.make_graph([node], "one_node", inputs, outputs, inits)
        one = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        yield i, one, feeds
