"""The order onnxruntime really executes, read from its profiler's node events.

Each kernel run leaves a profiler event with ``cat == "Node"`` and name
``<node name>_kernel_time``; sorted by start time, those events are the
executed order. Nodes inside subgraphs (If/Loop/Scan bodies) are left out.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from olla_onnx.runtime.feeds import random_feeds

_PREFIX = "__olla_node_"
#: Value of a symbolic dimension no ``dims`` pin in the feeds made for profiling.
PROFILE_DIM = 1


def profiled_node_names(
    model: onnx.ModelProto | bytes | str | os.PathLike,
    sess_options: Any = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> list[str]:
    """Run one inference with profiling on; return the names of the nodes run, in execution order.

    ``sess_options`` is an ``onnxruntime.SessionOptions`` (profiling is turned
    on in it). ``feeds`` default to :func:`~olla_onnx.runtime.feeds.random_feeds` (seed 0, symbolic
    dimensions :data:`PROFILE_DIM`). Subgraph nodes appear
    too (under their own names); nodes onnxruntime folded away do not.
    """
    import onnxruntime as ort

    so = sess_options if sess_options is not None else ort.SessionOptions()
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "olla_profile")
        src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else (
            model if isinstance(model, bytes) else str(model)
        )
        sess = ort.InferenceSession(src, so, providers=list(providers))
        if feeds is None:
            proto = model if isinstance(model, onnx.ModelProto) else (
                onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model), load_external_data=False)
            )
            feeds = random_feeds(proto, default_dim=PROFILE_DIM)
        sess.run(None, dict(feeds))
        events = json.loads(Path(sess.end_profiling()).read_text())
    node_events = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    node_events.sort(key=lambda e: e["ts"])  # stable: ties keep the profiler's own order
    return [e["name"][: -len("_kernel_time")] for e in node_events]


def profiled_order(
    model: onnx.ModelProto,
    execution_order: str = "default",
    feeds: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, int] | None = None,
) -> list[int]:
    """Indices (into ``model.graph.node``) of the top-level nodes onnxruntime ran, in order.

    The session uses ``ORT_DISABLE_ALL`` so nodes keep their identity, and
    ``execution_order`` ``"default"`` or ``"priority"``. Nodes are renamed in a
    private copy so that empty or repeated names are no obstacle. ``model``
    must carry its external data (or have none). Constant nodes never appear
    (onnxruntime makes them initializers).
    """
    import onnxruntime as ort

    work = onnx.ModelProto()
    work.CopyFrom(model)
    for i, node in enumerate(work.graph.node):
        node.name = f"{_PREFIX}{i}"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.execution_order = {"default": ort.ExecutionOrder.DEFAULT, "priority": ort.ExecutionOrder.PRIORITY_BASED}[
        execution_order
    ]
    so.intra_op_num_threads = 1
    if feeds is None:
        feeds = random_feeds(model, dims, default_dim=PROFILE_DIM)
    names = profiled_node_names(work, so, feeds)
    out = []
    seen = set()
    for nm in names:
        if nm.startswith(_PREFIX) and nm[len(_PREFIX):].isdigit():
            i = int(nm[len(_PREFIX):])
            if i not in seen:  # a node runs once per session run
                seen.add(i)
                out.append(i)
    return out
