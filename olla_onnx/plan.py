"""The arena plan: a versioned JSON file binding a node order and buffer offsets to one model.

Format (version 2; version 1 is version 2 without ``inplace``, and still loads)::

    {
      "format": "olla-onnx-plan", "version": 2,
      "model": {"name": str, "graph_sha256": str, "nodes": int, "tensors": int},
      "order": [node name, ...],            # execution order
      "alignment": int,                     # every offset is a multiple of it
      "arena_bytes": int,                   # max(offset + size)
      "resident_bytes": int,                # outside the arena (inputs, parameters, state)
      "buffers": [{"tensor": str, "size": int, "offset": int,
                   "start": int, "end": int}, ...],  # live on steps start..end inclusive
      "inplace": [{"input": str, "output": str, "bytes": int}, ...]
    }

``inplace`` lists the outputs written into their input's buffer
(:mod:`olla_onnx.passes.inplace`): the order, lifetimes and buffers are those of the
graph with these pairs applied (each paired output is a 0-byte buffer; the
zero-byte order tokens are not listed), and loading re-applies them to the
model, so a pair that does not fit (or is unsafe in) the model is refused.

``graph_sha256`` is a structural hash of the model's graph (without the pairs) (nodes, tensors and sizes,
outputs), independent of node order, so one plan serves the input file and its
reordered copy alike. :func:`load_plan` refuses a plan for another model, a
corrupt or truncated file, and overlapping or misaligned buffers, each with a
one-line :class:`~olla_onnx.errors.PlanError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from olla_onnx.errors import GraphError, PlanError
from olla_onnx.files import read_json
from olla_onnx.ir.graph import Graph
from olla_onnx.ir.memory import lifetimes
from olla_onnx.passes.inplace import InplacePair, apply_inplace, is_order_token
from olla_onnx.place import check_placement

PLAN_FORMAT = "olla-onnx-plan"
PLAN_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class PlannedBuffer:
    """One tensor's place in the arena: ``[offset, offset + size)`` on steps ``start..end``."""

    tensor: str
    size: int
    offset: int
    start: int
    end: int


@dataclass(frozen=True)
class Plan:
    """A node order plus an offset for every non-resident tensor of one model."""

    model_name: str
    graph_sha256: str
    order: tuple[str, ...]
    alignment: int
    arena_bytes: int
    resident_bytes: int
    buffers: tuple[PlannedBuffer, ...]
    num_nodes: int = 0
    num_tensors: int = 0
    inplace: tuple[InplacePair, ...] = ()

    def order_indices(self, graph: Graph) -> list[int]:
        """The plan's order as node indices of ``graph``."""
        return [graph.index_of(name) for name in self.order]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "model": {
                "name": self.model_name,
                "graph_sha256": self.graph_sha256,
                "nodes": self.num_nodes,
                "tensors": self.num_tensors,
            },
            "order": list(self.order),
            "alignment": self.alignment,
            "arena_bytes": self.arena_bytes,
            "resident_bytes": self.resident_bytes,
            "buffers": [
                {"tensor": b.tensor, "size": b.size, "offset": b.offset, "start": b.start, "end": b.end}
                for b in self.buffers
            ],
            "inplace": [{"input": p.input, "output": p.output, "bytes": p.bytes} for p in self.inplace],
        }


def graph_sha256(graph: Graph) -> str:
    """Order-independent structural hash: nodes (name, op, inputs, outputs), tensor sizes, outputs."""
    h = hashlib.sha256()
    for node in sorted(graph.nodes, key=lambda n: n.name):
        h.update(repr((node.name, node.op_type, node.inputs, node.outputs)).encode())
    for name in sorted(graph.tensors):
        h.update(repr((name, graph.tensors[name].size)).encode())
    h.update(repr(sorted(graph.outputs)).encode())
    return h.hexdigest()


def make_plan(
    graph: Graph, order: Sequence[int], offsets: dict[str, int], alignment: int, inplace: Sequence[InplacePair] = ()
) -> Plan:
    """Bind ``order`` and per-tensor ``offsets`` to ``graph``, checked by :func:`check_plan`.

    With ``inplace`` pairs, ``order`` and ``offsets`` are for ``apply_inplace(graph, inplace)``.
    """
    lt = lifetimes(_aliased(graph, inplace), order)
    buffers = []
    arena = 0
    for i, name in enumerate(lt.names):
        if is_order_token(name):
            continue
        if name not in offsets:
            raise PlanError(f"no offset for tensor {name!r}")
        size = int(lt.sizes[i])
        off = int(offsets[name])
        arena = max(arena, off + size)
        buffers.append(PlannedBuffer(name, size, off, int(lt.start[i]), int(lt.end[i])))
    plan = Plan(
        model_name=graph.name,
        graph_sha256=graph_sha256(graph),
        order=tuple(graph.nodes[v].name for v in order),
        alignment=int(alignment),
        arena_bytes=int(arena),
        resident_bytes=graph.resident_bytes,
        buffers=tuple(buffers),
        num_nodes=graph.num_nodes,
        num_tensors=len(graph.tensors),
        inplace=tuple(inplace),
    )
    check_plan(plan, graph)
    return plan


def _aliased(graph: Graph, pairs: Sequence[InplacePair]) -> Graph:
    """The graph a plan with ``pairs`` is for; a pair that does not fit ``graph`` is a :class:`PlanError`."""
    if not pairs:
        return graph
    try:
        return apply_inplace(graph, pairs)
    except GraphError as exc:
        raise PlanError(f"the plan's in-place pairs do not fit the model: {exc}") from None


def check_buffers(buffers: Sequence[PlannedBuffer], arena_bytes: int, alignment: int = 1) -> None:
    """Raise :class:`PlanError` if two buffers live at the same step overlap in memory,
    if one lies outside ``[0, arena_bytes)`` or an offset is not a multiple of ``alignment``.

    A buffer live on steps ``start..end`` is live on ``[start, end + 1)`` for
    :func:`olla_onnx.place.check_placement`, which does the checking.
    O(B log B + B * k) for k buffers live at once.
    """
    for b in buffers:
        if b.size < 0:
            raise PlanError(f"buffer {b.tensor!r} [{b.offset}, {b.offset + b.size}) lies outside the arena of {arena_bytes} bytes")
        if b.end < b.start:
            raise PlanError(f"buffer {b.tensor!r} ends (step {b.end}) before it starts (step {b.start})")
    check_placement(
        [b.start for b in buffers],
        [b.end + 1 for b in buffers],
        [b.size for b in buffers],
        [b.offset for b in buffers],
        capacity=arena_bytes,
        alignment=alignment,
        names=[b.tensor for b in buffers],
        error=PlanError,
    )


def check_plan(plan: Plan, graph: Graph) -> None:
    """Raise :class:`PlanError` unless ``plan`` belongs to ``graph`` and is a valid layout of it.

    Checks: same structural hash; the in-place pairs fit the model and are
    safe there; the order is topological on the graph with the pairs applied
    (so it runs every other reader of a paired input before the update); every
    non-resident tensor has exactly one buffer with its size and its lifetime
    under that order; no overlaps; alignment; arena bound.
    """
    if plan.graph_sha256 != graph_sha256(graph):
        raise PlanError(f"the plan is for another model (model {plan.model_name!r}, hash {plan.graph_sha256[:12]}...), not {graph.name!r}")
    graph = _aliased(graph, plan.inplace)
    try:
        order = plan.order_indices(graph)
    except Exception as exc:
        raise PlanError(f"the plan's order does not fit the model: {exc}") from None
    try:
        lt = lifetimes(graph, _checked(graph, order))
    except Exception as exc:
        raise PlanError(f"the plan's order is invalid: {exc}") from None
    by_name = {b.tensor: b for b in plan.buffers}
    if len(by_name) != len(plan.buffers):
        raise PlanError("the plan lists a tensor twice")
    names = [n for n in lt.names if not is_order_token(n)]
    for i, name in enumerate(lt.names):
        if is_order_token(name):
            continue
        b = by_name.get(name)
        if b is None:
            raise PlanError(f"the plan has no buffer for tensor {name!r}")
        if b.size != int(lt.sizes[i]) or b.start != int(lt.start[i]) or b.end != int(lt.end[i]):
            raise PlanError(f"the plan's buffer for {name!r} does not match the model (size or lifetime differs)")
    if len(by_name) != len(names):
        extra = sorted(set(by_name) - set(names))[:3]
        raise PlanError(f"the plan has buffers for tensors the model does not produce: {extra}")
    check_buffers(plan.buffers, plan.arena_bytes, plan.alignment)


def _checked(graph: Graph, order: list[int]) -> list[int]:
    from olla_onnx.ir.graph import check_order

    check_order(graph, order)
    return order


def save_plan(plan: Plan, path: Path) -> None:
    """Write ``plan`` as JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.to_json(), separators=(",", ":")) + "\n")


def load_plan(path: Path, graph: Graph | None = None) -> Plan:
    """Read a plan; with ``graph``, also :func:`check_plan` it. Any defect is a :class:`PlanError`."""
    path = Path(path)
    raw = read_json(path, "plan file", PlanError)
    try:
        if raw.get("format") != PLAN_FORMAT:
            raise PlanError(f"{path} is not an olla-onnx plan (format {raw.get('format')!r})")
        if raw.get("version") not in READABLE_VERSIONS:
            raise PlanError(f"{path}: plan version {raw.get('version')!r} is not supported (expected one of {READABLE_VERSIONS})")
        model = raw["model"]
        plan = Plan(
            model_name=str(model["name"]),
            graph_sha256=str(model["graph_sha256"]),
            order=tuple(str(x) for x in raw["order"]),
            alignment=int(raw["alignment"]),
            arena_bytes=int(raw["arena_bytes"]),
            resident_bytes=int(raw["resident_bytes"]),
            buffers=tuple(
                PlannedBuffer(str(b["tensor"]), int(b["size"]), int(b["offset"]), int(b["start"]), int(b["end"]))
                for b in raw["buffers"]
            ),
            num_nodes=int(model.get("nodes", 0)),
            num_tensors=int(model.get("tensors", 0)),
            inplace=tuple(
                InplacePair(str(p["input"]), str(p["output"]), int(p["bytes"])) for p in raw.get("inplace", [])
            ) if raw["version"] >= 2 else (),
        )
    except PlanError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"plan file {path} is malformed: missing or bad field {exc}") from None
    if graph is not None:
        check_plan(plan, graph)
    return plan


def plan_uses_workspace(plan: Plan) -> bool:
    """Whether ``plan`` was made with the workspace model on (any of its buffers is a ``<node>::workspace``):
    the graph to check it against is then loaded with that model on too. O(buffers)."""
    from olla_onnx.ort_facts.workspace import is_workspace

    return any(is_workspace(b.tensor) for b in plan.buffers)
