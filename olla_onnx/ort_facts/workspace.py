"""Scratch memory ("workspace") onnxruntime's CPU kernels request while a node runs.

Some of onnxruntime's CPU kernels ask its allocator for temporary buffers
besides their outputs and free them before the node ends. The memory model
knows only tensors, so :func:`node_workspace_bytes` computes these requests
from the shapes the ONNX frontend infers; the frontend then gives the node one
extra output of that size that nothing reads and that is not a graph output
(named ``<node name>::workspace``, kind ``workspace``), which the simulator
keeps live exactly while the node runs.

The rules, for onnxruntime 1.32's CPU execution provider, as seen through its
allocator (olla-onnx's recording allocator, each node run alone: every
branch in ``tests/test_workspace.py``, every node of the corpus's tiny
models in ``benchmarks/prediction_cpu.py --per-node``) and read from its
public source (MLAS ``convolve.cpp``, ``conv_transpose.cc``,
``where_op.cc``, ``softmax.cc``):

- ``Conv`` (float32, 1 to 3 spatial dimensions; MLAS). With ``K`` = input
  channels per group x kernel size, ``S`` = output pixels, ``F`` = output
  channels per group, ``B`` the batch, ``G`` the groups, ``T`` the intra-op
  degree of parallelism (the session's thread count):

  * no scratch when MLAS multiplies the input directly: kernel size 1 with
    stride 1 and no padding, or one input channel per group, stride 1, no
    padding, no dilation and a kernel spanning the whole input width (or the
    whole height with width 1);
  * ``S * K`` floats when ``F > S`` (the whole im2col matrix);
  * else, when ``B * G > 1``: ``min(T, B * G) * 16384`` floats (MLAS runs
    one image and group per thread, each expanding 128 x 128 panels);
  * else ``t * 16384`` floats, ``t`` the thread count MLAS derives from
    ``F * S * K / 65536 + 1``, at most 16 and ``T``, lowered while its
    16-aligned slices of ``S`` would leave a thread idle.

  (Newer MLAS sources size the ``B * G > 1`` case as one whole im2col
  matrix per thread; onnxruntime 1.32 measurably does not.)

  More than 3 spatial dimensions: the whole im2col matrix, ``K * S`` floats.
- ``ConvTranspose`` (float32): the column matrix, ``F * kernel size * input
  pixels`` floats, ``F`` = output channels per group.
- ``Where``: the two selections ``broadcast(condition, X)`` and
  ``broadcast(condition, Y)``, each in the output's element type.
- ``Softmax``, ``LogSoftmax`` from opset 13 on, along an axis other than the
  last: the input transposed and the output before its transpose back, two
  buffers of the input's size.

Every other op: none (no other node of the corpus requests scratch; onnxruntime's
CPU provider has no float64 Conv/ConvTranspose). Not modelled: other
dtypes of the ops above, other execution providers, kernels chosen at graph-optimization levels above
``ORT_DISABLE_ALL`` (NCHWc convolutions), and hybrid CPUs, whose degree of
parallelism onnxruntime may scale beyond the thread count.

Cost: O(1) per node.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    import onnx

WORKSPACE_SUFFIX = "::workspace"
"""Name of a node's workspace pseudo-tensor: ``<node name>::workspace``."""

Shape = tuple[int, ...]

_MLAS_MAX_THREADS = 16  # MLAS_MAXIMUM_THREAD_COUNT
_MLAS_PER_THREAD = 128 * 128  # MLAS_SGEMM_STRIDEN * MLAS_SGEMM_STRIDEK floats
_MLAS_THREAD_COMPLEXITY = 64 * 1024  # MLAS_SGEMM_THREAD_COMPLEXITY
_MLAS_STRIDEN_ALIGN = 16  # MLAS_SGEMM_STRIDEN_THREAD_ALIGN

_FLOAT = 1  # ONNX TensorProto.FLOAT
WORKSPACE_OPS = frozenset({"Conv", "ConvTranspose", "Where", "Softmax", "LogSoftmax"})
"""The op types :func:`node_workspace_bytes` may give scratch to."""


def workspace_name(node_name: str) -> str:
    """The pseudo-tensor name of ``node_name``'s workspace."""
    return node_name + WORKSPACE_SUFFIX


def is_workspace(tensor_name: str) -> bool:
    """True for a workspace pseudo-tensor's name (never an ONNX value of the model)."""
    return tensor_name.endswith(WORKSPACE_SUFFIX)


@lru_cache(maxsize=1)
def default_threads() -> int:
    """onnxruntime's default intra-op thread count on this machine: its physical cores.

    Linux: distinct (package, core) pairs of the online CPUs in
    ``/sys/devices/system/cpu``; elsewhere, or if that is unreadable,
    ``os.cpu_count()``. At least 1.
    """
    root = Path("/sys/devices/system/cpu")
    cores: set[tuple[str, str]] = set()
    try:
        for cpu in root.glob("cpu[0-9]*"):
            online = cpu / "online"
            if online.exists() and online.read_text().strip() == "0":
                continue
            topo = cpu / "topology"
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
    except OSError:
        cores = set()
    return max(1, len(cores) or (os.cpu_count() or 1))


@dataclass(frozen=True)
class Value:
    """What a rule needs of one input or output: static shape, ONNX element type, bytes."""

    shape: Shape
    elem_type: int
    nbytes: int


def _broadcast(a: Shape, b: Shape) -> Shape:
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _ints(attrs: Mapping[str, object], key: str, default: Sequence[int]) -> list[int]:
    v = attrs.get(key)
    return [int(x) for x in v] if v else [int(x) for x in default]  # type: ignore[union-attr]


def _conv_geometry(x: Shape, w: Shape, y: Shape, attrs: Mapping[str, object]) -> tuple[list[int], ...] | None:
    """(kernel, strides, dilations, pads begin+end) of a Conv from its shapes and attributes."""
    rank = len(x) - 2
    if rank < 1 or len(w) != len(x) or len(y) != len(x):
        return None
    kernel = _ints(attrs, "kernel_shape", w[2:])
    strides = _ints(attrs, "strides", [1] * rank)
    dil = _ints(attrs, "dilations", [1] * rank)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [max(0, (y[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - x[2 + i]) for i in range(rank)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    elif auto_pad == "VALID":
        pads = [0] * (2 * rank)
    else:
        pads = _ints(attrs, "pads", [0] * (2 * rank))
    if not (len(kernel) == len(strides) == len(dil) == rank and len(pads) == 2 * rank):
        return None
    return kernel, strides, dil, pads


def mlas_conv_floats(
    batch: int, groups: int, cin: int, x_img: Shape, kernel: Sequence[int], strides: Sequence[int],
    dil: Sequence[int], pads: Sequence[int], y_img: Shape, filters: int, threads: int,
) -> int:
    """Floats of MLAS's float32 convolution working buffer (the module docstring's rule).

    ``cin``/``filters`` are per group; ``x_img``/``y_img`` the spatial shapes;
    ``pads`` begins then ends; ``threads`` the degree of parallelism.
    """
    rank = len(kernel)
    out_size = math.prod(y_img)
    k = cin * math.prod(kernel)
    if all(s == 1 for s in strides) and all(p == 0 for p in pads):
        if k == cin:
            return 0  # pointwise: GEMM on the input itself
        kh, kw = (1, kernel[0]) if rank == 1 else (kernel[0], kernel[1])
        ih, iw = (1, x_img[0]) if rank == 1 else (x_img[0], x_img[1])
        if rank <= 2 and all(d == 1 for d in dil) and cin == 1 and (kw == iw or (kh == ih and kw == 1)):
            return 0  # the kernel spans the input's width (or height): GEMM on the input
    if filters > out_size:
        return out_size * k
    if batch * groups > 1:
        return min(threads, batch * groups) * _MLAS_PER_THREAD  # one thread per image and group
    complexity = filters * out_size * k
    if complexity < _MLAS_THREAD_COMPLEXITY * _MLAS_MAX_THREADS:
        target = complexity // _MLAS_THREAD_COMPLEXITY + 1
    else:
        target = _MLAS_MAX_THREADS
    target = min(target, threads)
    stride_n = -(-out_size // target)
    if target > 1:
        stride_n = -(-stride_n // _MLAS_STRIDEN_ALIGN) * _MLAS_STRIDEN_ALIGN
        if stride_n >= out_size:
            target = 1
        elif stride_n * (target - 1) >= out_size:
            target -= 1
    return target * _MLAS_PER_THREAD


def _conv(x: Value, w: Value, y: Value, attrs: Mapping[str, object], threads: int) -> int:
    geo = _conv_geometry(x.shape, w.shape, y.shape, attrs)
    if geo is None or y.elem_type != _FLOAT:
        return 0
    kernel, strides, dil, pads = geo
    groups = int(attrs.get("group", 1) or 1)  # type: ignore[call-overload]
    batch, cin, filters = x.shape[0], x.shape[1] // groups, w.shape[0] // groups
    if len(kernel) <= 3:
        return 4 * mlas_conv_floats(batch, groups, cin, x.shape[2:], kernel, strides, dil, pads, y.shape[2:], filters, threads)
    return 4 * cin * math.prod(kernel) * math.prod(y.shape[2:])  # the generic kernel's whole im2col matrix


def _conv_transpose(x: Value, w: Value, y: Value, attrs: Mapping[str, object]) -> int:
    if y.elem_type != _FLOAT or len(x.shape) < 3 or len(w.shape) != len(x.shape):
        return 0
    kernel = _ints(attrs, "kernel_shape", w.shape[2:])
    filters = w.shape[1]  # weights are (C_in, C_out / group, kernel...)
    return 4 * filters * math.prod(kernel) * math.prod(x.shape[2:])


def node_workspace_bytes(
    op_type: str,
    inputs: Sequence[Value | None],
    outputs: Sequence[Value | None],
    attrs: Mapping[str, object],
    opset: int,
    threads: int | None = None,
) -> int:
    """Bytes of scratch onnxruntime's CPU kernel for this node requests while it runs (0 if none known).

    ``op_type`` as in the IR (a default-domain op has no prefix); ``inputs``
    and ``outputs`` as in the ONNX node (None for an absent optional input or
    an unknown value); ``attrs`` the node's attributes (name -> Python value);
    ``opset`` the model's default-domain opset; ``threads`` the session's
    intra-op thread count (None: :func:`default_threads`). The rules are in
    the module docstring. O(rank).
    """
    y = outputs[0] if outputs else None
    if y is None:
        return 0
    if op_type in ("Conv", "ConvTranspose") and len(inputs) >= 2 and inputs[0] is not None and inputs[1] is not None:
        if op_type == "ConvTranspose":
            return _conv_transpose(inputs[0], inputs[1], y, attrs)
        return _conv(inputs[0], inputs[1], y, attrs, default_threads() if threads is None else max(1, int(threads)))
    if op_type == "Where" and len(inputs) == 3 and all(v is not None for v in inputs):
        cond, xs, ys = (v.shape for v in inputs)  # type: ignore[union-attr]
        per = y.nbytes / max(1, math.prod(y.shape))
        return int(round((math.prod(_broadcast(cond, xs)) + math.prod(_broadcast(cond, ys))) * per))
    if op_type in ("Softmax", "LogSoftmax") and opset >= 13 and inputs and inputs[0] is not None:
        x = inputs[0]
        axis = int(attrs.get("axis", -1))  # type: ignore[call-overload]
        if x.shape and axis % len(x.shape) != len(x.shape) - 1:
            return 2 * x.nbytes
    return 0


def model_workspaces(
    model: "onnx.ModelProto",
    shapes: Mapping[str, Shape],
    elem_types: Mapping[str, int],
    sizes: Mapping[str, int],
    threads: int | None = None,
) -> dict[int, int]:
    """Node index (file order) -> workspace bytes, for the nodes of ``model`` that have some.

    ``shapes``, ``elem_types`` and ``sizes`` describe the model's values (the
    frontend's inferred static shapes, element types and bytes); a value
    missing from them counts as unknown (no workspace from it). Only
    default-domain nodes of :data:`WORKSPACE_OPS` are looked at. O(nodes).
    """
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    t = default_threads() if threads is None else max(1, int(threads))

    def value(name: str) -> Value | None:
        if not name or name not in shapes or name not in elem_types or name not in sizes:
            return None
        return Value(tuple(shapes[name]), int(elem_types[name]), int(sizes[name]))

    out: dict[int, int] = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in WORKSPACE_OPS or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = node_workspace_bytes(
            node.op_type, [value(x) for x in node.input], [value(y) for y in node.output], attrs, opset, t
        )
        if b > 0:
            out[i] = b
    return out
