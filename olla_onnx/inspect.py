"""What `inspect` reports: sizes by kind, peaks under the stock orders, the lower bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from olla_onnx.ir.graph import Graph
from olla_onnx.ir.memory import LowerBound, lower_bound, simulate


@dataclass(frozen=True)
class OrderPeak:
    """The simulated peak of one named order and the biggest tensors live at that peak."""

    name: str
    peak: int
    peak_step: int
    top_tensors: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Summary:
    """Counts, bytes by kind, stock-order peaks and the best cheap lower bound of one graph."""

    name: str
    nodes: int
    tensors: int
    resident_bytes: int
    bytes_by_kind: dict[str, int]
    peaks: tuple[OrderPeak, ...]
    lower_bound: LowerBound
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.name,
            "nodes": self.nodes,
            "tensors": self.tensors,
            "resident_bytes": self.resident_bytes,
            "bytes_by_kind": dict(self.bytes_by_kind),
            "lower_bound": self.lower_bound.value,
            "lower_bound_method": self.lower_bound.method,
        }
        for p in self.peaks:
            out[f"peak_{p.name}"] = p.peak
            out[f"top_tensors_at_peak_{p.name}"] = [{"tensor": n, "bytes": b} for n, b in p.top_tensors]
        out.update(self.extra)
        return out


def summarize(graph: Graph, orders: dict[str, list[int]], top: int = 10) -> Summary:
    """Simulate each named order (validated) and bound the best peak. Cost: O(n + E) per order plus the bound."""
    peaks = []
    for name, order in orders.items():
        sim = simulate(graph, order)
        peaks.append(OrderPeak(name, sim.peak, sim.peak_step, tuple(sim.alive_at(sim.peak_step)[:top])))
    return Summary(
        name=graph.name,
        nodes=graph.num_nodes,
        tensors=len(graph.tensors),
        resident_bytes=graph.resident_bytes,
        bytes_by_kind=graph.bytes_by_kind(),
        peaks=tuple(peaks),
        lower_bound=lower_bound(graph),
    )
