"""olla-onnx: memory-optimal node order and a fragmentation-free arena plan for ONNX training graphs.

The library API (the CLI is a thin layer over it)::

    from olla_onnx import load_graph, optimize_model, simulate
    loaded = load_graph("models/mlp_tiny.onnx")
    result = optimize_model(loaded)          # order, plan, peaks, bound, proof flag
    simulate(result.graph, list(result.order)).peak == result.peak_optimized  # in-place updates applied
    Trainer("step.onnx", init=values).run(batches, steps=20)  # train in onnxruntime, planned arena, in place

Imports are lazy so that ``olla-onnx --help`` starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Graph": "olla_onnx.ir.graph",
    "Node": "olla_onnx.ir.graph",
    "Tensor": "olla_onnx.ir.graph",
    "TensorKind": "olla_onnx.ir.graph",
    "simulate": "olla_onnx.ir.memory",
    "lower_bound": "olla_onnx.ir.memory",
    "load_graph": "olla_onnx.formats",
    "optimize_model": "olla_onnx.optimize",
    "write_outputs": "olla_onnx.optimize",
    "optimize_order": "olla_onnx.schedule",
    "place": "olla_onnx.place",
    "load_plan": "olla_onnx.plan",
    "save_plan": "olla_onnx.plan",
    "Trainer": "olla_onnx.train",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'olla_onnx' has no attribute {name!r}")
