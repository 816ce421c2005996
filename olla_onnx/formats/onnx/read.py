"""ONNX frontend: an ``.onnx`` file becomes a :class:`~olla_onnx.ir.graph.Graph`.

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
- Sizes and shapes: :mod:`olla_onnx.formats.onnx.shapes`.
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
  their thread-count dependence in :mod:`olla_onnx.ort_facts.workspace`), the
  node gets one more output, ``<node name>::workspace``, of that many bytes
  and kind ``workspace``. Nothing reads it and it is not a graph output, so
  the simulator keeps it live exactly while its node runs (the "values no
  node reads live to the end" rule above is for ONNX values only). It is no
  ONNX value: the written model is the input's nodes reordered, nothing
  added; a plan lists it as an arena buffer like any tensor (the arena must
  hold it), so a plan made with the workspace on needs it on when loaded.

Tensor kinds: :mod:`olla_onnx.formats.onnx.kinds`. Views: :mod:`olla_onnx.passes.views`.

Cost: O(nodes + edges) Python work plus ONNX's C++ shape inference.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import onnx
from onnx import GraphProto, ModelProto, TensorProto

from olla_onnx.errors import OllaInputError
from olla_onnx.formats.onnx.kinds import tensor_kinds
from olla_onnx.formats.onnx.shapes import DEFAULT_DOMAINS, infer_types, initializer_info, static_shape, tensor_sizes
from olla_onnx.ir.graph import Graph, Node, Tensor, TensorKind
from olla_onnx.passes.views import alias_views


class OnnxFileError(OllaInputError):
    """The file is missing, not ONNX, truncated, or its external data is missing."""


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


def read_onnx_with_data(path: Path) -> ModelProto:
    """Parse ``path`` with its external data loaded (to run it); any failure is a one-line :class:`OnnxFileError`."""
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise OnnxFileError(f"{path} is not a readable ONNX model: {exc}") from None


def stored_tensors(graph: GraphProto) -> Iterator[TensorProto]:
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
                yield from stored_tensors(attr.g)
            for g in attr.graphs:
                yield from stored_tensors(g)


def check_external_data(model: ModelProto, base_dir: Path) -> list[Path]:
    """Check every external-data file exists under ``base_dir`` and holds its bytes; return the files."""
    files: dict[Path, None] = {}
    for t in stored_tensors(model.graph):
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
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


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
    pseudo-outputs (:mod:`olla_onnx.ort_facts.workspace`), for an intra-op
    thread count of ``threads`` (None: onnxruntime's default on this machine).
    ``views`` models onnxruntime's views (:func:`alias_views`).
    """
    names = unique_node_names(model)
    inputs = _node_inputs(model)
    resident = _resident_names(model)
    if not _is_topological(model, inputs, resident):
        sk = _skeleton(model, names, inputs, resident)  # raises a GraphError for cycles and dangling inputs
        # acyclic but listed out of order: infer shapes on a topologically sorted copy
        from olla_onnx.formats.onnx.write import reordered_model  # (write imports this module)

        types = infer_types(reordered_model(model, sk.topological_order()), dims, label)
    else:
        types = infer_types(model, dims, label)

    outs = [tuple(o for o in n.output if o) for n in model.graph.node]
    produced = list(chain.from_iterable(outs))
    all_names = list(dict.fromkeys(chain(resident, produced)))
    sizes, elem = tensor_sizes(all_names, types, initializer_info(model), label)
    nodes = [Node(nm, _op_type(n), ins, o) for nm, n, ins, o in zip(names, model.graph.node, inputs, outs)]
    produced_by = {t: i for i, o in enumerate(outs) for t in o}
    graph_outputs = [v.name for v in model.graph.output if v.name]
    kinds = tensor_kinds(model, nodes, resident, produced_by, graph_outputs, elem, sizes)
    tensors = [Tensor(t, sizes[t], kinds[t]) for t in all_names]
    read = set(chain.from_iterable(inputs))
    held = [t for t in produced if t not in read]  # onnxruntime frees these only when the run ends
    if workspace:  # after `held`: a workspace is read by no node yet dies with its node
        nodes, scratch = _with_workspaces(model, nodes, types, sizes, elem, threads)
        tensors.extend(scratch)
    if views:
        nodes, tensors = alias_views(nodes, tensors, graph_outputs)
    return Graph.build(nodes, tensors, graph_outputs + held, name=model.graph.name or label)

def _with_workspaces(
    model: ModelProto,
    nodes: list[Node],
    types: Mapping[str, onnx.TypeProto],
    sizes: Mapping[str, int],
    elem: Mapping[str, int],
    threads: int | None,
) -> tuple[list[Node], list[Tensor]]:
    """The nodes with a ``<name>::workspace`` output where onnxruntime's CPU kernel takes scratch, and those tensors."""
    from olla_onnx.ort_facts.workspace import model_workspaces, workspace_name

    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for name, tp in types.items():
        shape = static_shape(tp)
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
