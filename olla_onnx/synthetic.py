"""Generated graphs and traces for benchmarks and tests: random layered DAGs, training-shaped graphs, and
training-step buffer traces for placement.

Both generators are deterministic given ``seed`` and return a validated :class:`Graph`
(one output tensor per node unless said otherwise), so they can also be written as
node-link JSON with :func:`olla_onnx.formats.nodelink.graph_to_node_link`.
"""

from __future__ import annotations

import random

import numpy as np
from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind
from olla_onnx.place.problem import Buffers


def layered_dag(num_nodes: int, width: int = 6, seed: int = 0, max_fan_in: int = 3, span: int = 2) -> Graph:
    """A random layered DAG of ``num_nodes`` nodes, one output tensor each.

    Layers hold 1..``width`` nodes; a node reads 1..``max_fan_in`` tensors of the
    previous ``span`` layers (so many tensors have several consumers), and every
    node outside the last layer has a reader in a later layer; sizes are
    random whole KiB between 1 and 64 KiB, a few nodes far larger. The last
    layer's nodes are the graph outputs.
    """
    rnd = random.Random(seed)
    layers: list[list[int]] = []
    preds: list[list[int]] = []
    v = 0
    while v < num_nodes:
        k = min(rnd.randint(1, width), num_nodes - v)
        layer = list(range(v, v + k))
        for _ in layer:
            pool = [u for lay in layers[-span:] for u in lay]
            if pool:
                m = rnd.randint(1, min(max_fan_in, len(pool)))
                preds.append(sorted(rnd.sample(pool, m)))
            else:
                preds.append([])
        layers.append(layer)
        v += k
    # few sinks: a node nobody reads (outside the last layer) gets a reader in the next layer
    read = {p for ps in preds for p in ps}
    for li in range(len(layers) - 1):
        for u in layers[li]:
            if u not in read:
                w = rnd.choice(layers[li + 1])
                preds[w] = sorted(set(preds[w]) | {u})
                read.add(u)
    sizes = [1024 * (rnd.randint(1, 64) if rnd.random() > 0.05 else rnd.randint(128, 512)) for _ in range(num_nodes)]
    return _one_tensor_per_node(preds, sizes, f"layered{num_nodes}_w{width}_s{seed}")


def _one_tensor_per_node(preds: list[list[int]], sizes: list[int], name: str, kinds: list[TensorKind] | None = None) -> Graph:
    n = len(preds)
    read = set(p for ps in preds for p in ps)
    nodes = [Node(f"n{v}", "op", tuple(f"t{p}" for p in preds[v]), (f"t{v}",)) for v in range(n)]
    tensors = [Tensor(f"t{v}", sizes[v], kinds[v] if kinds else TensorKind.ACTIVATION) for v in range(n)]
    outputs = [f"t{v}" for v in range(n) if v not in read]
    return Graph.build(nodes, tensors, outputs, name)


def training_graph(
    layers: int, seed: int = 0, optimizer_state: bool = True, param_kib: tuple[int, int] = (4, 256)
) -> Graph:
    """A training-like graph: a forward chain, a backward mirror, one update per parameter.

    Forward layer ``i`` reads the previous activation and parameter ``w_i``
    (resident) and writes ``a_i``. Backward step ``i`` (from the last layer down)
    reads the incoming gradient, ``a_{i-1}`` and ``w_i`` and writes the gradient
    of ``a_{i-1}`` and the gradient ``g_i`` of ``w_i``. The update of ``w_i``
    reads ``g_i`` (and its optimizer state, resident) and writes the new
    parameter, a graph output. The file lists all updates at the end, as naive
    exporters do, so the gradients all live to the end in the input order; the
    best orders run each update right after its gradient exists. A few layers
    have a side branch (two nodes) to make the graph wider than a chain.
    Parameter sizes are drawn from ``param_kib`` (KiB); activations from 8..512 KiB:
    large parameters make the gradients, and so the update placement, dominate.
    """
    rnd = random.Random(seed)
    nodes: list[Node] = []
    tensors: list[Tensor] = [Tensor("x", 4096, TensorKind.INPUT)]
    kib = 1024
    act = "x"
    acts = ["x"]
    for i in range(layers):
        w = rnd.randint(*param_kib) * kib
        tensors.append(Tensor(f"w{i}", w, TensorKind.PARAMETER))
        if optimizer_state:
            tensors.append(Tensor(f"m{i}", w, TensorKind.OPTIMIZER_STATE))
        a = rnd.randint(8, 512) * kib
        if rnd.random() < 0.25:  # a side branch: two nodes whose outputs the layer combines
            tensors += [Tensor(f"b{i}", rnd.randint(8, 256) * kib), Tensor(f"c{i}", rnd.randint(8, 256) * kib)]
            nodes.append(Node(f"br{i}", "Branch", (act,), (f"b{i}",)))
            nodes.append(Node(f"cr{i}", "Branch", (act,), (f"c{i}",)))
            nodes.append(Node(f"fw{i}", "Layer", (act, f"w{i}", f"b{i}", f"c{i}"), (f"a{i}",)))
        else:
            nodes.append(Node(f"fw{i}", "Layer", (act, f"w{i}"), (f"a{i}",)))
        tensors.append(Tensor(f"a{i}", a))
        act = f"a{i}"
        acts.append(act)
    tensors.append(Tensor("loss", 4))
    nodes.append(Node("loss", "Loss", (act,), ("loss",)))
    grad = "loss"
    for i in reversed(range(layers)):
        prev = acts[i]
        gin = f"da{i - 1}" if i > 0 else None
        outs = (f"g{i}",) + ((gin,) if gin else ())
        sizes = {f"g{i}": tensors_size(tensors, f"w{i}")}
        if gin:
            sizes[gin] = tensors_size(tensors, prev)
        for name, sz in sizes.items():
            tensors.append(Tensor(name, sz, TensorKind.GRADIENT))
        nodes.append(Node(f"bw{i}", "LayerGrad", (grad, prev, f"w{i}"), outs))
        if gin:
            grad = gin
    for i in range(layers):
        ins = (f"w{i}", f"g{i}") + ((f"m{i}",) if optimizer_state else ())
        tensors.append(Tensor(f"w{i}_new", tensors_size(tensors, f"w{i}"), TensorKind.PARAMETER))
        nodes.append(Node(f"upd{i}", "Update", ins, (f"w{i}_new",)))
    outputs = ["loss"] + [f"w{i}_new" for i in range(layers)]
    return Graph.build(nodes, tensors, outputs, f"training{layers}_s{seed}")


def tensors_size(tensors: list[Tensor], name: str) -> int:
    for t in reversed(tensors):
        if t.name == name:
            return t.size
    raise KeyError(name)


def _logu(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    v = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return (np.ceil(v / 256) * 256).astype(np.int64)


def training_trace(n_buffers: int = 20_000, seed: int = 0) -> Buffers:
    """A synthetic training-step trace with at least ``n_buffers`` buffers (fewer than ``n_buffers + 96``).

    Shaped like one training step of a 48-layer network: forward blocks, the backward blocks in reverse, an
    optimizer phase. Activations saved in forward block i live until backward block i (nested lifetimes); each
    block makes many small temporaries living 1-4 steps; gradients live from backward block i to the optimizer
    phase; 8 huge buffers live across most of the step. Sizes are multiples of 256 bytes, log-uniform per kind.
    Deterministic given ``seed``.."""
    rng = np.random.default_rng(seed)
    layers = 48
    # temporaries per block: each layer makes 2 * per_block of them plus 3 long-lived buffers; 8 huge ones in all
    per_block = max(-(-(n_buffers - 8 - 3 * layers) // (2 * layers)), 4)
    block_len = 4 * per_block // 10 + 8  # steps per block
    lo: list[np.ndarray] = []
    up: list[np.ndarray] = []
    sz: list[np.ndarray] = []
    fwd_start = lambda i: i * block_len  # noqa: E731
    bwd_start = lambda i: (2 * layers - 1 - i) * block_len  # noqa: E731
    t_opt = 2 * layers * block_len
    t_end = t_opt + block_len
    for i in range(layers):
        # Temporaries of the forward and backward block: short, small.
        for start in (fwd_start(i), bwd_start(i)):
            s = start + rng.integers(0, block_len - 4, per_block)
            lo.append(s)
            up.append(s + rng.integers(1, 5, per_block))
            sz.append(_logu(rng, 512, 2 << 20, per_block))
        # Two saved activations: born in forward block i, freed in backward block i (nested).
        k = 2
        s = fwd_start(i) + rng.integers(0, block_len, k)
        e = bwd_start(i) + rng.integers(1, block_len, k)
        lo.append(s)
        up.append(e)
        sz.append(_logu(rng, 1 << 20, 16 << 20, k))
        # A gradient: born in backward block i, lives until the optimizer phase.
        g = bwd_start(i) + rng.integers(0, block_len, 1)
        lo.append(g)
        up.append(t_opt + rng.integers(1, block_len, 1))
        sz.append(_logu(rng, 256 << 10, 8 << 20, 1))
    # A few huge, long-lived buffers.
    huge = 8
    s = rng.integers(0, block_len, huge)
    lo.append(s)
    up.append(t_end - rng.integers(0, 4 * block_len, huge))
    sz.append(_logu(rng, 32 << 20, 128 << 20, huge))
    lower = np.concatenate(lo)
    upper = np.concatenate(up)
    sizes = np.concatenate(sz)
    return Buffers.build([str(i) for i in range(lower.size)], lower, upper, sizes)
