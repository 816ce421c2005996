"""Passes: functions from one :class:`~olla_onnx.ir.graph.Graph` to another, so every algorithm reuses them.

- :mod:`olla_onnx.passes.inplace`: updated parameters and optimizer state written over the inputs they replace
  (:mod:`olla_onnx.passes.inplace_match` finds which output updates which input from the dataflow).
- :mod:`olla_onnx.passes.views`: onnxruntime's views (Reshape, Flatten, ...) share their input's buffer.
"""
