"""In-place updates: pairs, safety, the transformed graph against aliased semantics, plans, onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
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


def test_optimize_uses_inplace_and_writes_no_token(tmp_path):
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.plan import load_plan

    loaded = load_graph(MODELS / "mlp_sgd_handwritten.onnx")
    res = optimize_model(loaded, time_limit=2.0)
    plain = optimize_model(loaded, time_limit=2.0, inplace=False)
    assert len(res.inplace) == 16 and res.inplace_bytes == sum(p.bytes for p in res.inplace) > 0
    assert not plain.inplace and plain.peak_optimized == plain.peak_optimized_without_inplace
    assert simulate(res.graph, list(res.order)).peak == res.peak_optimized
    assert res.lower_bound <= res.peak_optimized <= min(res.peak_input_order, res.peak_ort_default)
    # in place removes the updated parameters and state from the peak (here, all of them)
    assert res.peak_optimized <= plain.peak_optimized - res.inplace_bytes // 2
    rep = res.report()
    assert rep["inplace_pairs"] == 16 and rep["inplace_bytes"] == res.inplace_bytes
    assert rep["peak_optimized_without_inplace"] == simulate(loaded.graph, list(res.order)).peak
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    written = onnx.load(out)
    names = {t for n in written.graph.node for t in (*n.input, *n.output)}
    assert not any(is_order_token(t) for t in names)
    assert sorted(n.name for n in written.graph.node) == sorted(n.name for n in loaded.model.graph.node)
    assert load_plan(plan, loaded.graph).inplace == res.inplace


def test_cli_optimize_reports_pairs_and_refuses_bad_ones(tmp_path):
    from typer.testing import CliRunner

    import olla_onnx.cli.optimize  # noqa: F401
    from olla_onnx.cli.common import app

    model = MODELS / "mlp_tiny.onnx"
    rep = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--time-limit", "0.5",
                                   "--report-json", str(rep)])
    assert res.exit_code == 0, res.output
    assert "in place: 12 updated tensor(s)" in res.output
    r = json.loads(rep.read_text())
    assert r["inplace_pairs"] == 12 and r["peak_optimized"] <= r["peak_optimized_without_inplace"]
    res = CliRunner().invoke(app, ["optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--no-inplace",
                                   "--time-limit", "0.5", "--report-json", str(rep)])
    assert res.exit_code == 0 and json.loads(rep.read_text())["inplace_pairs"] == 0
    proc = subprocess.run([sys.executable, "-m", "olla_onnx", "optimize", str(model), "-o", str(tmp_path / "x.onnx"),
                           "--inplace", "param.nope=loss"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no tensor 'param.nope'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- onnxruntime


@pytest.mark.parametrize("name", ["mlp_tiny", "mlp_sgd_handwritten"])
def test_inplace_run_equals_the_plain_planned_run(tmp_path, name):
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.run import run_model

    loaded = load_graph(MODELS / f"{name}.onnx")
    res = optimize_model(loaded, time_limit=1.0)
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    r = run_model(out, plan)
    assert r.inplace_pairs == len(res.inplace) > 0
    assert r.inplace_equals_plain and r.inplace_max_abs_diff == 0.0
    assert r.planned_equals_unplanned and r.fallbacks == 0
    assert r.prediction_error is not None and abs(r.prediction_error) <= 0.02
    off = run_model(out, plan, inplace=False)
    assert off.inplace_pairs == 0 and off.inplace_equals_plain is None
    # onnxruntime allocates nothing for the updated tensors: the measured peak drops
    assert r.peak_planned_bytes < off.peak_planned_bytes


def test_cli_run_with_an_inplace_plan(tmp_path):
    from typer.testing import CliRunner

    import olla_onnx.cli.optimize  # noqa: F401
    import olla_onnx.cli.run  # noqa: F401
    from olla_onnx.cli.common import app

    out, plan, rep = tmp_path / "o.onnx", tmp_path / "p.json", tmp_path / "r.json"
    res = CliRunner().invoke(app, ["optimize", str(MODELS / "mlp_tiny.onnx"), "-o", str(out), "--plan", str(plan),
                                   "--time-limit", "0.5"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["run", str(out), "--plan", str(plan), "--report-json", str(rep)])
    assert res.exit_code == 0, res.output
    assert "in place: 12 output(s)" in res.output and "without in-place: bitwise equal" in res.output
    r = json.loads(rep.read_text())
    assert r["inplace_pairs"] == 12 and r["inplace_equals_plain"] is True and r["outputs_equal"] is True
    res = CliRunner().invoke(app, ["run", str(out), "--plan", str(plan), "--no-inplace", "--report-json", str(rep)])
    assert res.exit_code == 0 and "in place:" not in res.output
    assert json.loads(rep.read_text())["inplace_pairs"] == 0


def test_scalar_and_broadcast_updates_in_place(tmp_path):
    """A scalar step counter and a weight updated with a broadcast operand: same shapes, same values."""
    from onnx import TensorProto as TP
    from onnx import helper as h

    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.run import run_model

    nodes = [
        h.make_node("Add", ["state.step", "one"], ["state_out.step"], name="count"),
        h.make_node("MatMul", ["batch.x", "param.w"], ["y"], name="fwd"),
        h.make_node("ReduceSum", ["y"], ["loss"], keepdims=0, name="loss"),
        h.make_node("ReduceSum", ["batch.x", "axes"], ["g"], keepdims=0, name="grad"),  # d loss / d w, per row
        h.make_node("Unsqueeze", ["g", "axes1"], ["g2"], name="col"),
        h.make_node("Mul", ["g2", "state_out.step"], ["step"], name="scale"),
        h.make_node("Sub", ["param.w", "step"], ["param_out.w"], name="update"),  # step [8,1] broadcast over w [8,3]
    ]
    graph = h.make_graph(
        nodes, "g",
        [h.make_tensor_value_info("batch.x", TP.FLOAT, [2, 8]), h.make_tensor_value_info("param.w", TP.FLOAT, [8, 3]),
         h.make_tensor_value_info("state.step", TP.FLOAT, [])],
        [h.make_tensor_value_info(n, TP.FLOAT, s) for n, s in (("loss", []), ("param_out.w", [8, 3]), ("state_out.step", []))],
        [h.make_tensor("one", TP.FLOAT, [], [1.0]), h.make_tensor("axes", TP.INT64, [1], [0]),
         h.make_tensor("axes1", TP.INT64, [1], [1])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    loaded = load_graph(src)
    res = optimize_model(loaded, time_limit=0.5)
    assert {(p.input, p.output) for p in res.inplace} == {("state.step", "state_out.step"), ("param.w", "param_out.w")}
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    r = run_model(out, plan)
    assert r.inplace_pairs == 2 and r.inplace_equals_plain and r.outputs_equal and r.max_abs_diff == 0.0


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a CUDA device"
)
def test_cuda_inplace_run(tmp_path):
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model, write_outputs
    from olla_onnx.run import run_model

    loaded = load_graph(MODELS / "mlp_sgd_handwritten.onnx")
    res = optimize_model(loaded, time_limit=1.0, alignment=256)
    out, plan = tmp_path / "o.onnx", tmp_path / "p.json"
    write_outputs(loaded, res, out, plan)
    r = run_model(out, plan, provider="cuda")
    assert r.inplace_pairs > 0 and r.inplace_equals_plain and r.fallbacks == 0


def test_bench_table_has_order_only_and_inplace_columns():
    from olla_onnx.bench import markdown_table

    row = {
        "model": "m", "nodes": 3, "resident_bytes": 1 << 20, "peak_input_order": 5 << 20, "peak_ort_default": 6 << 20,
        "peak_optimized": 4 << 20, "lower_bound": 4 << 20, "gap": 0.0, "optimal": True, "transient_saving_vs_ort": 0.4,
        "transient_saving_bound": 0.45, "transient_saving_bound_inplace": 0.7, "arena_bytes": 3 << 20, "fragmentation": 0.0, "order_seconds": 1.0, "place_seconds": 0.1,
        "inplace_pairs": 2, "inplace_bytes": 1 << 20, "peak_inplace": 3 << 20, "lower_bound_inplace": 3 << 20,
        "optimal_inplace": False, "transient_saving_vs_ort_inplace": 0.6, "peak_ort_default_bytes": 6 << 20,
        "peak_planned_bytes": 4 << 20, "peak_planned_bytes_inplace": 3 << 20, "outputs_equal": True,
        "inplace_equals_plain": True,
    }
    lines = markdown_table([row, {"model": "bad", "error": "boom"}]).splitlines()
    head, rule, body, bad = lines[:4]
    assert head.count("|") == rule.count("|") == body.count("|") == bad.count("|")
    cells = dict(zip([c.strip() for c in head.split("|")], [c.strip() for c in body.split("|")]))
    assert cells["optimized peak"] == "4.0" and cells["peak, order + in-place"] == "3.0"
    assert cells["in-place MiB (pairs)"] == "1.0 (2)" and cells["proven, in-place"] == "no"
    assert cells["transient saving vs ORT default"] == "40.0%"
    assert cells["transient saving vs ORT default, order + in-place"] == "60.0%"
    assert cells["measured planned + in-place MiB"] == "3.0" and "bitwise" in cells["outputs vs default session"]
    assert cells["most saving any order can give"] == "45.0%" and cells["most saving, order + in-place"] == "70.0%"
    assert any("With in-place updates" in line and "60.0%" in line and "70.0%" in line for line in lines)
    assert any("lower bound allows: 45.0%" in line for line in lines)


def test_bench_saving_bound_caps_the_saving_found():
    """The saving bound comes from a sound lower bound, so no order found may beat it."""
    from olla_onnx.bench import bench_model

    row = bench_model(MODELS / "mlp_sgd_handwritten.onnx", time_limit=1.0, run=False)
    assert row["transient_saving_vs_ort"] <= row["transient_saving_bound"] + 1e-12
    assert row["transient_saving_vs_ort_inplace"] <= row["transient_saving_bound_inplace"] + 1e-12
