"""Writing the reordered ONNX model: only the node order changes, the checker passes, onnxruntime runs that order."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from olla_onnx.errors import InvalidOrderError, OllaInputError
from olla_onnx.formats import load_graph
from olla_onnx.formats.onnx.read import graph_from_model
from olla_onnx.formats.onnx.write import reordered_model, write_reordered_onnx
from olla_onnx.runtime.feeds import random_feeds
from olla_onnx.runtime.profile import profiled_order
from olla_onnx.ort_facts.default_order import ort_default_order, written_order_as_run

sys.path.insert(0, str(Path(__file__).parent))
import dags  # noqa: E402
import onnx_models as M  # noqa: E402


def random_topological_order(graph, seed: int) -> list[int]:
    return dags.random_topological_order(graph, random.Random(seed))


def run(path_or_model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_only_the_node_order_changes(tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(M.mlp_training(), str(src))
    loaded = load_graph(src)
    order = ort_default_order(loaded.graph)
    out = tmp_path / "out.onnx"
    write_reordered_onnx(loaded.model, order, out, source=src)
    back = onnx.load(str(out))
    assert [n.name for n in back.graph.node] == [loaded.model.graph.node[i].name for i in order]
    # put the nodes back in the input's order: byte-identical to the input
    inverse = [0] * len(order)
    for pos, v in enumerate(order):
        inverse[v] = pos
    restored = reordered_model(back, inverse)
    assert restored.SerializeToString() == onnx.load(str(src)).SerializeToString()
    onnx.checker.check_model(str(out))
    feeds = random_feeds(back)
    for a, b in zip(run(src, feeds), run(out, feeds)):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), st.integers(0, 10**6))
def test_onnxruntime_runs_the_written_order_under_priority_based(n, seed):
    """docs/design.md's claim, checked with the profiler: ORT_DISABLE_ALL + PRIORITY_BASED runs file order."""
    m = M.random_dag(n, seed)
    g = graph_from_model(m)
    order = random_topological_order(g, seed)
    assert profiled_order(reordered_model(m, order), "priority") == list(range(n))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), st.integers(0, 10**6))
def test_written_order_as_run_is_what_onnxruntime_runs_with_shape_nodes(n, seed):
    m = M.random_dag(n, seed, shapes=True)
    g = graph_from_model(m)
    order = random_topological_order(g, seed)
    as_run = written_order_as_run(g, order)
    idx = {v: i for i, v in enumerate(order)}
    assert profiled_order(reordered_model(m, order), "priority") == [idx[v] for v in as_run]
    # written as run, the file is run exactly as written
    assert profiled_order(reordered_model(m, as_run), "priority") == list(range(len(m.graph.node)))
    assert written_order_as_run(g, as_run) == as_run


def test_every_stock_model_round_trips(tmp_path):
    for i, m in enumerate([M.transformer_block(), M.resnet_block()]):
        g = graph_from_model(m)
        order = random_topological_order(g, i)
        out = tmp_path / f"o{i}.onnx"
        write_reordered_onnx(m, order, out)
        assert profiled_order(onnx.load(str(out)), "priority") == list(range(len(order)))


def test_refuses_to_overwrite_the_input(tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(M.resnet_block(), str(src))
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    loaded = load_graph(src)
    with pytest.raises(OllaInputError, match="is the input file"):
        write_reordered_onnx(loaded.model, list(range(loaded.graph.num_nodes)), src, source=src)
    with pytest.raises(OllaInputError, match="is the input file"):
        write_reordered_onnx(loaded.model, list(range(loaded.graph.num_nodes)), tmp_path / "." / "in.onnx", source=src)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before


def test_non_topological_order_is_refused_and_nothing_is_written(tmp_path):
    m = M.mlp_training()
    out = tmp_path / "bad.onnx"
    with pytest.raises(OllaInputError, match="topologically sorted"):
        write_reordered_onnx(m, list(reversed(range(len(m.graph.node)))), out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("order", [[0, 0, 1], [0, 1], [0, 1, 2, 3], [0, 1, 5]])
def test_order_must_list_each_node_once(order, tmp_path):
    m = M.random_dag(3, 0)
    with pytest.raises(InvalidOrderError):
        write_reordered_onnx(m, order, tmp_path / "o.onnx")


def external(tmp_path: Path) -> Path:
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    w = numpy_helper.from_array(np.arange(32 * 32, dtype=np.float32).reshape(32, 32) / 1000, "param.w")
    vi = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 32])  # noqa: E731
    nodes = [
        helper.make_node("MatMul", ["x", "param.w"], ["a"], name="mm"),
        helper.make_node("Relu", ["x"], ["b"], name="relu"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    m = helper.make_model(helper.make_graph(nodes, "ext", [vi("x")], [vi("y")], initializer=[w]),
                          opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    p = src_dir / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, location="weights.bin", size_threshold=0)
    return p


def test_external_data_is_kept_external_and_copied_beside_the_output(tmp_path):
    src = external(tmp_path)
    loaded = load_graph(src)
    out = tmp_path / "out" / "opt.onnx"
    write_reordered_onnx(loaded.model, [1, 0, 2], out, source=src)
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (src.parent / "weights.bin").read_bytes()
    assert [n.name for n in onnx.load(str(out), load_external_data=False).graph.node] == ["relu", "mm", "add"]
    feeds = {"x": np.ones((2, 32), np.float32)}
    np.testing.assert_array_equal(run(src, feeds)[0], run(out, feeds)[0])
    # same folder as the input: the data file is shared, not copied
    write_reordered_onnx(loaded.model, [1, 0, 2], src.parent / "opt.onnx", source=src)
    assert sorted(p.name for p in src.parent.iterdir()) == ["ext.onnx", "opt.onnx", "weights.bin"]


def test_external_data_never_overwritten_and_source_required(tmp_path):
    src = external(tmp_path)
    loaded = load_graph(src)
    with pytest.raises(OllaInputError, match="pass the input path"):
        write_reordered_onnx(loaded.model, [0, 1, 2], tmp_path / "o.onnx")
    (tmp_path / "weights.bin").write_bytes(b"someone else's file")
    with pytest.raises(OllaInputError, match="exists with other contents"):
        write_reordered_onnx(loaded.model, [0, 1, 2], tmp_path / "o.onnx", source=src)
    assert (tmp_path / "weights.bin").read_bytes() == b"someone else's file"
