"""networkx node-link JSON, read and written: one tensor per node, edges are data dependencies.

Each node's output size in bytes is its attribute ``size`` (or the one
``size_attr`` names). A node no edge leaves is a graph output and lives to the
end of the step. An optional ``kind`` attribute (a :class:`TensorKind` value)
labels the tensor for reports. Both ``edges`` (networkx >= 3.4) and the older
``links`` key are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from olla_onnx.errors import OllaInputError
from olla_onnx.files import read_json, refuse_input_path
from olla_onnx.formats import LoadedModel
from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind

_KINDS = {k.value for k in TensorKind}


def read_node_link(path: Path) -> dict[str, Any]:
    """Parse the JSON file; a missing or malformed file is an :class:`OllaInputError`."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise OllaInputError(f"{path} is not a networkx node-link graph (no 'nodes' list)")
    return data


def graph_from_node_link(data: dict[str, Any], size_attr: str = "size", name: str = "graph") -> Graph:
    """Build the IR from parsed node-link data. O(n + E)."""
    edges = data.get("edges", data.get("links", []))
    if not isinstance(edges, list):
        raise OllaInputError("node-link graph: 'edges' must be a list")
    ids: list[str] = []
    sizes: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for i, nd in enumerate(data["nodes"]):
        if not isinstance(nd, dict) or "id" not in nd:
            raise OllaInputError(f"node-link graph: node #{i} has no 'id'")
        nid = str(nd["id"])
        if nid in sizes:
            raise OllaInputError(f"node-link graph: node id {nid!r} appears twice")
        if size_attr not in nd:
            raise OllaInputError(
                f"node {nid!r} has no {size_attr!r} attribute; give each node its output size in bytes"
                f" (or name the attribute with --size-attr)"
            )
        size = nd[size_attr]
        if isinstance(size, bool) or not isinstance(size, (int, float)) or size < 0 or int(size) != size:
            raise OllaInputError(f"node {nid!r}: {size_attr}={size!r} is not a non-negative whole number of bytes")
        ids.append(nid)
        sizes[nid] = int(size)
        kind = nd.get("kind")
        if isinstance(kind, str) and kind in _KINDS:
            kinds[nid] = kind
    preds: dict[str, list[str]] = {nid: [] for nid in ids}
    has_succ: set[str] = set()
    for e in edges:
        try:
            s, t = str(e["source"]), str(e["target"])
        except (KeyError, TypeError):
            raise OllaInputError(f"node-link graph: edge {e!r} lacks 'source' or 'target'") from None
        for end in (s, t):
            if end not in sizes:
                raise OllaInputError(f"node-link graph: edge {s!r} -> {t!r} names unknown node {end!r}")
        if s not in preds[t]:
            preds[t].append(s)
        has_succ.add(s)
    outputs = [nid for nid in ids if nid not in has_succ]
    nodes = [Node(nid, "node", tuple(preds[nid]), (nid,)) for nid in ids]
    tensors = [
        Tensor(nid, sizes[nid], TensorKind(kinds.get(nid, "output" if nid not in has_succ else "activation")))
        for nid in ids
    ]
    return Graph.build(nodes, tensors, outputs, name=name)


def load_node_link(path: Path, size_attr: str = "size") -> tuple[Graph, dict[str, Any]]:
    """Read a node-link JSON file into the IR; also returns the parsed data (for writing back)."""
    path = Path(path)
    data = read_node_link(path)
    return graph_from_node_link(data, size_attr=size_attr, name=path.stem), data


def graph_to_node_link(graph: Graph) -> dict[str, Any]:
    """Node-link data for a graph whose nodes each produce one tensor (e.g. generated DAGs). O(n + E)."""
    nodes = []
    edges = []
    for v, node in enumerate(graph.nodes):
        if len(node.outputs) != 1:
            raise OllaInputError(f"node {node.name!r} has {len(node.outputs)} outputs; node-link graphs need one per node")
        t = graph.tensors[node.outputs[0]]
        nodes.append({"id": node.name, "size": t.size, "kind": t.kind.value})
        edges.extend({"source": graph.nodes[p].name, "target": node.name} for p in graph.preds[v])
    return {"directed": True, "multigraph": False, "graph": {"name": graph.name}, "nodes": nodes, "edges": edges}


def write_node_link(data: dict[str, Any], graph: Graph, order: Sequence[int], path: Path) -> None:
    """Write ``data`` with its ``nodes`` array listed in execution ``order`` (nothing else changed)."""
    by_id = {str(nd["id"]): nd for nd in data["nodes"]}
    out = dict(data)
    out["nodes"] = [by_id[graph.nodes[v].name] for v in order]
    Path(path).write_text(json.dumps(out) + "\n")


@dataclass(frozen=True)
class NodeLinkModel(LoadedModel):
    """A node-link JSON graph read from disk: the IR plus the parsed data (written back with nodes reordered)."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    format: ClassVar[str] = "node-link"

    def write(self, order: Sequence[int], path: Path | str) -> None:
        """The same JSON with its ``nodes`` array in ``order``; the input path is refused."""
        refuse_input_path(path, self.path)
        write_node_link(self.raw, self.graph, order, Path(path))
