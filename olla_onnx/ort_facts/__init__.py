"""What is known about onnxruntime (1.32, CPU provider): every measured fact the memory model relies on, in one place.

Each fact says where it was measured; when onnxruntime changes, this package is what to re-check
(``tests/test_ort_order.py``, ``tests/test_workspace.py``, ``tests/test_views.py`` and
``benchmarks/prediction_cpu.py`` fail when a fact no longer holds).

- The default execution order of an unoptimized session, and the order it runs a written file in:
  :mod:`olla_onnx.ort_facts.default_order`.
- Kernel scratch ("workspace") of Conv, ConvTranspose, Where, Softmax/LogSoftmax: :mod:`olla_onnx.ort_facts.workspace`.
- Views, in-place-safe kernels and nodes onnxruntime does not run where the file puts them: the constants below.
- A value no node reads is held until the run ends when its buffer reuse is off: applied by the ONNX reader
  (:mod:`olla_onnx.formats.onnx.read`).
"""

from __future__ import annotations

#: Ops whose output onnxruntime's allocation planner always puts in its first input's buffer (the kernels declare
#: the alias), unless the output is a graph output. Seen with the recording allocator: such a node requests nothing
#: (``docs/investigations/aliasing/ort_aliasing.md``).
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})

#: Ops whose kernels write element ``i`` of the output from element ``i`` of each same-shaped input only, so an
#: output may be written over one of its inputs (read before written at every index).
ELEMENTWISE = frozenset({
    "Abs", "Add", "Ceil", "Clip", "Div", "Elu", "Erf", "Exp", "Floor", "LeakyRelu", "Log", "Max", "Mean",
    "Min", "Mul", "Neg", "Pow", "Reciprocal", "Relu", "Round", "Sigmoid", "Sign", "Sqrt", "Sub", "Sum",
    "Tanh", "Where",
})  # fmt: skip

#: Producers onnxruntime does not run where the file puts them: Constant nodes become initializers, ready Shape and
#: Size nodes run first under PRIORITY_BASED order, control-flow nodes run their subgraphs as a whole.
UNSCHEDULED_OPS = frozenset({"Constant", "Shape", "Size", "If", "Loop", "Scan"})

#: onnxruntime's kSmallTensorExternalDataThreshold: initializers above this many bytes are held as tensors of their
#: own, outside the session's allocator (seen with the recording allocator: ``tests/test_runtime_run.py``).
SMALL_INITIALIZER = 127

#: Arena alignment by execution provider: onnxruntime's CPU allocator aligns to 64 bytes, CUDA's to 256.
DEFAULT_ALIGNMENT = {"cpu": 64, "cuda": 256}

__all__ = ["DEFAULT_ALIGNMENT", "ELEMENTWISE", "SMALL_INITIALIZER", "UNSCHEDULED_OPS", "VIEW_OPS"]
