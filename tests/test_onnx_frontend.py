"""The ONNX frontend: sizes, kinds, dims, control flow, other domains, and every bad input."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from olla_onnx.errors import GraphError, OllaInputError
from olla_onnx.formats import LoadedModel, load_graph
from olla_onnx.formats.onnx.read import OnnxFileError, graph_from_model, load_onnx
from olla_onnx.formats.onnx.shapes import UnknownShapeError, UnsupportedTypeError, tensor_bytes
from olla_onnx.ir.graph import TensorKind

sys.path.insert(0, str(Path(__file__).parent))
import onnx_models as M  # noqa: E402

OPSET = [helper.make_opsetid("", 21)]


def vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def model(nodes, inputs, outputs, inits=(), value_info=(), opset=OPSET) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits), value_info=list(value_info))
    return helper.make_model(g, opset_imports=opset)


def save(m: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "olla_onnx", *args], capture_output=True, text=True)


def assert_cli_error(path: Path, needle: str, *extra: str) -> None:
    proc = cli("inspect", str(path), *extra)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


# ------------------------------------------------------------------ sizes and kinds


def test_mlp_sizes_kinds_and_node_identity(tmp_path):
    m = M.mlp_training(batch=8, d_in=16, hidden=32, d_out=4)
    loaded = load_graph(save(m, tmp_path))
    assert isinstance(loaded, LoadedModel) and loaded.format == "onnx" and loaded.model is not None
    g = loaded.graph
    assert [n.name for n in g.nodes] == [n.name for n in m.graph.node]  # node i is the file's node i
    t = g.tensors
    assert t["param.w1"].size == 16 * 32 * 4 and t["param.w1"].kind is TensorKind.PARAMETER
    assert t["batch.x"].size == 8 * 16 * 4 and t["batch.x"].kind is TensorKind.INPUT
    assert t["h1"].size == 8 * 32 * 4 and t["h1"].kind is TensorKind.ACTIVATION
    assert t["loss"].size == 4 and t["loss"].kind is TensorKind.OUTPUT
    assert t["param_out.w1"].kind is TensorKind.OUTPUT
    assert t["w1_grad"].kind is TensorKind.GRADIENT
    assert t["x_t"].kind is TensorKind.GRADIENT  # backward temporary, not an ancestor of the loss
    assert t["axes0"].kind is TensorKind.CONSTANT and g.nodes[g.producer["axes0"]].op_type == "Constant"
    assert t["lr"].kind is TensorKind.CONSTANT  # scalar initializer
    assert t["two"].kind is TensorKind.CONSTANT
    assert set(g.resident) == {"batch.x", "batch.y", "param.w1", "param.b1", "param.w2", "param.b2", "lr", "two"}
    assert set(g.outputs) == {"loss", "param_out.w1", "param_out.b1", "param_out.w2", "param_out.b2"}


def test_corpus_naming_makes_other_initializers_constants():
    m = M.mlp_training()
    m.graph.initializer.append(numpy_helper.from_array(np.ones((3, 3), np.float32), "full"))
    m.graph.node.append(helper.make_node("Relu", ["full"], ["unused_full"], name="use_full"))
    assert graph_from_model(m).tensors["full"].kind is TensorKind.CONSTANT
    m2 = M.transformer_block()  # no param.* names: a float matrix initializer is a parameter
    assert graph_from_model(m2).tensors["wq"].kind is TensorKind.PARAMETER


MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def _manifest() -> dict:
    import json

    p = MODELS_DIR / "manifest.json"
    return json.loads(p.read_text()).get("models", {}) if p.exists() else {}


@pytest.mark.parametrize("name", sorted(k for k, v in _manifest().items() if "parameter_bytes" in v))
def test_corpus_parameter_and_state_bytes_match_the_manifest(name):
    entry = _manifest()[name]
    by_kind = load_graph(MODELS_DIR / entry.get("file", name)).graph.bytes_by_kind()
    assert by_kind.get("parameter", 0) == entry["parameter_bytes"]
    if "optimizer_state_bytes" in entry:
        assert by_kind.get("optimizer_state", 0) == entry["optimizer_state_bytes"]


def test_state_names_and_structural_kinds(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    idx = numpy_helper.from_array(np.array([0, 1], np.int64), "idx")
    nodes = [
        helper.make_node("Gather", ["w", "idx"], ["g"]),
        helper.make_node("Add", ["g", "state.m.w"], ["mid"]),
        helper.make_node("Relu", ["mid"], ["out"]),
        helper.make_node("Neg", ["mid"], ["side"]),
    ]
    m = model(nodes, [vi("state.m.w", [2, 4]), vi("step", [], TensorProto.INT64)], [vi("out", [2, 4])], [w, idx])
    g = graph_from_model(m)
    k = {n: t.kind for n, t in g.tensors.items()}
    assert k["w"] is TensorKind.PARAMETER and k["idx"] is TensorKind.CONSTANT
    assert k["state.m.w"] is TensorKind.OPTIMIZER_STATE and k["step"] is TensorKind.INPUT
    assert k["g"] is TensorKind.ACTIVATION and k["out"] is TensorKind.OUTPUT
    assert k["side"] is TensorKind.GRADIENT  # training graph (state.* name), not an ancestor of the loss


def test_inference_graph_is_all_activations():
    g = graph_from_model(M.resnet_block(), workspace=False)  # ONNX values only (no Conv scratch)
    produced = [n for n in g.tensors if n in g.producer and n not in g.output_set]
    assert produced and all(g.tensors[n].kind is TensorKind.ACTIVATION for n in produced)


ELEMS = [
    (TensorProto.FLOAT, 32), (TensorProto.DOUBLE, 64), (TensorProto.FLOAT16, 16), (TensorProto.BFLOAT16, 16),
    (TensorProto.FLOAT8E4M3FN, 8), (TensorProto.FLOAT8E4M3FNUZ, 8), (TensorProto.FLOAT8E5M2, 8),
    (TensorProto.FLOAT8E5M2FNUZ, 8), (TensorProto.INT4, 4), (TensorProto.UINT4, 4), (TensorProto.INT8, 8),
    (TensorProto.INT64, 64), (TensorProto.BOOL, 8), (TensorProto.COMPLEX128, 128),
]  # fmt: skip


@pytest.mark.parametrize("elem,bits", ELEMS)
def test_element_type_sizes_of_inputs_and_produced_tensors(elem, bits):
    shape = [3, 5]  # 15 elements: sub-byte types round 7.5 bytes up to 8
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    g = graph_from_model(model(nodes, [vi("x", shape, elem)], [vi("y", shape, elem)]))
    assert g.tensors["x"].size == g.tensors["y"].size == math.ceil(15 * bits / 8)
    if elem != TensorProto.COMPLEX128:  # Cast infers its output type from the attribute
        g2 = graph_from_model(model([helper.make_node("Cast", ["z"], ["w"], to=elem)], [vi("z", shape)], [vi("w", None, elem)]))
        assert g2.tensors["w"].size == math.ceil(15 * bits / 8)


def test_packed_int4_initializer_size():
    t = helper.make_tensor("q", TensorProto.INT4, [7], [1, 2, 3, 4, 5, 6, 7])
    m = model([helper.make_node("Cast", ["q"], ["f"], to=TensorProto.FLOAT)], [], [vi("f", [7])], [t])
    assert graph_from_model(m).tensors["q"].size == 4
    assert tensor_bytes([7], TensorProto.INT4) == 4 and tensor_bytes([], TensorProto.FLOAT) == 4


# --------------------------------------------------------------------- symbolic dims


def symbolic_model():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    w = numpy_helper.from_array(np.ones((4, 6), np.float32), "w")
    return model(nodes, [vi("x", ["batch", 4])], [vi("y", ["batch", 6])], [w])


def test_symbolic_dims_are_an_error_naming_the_fix(tmp_path):
    with pytest.raises(UnknownShapeError) as e:
        load_onnx(save(symbolic_model(), tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "'x'" in msg and "batch" in msg and "--dim batch=N" in msg
    assert "symbolic_shape_infer" in msg


def test_dims_pin_symbolic_dimensions(tmp_path):
    p = save(symbolic_model(), tmp_path)
    g, m = load_onnx(p, dims={"batch": 3})
    assert g.tensors["x"].size == 3 * 4 * 4 and g.tensors["h"].size == 3 * 6 * 4 and g.tensors["y"].size == 3 * 6 * 4
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # the model itself is unchanged
    assert load_graph(p, dims={"batch": 5}).graph.tensors["y"].size == 5 * 6 * 4


def test_unknown_dim_name_is_an_error(tmp_path):
    with pytest.raises(OllaInputError, match="no symbolic dimension.*batch"):
        load_onnx(save(symbolic_model(), tmp_path), dims={"btach": 3})


def test_data_propagation_sizes_a_reshape_through_shape_ops():
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one"], ["lead"]),
        helper.make_node("Concat", ["lead", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
    ]
    inits = [i64("zero", [0]), i64("one", [1]), i64("minus1", [-1])]
    g = graph_from_model(model(nodes, [vi("x", [2, 3, 4])], [vi("flat", None)], inits))
    assert g.tensors["flat"].size == 24 * 4


def test_shape_arithmetic_that_onnx_cannot_propagate_is_evaluated_exactly():
    """The TorchScript exporter's pattern: a Slice end computed by a Reshape of a constant."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["one_scalar", "shape1"], ["end"]),
        helper.make_node("Slice", ["s", "zero", "end"], ["lead"]),
        helper.make_node("Concat", ["lead", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    inits = [i64("zero", [0]), i64("one_scalar", 1), i64("shape1", [1]), i64("minus1", [-1])]
    m = model(nodes, [vi("x", [2, 3, 4])], [vi("y", None)], inits)
    plain = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    assert not any(v.name == "flat" and v.type.tensor_type.shape.dim for v in plain.graph.value_info)
    g = graph_from_model(m, views=False)  # sizes of the values, views not at 0 bytes
    assert g.tensors["flat"].size == g.tensors["y"].size == 24 * 4
    assert [n.op_type for n in g.nodes] == [n.op_type for n in m.graph.node]  # folding touched a private copy only


def _real_sizes(m: onnx.ModelProto) -> dict[str, int]:
    """Bytes of every non-Constant node output, as onnxruntime really produces them."""
    import onnxruntime as ort

    from olla_onnx.runtime.feeds import random_feeds

    names = [o for n in m.graph.node if n.op_type != "Constant" for o in n.output if o]
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    del probe.graph.output[:]
    for i, node in enumerate(probe.graph.node):
        node.name = f"n{i}"  # onnxruntime refuses repeated node names
    probe.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return {o: r.nbytes for o, r in zip(names, sess.run(None, random_feeds(m)))}


@pytest.mark.parametrize("build", [M.mlp_training, M.transformer_block, M.resnet_block, lambda: M.random_dag(30, 1)])
def test_sizes_equal_the_bytes_onnxruntime_produces(build):
    m = build()
    g = graph_from_model(m, views=False)  # the values' own sizes
    real = _real_sizes(m)
    assert real and {o: g.tensors[o].size for o in real} == real


# --------------------------------------------------------- control flow, other domains


def if_model():
    then_g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["t_out"])], "then", [], [vi("t_out", [4])])
    else_g = helper.make_graph([helper.make_node("Sub", ["a", "c"], ["e_out"])], "else", [], [vi("e_out", [4])])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="pre"),
        helper.make_node("Neg", ["x"], ["b"], name="other"),
        helper.make_node("Sigmoid", ["x"], ["c"], name="third"),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="cmp"),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"),
        helper.make_node("Mul", ["y", "y"], ["z"], name="post"),
    ]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    return model(nodes, [vi("x", [4])], [vi("z", [4])], [zero], opset=[helper.make_opsetid("", 17)])


def loop_model(acc_shape_known: bool = True):
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "w"], ["acc_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("acc_in", [4])],
        [vi("cond_out", [], TensorProto.BOOL), vi("acc_out", [4])],
    )
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    nodes = [
        helper.make_node("Relu", ["x"], ["w"], name="captured"),
        helper.make_node("Loop", ["trip", "", "x"], ["acc"], body=body, name="loop"),
        helper.make_node("Add", ["acc", "w"], ["y"], name="after"),
    ]
    # ONNX's Loop inference drops loop-carried shapes; the exporter (or the user) must state them
    known = [vi("acc", [4])] if acc_shape_known else []
    return model(nodes, [vi("x", [4])], [vi("y", [4])], [trip], known, opset=[helper.make_opsetid("", 17)])


def test_if_is_one_node_reading_its_captures():
    g = graph_from_model(if_model())
    node = g.nodes[g.index_of("branch")]
    assert node.op_type == "If" and set(node.inputs) == {"cond", "a", "b", "c"}
    assert g.tensors["y"].size == 16 and "t_out" not in g.tensors


def test_loop_reads_captured_outer_tensor_and_skips_empty_inputs():
    g = graph_from_model(loop_model())
    node = g.nodes[g.index_of("loop")]
    assert "" not in node.inputs and "w" in node.inputs and g.preds[g.index_of("loop")] == (g.index_of("captured"),)
    with pytest.raises(UnknownShapeError, match="'acc'"):
        graph_from_model(loop_model(acc_shape_known=False))


def test_other_domain_op_accepted_when_shape_known_else_error():
    nodes = [helper.make_node("FusedMatMul", ["x", "w"], ["y"], domain="com.microsoft", name="fm"),
             helper.make_node("Relu", ["y"], ["z"], name="r")]  # fmt: skip
    opset = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    ins = [vi("x", [2, 4]), vi("w", [4, 3])]
    g = graph_from_model(model(nodes, ins, [vi("z", None)], value_info=[vi("y", [2, 3])], opset=opset))
    assert g.nodes[0].op_type == "com.microsoft.FusedMatMul" and g.tensors["z"].size == 24
    with pytest.raises(UnknownShapeError, match="'y'"):
        graph_from_model(model(nodes, ins, [vi("z", None)], opset=opset))


def test_empty_and_duplicate_node_names_become_unique_deterministically():
    m = M.random_dag(40, seed=3)
    names = [n.name for n in graph_from_model(m).nodes]
    assert len(set(names)) == len(names) == 40
    assert names == [n.name for n in graph_from_model(m).nodes]
    for nm, node in zip(names, m.graph.node):
        if node.name and sum(x.name == node.name for x in m.graph.node) == 1:
            assert nm == node.name


def test_out_of_order_but_acyclic_file_loads():
    m = M.mlp_training()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    g = graph_from_model(m)
    assert g.num_nodes == len(nodes) and g.nodes[0].name == nodes[-1].name


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(0, 10**6))
def test_random_dags_load_with_every_tensor_sized(n, seed):
    m = M.random_dag(n, seed)
    g = graph_from_model(m)
    assert g.num_nodes == n and all(t.size == 64 for t in g.tensors.values())
    assert [nd.op_type for nd in g.nodes] == [nd.op_type for nd in m.graph.node]


# --------------------------------------------------------------------- external data


def external_model(tmp_path: Path) -> Path:
    w = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64), "param.w")
    m = model([helper.make_node("MatMul", ["x", "param.w"], ["y"])], [vi("x", [2, 64])], [vi("y", [2, 64])], [w])
    p = tmp_path / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    return p


def test_external_data_is_not_loaded_but_sized(tmp_path):
    g, m = load_onnx(external_model(tmp_path))
    assert g.tensors["param.w"].size == 64 * 64 * 4
    assert m.graph.initializer[0].data_location == TensorProto.EXTERNAL


def test_missing_external_data_file(tmp_path):
    p = external_model(tmp_path)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(OnnxFileError, match="external data file 'ext.onnx.data' of tensor 'param.w' is missing"):
        load_onnx(p)
    assert_cli_error(p, "is missing")


def test_truncated_external_data_file(tmp_path):
    p = external_model(tmp_path)
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(OnnxFileError, match="too short"):
        load_onnx(p)


# ------------------------------------------------------------------------- bad input


def test_not_an_onnx_file(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is a text file, not a model\n" * 20)
    with pytest.raises(OnnxFileError, match="not"):
        load_onnx(p)
    assert_cli_error(p, "notes.onnx")


def test_truncated_file(tmp_path):
    p = save(M.transformer_block(), tmp_path)
    data = p.read_bytes()
    for cut in (len(data) // 10, len(data) // 2, len(data) * 9 // 10, len(data) - 3, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(OnnxFileError) as e:
            load_onnx(p)
        assert "\n" not in str(e.value) and "truncated" in str(e.value), (cut, str(e.value))
    assert_cli_error(p, "truncated")


def test_missing_file(tmp_path):
    with pytest.raises(OnnxFileError, match="does not exist"):
        load_onnx(tmp_path / "nope.onnx")
    assert_cli_error(tmp_path / "nope.onnx", "does not exist")


def test_cycle_is_a_graph_error(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second")]
    p = save(model(nodes, [vi("x", [2])], [vi("b", [2])]), tmp_path)
    with pytest.raises(GraphError, match="cycle: .*first.*second|cycle: .*second.*first"):
        load_onnx(p)
    assert_cli_error(p, "cycle")


def test_unknown_shapes_via_cli(tmp_path):
    p = save(symbolic_model(), tmp_path)
    assert_cli_error(p, "--dim batch=N")
    proc = cli("inspect", str(p), "--dim", "batch=4")
    assert proc.returncode == 0, proc.stderr


def test_unsupported_element_type(tmp_path):
    nodes = [helper.make_node("Identity", ["s"], ["t"])]
    p = save(model(nodes, [vi("s", [2], TensorProto.STRING)], [vi("t", [2], TensorProto.STRING)]), tmp_path)
    with pytest.raises(UnsupportedTypeError, match="'s' has element type STRING"):
        load_onnx(p)
    assert_cli_error(p, "STRING")


def test_sequence_values_are_unsupported():
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["seq"]), helper.make_node("SequenceLength", ["seq"], ["n"])]
    m = model(nodes, [vi("x", [2])], [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    with pytest.raises(UnsupportedTypeError, match="'seq' is a sequence value"):
        graph_from_model(m)


def test_unknown_extension(tmp_path):
    p = tmp_path / "model.pb"
    p.write_bytes(b"x")
    with pytest.raises(OllaInputError, match="unknown model format"):
        load_graph(p)


def test_input_file_is_never_modified(tmp_path):
    p = save(symbolic_model(), tmp_path)
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    load_graph(p, dims={"batch": 2})
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before
