"""Frontends: read a model file into the :class:`~olla_onnx.graph.Graph` IR.

:func:`load_graph` picks the frontend by extension: ``.onnx`` (ONNX, see
:mod:`olla_onnx.frontends.onnx`) or ``.json`` (networkx node-link, see
:mod:`olla_onnx.frontends.networkx`). Anything else is an
:class:`~olla_onnx.errors.OllaInputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from olla_onnx.errors import OllaInputError
from olla_onnx.graph import Graph


@dataclass(frozen=True)
class LoadedModel:
    """A model read from disk: its IR, where it came from, and what is needed to write it back.

    Attributes:
        graph: the IR (node ``i`` is the file's node ``i``).
        path: the input file.
        format: ``"onnx"`` or ``"node-link"``.
        model: the parsed ``onnx.ModelProto`` (external data not loaded) for ONNX input, else None.
        raw: the parsed node-link dict for JSON input, else None.
    """

    graph: Graph
    path: Path
    format: str
    model: Any = None
    raw: dict[str, Any] | None = None


def load_graph(
    path: Path | str, dims: Mapping[str, int] | None = None, size_attr: str = "size", workspace: bool = True
) -> LoadedModel:
    """Read ``path`` with the frontend its extension names.

    ``dims`` pins symbolic dimensions (ONNX only; given for a JSON graph it is
    an error). ``size_attr`` names the node attribute holding output bytes
    (node-link JSON only). ``workspace`` (ONNX only) models onnxruntime's CPU
    kernel scratch (:mod:`olla_onnx.frontends.workspace`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from olla_onnx.frontends.onnx import load_onnx

        graph, model = load_onnx(path, dims=dims, workspace=workspace)
        return LoadedModel(graph=graph, path=path, format="onnx", model=model)
    if suffix == ".json":
        if dims:
            raise OllaInputError(f"--dim applies to ONNX models only; {path.name} is a node-link JSON graph with sizes in bytes")
        from olla_onnx.frontends.networkx import load_node_link

        graph, raw = load_node_link(path, size_attr=size_attr)
        return LoadedModel(graph=graph, path=path, format="node-link", raw=raw)
    raise OllaInputError(
        f"{path}: unknown model format {suffix or '(no extension)'!r}; give an .onnx model or a networkx node-link .json graph"
    )
