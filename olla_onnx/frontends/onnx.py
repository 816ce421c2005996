"""ONNX frontend: an ``.onnx`` file becomes a :class:`~olla_onnx.graph.Graph`.

What :func:`load_onnx` guarantees:

- The file is read with :func:`onnx.load` *without* loading external data
  (sizes come from shapes, not bytes), but every external-data file the model
  names is checked: it must exist beside the model and be long enough.
- Shapes come from ONNX's strict shape inference with data propagation (in
  C++). ``dims`` pins symbolic dimensions (``--dim batch=32``) on the graph
  inputs, outputs and value_info of a private copy before inference. A tensor
  whose size is still unknown afterwards is an :class:`UnknownShapeError` that
  lists the tensors and the symbolic dimensions and says how to fix it; the
  loader never guesses.
- Sizes: ``ceil(numel * bits / 8)`` with every ONNX element type's width
  (bfloat16 and float16 2 bytes, the float8 types 1 byte, int4/uint4/float4
  packed two per byte, int2/uint2 four per byte, float6 types 6 bits).
  Strings and non-tensor values (sequences, maps, optionals) have no size
  known ahead of running: :class:`UnsupportedTypeError`.
- Node ``i`` of the graph is node ``i`` of ``model.graph.node`` (file order),
  so an order of graph indices maps straight back onto the file. Node names
  are the file's names; an empty or repeated name is replaced by
  ``"<name or op_type>#<index>"`` (deterministic, made unique).
- Graph inputs and initializers become resident tensors (no producer).
  Constant nodes stay nodes (op type ``Constant``). Ops of another domain keep
  their op type prefixed by the domain (``com.microsoft.FusedMatMul``) and are
  accepted when their output shapes are known (inferred or in value_info).
- A value that no node reads (e.g. the values output of a ``MaxPool`` whose
  indices alone are used, as PyTorch's exporter writes for max-pool backward)
  is held by onnxruntime until the run ends when its own buffer reuse is off
  (as in the planned session, where each tensor is its own request): a value
  is released after its last reader, and it has none (seen with the recording
  allocator: ResNet-18's 98 MiB unread ``MaxPool`` output stays allocated to
  the end of the run). The IR lists such values among the graph's outputs, so
  the simulator keeps them to the end too (an upper bound when onnxruntime's
  reuse is on, which recycles the buffer).
- A control-flow node (If, Loop, Scan, any node with a graph attribute) stays
  one opaque node whose inputs are its own inputs plus every outer tensor its
  subgraphs (at any depth) read; its internal memory is not modelled.
- Workspace (on by default; ``workspace=False`` or ``optimize --no-workspace``
  turns it off): where onnxruntime's CPU kernel for a node requests scratch
  buffers while it runs (Conv's im2col buffer, ConvTranspose's column
  buffer, Where's two selections, Softmax/LogSoftmax's transposes; rules and
  their thread-count dependence in :mod:`olla_onnx.frontends.workspace`), the
  node gets one more output, ``<node name>::workspace``, of that many bytes
  and kind ``workspace``. Nothing reads it and it is not a graph output, so
  the simulator keeps it live exactly while its node runs (the "values no
  node reads live to the end" rule above is for ONNX values only). It is no
  ONNX value: the written model is the input's nodes reordered, nothing
  added; a plan lists it as an arena buffer like any tensor (the arena must
  hold it), so a plan made with the workspace on needs it on when loaded.

- Views (on by default; ``views=False`` turns them off): onnxruntime's
  allocation planner always places the output of Reshape, Flatten, Squeeze,
  Unsqueeze and Identity (:data:`olla_onnx.inplace.VIEW_OPS`) in its input's
  buffer, its own buffer reuse off or on (the kernels declare the alias;
  seen with the recording allocator: such a node requests nothing), unless
  the output is a graph output (then it is its own request, a copy). The
  buffer is released after the last reader of the input *and* of every view
  of it. So a view output is a 0-byte tensor, and every node reading a view
  also reads the view's root (the first non-view tensor down the chain)
  when that root is produced by a node: the root lives until the last reader
  of any of its views. The added inputs are data dependencies the graph
  already implies (the root's producer runs before the view), so no order
  changes. Without this rule the model counted a saved attention matrix
  twice (softmax output and its reshaped view, both read by the backward
  pass): +20% on the full-size BERT (``benchmarks/results/view_aliasing.md``).

Tensor kinds, first rule that applies wins:

1. The team corpus's names: resident ``param.*`` -> parameter,
   ``state.*`` -> optimizer_state, ``batch.*`` and ``step`` -> input.
2. Graph outputs -> output; outputs of Constant nodes -> constant.
3. A name containing ``grad`` (any case) -> gradient.
4. Other resident tensors: a graph input with a tensor named after it plus
   ``_grad`` (onnxruntime-training's convention) -> parameter; other graph
   inputs -> input. Initializers -> constant
   when the graph names its parameters ``param.*`` (the corpus); otherwise an
   initializer of a floating type with more than one element -> parameter,
   others -> constant.
5. Produced tensors that the loss depends on (the ``loss`` output, else the
   first graph output) -> activation (the forward pass).
6. Other produced tensors -> gradient when the graph looks like a training
   graph (some ``param.``/``state.``/``param_out.``/``state_out.`` name or a
   ``grad`` name), activation otherwise. Backward and optimizer-update
   temporaries are both counted as gradient.

Cost: O(nodes + edges) Python work plus ONNX's C++ shape inference.
"""

from __future__ import annotations

import math
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import onnx
from onnx import GraphProto, ModelProto, TensorProto

from olla_onnx.errors import OllaInputError
from olla_onnx.graph import Graph, Node, Tensor, TensorKind


class OnnxFileError(OllaInputError):
    """The file is missing, not ONNX, truncated, or its external data is missing."""


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

_FLOAT_TYPES = {
    TensorProto.DataType.Value(k)
    for k in TensorProto.DataType.keys()
    if k.startswith(("FLOAT", "BFLOAT")) or k == "DOUBLE"
}
_DEFAULT_DOMAINS = ("", "ai.onnx")


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


# ----------------------------------------------------------------------------- reading


def read_onnx(path: Path) -> ModelProto:
    """Parse ``path`` without its external data; every failure is a one-line :class:`OnnxFileError`."""
    path = Path(path)
    if not path.exists():
        raise OnnxFileError(f"{path} does not exist")
    if path.is_dir():
        raise OnnxFileError(f"{path} is a directory, not an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OnnxFileError(
            f"{path} is not a readable ONNX model (truncated or not ONNX: {reason}); re-export or re-download it"
        ) from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise OnnxFileError(f"{path} is not an ONNX model (no IR version or no graph); is it the right file?")
    if len(model.opset_import) == 0:
        raise OnnxFileError(f"{path} declares no opset (truncated or not a complete ONNX model); re-export it")
    if len(model.graph.node) == 0:
        raise OnnxFileError(f"{path} has a graph with no nodes; nothing to order")
    return model


def _all_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every TensorProto stored in ``graph``: initializers and attribute tensors, subgraphs included."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def check_external_data(model: ModelProto, base_dir: Path) -> list[Path]:
    """Check every external-data file exists under ``base_dir`` and holds its bytes; return the files."""
    files: dict[Path, None] = {}
    for t in _all_tensors(model.graph):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if not loc:
            raise OnnxFileError(f"tensor {t.name!r} is marked as external data but names no file")
        f = base_dir / loc
        if not f.is_file():
            raise OnnxFileError(
                f"external data file {loc!r} of tensor {t.name!r} is missing (looked for {f}); "
                f"put it beside the model"
            )
        end = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
        if end > f.stat().st_size:
            raise OnnxFileError(
                f"external data file {loc!r} is too short for tensor {t.name!r} "
                f"(needs {end} bytes, has {f.stat().st_size}); the file is truncated or stale"
            )
        files[f] = None
    return list(files)


# ------------------------------------------------------------------------ structure


def _free_names(graph: GraphProto) -> set[str]:
    """Names a (sub)graph reads that it does not define itself: the outer tensors it captures."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {sp.values.name for sp in graph.sparse_initializer}
    used: set[str] = {v.name for v in graph.output}
    for node in graph.node:
        used.update(node.input)
        defined.update(node.output)
        for attr in node.attribute:
            if attr.HasField("g"):
                used |= _free_names(attr.g)
            for g in attr.graphs:
                used |= _free_names(g)
    used.discard("")
    return used - defined


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.HasField("g") or len(a.graphs) for a in node.attribute)


def unique_node_names(model: ModelProto) -> list[str]:
    """Node names for the IR: the file's, with empty or repeated ones made unique (``name#i``)."""
    names = [n.name for n in model.graph.node]
    counts: dict[str, int] = {}
    for nm in names:
        counts[nm] = counts.get(nm, 0) + 1
    taken = {nm for nm, c in counts.items() if c == 1 and nm}
    out = []
    for i, (node, nm) in enumerate(zip(model.graph.node, names)):
        if nm and counts[nm] == 1:
            out.append(nm)
            continue
        base = f"{nm or node.op_type}#{i}"
        cand, k = base, 1
        while cand in taken:
            cand, k = f"{base}.{k}", k + 1
        taken.add(cand)
        out.append(cand)
    return out


def _op_type(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


def _node_inputs(model: ModelProto) -> list[tuple[str, ...]]:
    """Per node, the tensors it reads: its inputs (optional ones dropped) plus subgraph captures."""
    out = []
    for node in model.graph.node:
        ins = [x for x in node.input if x]
        if _has_subgraph(node):
            captured: set[str] = set()
            for a in node.attribute:
                if a.HasField("g"):
                    captured |= _free_names(a.g)
                for g in a.graphs:
                    captured |= _free_names(g)
            ins.extend(sorted(captured - set(ins)))
        out.append(tuple(ins))
    return out


def _resident_names(model: ModelProto) -> list[str]:
    g = model.graph
    names = dict.fromkeys(chain((v.name for v in g.input), (t.name for t in g.initializer),
                                (sp.values.name for sp in g.sparse_initializer)))  # fmt: skip
    names.pop("", None)
    return list(names)


def _is_topological(model: ModelProto, inputs: list[tuple[str, ...]], resident: Iterable[str]) -> bool:
    defined = set(resident)
    for node, ins in zip(model.graph.node, inputs):
        for x in ins:
            if x not in defined:
                return False
        defined.update(o for o in node.output if o)
    return True


def _skeleton(model: ModelProto, names: list[str], inputs: list[tuple[str, ...]], resident: list[str]) -> Graph:
    """The graph with zero sizes: validates structure (cycles, dangling inputs, duplicates) by name."""
    outs = [tuple(o for o in n.output if o) for n in model.graph.node]
    tensors = dict.fromkeys(chain(resident, chain.from_iterable(outs)))
    nodes = [Node(nm, _op_type(n), ins, o) for nm, n, ins, o in zip(names, model.graph.node, inputs, outs)]
    graph_outputs = [v.name for v in model.graph.output if v.name in tensors]
    return Graph.build(nodes, [Tensor(t, 0) for t in tensors], graph_outputs, name=model.graph.name or "graph")


# ---------------------------------------------------------------------------- shapes


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


def _static_shape(tp: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in tp.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def _all_sized(work: ModelProto, types: Mapping[str, onnx.TypeProto]) -> bool:
    return all(_static_shape(types.get(o)) is not None for n in work.graph.node for o in n.output if o)


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
        if node.domain not in _DEFAULT_DOMAINS or len(node.output) != 1 or not node.output[0]:
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
            shape = _static_shape(types.get(node.input[0]))
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


def _initializer_info(model: ModelProto) -> dict[str, tuple[int, tuple[int, ...], int]]:
    """Initializer name -> (elem_type, dims, bytes) straight from the TensorProtos."""
    out = {}
    for t in model.graph.initializer:
        out[t.name] = (t.data_type, tuple(t.dims), -1)
    for sp in model.graph.sparse_initializer:
        v, ix = sp.values, sp.indices
        nbytes = tensor_bytes(v.dims, v.data_type) + tensor_bytes(ix.dims, ix.data_type)
        out[v.name] = (v.data_type, tuple(sp.dims), nbytes)
    return out


def _sizes(
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


# ----------------------------------------------------------------------------- kinds

_TRAINING_PREFIXES = ("param.", "state.", "param_out.", "state_out.")


def _kinds(
    model: ModelProto,
    graph_nodes: list[Node],
    resident: list[str],
    produced_by: Mapping[str, int],
    outputs: list[str],
    elem: Mapping[str, int],
    sizes: Mapping[str, int],
) -> dict[str, TensorKind]:
    """Tensor kinds by the rules in the module docstring. O(nodes + edges)."""
    g = model.graph
    inits = {t.name for t in g.initializer} | {sp.values.name for sp in g.sparse_initializer}
    out_set = set(outputs)
    every = list(resident) + list(produced_by)
    training = any(n.startswith(_TRAINING_PREFIXES) or "grad" in n.lower() for n in chain(every, outputs))
    named_params = any(n.startswith("param.") for n in resident)
    has_grad = {n[: -len("_grad")] for n in every if n.endswith("_grad")}

    forward: set[int] = set()
    loss = "loss" if "loss" in produced_by else next((o for o in outputs if o in produced_by), None)
    if loss is not None:
        stack = [produced_by[loss]]
        while stack:
            v = stack.pop()
            if v in forward:
                continue
            forward.add(v)
            stack.extend(produced_by[x] for x in graph_nodes[v].inputs if x in produced_by)

    kinds: dict[str, TensorKind] = {}
    for name in resident:
        if name.startswith("param."):
            k = TensorKind.PARAMETER
        elif name.startswith("state."):
            k = TensorKind.OPTIMIZER_STATE
        elif name.startswith("batch.") or name == "step":
            k = TensorKind.INPUT
        elif name in out_set:
            k = TensorKind.OUTPUT
        elif "grad" in name.lower():
            k = TensorKind.GRADIENT
        elif name in inits:
            big_float = elem.get(name) in _FLOAT_TYPES and sizes[name] * 8 > ELEMENT_BITS.get(elem.get(name, 0), 8)
            k = TensorKind.PARAMETER if big_float and not named_params else TensorKind.CONSTANT
        elif name in has_grad:
            k = TensorKind.PARAMETER
        else:
            k = TensorKind.INPUT
        kinds[name] = k
    for name, v in produced_by.items():
        if name in out_set:
            k = TensorKind.OUTPUT
        elif graph_nodes[v].op_type == "Constant":
            k = TensorKind.CONSTANT
        elif "grad" in name.lower():
            k = TensorKind.GRADIENT
        elif v in forward or not training:
            k = TensorKind.ACTIVATION
        else:
            k = TensorKind.GRADIENT
        kinds[name] = k
    return kinds


# ------------------------------------------------------------------------------ load


def graph_from_model(
    model: ModelProto,
    dims: Mapping[str, int] | None = None,
    label: str = "model",
    workspace: bool = True,
    threads: int | None = None,
    views: bool = True,
) -> Graph:
    """Build the IR from a parsed model (external data need not be loaded). See the module docstring.

    ``workspace`` adds onnxruntime's CPU kernel scratch as ``<node>::workspace``
    pseudo-outputs (:mod:`olla_onnx.frontends.workspace`), for an intra-op
    thread count of ``threads`` (None: onnxruntime's default on this machine).
    ``views`` models onnxruntime's views (:func:`alias_views`).
    """
    names = unique_node_names(model)
    inputs = _node_inputs(model)
    resident = _resident_names(model)
    if not _is_topological(model, inputs, resident):
        sk = _skeleton(model, names, inputs, resident)  # raises a GraphError for cycles and dangling inputs
        # acyclic but listed out of order: infer shapes on a topologically sorted copy
        sorted_model = ModelProto()
        sorted_model.CopyFrom(model)
        del sorted_model.graph.node[:]
        sorted_model.graph.node.extend(model.graph.node[i] for i in sk.topological_order())
        types = infer_types(sorted_model, dims, label)
    else:
        types = infer_types(model, dims, label)

    outs = [tuple(o for o in n.output if o) for n in model.graph.node]
    produced = list(chain.from_iterable(outs))
    all_names = list(dict.fromkeys(chain(resident, produced)))
    sizes, elem = _sizes(all_names, types, _initializer_info(model), label)
    nodes = [Node(nm, _op_type(n), ins, o) for nm, n, ins, o in zip(names, model.graph.node, inputs, outs)]
    produced_by = {t: i for i, o in enumerate(outs) for t in o}
    graph_outputs = [v.name for v in model.graph.output if v.name]
    kinds = _kinds(model, nodes, resident, produced_by, graph_outputs, elem, sizes)
    tensors = [Tensor(t, sizes[t], kinds[t]) for t in all_names]
    read = set(chain.from_iterable(inputs))
    held = [t for t in produced if t not in read]  # onnxruntime frees these only when the run ends
    if workspace:  # after `held`: a workspace is read by no node yet dies with its node
        nodes, scratch = _with_workspaces(model, nodes, types, sizes, elem, threads)
        tensors.extend(scratch)
    if views:
        nodes, tensors = alias_views(nodes, tensors, graph_outputs)
    return Graph.build(nodes, tensors, graph_outputs + held, name=model.graph.name or label)


def alias_views(nodes: list[Node], tensors: list[Tensor], graph_outputs: Iterable[str]) -> tuple[list[Node], list[Tensor]]:
    """onnxruntime's views (module docstring): each view output that is not a graph output at 0 bytes,
    and the view's root added to the inputs of every node that reads the view (when a node produces it).

    Only the default domain's :data:`~olla_onnx.inplace.VIEW_OPS` are views. O(n + E + length of view chains).
    """
    from olla_onnx.inplace import VIEW_OPS

    keep = set(graph_outputs)
    view_of = {
        n.outputs[0]: n.inputs[0]
        for n in nodes
        if n.op_type in VIEW_OPS and n.inputs and n.inputs[0] and n.outputs and n.outputs[0] not in keep
    }
    if not view_of:
        return nodes, tensors
    produced = {t for n in nodes for t in n.outputs}
    root: dict[str, str] = {}
    for v in view_of:
        chain_, t = [], v
        while t in view_of and t not in root:
            chain_.append(t)
            t = view_of[t]
        r = root.get(t, t)
        for c in chain_:
            root[c] = r
    out = []
    for n in nodes:
        extra = [root[x] for x in n.inputs if x in root and root[x] in produced]
        extra = [r for r in dict.fromkeys(extra) if r not in n.inputs]
        out.append(Node(n.name, n.op_type, n.inputs + tuple(extra), n.outputs) if extra else n)
    sized = [Tensor(t.name, 0, t.kind) if t.name in view_of else t for t in tensors]
    return out, sized


def _with_workspaces(
    model: ModelProto,
    nodes: list[Node],
    types: Mapping[str, onnx.TypeProto],
    sizes: Mapping[str, int],
    elem: Mapping[str, int],
    threads: int | None,
) -> tuple[list[Node], list[Tensor]]:
    """The nodes with a ``<name>::workspace`` output where onnxruntime's CPU kernel takes scratch, and those tensors."""
    from olla_onnx.frontends.workspace import model_workspaces, workspace_name

    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for name, tp in types.items():
        shape = _static_shape(tp)
        if shape is not None:
            shapes[name] = shape
    ws = model_workspaces(model, shapes, elem, sizes, threads)
    out = list(nodes)
    scratch = []
    for i, b in ws.items():
        n = out[i]
        name = workspace_name(n.name)
        out[i] = Node(n.name, n.op_type, n.inputs, n.outputs + (name,))
        scratch.append(Tensor(name, b, TensorKind.WORKSPACE))
    return out, scratch


def load_onnx(
    path: Path | str,
    dims: Mapping[str, int] | None = None,
    workspace: bool = True,
    threads: int | None = None,
    views: bool = True,
) -> tuple[Graph, ModelProto]:
    """Read an ONNX file into the IR; also return the parsed model (external data not loaded).

    ``dims`` maps symbolic dimension names to values (``{"batch": 32}``);
    ``workspace``/``threads``/``views``: see :func:`graph_from_model`.
    Raises :class:`OnnxFileError`, :class:`UnknownShapeError`,
    :class:`UnsupportedTypeError` or :class:`~olla_onnx.errors.GraphError`
    (all :class:`~olla_onnx.errors.OllaInputError`) with a one-line message.
    The file is only read.
    """
    path = Path(path)
    model = read_onnx(path)
    check_external_data(model, path.parent)
    graph = graph_from_model(model, dims, label=path.name, workspace=workspace, threads=threads, views=views)
    return graph, model
