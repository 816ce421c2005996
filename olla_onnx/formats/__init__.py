"""Formats: each file format reads itself into the :class:`~olla_onnx.ir.graph.Graph` IR and writes itself back.

:func:`load_graph` picks the reader by extension and returns a :class:`LoadedModel`
that owns its writer and knows what its format implies:

- ``.onnx``: :class:`olla_onnx.formats.onnx.OnnxModel` (reader :mod:`~olla_onnx.formats.onnx.read`, shapes
  :mod:`~olla_onnx.formats.onnx.shapes`, tensor kinds :mod:`~olla_onnx.formats.onnx.kinds`, writer
  :mod:`~olla_onnx.formats.onnx.write`);
- ``.json``: :class:`olla_onnx.formats.nodelink.NodeLinkModel` (networkx node-link, one tensor per node).

Buffer traces (CSV, placement only) are :mod:`olla_onnx.formats.trace`; plans are :mod:`olla_onnx.plan`.
Anything else is an :class:`~olla_onnx.errors.OllaInputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

from olla_onnx.errors import OllaInputError
from olla_onnx.ir.graph import Graph


@dataclass(frozen=True)
class LoadedModel:
    """A model read from disk: its IR, where it came from, and how to write it back.

    Attributes:
        graph: the IR (node ``i`` is the file's node ``i``).
        path: the input file.
        format: ``"onnx"`` or ``"node-link"`` (for reports).
        runs_in_onnxruntime: whether onnxruntime can run the file (and its default order is a baseline).
    """

    graph: Graph
    path: Path
    format: ClassVar[str] = ""
    runs_in_onnxruntime: ClassVar[bool] = False

    def stock_orders(self) -> dict[str, list[int]]:
        """The orders a user already has, by name: the file's (``input_order``), plus the runtime's default."""
        return {"input_order": self.graph.topological_order()}

    def order_as_run(self, order: Sequence[int]) -> list[int]:
        """``order`` as the runtime will really run it once written (the identity unless the runtime reorders)."""
        return list(order)

    def inplace_hints(self) -> tuple[set[str] | None, dict[str, tuple] | None]:
        """What the file tells the in-place pass: inputs the caller feeds, and (dtype, dims) signatures; None: unknown."""
        return None, None

    def write(self, order: Sequence[int], path: Path | str) -> None:
        """Write the model with its nodes in ``order`` to ``path`` (same format); the input is never overwritten."""
        raise NotImplementedError


def load_graph(
    path: Path | str, dims: Mapping[str, int] | None = None, size_attr: str = "size", workspace: bool = True
) -> LoadedModel:
    """Read ``path`` with the reader its extension names.

    ``dims`` pins symbolic dimensions (ONNX only; given for a JSON graph it is
    an error). ``size_attr`` names the node attribute holding output bytes
    (node-link JSON only). ``workspace`` (ONNX only) models onnxruntime's CPU
    kernel scratch (:mod:`olla_onnx.ort_facts.workspace`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from olla_onnx.formats.onnx import OnnxModel, load_onnx

        graph, model = load_onnx(path, dims=dims, workspace=workspace)
        return OnnxModel(graph=graph, path=path, model=model)
    if suffix == ".json":
        if dims:
            raise OllaInputError(f"--dim applies to ONNX models only; {path.name} is a node-link JSON graph with sizes in bytes")
        from olla_onnx.formats.nodelink import NodeLinkModel, load_node_link

        graph, raw = load_node_link(path, size_attr=size_attr)
        return NodeLinkModel(graph=graph, path=path, raw=raw)
    raise OllaInputError(
        f"{path}: unknown model format {suffix or '(no extension)'!r}; give an .onnx model or a networkx node-link .json graph"
    )


__all__ = ["LoadedModel", "load_graph"]
