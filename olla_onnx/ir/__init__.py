"""The intermediate representation and its referee.

- :mod:`olla_onnx.ir.graph`: :class:`Graph` (nodes, tensors, kinds), built by the formats and read by every pass.
- :mod:`olla_onnx.ir.memory`: the memory model: simulate an order (live bytes per step, peak, lifetimes) and
  sound lower bounds on the peak of any order. Every order and plan is checked here before it is written.
"""

from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind, check_order
from olla_onnx.ir.memory import Lifetimes, Simulation, lifetimes, lower_bound, simulate

__all__ = ["Graph", "Lifetimes", "Node", "Simulation", "Tensor", "TensorKind", "check_order", "lifetimes", "lower_bound", "simulate"]
