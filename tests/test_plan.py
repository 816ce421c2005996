import json

import pytest
from hypothesis import given, settings

from dags import random_graphs
from olla_onnx.errors import PlanError
from olla_onnx.ir.memory import lifetimes
from olla_onnx.plan import PlannedBuffer, check_buffers, load_plan, make_plan, save_plan


def naive_offsets(g, order):
    """Every tensor at its own address: always valid, never compact."""
    lt = lifetimes(g, order)
    offs, top = {}, 0
    for name, size in zip(lt.names, lt.sizes):
        offs[name] = top
        top += (int(size) + 63) // 64 * 64
    return offs


@settings(max_examples=50, deadline=None)
@given(random_graphs(max_nodes=10))
def test_plan_round_trip(tmp_path_factory, g):
    order = g.topological_order()
    plan = make_plan(g, order, naive_offsets(g, order), alignment=64)
    p = tmp_path_factory.mktemp("p") / "plan.json"
    save_plan(plan, p)
    again = load_plan(p, g)
    assert again == plan


def test_overlap_is_refused():
    bufs = [PlannedBuffer("a", 10, 0, 0, 2), PlannedBuffer("b", 10, 5, 2, 3)]
    with pytest.raises(PlanError, match="overlap"):
        check_buffers(bufs, 100)
    # disjoint in time: fine
    check_buffers([PlannedBuffer("a", 10, 0, 0, 1), PlannedBuffer("b", 10, 5, 2, 3)], 100)


def test_outside_arena_and_alignment():
    with pytest.raises(PlanError, match="outside the arena"):
        check_buffers([PlannedBuffer("a", 10, 95, 0, 1)], 100)
    with pytest.raises(PlanError, match="alignment"):
        check_buffers([PlannedBuffer("a", 10, 3, 0, 1)], 100, alignment=64)


def _plan_file(tmp_path):
    from olla_onnx.ir.graph import Graph, Node, Tensor

    g = Graph.build([Node("a", "X", (), ("t",)), Node("b", "X", ("t",), ("u",))], [Tensor("t", 8), Tensor("u", 8)], ["u"])
    plan = make_plan(g, [0, 1], {"t": 0, "u": 64}, alignment=64)
    p = tmp_path / "plan.json"
    save_plan(plan, p)
    return g, p


def test_plan_for_another_model(tmp_path):
    from olla_onnx.ir.graph import Graph, Node, Tensor

    _, p = _plan_file(tmp_path)
    other = Graph.build([Node("a", "X", (), ("t",))], [Tensor("t", 8)], ["t"])
    with pytest.raises(PlanError, match="another model"):
        load_plan(p, other)


def test_truncated_and_corrupt_plans(tmp_path):
    g, p = _plan_file(tmp_path)
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    with pytest.raises(PlanError, match="not valid JSON"):
        load_plan(p, g)
    raw = json.loads(text)
    del raw["buffers"][0]["offset"]
    p.write_text(json.dumps(raw))
    with pytest.raises(PlanError, match="malformed"):
        load_plan(p, g)
    raw = json.loads(text)
    raw["buffers"][1]["offset"] = 0  # u overlaps t at step 1
    p.write_text(json.dumps(raw))
    with pytest.raises(PlanError, match="overlap"):
        load_plan(p, g)
    raw = json.loads(text)
    raw["buffers"][1]["start"] = 0  # a lifetime the order does not give
    p.write_text(json.dumps(raw))
    with pytest.raises(PlanError, match="does not match"):
        load_plan(p, g)
