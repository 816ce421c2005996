"""Pictures a person can read: live memory per step by tensor kind, and the arena layout.

Needs matplotlib (the ``plot`` extra). The library builds the figure and saves
it; it prints nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from olla_onnx.errors import OllaInputError
from olla_onnx.ir.graph import Graph, TensorKind
from olla_onnx.passes.inplace import apply_inplace
from olla_onnx.ir.memory import simulate
from olla_onnx.plan import Plan
from olla_onnx.units import axis_unit

# One colour per kind, the same in every panel.
KIND_COLORS: dict[str, str] = {
    TensorKind.PARAMETER.value: "#4c72b0",
    TensorKind.OPTIMIZER_STATE.value: "#8172b3",
    TensorKind.INPUT.value: "#64b5cd",
    TensorKind.CONSTANT.value: "#b0b0b0",
    TensorKind.ACTIVATION.value: "#dd8452",
    TensorKind.GRADIENT.value: "#c44e52",
    TensorKind.OUTPUT.value: "#55a868",
    TensorKind.WORKSPACE.value: "#937860",
}
KIND_ORDER = list(KIND_COLORS)


def live_by_kind(graph: Graph, order: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per step, live bytes split by tensor kind (resident tensors included). O(n + T).

    The kinds add up to the simulator's live curve exactly.
    """
    sim = simulate(graph, order)
    n = graph.num_nodes
    lt = sim.lifetimes
    per_kind: dict[str, np.ndarray] = {}
    for name in graph.resident:
        t = graph.tensors[name]
        per_kind.setdefault(t.kind.value, np.zeros(n, dtype=np.int64))
        per_kind[t.kind.value] += t.size
    deltas: dict[str, np.ndarray] = {}
    for i, name in enumerate(lt.names):
        kind = graph.tensors[name].kind.value
        d = deltas.setdefault(kind, np.zeros(n + 1, dtype=np.int64))
        d[lt.start[i]] += lt.sizes[i]
        d[lt.end[i] + 1] -= lt.sizes[i]
    for kind, d in deltas.items():
        per_kind.setdefault(kind, np.zeros(n, dtype=np.int64))
        per_kind[kind] = per_kind[kind] + np.cumsum(d[:n])
    return sim.live, per_kind


def memory_curves(
    graph: Graph, orders: Mapping[str, Sequence[int]], graphs: Mapping[str, Graph] | None = None
) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """:func:`live_by_kind` per named order, each on ``graphs[name]`` when given (the graph a plan
    with in-place pairs is for, :func:`olla_onnx.passes.inplace.apply_inplace`), else on ``graph``."""
    graphs = graphs or {}
    return {name: live_by_kind(graphs.get(name, graph), order) for name, order in orders.items()}


def plan_graph(graph: Graph, plan: Plan) -> Graph:
    """The graph ``plan``'s order, lifetimes and buffers are for: ``graph`` with the plan's in-place
    pairs applied (``graph`` itself without pairs). O(n + E)."""
    return apply_inplace(graph, plan.inplace) if plan.inplace else graph


def plot_memory(
    graph: Graph,
    orders: dict[str, Sequence[int]],
    plan: Plan | None,
    path: Path,
    title: str | None = None,
    graphs: Mapping[str, Graph] | None = None,
) -> Path:
    """Save one PNG: a live-memory panel per named order (stacked by kind, peak marked)
    and, with ``plan``, the arena layout (time x offset rectangles coloured by kind).

    ``graphs`` names the graph an order is simulated on where it is not ``graph``
    (an in-place plan's order: :func:`plan_graph`); the arena panel uses the plan's graph."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch, Rectangle
    except ImportError:
        raise OllaInputError("plotting needs matplotlib: pip install 'olla-onnx[plot]'") from None

    curves = memory_curves(graph, orders, graphs)
    div, unit = axis_unit([live.max(initial=0) for live, _ in curves.values()])
    rows = len(curves) + (1 if plan is not None else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.6 * rows + 0.8), squeeze=False)
    axes = axes[:, 0]
    ymax = max(live.max(initial=0) for live, _ in curves.values()) / div * 1.12
    best = min(int(live.max(initial=0)) for live, _ in curves.values())
    for ax, (name, (live, per_kind)) in zip(axes, curves.items()):
        steps = np.arange(len(live))
        kinds = [k for k in KIND_ORDER if k in per_kind]
        ax.stackplot(
            steps,
            *[per_kind[k] / div for k in kinds],
            colors=[KIND_COLORS[k] for k in kinds],
            step="post",
            linewidth=0,
        )
        top = int(live.max(initial=0))
        at = int(np.argmax(live)) if len(live) else 0
        ax.axhline(top / div, color="black", linestyle="--", linewidth=1)
        extra = "" if top == best else f"  (+{(top - best) / best * 100:.1f}% vs best)"
        ax.annotate(
            f"peak {top / div:,.2f} {unit} at step {at}{extra}",
            xy=(at, top / div),
            xytext=(0.01, 0.97),
            textcoords="axes fraction",
            va="top",
            fontsize=10,
            fontweight="bold",
            bbox=dict(boxstyle="round", facecolor="white", alpha=0.85),
        )
        ax.set_title(name, loc="right", fontsize=11)
        ax.set_ylabel(f"live {unit}")
        ax.set_ylim(0, ymax)
        ax.set_xlim(0, max(len(live) - 1, 1))
        ax.grid(alpha=0.3)
    axes[len(curves) - 1].set_xlabel("step (node in execution order)")
    if plan is not None:
        ax = axes[-1]
        pg = plan_graph(graph, plan)
        adiv, aunit = axis_unit([plan.arena_bytes])
        for b in plan.buffers:
            kind = pg.tensors[b.tensor].kind.value if b.tensor in pg.tensors else "activation"
            ax.add_patch(
                Rectangle(
                    (b.start, b.offset / adiv),
                    b.end + 1 - b.start,
                    max(b.size / adiv, 1e-12),
                    facecolor=KIND_COLORS.get(kind, "#999999"),
                    edgecolor="black" if len(plan.buffers) < 400 else "none",
                    linewidth=0.2,
                )
            )
        ax.axhline(plan.arena_bytes / adiv, color="black", linestyle="--", linewidth=1)
        ax.set_xlim(0, max(len(plan.order), 1))
        ax.set_ylim(0, plan.arena_bytes / adiv * 1.08 or 1)
        ax.set_title(
            f"arena layout of the plan: {plan.arena_bytes / adiv:,.2f} {aunit}"
            f" (resident {plan.resident_bytes / adiv:,.2f} {aunit} kept outside the arena)",
            loc="right",
            fontsize=11,
        )
        ax.set_xlabel("step (node in execution order)")
        ax.set_ylabel(f"offset ({aunit})")
    used = {k for _, pk in curves.values() for k in pk}
    handles = [Patch(color=KIND_COLORS[k], label=k.replace("_", " ")) for k in KIND_ORDER if k in used]
    axes[0].legend(handles=handles, loc="upper right", ncol=min(len(handles), 4), fontsize=9, framealpha=0.9)
    fig.suptitle(title or graph.name, fontsize=13, fontweight="bold")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
