"""In-place updates: pairs, safety, the transformed graph against aliased semantics, plans, onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dags import all_topological_orders, random_topological_order, views_of
from olla_onnx.errors import GraphError, OllaInputError, PlanError
from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind, check_order, is_topological
from olla_onnx.passes.inplace import (
    InplacePair,
    apply_inplace,
    candidate_inputs,
    find_inplace_pairs,
    is_order_token,
    parse_pair,
    respected_pairs,
)
from olla_onnx.ir.memory import simulate

MODELS = Path(__file__).resolve().parents[1] / "models"


# ---------------------------------------------------------------- random training-like graphs


@st.composite
def update_graphs(draw, max_nodes: int = 7, max_params: int = 2) -> Graph:
    """A random DAG with resident ``param.k`` inputs and ``param_out.k`` outputs of the same size.

    Nodes read random earlier tensors (parameters included); each ``param_out.k``
    is produced by a random node, an element-wise ``Sub`` or an opaque op, that
    may or may not read ``param.k``; some parameters are read through a Reshape.
    """
    k = draw(st.integers(1, max_params))
    tensors = [Tensor(f"param.{j}", draw(st.integers(1, 40)), TensorKind.PARAMETER) for j in range(k)]
    available = [t.name for t in tensors]
    nodes: list[Node] = []
    n = draw(st.integers(k, max_nodes))
    update_at = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True))
    for i in range(n):
        ins = draw(st.lists(st.sampled_from(available), max_size=3))
        if i in update_at:
            j = update_at.index(i)
            if draw(st.booleans()):
                ins = [f"param.{j}"] + ins
            op = draw(st.sampled_from(["Sub", "MatMul"]))
            out = Tensor(f"param_out.{j}", tensors[j].size)
        else:
            op = "Reshape" if ins and ins[0].startswith("param.") and draw(st.booleans()) else "op"
            out = Tensor(f"t{i}", draw(st.integers(0, 60)))
        nodes.append(Node(f"n{i}", op, tuple(ins), (out.name,)))
        tensors.append(out)
        available.append(out.name)
    outputs = [f"param_out.{j}" for j in range(k)]
    extra = [t.name for t in tensors if t.name.startswith("t")]
    outputs += draw(st.lists(st.sampled_from(extra), max_size=1)) if extra else []
    return Graph.build(nodes, tensors, outputs)


def aliasing_is_safe(g: Graph, pairs, order) -> bool:
    """Aliased semantics written plainly: no reader of an input (or a view of it) after the update."""
    pos = {v: s for s, v in enumerate(order)}
    for p in pairs:
        prod = g.producer[p.output]
        for t in views_of(g, p.input):
            for c in g.consumers[t]:
                if c != prod and pos[c] > pos[prod]:
                    return False
    return True


def aliased_peak(g: Graph, pairs, order) -> int:
    """The memory model with each paired output stored in its input's (resident) buffer: it adds no bytes."""
    free = {p.output for p in pairs}
    n = len(order)
    step = {v: s for s, v in enumerate(order)}
    resident = sum(g.tensors[t].size for t in g.resident)
    best = resident
    for s in range(n):
        live = resident
        for name, p in g.producer.items():
            last = n - 1 if name in g.outputs else max((step[c] for c in g.consumers[name]), default=step[p])
            if step[p] <= s <= last and name not in free:
                live += g.tensors[name].size
        best = max(best, live)
    return best


@settings(max_examples=60, deadline=None)
@given(update_graphs())
def test_transformed_graph_is_exactly_the_aliased_problem(g):
    """Brute force: the orders of the transformed graph are the safe orders of the original, each at its
    aliased peak; so its optimum (the scheduler's proven one) is the aliased optimum."""
    from olla_onnx.schedule import optimize_order

    pairs = find_inplace_pairs(g).pairs
    t = apply_inplace(g, pairs)
    assert [n.name for n in t.nodes] == [n.name for n in g.nodes]
    orders_t = {tuple(o) for o in all_topological_orders(t)}
    safe = {tuple(o) for o in all_topological_orders(g) if aliasing_is_safe(g, pairs, o)}
    assert orders_t == safe
    for o in orders_t:
        assert simulate(t, o).peak == aliased_peak(g, pairs, o)
    res = optimize_order(t, time_limit=5.0)
    assert res.optimal and res.peak == min(aliased_peak(g, pairs, o) for o in safe)


@settings(max_examples=60, deadline=None)
@given(update_graphs(max_nodes=25, max_params=4), st.randoms(use_true_random=False))
def test_every_order_of_the_transformed_graph_is_valid_and_safe(g, rnd):
    search = find_inplace_pairs(g)
    t = apply_inplace(g, search.pairs)
    for p in search.pairs:  # the rules the pass promises
        prod = g.nodes[g.producer[p.output]]
        assert p.bytes == g.tensors[p.input].size == g.tensors[p.output].size > 0
        assert p.input not in prod.inputs or prod.op_type == "Sub"
    for _ in range(20):
        order = random_topological_order(t, rnd)
        check_order(g, order)
        assert aliasing_is_safe(g, search.pairs, order)
        assert respected_pairs(g, search.pairs, order) == search.pairs
    # a pair is refused only for a reason its rules name
    for r in search.refused:
        assert r.reason


# ---------------------------------------------------------------- refusals


def _g(nodes, sizes, outputs, resident=("param.w",)):
    tensors = [Tensor(n, sizes.get(n, 8), TensorKind.PARAMETER) for n in resident]
    tensors += [Tensor(o, sizes.get(o, 8)) for n in nodes for o in n.outputs]
    return Graph.build(nodes, tensors, outputs)


def test_a_reader_that_depends_on_the_update_is_refused():
    # b reads the old weight but needs the updated one first: no order can alias
    g = _g([Node("u", "Sub", ("param.w",), ("param_out.w",)), Node("b", "op", ("param.w", "param_out.w"), ("y",))], {}, ["param_out.w", "y"])
    s = find_inplace_pairs(g)
    assert not s.pairs and "depends on its producer" in s.refused[0].reason


def test_a_producer_reading_the_input_must_be_elementwise():
    g = _g([Node("u", "MatMul", ("param.w",), ("param_out.w",))], {}, ["param_out.w"])
    assert "not element-wise" in find_inplace_pairs(g).refused[0].reason
    g = _g([Node("u", "Mul", ("param.w",), ("param_out.w",))], {}, ["param_out.w"])
    assert len(find_inplace_pairs(g).pairs) == 1
    g = _g([Node("u", "MatMul", ("x",), ("param_out.w",)), Node("x", "op", (), ("x",))][::-1], {}, ["param_out.w"])
    assert len(find_inplace_pairs(g).pairs) == 1  # does not read the input: any op may write it


def test_views_of_the_input_count_as_the_input():
    nodes = [
        Node("v", "Reshape", ("param.w",), ("w2d",)),
        Node("u", "Sub", ("param.w",), ("param_out.w",)),
        Node("late", "op", ("w2d", "param_out.w"), ("y",)),
    ]
    assert "depends on its producer" in find_inplace_pairs(_g(nodes, {}, ["param_out.w", "y"])).refused[0].reason
    nodes = [Node("v", "Reshape", ("param.w",), ("w2d",)), Node("u", "Sub", ("w2d",), ("param_out.w",))]
    assert "reads a view" in find_inplace_pairs(_g(nodes, {}, ["param_out.w"])).refused[0].reason
    nodes = [Node("v", "Identity", ("param.w",), ("w_id",)), Node("u", "Neg", ("w_id",), ("param_out.w",))]
    assert "graph output" in find_inplace_pairs(_g(nodes, {}, ["param_out.w", "w_id"])).refused[0].reason


def test_sizes_signatures_producers_and_inputs():
    g = _g([Node("u", "Sub", ("param.w",), ("param_out.w",))], {"param_out.w": 16}, ["param_out.w"])
    assert "sizes differ" in find_inplace_pairs(g).refused[0].reason
    g = _g([Node("u", "Sub", ("param.w",), ("param_out.w",))], {}, ["param_out.w"])
    sig = {"param.w": (1, (2,)), "param_out.w": (1, (1, 2))}
    assert "shape differ" in find_inplace_pairs(g, signatures=sig).refused[0].reason
    assert "caller feeds" in find_inplace_pairs(g, feedable=()).refused[0].reason
    g = _g([Node("u", "Constant", (), ("param_out.w",))], {}, ["param_out.w"])
    assert "Constant" in find_inplace_pairs(g).refused[0].reason
    g = _g([Node("u", "Sub", ("param.w",), ("param_out.w",))], {}, ["param_out.w", "param.w"])
    assert "graph output" in find_inplace_pairs(g).refused[0].reason
    g = _g([Node("u", "Sub", ("param.w",), ("param_out.w",))], {"param.w": 0, "param_out.w": 0}, ["param_out.w"])
    assert "zero bytes" in find_inplace_pairs(g).refused[0].reason


def test_tokens_of_all_pairs_together_never_close_a_cycle():
    # each pair alone is safe, both together are not: a reads param.a after... b's update, and vice versa
    nodes = [
        Node("ua", "Sub", ("param.a",), ("param_out.a",)),
        Node("ub", "Sub", ("param.b",), ("param_out.b",)),
        Node("ra", "op", ("param.a", "param_out.b"), ("x",)),  # reads a, after b's update
        Node("rb", "op", ("param.b", "param_out.a"), ("y",)),  # reads b, after a's update
    ]
    g = _g(nodes, {}, ["param_out.a", "param_out.b", "x", "y"], resident=("param.a", "param.b"))
    s = find_inplace_pairs(g)
    assert len(s.pairs) == 1 and len(s.refused) == 1
    t = apply_inplace(g, s.pairs)  # acyclic (Graph validates)
    with pytest.raises(GraphError, match="does not fit"):
        apply_inplace(g, s.pairs + (InplacePair(s.refused[0].input, s.refused[0].output, 8),))
    assert is_topological(t, t.topological_order())


def test_explicit_pairs_and_naming_rules():
    g = _g([Node("u", "Sub", ("param.w",), ("new_w",))], {}, ["new_w"])
    assert not find_inplace_pairs(g, dataflow=False).pairs  # no rule pairs these names
    assert find_inplace_pairs(g).pairs == (InplacePair("param.w", "new_w", 8),)  # the dataflow does
    s = find_inplace_pairs(g, [("param.w", "new_w")])
    assert s.pairs == (InplacePair("param.w", "new_w", 8),)
    with pytest.raises(OllaInputError, match="no tensor 'nope'"):
        find_inplace_pairs(g, [("nope", "new_w")])
    g2 = _g([Node("u", "MatMul", ("param.w",), ("new_w",))], {}, ["new_w"])
    with pytest.raises(OllaInputError, match="not safe in place"):
        find_inplace_pairs(g2, [("param.w", "new_w")])
    with pytest.raises(OllaInputError, match="INPUT=OUTPUT"):
        parse_pair("param.w")
    assert parse_pair(" a = b ") == ("a", "b")
    assert candidate_inputs("param_out.layers.0.weight")[0] == "param.layers.0.weight"
    assert candidate_inputs("state_out.m.x")[0] == "state.m.x"
    assert candidate_inputs("W0_new") == ["W0"]
    assert "fc.weight" in candidate_inputs("fc.weight.out")


def test_tokens_are_zero_byte_ir_only_tensors():
    nodes = [Node("f", "op", ("param.w",), ("a",)), Node("u", "Sub", ("param.w", "a"), ("param_out.w",)),
             Node("b", "op", ("param.w",), ("c",))]
    g = _g(nodes, {"a": 4, "c": 4}, ["param_out.w", "c"])
    t = apply_inplace(g, find_inplace_pairs(g).pairs)
    tokens = [n for n in t.tensors if is_order_token(n)]
    assert tokens and all(t.tensors[n].size == 0 for n in tokens)
    assert t.tensors["param_out.w"].size == 0 and t.resident_bytes == g.resident_bytes
    assert t.preds[t.index_of("u")] == (0, 2)  # b must run before the update now
    with pytest.raises(GraphError, match="reserved"):
        apply_inplace(t, (InplacePair("param.w", "param_out.w", 8),))


# ---------------------------------------------------------------- plans


def _small_plan(tmp_path):
    from olla_onnx.plan import make_plan

    nodes = [Node("f", "op", ("param.w",), ("a",)), Node("u", "Sub", ("param.w", "a"), ("param_out.w",)),
             Node("b", "op", ("param.w",), ("c",))]
    g = _g(nodes, {"a": 4, "c": 4}, ["param_out.w", "c"])
    pairs = find_inplace_pairs(g).pairs
    order = [0, 2, 1]
    plan = make_plan(g, order, {"a": 0, "c": 64, "param_out.w": 0}, 64, inplace=pairs)
    return g, plan


def test_plan_with_pairs_round_trips_and_leaves_tokens_out(tmp_path):
    from olla_onnx.plan import load_plan, save_plan

    g, plan = _small_plan(tmp_path)
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    raw = json.loads(path.read_text())
    assert raw["version"] == 2 and raw["inplace"] == [{"input": "param.w", "output": "param_out.w", "bytes": 8}]
    assert not any(is_order_token(b["tensor"]) for b in raw["buffers"])
    assert {b["tensor"]: b["size"] for b in raw["buffers"]}["param_out.w"] == 0
    assert load_plan(path, g) == plan


def test_version_1_plans_still_load(tmp_path):
    from olla_onnx.plan import load_plan, make_plan, save_plan

    g = Graph.build([Node("a", "X", (), ("t",))], [Tensor("t", 8)], ["t"])
    plan = make_plan(g, [0], {"t": 0}, 64)
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    raw = json.loads(path.read_text())
    raw["version"] = 1
    del raw["inplace"]
    path.write_text(json.dumps(raw))
    assert load_plan(path, g) == plan


@pytest.mark.parametrize("defect", ["unknown_pair", "unsafe_order", "wrong_bytes"])
def test_plans_with_bad_pairs_are_refused(tmp_path, defect):
    from olla_onnx.plan import load_plan, save_plan

    g, plan = _small_plan(tmp_path)
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    raw = json.loads(path.read_text())
    if defect == "unknown_pair":
        raw["inplace"][0]["output"] = "c"
    elif defect == "unsafe_order":
        raw["order"] = ["f", "u", "b"]  # b reads param.w after the update overwrote it
    else:
        raw["inplace"][0]["bytes"] = 4
    path.write_text(json.dumps(raw))
    with pytest.raises(PlanError):
        load_plan(path, g)


# ---------------------------------------------------------------- the pipeline on a corpus model
