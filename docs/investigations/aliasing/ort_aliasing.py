"""Which onnxruntime CPU kernels put their output in their input's buffer (planned session, its reuse off).

Each op is run in a three-node model ``x -> Neg -> a -> OP -> b -> Neg -> y`` (``a`` read by
OP alone, same shape in and out) in a session set up like olla-onnx's planned one
(``session_options("planned", mem_reuse=False)``), through the recording allocator; the
second run's requests are counted. Three requests (``a``, ``b``, ``y``) mean OP's output
has its own buffer; two mean it shares ``a``'s. A second model makes ``a`` also read by a
later node (``a`` then lives past OP): an alias op (a view: onnxruntime's kernel declares
it) still shares, an in-place op (the kernel *may* reuse a buffer whose last reader it is)
does not. The memory model (:func:`olla_onnx.passes.views.alias_views`) models the views; the
in-place kernels are not modelled (they lower only the live bytes of the node's own step,
and only in orders where the node is its input's last reader).

Usage: ``nice python docs/investigations/aliasing/ort_aliasing.py`` (seconds; writes
``ort_aliasing.md`` beside it; the write-up: ``README.md``).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from olla_onnx.ort_facts import VIEW_OPS

OUT = Path(__file__).resolve().parent / "ort_aliasing.md"


def _requests(nodes, inits, x: np.ndarray, outputs: list[str]) -> int:
    """Allocation requests of the second run of a planned session (onnxruntime's reuse off)."""
    import onnxruntime as ort
    from onnx import TensorProto as TP
    from onnx import helper as h

    from olla_onnx.runtime.allocator import RecordingAllocator, env_allocator
    from olla_onnx.runtime.session import session_options

    g = h.make_graph(nodes, "probe", [h.make_tensor_value_info("x", TP.FLOAT, list(x.shape))],
                     [h.make_tensor_value_info(o, TP.FLOAT, None) for o in outputs], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 18)]).SerializeToString()
    rec = RecordingAllocator()
    with env_allocator().serving(rec):
        sess = ort.InferenceSession(model, session_options("planned", mem_reuse=False), providers=["CPUExecutionProvider"])
        try:
            sess.run(None, {"x": x})
            start = rec.log.mark()
            out = sess.run(None, {"x": x})
            stop = rec.log.mark()
            del out
        finally:
            del sess
    return sum(1 for t in range(start, stop) if rec.log.kind[t])


def cases():
    """(label, op nodes reading ``a`` and writing ``b``, initializers)."""
    from onnx import TensorProto as TP
    from onnx import helper as h

    shape = h.make_tensor("shape", TP.INT64, [2], [16, 8])
    ax = h.make_tensor("ax", TP.INT64, [1], [0])
    one = h.make_tensor("one", TP.FLOAT, [], [1.0])
    unary = ["Relu", "Sigmoid", "Tanh", "Softmax", "Exp", "Neg", "Sqrt", "Erf", "Abs", "LeakyRelu", "Dropout"]
    out = [(op, [h.make_node(op, ["a"], ["b"])], []) for op in unary]
    out += [(f"{op} (a, scalar)", [h.make_node(op, ["a", "one"], ["b"])], [one]) for op in ("Add", "Sub", "Mul", "Div", "Pow")]
    out += [
        ("Cast float -> float", [h.make_node("Cast", ["a"], ["b"], to=TP.FLOAT)], []),
        ("Cast float -> int32 -> float", [h.make_node("Cast", ["a"], ["i"], to=TP.INT32), h.make_node("Cast", ["i"], ["b"], to=TP.FLOAT)], []),
        ("Reshape", [h.make_node("Reshape", ["a", "shape"], ["b"])], [shape]),
        ("Flatten", [h.make_node("Flatten", ["a"], ["b"])], []),
        ("Unsqueeze, then Squeeze", [h.make_node("Unsqueeze", ["a", "ax"], ["u"]), h.make_node("Squeeze", ["u", "ax"], ["b"])], [ax]),
        ("Identity", [h.make_node("Identity", ["a"], ["b"])], []),
    ]
    return out


def main() -> None:
    import onnxruntime as ort
    from onnx import helper as h

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help="markdown to write (default: ort_aliasing.md beside the script)")
    args = ap.parse_args()
    x = np.random.default_rng(0).uniform(0.1, 1.0, (8, 16)).astype(np.float32)
    rows = []
    for label, ops, inits in cases():
        mids = {o for n in ops for o in n.output} - {"b"}
        base = 3 + len(mids)  # a, b, y and any intermediate, each its own buffer
        first = [h.make_node("Neg", ["x"], ["a"])]
        last = h.make_node("Neg", ["b"], ["y"])
        alone = _requests(first + ops + [last], inits, x, ["y"])
        kept = _requests(first + ops + [last, h.make_node("Neg", ["a"], ["z"])], inits, x, ["y", "z"])
        rows.append((label, base - alone, base + 1 - kept))
    lines = [
        "# onnxruntime CPU kernels that write into their input's buffer (planned session, its reuse off)",
        "",
        f"`nice python docs/investigations/aliasing/ort_aliasing.py` ({platform.machine()}, onnxruntime {ort.__version__}); "
        "method in the script's docstring. *shared, last reader*: requests saved when OP is its input's last "
        "reader; *shared, input read later*: when another node reads the input after OP. Views (both 1) are "
        "modelled by the memory model (`alias_views` in `olla_onnx/passes/views.py`, ops "
        f"{', '.join(sorted(VIEW_OPS))}); in-place kernels (1, then 0) are not.",
        "",
        "| op | shared, last reader | shared, input read later |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {a} | {k} |" for label, a, k in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
