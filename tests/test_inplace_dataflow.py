"""In-place pairs found from the dataflow (:mod:`olla_onnx.passes.inplace_match`), not from names.

The training steps here are hand-built with ``onnx.helper`` and named like PyTorch's functional tracing
names them (inputs ``arg0_1``..., nodes and outputs ``sub_3``, ``add_7``...): no naming rule pairs anything.
Inputs are listed as exporters list them (parameters, then each optimizer slot, then the batch, then the step
count) and outputs likewise (the loss first), so the expected pair of input ``i`` is output ``i + 1``.
"""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import numpy as np

from dags import all_topological_orders, random_topological_order, views_of
from olla_onnx.formats import load_graph
from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind, check_order
from olla_onnx.ir.memory import simulate
from olla_onnx.optimize import find_pairs
from olla_onnx.ort_facts import ELEMENTWISE, VIEW_OPS
from olla_onnx.passes.inplace import _Checker, apply_inplace, candidate_inputs, find_inplace_pairs, respected_pairs
from olla_onnx.passes.inplace_match import PATH_OPS, dataflow_candidates

MODELS = Path(__file__).resolve().parents[1] / "models"
F = TensorProto.FLOAT


# ---------------------------------------------------------------- hand-built training steps, neutral names


class _Step:
    """Builds one ONNX training step the way a tracer names it."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shape: dict[str, list[int]] = {}
        self.count: collections.Counter = collections.Counter()

    def input(self, shape: list[int], dtype: int = F) -> str:
        name = f"arg{len(self.inputs)}_1"
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        self.shape[name] = shape
        return name

    def const(self, value, dtype=np.float32) -> str:
        name = f"_tensor_constant{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        base = op_type.lower()
        k = self.count[base]
        self.count[base] += 1
        name = base if k == 0 else f"{base}_{k}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def save(self, outputs: list[tuple[str, list[int]]], path: Path) -> Path:
        graph = helper.make_graph(
            self.nodes, "step", self.inputs, [helper.make_tensor_value_info(n, F, s) for n, s in outputs], self.inits
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, path)
        return path


def _mlp(b: _Step, params: list[str], x: str, t: str) -> tuple[str, list[str]]:
    """Forward, squared-error loss and hand-written backward of a 2-layer MLP: (loss, gradients)."""
    w0, b0, w1, b1 = params
    zero, axis0 = b.const(0.0), b.const([0], np.int64)
    h0 = b.op("Add", b.op("MatMul", x, w0), b0)
    a0 = b.op("Relu", h0)
    r = b.op("Sub", b.op("Add", b.op("MatMul", a0, w1), b1), t)
    loss = b.op("ReduceSum", b.op("Mul", r, r), keepdims=0)
    dh1 = b.op("Mul", r, b.const(2.0))
    gw1 = b.op("MatMul", b.op("Transpose", a0, perm=[1, 0]), dh1)
    gb1 = b.op("ReduceSum", dh1, axis0, keepdims=0)
    da0 = b.op("MatMul", dh1, b.op("Transpose", w1, perm=[1, 0]))
    dh0 = b.op("Where", b.op("Greater", h0, zero), da0, zero)
    gw0 = b.op("MatMul", b.op("Transpose", x, perm=[1, 0]), dh0)
    gb0 = b.op("ReduceSum", dh0, axis0, keepdims=0)
    return loss, [gw0, gb0, gw1, gb1]


SHAPES = [[3, 3], [3], [3, 3], [3]]  # w0 b0 w1 b1: two same-shaped weights, two same-shaped biases


def _sgd(b, ps, gs, slots):
    return [b.op("Sub", p, b.op("Mul", g, b.const(0.1))) for p, g in zip(ps, gs)], []


def _momentum(b, ps, gs, slots):
    bufs = [b.op("Add", b.op("Mul", buf, b.const(0.9)), g) for buf, g in zip(slots[0], gs)]
    return [b.op("Sub", p, b.op("Mul", buf, b.const(0.1))) for p, buf in zip(ps, bufs)], [bufs]


def _adam_torch(b, ps, gs, slots, step1):
    """torch.optim's single-tensor arithmetic (as olla_onnx.export.trainstep writes it)."""
    one = b.const(1.0)
    bc1 = b.op("Sub", one, b.op("Pow", b.const(0.9), step1))
    bc2 = b.op("Sub", one, b.op("Pow", b.const(0.999), step1))
    step_size, bc2_sqrt = b.op("Div", b.const(1e-3), bc1), b.op("Sqrt", bc2)
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(ps, gs, *slots):
        m2 = b.op("Add", m, b.op("Mul", b.op("Sub", g, m), b.const(0.1)))  # lerp(m, g, 1 - b1)
        v2 = b.op("Add", b.op("Mul", v, b.const(0.999)), b.op("Mul", b.op("Mul", g, g), b.const(0.001)))
        denom = b.op("Add", b.op("Div", b.op("Sqrt", v2), bc2_sqrt), b.const(1e-8))
        new_p.append(b.op("Sub", p, b.op("Mul", step_size, b.op("Div", m2, denom))))
        new_m.append(m2)
        new_v.append(v2)
    return new_p, [new_m, new_v]


def _adam_textbook(b, ps, gs, slots, step1):
    """The paper's formulas with constants first and ``p + (-update)``: every state enters through operand 1."""
    one = b.const(1.0)
    bc1 = b.op("Sub", one, b.op("Pow", b.const(0.9), step1))
    bc2 = b.op("Sub", one, b.op("Pow", b.const(0.999), step1))
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(ps, gs, *slots):
        m2 = b.op("Add", b.op("Mul", b.const(0.9), m), b.op("Mul", b.const(0.1), g))
        v2 = b.op("Add", b.op("Mul", b.const(0.999), v), b.op("Mul", b.const(0.001), b.op("Mul", g, g)))
        mhat, vhat = b.op("Div", m2, bc1), b.op("Div", v2, bc2)
        upd = b.op("Div", b.op("Mul", b.const(1e-3), mhat), b.op("Add", b.op("Sqrt", vhat), b.const(1e-8)))
        new_p.append(b.op("Add", b.op("Neg", upd), p))
        new_m.append(m2)
        new_v.append(v2)
    return new_p, [new_m, new_v]


OPTIMIZERS = {"sgd": (_sgd, 0), "momentum": (_momentum, 1), "adam_torch": (_adam_torch, 2),
              "adam_textbook": (_adam_textbook, 2)}


def _train_step(tmp_path: Path, kind: str, extra=None) -> tuple[Path, list[tuple[str, str]]]:
    """A neutral-named training step; returns the file and the (input, output) pairs a correct pass finds.
    ``extra(b, params, new_params)`` may add graph outputs (returned after the others)."""
    update, n_slots = OPTIMIZERS[kind]
    b = _Step()
    params = [b.input(s) for s in SHAPES]
    slots = [[b.input(s) for s in SHAPES] for _ in range(n_slots)]
    x, t = b.input([4, 3]), b.input([4, 3])  # the batch (fed too)
    step = b.input([]) if kind.startswith("adam") else None
    loss, grads = _mlp(b, params, x, t)
    if step is None:
        new_p, new_s = update(b, params, grads, slots)
    else:
        step1 = b.op("Add", step, b.const(1.0))
        new_p, new_s = update(b, params, grads, slots, step1)
    outputs = [(loss, [])] + [(o, s) for o, s in zip(new_p, SHAPES)]
    outputs += [(o, s) for slot in new_s for o, s in zip(slot, SHAPES)]
    expected = list(zip(params, new_p)) + [pair for i, o in zip(slots, new_s) for pair in zip(i, o)]
    if step is not None:
        outputs.append((step1, []))
        expected.append((step, step1))
    if extra is not None:
        outputs += extra(b, params, new_p)
    return b.save(outputs, tmp_path / f"{kind}.onnx"), expected


def _pairs(search) -> set[tuple[str, str]]:
    return {(p.input, p.output) for p in search.pairs}


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_every_parameter_and_state_update_is_paired(tmp_path, kind):
    path, expected = _train_step(tmp_path, kind)
    loaded = load_graph(path)
    assert all(not candidate_inputs(o) for o in loaded.graph.outputs)  # names say nothing
    assert not find_inplace_pairs(loaded.graph, dataflow=False).pairs
    search = find_pairs(loaded)
    assert _pairs(search) == set(expected) and not search.refused
    assert search.bytes == sum(loaded.graph.tensors[i].size for i, _ in expected)
    # deterministic: the same answer again, and with the graph's outputs listed in reverse
    assert find_pairs(loaded).pairs == search.pairs
    g = loaded.graph
    rev = Graph(g.nodes, g.tensors, tuple(reversed(g.outputs)), g.name)
    assert _pairs(find_inplace_pairs(rev)) == set(expected)


def test_adam_moments_reach_the_new_parameter_but_lose_it(tmp_path):
    """The ambiguity the matching resolves: m and v are element-wise ancestors of the new p, further away."""
    path, expected = _train_step(tmp_path, "adam_torch")
    loaded = load_graph(path)
    feedable, sig = loaded.inplace_hints()
    cands = dataflow_candidates(loaded.graph, sorted(feedable), loaded.graph.outputs, sig)
    p, p_new = expected[0]
    m, v = expected[4][0], expected[8][0]
    cost = {(c.input, c.output): (c.nodes, c.side) for c in cands if c.output == p_new}
    assert cost[(p, p_new)] == (1, 0)
    assert cost[(p, p_new)] < cost[(m, p_new)] < cost[(v, p_new)]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_same_shaped_parameters_each_get_their_own(tmp_path, order):
    """Two biases feed each other's gradient element-wise (y = x * b1 + b2): both reach both updates;
    each must pair with its own, whichever is listed first."""
    b = _Step()
    names = {}
    for k in order:
        names[k] = b.input([5])
    b1, b2 = names[0], names[1]
    x, t = b.input([5]), b.input([5])  # same size as the biases: fed, and element-wise ancestors too
    r = b.op("Sub", b.op("Add", b.op("Mul", x, b1), b2), t)
    loss = b.op("ReduceSum", b.op("Mul", r, r), keepdims=0)
    dy = b.op("Mul", r, b.const(2.0))
    new1 = b.op("Sub", b1, b.op("Mul", b.op("Mul", dy, x), b.const(0.1)))
    new2 = b.op("Sub", b2, b.op("Mul", dy, b.const(0.1)))
    outs = [(new2, [5]), (new1, [5])] if order == (0, 1) else [(new1, [5]), (new2, [5])]
    loaded = load_graph(b.save([(loss, [])] + outs, tmp_path / "two.onnx"))
    search = find_pairs(loaded)
    assert _pairs(search) == {(b1, new1), (b2, new2)} and not search.refused
    cands = dataflow_candidates(loaded.graph, [b1, b2, x, t], loaded.graph.outputs)
    reach = {(c.input, c.output) for c in cands}
    assert {(b1, new2), (b2, new1), (x, new1), (t, new2)} <= reach  # the ambiguity is real


def _reads_old_after_update(b, params, new_p):
    """An update-size diagnostic: sum((p_new - p)^2) for the first weight, which reads the old p after the update."""
    d = b.op("Sub", new_p[0], params[0])
    return [(b.op("ReduceSum", b.op("Mul", d, d), keepdims=0), [])]


@pytest.mark.parametrize("kind", ["sgd", "adam_torch"])
def test_old_value_read_after_the_update_is_refused(tmp_path, kind):
    path, expected = _train_step(tmp_path, kind, extra=_reads_old_after_update)
    search = find_pairs(load_graph(path))
    p, p_new = expected[0]
    assert _pairs(search) == set(expected) - {(p, p_new)}
    (r,) = search.refused
    assert (r.input, r.output) == (p, p_new)
    assert "depends on its producer" in r.reason and p in r.reason and "\n" not in r.reason


def test_a_refused_match_does_not_fall_back_to_a_further_input(tmp_path):
    """p_new = p - lr * g * c with c a fed same-shaped tensor (a preconditioner nothing updates): c reaches p_new
    too. When (p, p_new) is unsafe, p_new stays unpaired: it must not be written into c's buffer."""
    b = _Step()
    p, c, x = b.input([4]), b.input([4]), b.input([4])
    loss = b.op("ReduceSum", b.op("Mul", b.op("Mul", p, x), x), keepdims=0)
    g = b.op("Mul", x, x)
    p_new = b.op("Sub", p, b.op("Mul", b.op("Mul", g, c), b.const(0.1)))
    path = b.save([(loss, []), (p_new, [4])], tmp_path / "safe.onnx")
    assert _pairs(find_pairs(load_graph(path))) == {(p, p_new)}
    late = b.op("ReduceSum", b.op("Mul", p, p_new), keepdims=0)  # reads the old p after the update
    path = b.save([(loss, []), (p_new, [4]), (late, [])], tmp_path / "unsafe.onnx")
    search = find_pairs(load_graph(path))
    assert not search.pairs and [(r.input, r.output) for r in search.refused] == [(p, p_new)]


def test_names_win_and_explicit_pairs_override(tmp_path):
    g = Graph.build(
        [Node("u", "Sub", ("arg0_1", "arg1_1"), ("sub",)), Node("v", "Neg", ("arg1_1",), ("arg0_1_new",))],
        [Tensor("arg0_1", 8, TensorKind.INPUT), Tensor("arg1_1", 8, TensorKind.INPUT), Tensor("sub", 8),
         Tensor("arg0_1_new", 8)],
        ["sub", "arg0_1_new"],
    )
    # the dataflow alone: arg0_1 -> sub (operand 0), arg1_1 -> arg0_1_new
    assert _pairs(find_inplace_pairs(g, rules=False)) == {("arg0_1", "sub"), ("arg1_1", "arg0_1_new")}
    # the name says arg0_1_new is arg0_1's: it wins; the dataflow then matches what is left, arg1_1 -> sub,
    # which the checker refuses (u would have to run both before and after v)
    s = find_inplace_pairs(g)
    assert _pairs(s) == {("arg0_1", "arg0_1_new")}
    assert [(r.input, r.output) for r in s.refused] == [("arg1_1", "sub")] and "depends on" in s.refused[0].reason
    # an explicit pair wins over both
    assert _pairs(find_inplace_pairs(g, [("arg1_1", "arg0_1_new")])) == {("arg1_1", "arg0_1_new"), ("arg0_1", "sub")}


def test_path_rules_size_cast_and_non_elementwise(tmp_path):
    def g(nodes, sizes, outputs, inputs=("arg0_1",)):
        ts = [Tensor(i, sizes.get(i, 8), TensorKind.INPUT) for i in inputs]
        ts += [Tensor(o, sizes.get(o, 8)) for n in nodes for o in n.outputs]
        return Graph.build(nodes, ts, outputs)

    # a same-width Cast or an Identity costs nothing: arg0_1 is operand 0 of the Sub, arg1_1 operand 1
    cast = [Node("c", "Cast", ("arg0_1",), ("cast",)), Node("i", "Identity", ("cast",), ("id",)),
            Node("s", "Sub", ("id", "arg1_1"), ("sub",))]
    s = find_inplace_pairs(g(cast, {"id": 0}, ["sub"], ("arg0_1", "arg1_1")))
    assert _pairs(s) == {("arg0_1", "sub")} and not s.refused
    # through a tensor of another size (half precision and back), a non-element-wise op, or to another size
    trip = [Node("h", "Cast", ("arg0_1",), ("half",)), Node("f", "Cast", ("half",), ("full",)),
            Node("n", "Neg", ("full",), ("neg",))]
    assert not find_inplace_pairs(g(trip, {"half": 4}, ["neg"])).pairs
    mm = [Node("m", "MatMul", ("arg1_1", "arg0_1"), ("mm",))]
    assert not find_inplace_pairs(g(mm, {}, ["mm"], ("arg1_1", "arg0_1"))).pairs
    half = [Node("c", "Cast", ("arg0_1",), ("cast",))]
    assert not find_inplace_pairs(g(half, {"cast": 4}, ["cast"])).pairs
    # signatures: same size, other shape -> not a match (and not a refusal)
    neg = [Node("n", "Neg", ("arg0_1",), ("neg",))]
    s = find_inplace_pairs(g(neg, {}, ["neg"]), signatures={"arg0_1": (1, (2,)), "neg": (1, (1, 2))})
    assert not s.pairs and not s.refused
    # initializers (not fed by the caller) are never dataflow candidates
    s = find_inplace_pairs(g(neg, {}, ["neg"]), feedable=())
    assert not s.pairs and not s.refused


# ---------------------------------------------------------------- the corpus and a real fx export


CORPUS = sorted(MODELS.glob("*_tiny.onnx")) + [MODELS / "mlp_sgd_handwritten.onnx"]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_pairs_unchanged_and_found_by_dataflow_alone(path):
    loaded = load_graph(path)
    feedable, sig = loaded.inplace_hints()
    names = _pairs(find_inplace_pairs(loaded.graph, feedable=feedable, signatures=sig, dataflow=False))
    both = find_pairs(loaded)
    assert _pairs(both) == names and names and not both.refused
    dataflow = find_inplace_pairs(loaded.graph, feedable=feedable, signatures=sig, rules=False)
    assert _pairs(dataflow) == names and not dataflow.refused


FX = MODELS / "exporters" / "mlp_adam_fx.onnx"


def test_fx_exported_adam_step_is_paired_from_dataflow(tmp_path):
    """A step traced by make_fx and exported by torch.onnx (models/exporters/README.md): inputs
    4 params, 4 m, 4 v, x, y, step; outputs loss, 4 params, 4 m, 4 v, step."""
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.run import run_model

    loaded = load_graph(FX)
    ins = [i.name for i in loaded.model.graph.input]
    outs = [o.name for o in loaded.model.graph.output]
    expected = {(ins[i], outs[i + 1]) for i in range(12)} | {(ins[14], outs[13])}
    assert not find_inplace_pairs(loaded.graph, dataflow=False).pairs
    search = find_pairs(loaded)
    assert _pairs(search) == expected and not search.refused
    res = optimize_model(loaded, time_limit=1.0)
    assert len(res.inplace) == 13 and res.peak_optimized < optimize_model(loaded, time_limit=1.0, inplace=False).peak_optimized
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    r = run_model(out, plan)
    assert r.inplace_pairs == 13 and r.inplace_equals_plain and r.outputs_equal


# ---------------------------------------------------------------- random graphs: every pair is safe

_UNARY = {"Neg", "Sqrt", "Cast", "Identity", "Reshape", "ReduceSum"}


@st.composite
def neutral_graphs(draw, max_nodes: int = 7) -> tuple[Graph, set[str]]:
    """Random DAGs over fed inputs of two sizes, with element-wise, view, cast and opaque ops and random outputs;
    element-wise outputs usually take their widest input's size. Returns the graph and the fed inputs."""
    k = draw(st.integers(1, 4))
    tensors = [Tensor(f"arg{j}_1", draw(st.sampled_from([8, 16])), TensorKind.INPUT) for j in range(k)]
    size = {t.name: t.size for t in tensors}
    nodes: list[Node] = []
    for i in range(draw(st.integers(1, max_nodes))):
        op = draw(st.sampled_from(["Add", "Sub", "Mul", "Neg", "Sqrt", "Cast", "Identity", "Reshape", "MatMul", "ReduceSum"]))
        ins = draw(st.lists(st.sampled_from(sorted(size)), min_size=1, max_size=1 if op in _UNARY else 3))
        widest = max(size[x] for x in ins)
        out_size = draw(st.sampled_from([widest, widest, 0, 8, 16])) if op in PATH_OPS else draw(st.sampled_from([4, 8, 16]))
        name = f"{op.lower()}_{i}"
        nodes.append(Node(f"n{i}", op, tuple(ins), (name,)))
        tensors.append(Tensor(name, out_size))
        size[name] = out_size
    produced = [n.outputs[0] for n in nodes]
    outputs = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=4, unique=True))
    fed = set(draw(st.lists(st.sampled_from([t.name for t in tensors[:k]]), max_size=k, unique=True)))
    if draw(st.booleans()):
        fed = {t.name for t in tensors[:k]}
    return Graph.build(nodes, tensors, outputs), fed


def _safe(g: Graph, pairs, order) -> bool:
    """Aliased semantics written plainly: no reader of an input (or a view of it) after its update."""
    pos = {v: s for s, v in enumerate(order)}
    return all(pos[c] < pos[g.producer[p.output]] for p in pairs for t in views_of(g, p.input)
               for c in g.consumers[t] if c != g.producer[p.output])


def _elementwise_path(g: Graph, src: str, dst: str) -> bool:
    """An independent statement of the path rule: element-wise nodes, every tensor of ``src``'s size."""
    size, seen, todo = g.tensors[src].size, {src}, [src]
    while todo:
        t = todo.pop()
        for c in g.consumers[t]:
            node = g.nodes[c]
            ok = node.op_type in ELEMENTWISE or (node.op_type in VIEW_OPS | {"Cast", "CastLike"} and node.inputs[0] == t)
            for o in node.outputs if ok else ():
                if (g.tensors[o].size == size or (node.op_type in VIEW_OPS and g.tensors[o].size == 0)) and o not in seen:
                    seen.add(o)
                    todo.append(o)
    return dst in seen


@settings(max_examples=150, deadline=None)
@given(neutral_graphs(), st.randoms(use_true_random=False))
def test_every_dataflow_pair_is_safe(case, rnd):
    g, fed = case
    search = find_inplace_pairs(g, feedable=fed)
    names = [n for p in search.pairs for n in (p.input, p.output)] + [n for r in search.refused for n in (r.input, r.output)]
    assert len(names) == len(set(names))  # each input and output in one candidate
    for r in search.refused:
        assert r.reason and "\n" not in r.reason
    for p in search.pairs:  # the match rule, and what the existing checker guarantees of each pair alone
        assert p.input in fed and p.input not in g.producer and p.output in g.output_set
        assert p.bytes == g.tensors[p.input].size == g.tensors[p.output].size > 0
        assert _elementwise_path(g, p.input, p.output)
        prod = g.nodes[g.producer[p.output]]
        assert p.input not in prod.inputs or prod.op_type in ELEMENTWISE
        assert _Checker(g, fed, None).why_not(p.input, p.output) is None
    t = apply_inplace(g, search.pairs)  # re-checks every pair against the graph
    orders = {tuple(o) for o in all_topological_orders(t)}
    assert orders == {tuple(o) for o in all_topological_orders(g) if _safe(g, search.pairs, o)}
    for _ in range(5):
        order = random_topological_order(t, rnd)
        check_order(g, order)
        sim = simulate(t, order)
        assert sim.peak <= simulate(g, order).peak
        assert respected_pairs(g, search.pairs, order) == search.pairs
