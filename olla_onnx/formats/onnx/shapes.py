"""Shapes and sizes of ONNX tensors: strict shape inference, exact constant folding of shape arithmetic, bytes.

Sizes: ``ceil(numel * bits / 8)`` with every ONNX element type's width
  (bfloat16 and float16 2 bytes, the float8 types 1 byte, int4/uint4/float4
  packed two per byte, int2/uint2 four per byte, float6 types 6 bits).
  Strings and non-tensor values (sequences, maps, optionals) have no size
  known ahead of running: :class:`UnsupportedTypeError`.

Shapes come from ONNX's strict shape inference with data propagation (in C++); ``dims`` pins symbolic
dimensions (``--dim batch=32``) on a private copy first. A tensor whose size is still unknown is an
:class:`UnknownShapeError` that names the tensors and the symbolic dimensions and says how to fix it: never a guess.

Cost: ONNX's C++ shape inference, plus a few rounds of folding when shape arithmetic is left open.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Mapping

import onnx
from onnx import GraphProto, ModelProto, TensorProto

from olla_onnx.errors import OllaInputError


class UnknownShapeError(OllaInputError):
    """Some tensor's size cannot be known from the model (and the given dims)."""


class UnsupportedTypeError(OllaInputError):
    """A tensor has an element type or a value type whose size is not known ahead of running."""

def _bits_table() -> dict[int, int]:
    widths = {
        "FLOAT": 32, "UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "INT32": 32, "INT64": 64,
        "BOOL": 8, "FLOAT16": 16, "DOUBLE": 64, "UINT32": 32, "UINT64": 64, "COMPLEX64": 64,
        "COMPLEX128": 128, "BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8,
        "FLOAT8E5M2FNUZ": 8, "UINT4": 4, "INT4": 4, "FLOAT4E2M1": 4, "FLOAT8E8M0": 8,
        "UINT2": 2, "INT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6,
    }  # fmt: skip
    names = TensorProto.DataType.keys()
    return {TensorProto.DataType.Value(k): b for k, b in widths.items() if k in names}


ELEMENT_BITS: dict[int, int] = _bits_table()
"""Bits per element of every sized ONNX element type (by ``TensorProto.DataType`` value)."""

FLOAT_TYPES = {
    TensorProto.DataType.Value(k)
    for k in TensorProto.DataType.keys()
    if k.startswith(("FLOAT", "BFLOAT")) or k == "DOUBLE"
}
DEFAULT_DOMAINS = ("", "ai.onnx")


def element_type_name(elem_type: int) -> str:
    """The ONNX name of an element type value (``16`` -> ``'BFLOAT16'``)."""
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"element type {elem_type}"


def tensor_bytes(shape: Iterable[int], elem_type: int) -> int:
    """Bytes of a dense tensor: ``ceil(numel * bits / 8)``; sub-byte types are packed."""
    bits = ELEMENT_BITS.get(elem_type)
    if bits is None:
        raise UnsupportedTypeError(f"element type {element_type_name(elem_type)} has no fixed size")
    numel = math.prod(int(d) for d in shape)
    return (numel * bits + 7) // 8



def _shape_entries(g: GraphProto) -> Iterator[onnx.ValueInfoProto]:
    yield from g.input
    yield from g.output
    yield from g.value_info


def symbolic_dims(model: ModelProto) -> list[str]:
    """Names of the symbolic dimensions declared on the model's inputs, outputs and value_info."""
    seen: dict[str, None] = {}
    for vi in _shape_entries(model.graph):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param:
                    seen[d.dim_param] = None
    return list(seen)


def _pin_dims(model: ModelProto, dims: Mapping[str, int]) -> None:
    declared = set(symbolic_dims(model))
    unknown = [k for k in dims if k not in declared]
    if unknown:
        have = ", ".join(sorted(declared)) or "none"
        raise OllaInputError(
            f"--dim {unknown[0]}: the model has no symbolic dimension of that name (its symbolic dimensions: {have})"
        )
    for vi in _shape_entries(model.graph):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in dims:
                    d.dim_value = int(dims[d.dim_param])


def _run_inference(work: ModelProto, label: str) -> dict[str, onnx.TypeProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(work, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # InferenceError, ValidationError, RuntimeError from C++
        msg = " ".join(str(exc).split())
        raise OllaInputError(f"ONNX shape inference failed on {label}: {msg[:400]}") from None
    return {vi.name: vi.type for vi in _shape_entries(inferred.graph)}


def static_shape(tp: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in tp.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def _all_sized(work: ModelProto, types: Mapping[str, onnx.TypeProto]) -> bool:
    return all(static_shape(types.get(o)) is not None for n in work.graph.node for o in n.output if o)


# ops evaluated on constant inputs to finish shape computations that ONNX's data propagation leaves open
_FOLDABLE = frozenset(
    "Shape Size Gather Slice Concat Unsqueeze Squeeze Reshape Cast Add Sub Mul Div Neg Equal Less Greater Where "
    "Expand ReduceProd Identity Range Min Max Floor Ceil Sqrt Abs Mod ConstantOfShape Not And Or Transpose".split()
)
_FOLD_LIMIT = 4096  # elements: shape arithmetic is tiny; anything bigger is data, not shape


def _fold_constants(work: ModelProto, types: Mapping[str, onnx.TypeProto]) -> int:
    """Replace nodes computable from constants (shape arithmetic) by Constant nodes, in place; return how many.

    Constants are: initializers that are not graph inputs (so cannot be overridden) with inline data, Constant
    nodes, and the Shape/Size of tensors whose static shape is known. Only default-domain ops of
    :data:`_FOLDABLE` on small inputs are evaluated (with onnx's reference evaluator): this is exact
    evaluation, never a guess.
    """
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = work.graph
    overridable = {v.name for v in g.input}
    known: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if t.name not in overridable and t.data_location != TensorProto.EXTERNAL and math.prod(t.dims) <= _FOLD_LIMIT:
            try:
                known[t.name] = numpy_helper.to_array(t)
            except Exception:
                pass
    opsets = {o.domain or "": o.version for o in work.opset_import}
    folded = 0
    for i, node in enumerate(g.node):
        if node.domain not in DEFAULT_DOMAINS or len(node.output) != 1 or not node.output[0]:
            continue
        out = node.output[0]
        value = None
        if node.op_type == "Constant":
            try:
                value = onnx.numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].HasField("t") else None
            except Exception:
                value = None
            if value is not None and value.size <= _FOLD_LIMIT:
                known[out] = value
            continue
        if node.op_type in ("Shape", "Size") and node.input and node.input[0]:
            shape = static_shape(types.get(node.input[0]))
            if shape is None:
                continue
            if node.op_type == "Size":
                value = np.array(math.prod(shape), dtype=np.int64)
            else:
                attrs = {a.name: a.i for a in node.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", len(shape))
                value = np.array(shape[slice(start, end)], dtype=np.int64)
        elif node.op_type in _FOLDABLE and all((x in known) for x in node.input if x):
            try:
                feeds = {x: known[x] for x in node.input if x}
                value = np.asarray(ReferenceEvaluator(node, opsets=opsets).run(None, feeds)[0])
            except Exception:
                continue
        if value is None or value.size > _FOLD_LIMIT:
            continue
        known[out] = value
        const = helper.make_node("Constant", [], [out], value=numpy_helper.from_array(value), name=node.name)
        g.node[i].CopyFrom(const)
        folded += 1
    return folded


def infer_types(model: ModelProto, dims: Mapping[str, int] | None = None, label: str = "model") -> dict[str, onnx.TypeProto]:
    """Strict ONNX shape inference (data propagation on) of a copy with ``dims`` pinned.

    When some produced tensor is left without a static shape, shape arithmetic
    on constants (e.g. Shape -> Slice -> Reshape -> Concat, as the TorchScript
    exporter writes it) is evaluated exactly on the copy and inference re-run,
    a few rounds at most. Returns name -> TypeProto for graph inputs, outputs
    and inferred values. The caller's model is not modified.
    """
    work = ModelProto()
    work.CopyFrom(model)
    if dims:
        _pin_dims(work, dims)
    types = _run_inference(work, label)
    for _ in range(8):
        if _all_sized(work, types) or _fold_constants(work, types) == 0:
            break
        types = _run_inference(work, label)
    return types


def initializer_info(model: ModelProto) -> dict[str, tuple[int, tuple[int, ...], int]]:
    """Initializer name -> (elem_type, dims, bytes) straight from the TensorProtos."""
    out = {}
    for t in model.graph.initializer:
        out[t.name] = (t.data_type, tuple(t.dims), -1)
    for sp in model.graph.sparse_initializer:
        v, ix = sp.values, sp.indices
        nbytes = tensor_bytes(v.dims, v.data_type) + tensor_bytes(ix.dims, ix.data_type)
        out[v.name] = (v.data_type, tuple(sp.dims), nbytes)
    return out


def tensor_sizes(
    tensor_names: Iterable[str],
    types: Mapping[str, onnx.TypeProto],
    inits: Mapping[str, tuple[int, tuple[int, ...], int]],
    label: str,
) -> tuple[dict[str, int], dict[str, int]]:
    """Size in bytes and element type of every tensor, or a clear error naming those that cannot be sized."""
    sizes: dict[str, int] = {}
    elem: dict[str, int] = {}
    unknown: list[str] = []
    symbols: dict[str, None] = {}
    for name in tensor_names:
        if name in inits:
            et, shape, nbytes = inits[name]
            if et not in ELEMENT_BITS:
                raise UnsupportedTypeError(
                    f"initializer {name!r} has element type {element_type_name(et)}, whose size olla-onnx cannot model"
                )
            sizes[name] = nbytes if nbytes >= 0 else tensor_bytes(shape, et)
            elem[name] = et
            continue
        tp = types.get(name)
        if tp is None or tp.WhichOneof("value") is None:
            unknown.append(name)
            continue
        kind = tp.WhichOneof("value")
        if kind != "tensor_type":
            raise UnsupportedTypeError(
                f"tensor {name!r} is a {kind.replace('_type', '')} value, whose size is not known before running; "
                f"only dense tensors are supported"
            )
        tt = tp.tensor_type
        if tt.elem_type not in ELEMENT_BITS:
            raise UnsupportedTypeError(
                f"tensor {name!r} has element type {element_type_name(tt.elem_type)}, whose size is not known "
                f"before running; olla-onnx supports numeric and boolean tensors"
            )
        if not tt.HasField("shape"):
            unknown.append(name)
            continue
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                shape.append(d.dim_value)
            else:
                if d.HasField("dim_param") and d.dim_param and not d.dim_param.startswith("unk__"):
                    symbols[d.dim_param] = None
                shape = None
                break
        if shape is None:
            unknown.append(name)
            continue
        sizes[name] = tensor_bytes(shape, tt.elem_type)
        elem[name] = tt.elem_type
    if unknown:
        listed = ", ".join(repr(n) for n in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        if symbols:
            syms = ", ".join(symbols)
            hint = (
                f"they depend on symbolic dimension(s) {syms}: pin them with "
                + " ".join(f"--dim {s}=N" for s in list(symbols)[:3])
                + " (Python: dims={...})"
            )
        else:
            hint = "ONNX shape inference could not determine them: pin symbolic input dimensions with --dim NAME=N"
        raise UnknownShapeError(
            f"cannot size {len(unknown)} tensor(s) of {label} ({listed}); {hint}, or run onnxruntime's symbolic "
            f"shape inference first (python -m onnxruntime.tools.symbolic_shape_infer --input IN --output OUT)"
        )
    return sizes, elem
