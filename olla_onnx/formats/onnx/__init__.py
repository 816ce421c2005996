"""ONNX: read a training graph into the IR (:mod:`.read`, :mod:`.shapes`, :mod:`.kinds`) and write it back reordered
(:mod:`.write`). :class:`OnnxModel` is what :func:`olla_onnx.formats.load_graph` returns for an ``.onnx`` file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from olla_onnx.formats import LoadedModel
from olla_onnx.formats.onnx.read import load_onnx


@dataclass(frozen=True)
class OnnxModel(LoadedModel):
    """An ONNX model read from disk: the IR plus the parsed ``onnx.ModelProto`` (external data not loaded)."""

    model: Any = field(default=None, repr=False)
    format: ClassVar[str] = "onnx"
    runs_in_onnxruntime: ClassVar[bool] = True

    def stock_orders(self) -> dict[str, list[int]]:
        """The file's order and onnxruntime's default order (:func:`~olla_onnx.ort_facts.default_order.ort_default_order`)."""
        from olla_onnx.ort_facts.default_order import ort_default_order

        return {**super().stock_orders(), "ort_default": ort_default_order(self.graph)}

    def order_as_run(self, order: Sequence[int]) -> list[int]:
        """The order onnxruntime's planned session runs once ``order`` is written: ready Shape/Size/Constant first."""
        from olla_onnx.ort_facts.default_order import written_order_as_run

        return written_order_as_run(self.graph, list(order))

    def inplace_hints(self) -> tuple[set[str], dict[str, tuple]]:
        """Graph inputs that are not initializers (the caller feeds them); (element type, dims) of inputs and
        outputs whose type the file declares (a symbolic dimension compares by its name)."""
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        feedable = {vi.name for vi in g.input if vi.name not in inits}
        signatures: dict[str, tuple] = {}
        for vi in (*g.input, *g.output):
            tt = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and tt.elem_type and tt.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
                signatures[vi.name] = (int(tt.elem_type), dims)
        return feedable, signatures

    def write(self, order: Sequence[int], path: Path | str) -> None:
        """The file with its nodes in ``order``, nothing else changed, checked by ``onnx.checker``
        (:func:`~olla_onnx.formats.onnx.write.write_reordered_onnx`)."""
        from olla_onnx.formats.onnx.write import write_reordered_onnx

        write_reordered_onnx(self.model, list(order), path, source=self.path)


__all__ = ["OnnxModel", "load_onnx"]
