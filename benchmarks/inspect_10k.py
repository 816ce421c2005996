"""Time `olla-onnx inspect` on generated 10,000-node graphs (ONNX and node-link JSON).

Usage: python benchmarks/inspect_10k.py [--nodes 10000] [--repeat 3] [--out benchmarks/results/inspect_10k.md]

The ONNX graph is a random layered DAG of elementwise ops (Add, Mul, Relu,
Sigmoid, Neg) on float32 [64, 256] tensors with 64 graph inputs; the JSON graph
is a random layered DAG of the same size. Wall time includes starting Python,
loading (with ONNX shape inference), simulating the stock orders and the
ancestor/descendant lower bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from common import RESULTS
from onnx import TensorProto, helper


def make_onnx(n: int, seed: int = 0) -> onnx.ModelProto:
    rnd = random.Random(seed)
    shape = [64, 256]
    inputs = [helper.make_tensor_value_info(f"in{i}", TensorProto.FLOAT, shape) for i in range(64)]
    names = [f"in{i}" for i in range(64)]
    nodes = []
    for i in range(n):
        window = names[-200:]
        op = rnd.choice(["Add", "Mul", "Relu", "Sigmoid", "Neg"])
        ins = [rnd.choice(window), rnd.choice(window)] if op in ("Add", "Mul") else [rnd.choice(window)]
        nodes.append(helper.make_node(op, ins, [f"t{i}"], name=f"n{i}"))
        names.append(f"t{i}")
    read = {x for nd in nodes for x in nd.input}
    outs = [helper.make_tensor_value_info(t, TensorProto.FLOAT, shape) for t in names[64:] if t not in read][:32]
    g = helper.make_graph(nodes, "gen10k", inputs, outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def make_node_link(n: int, seed: int = 0) -> dict:
    rnd = random.Random(seed)
    nodes = [{"id": f"n{i}", "size": rnd.randint(1, 64) * 4096} for i in range(n)]
    edges = []
    for i in range(1, n):
        for _ in range(rnd.randint(1, 2)):
            edges.append({"source": f"n{rnd.randint(max(0, i - 200), i - 1)}", "target": f"n{i}"})
    return {"directed": True, "multigraph": False, "graph": {}, "nodes": nodes, "edges": edges}


def time_inspect(path: Path, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "olla_onnx", "inspect", str(path)], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "inspect_10k.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        p_onnx = Path(tmp) / "gen10k.onnx"
        onnx.save(make_onnx(args.nodes), p_onnx)
        p_json = Path(tmp) / "gen10k.json"
        p_json.write_text(json.dumps(make_node_link(args.nodes)))
        for label, p in (("ONNX (elementwise DAG, 64 inputs)", p_onnx), ("node-link JSON (random layered DAG)", p_json)):
            ts = time_inspect(p, args.repeat)
            rows.append((label, args.nodes, statistics.median(ts), max(ts)))
    lines = [
        "# `olla-onnx inspect` on generated graphs",
        "",
        f"Command: `python benchmarks/inspect_10k.py --nodes {args.nodes} --repeat {args.repeat}`  ",
        f"Machine: {platform.machine()}, {platform.python_version()}, 2 cores shared with other work (wall time, whole process).",
        "",
        "| graph | nodes | median s | max s |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {n:,} | {med:.2f} | {mx:.2f} |" for label, n, med, mx in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
