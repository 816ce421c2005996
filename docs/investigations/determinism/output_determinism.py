"""Why the planned session's outputs differ from the default session's (issue #7): evidence.

Two causes are tested, each against plain onnxruntime sessions (no olla-onnx allocator involved):

1. ``--scatter``: the one kernel of the corpus that is not deterministic with more than one
   intra-op thread: ``ScatterND`` with ``reduction="add"`` (the token-embedding gradient of
   BERT and GPT-2) when indices repeat. The seeded feeds make every integer input 0
   (:func:`olla_onnx.runtime.feeds.random_feeds`), so all 2048 tokens hit row 0. The node is
   run alone with the full-size shapes, 10 times with 1 and with 2 threads.
2. ``--models M``: one full-size model in plain sessions (nothing of olla-onnx but the
   seeded feeds): optimizations off (``ORT_DISABLE_ALL``, what the planned session uses)
   with 2 threads twice, with 1 thread twice, the default options (``ORT_ENABLE_ALL``)
   with 1 thread once and with 2 threads twice, and the plan's order (``optimize``,
   default settings, run ``PRIORITY_BASED`` as the planned session runs it) with
   optimizations off and 2 threads twice: run-to-run differences with 2 threads and none
   with 1 thread name a thread race; a difference between the optimization levels at 1
   thread that repeats run to run names the graph rewrites (fusions); a difference between
   the orders names the order.

Results go to ``output_determinism.json`` beside this script (one row per call, replaced) and
``--report`` writes ``output_determinism.md`` there (the write-up: ``README.md``). Each session runs in a child process and outputs
pass through files (one process holding all sessions reached 23 GiB on ViT-B/16); a child needs up to
about 10 GiB: run a full-size model under the shared lock, one model per call::

    nice python docs/investigations/determinism/output_determinism.py --scatter
    flock /tmp/olla-heavy.lock nice python docs/investigations/determinism/output_determinism.py --models gpt2
    python docs/investigations/determinism/output_determinism.py --report
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from olla_onnx.runtime.measure import compare_outputs, relative_diff
from olla_onnx.runtime.feeds import random_feeds

HERE = Path(__file__).resolve().parent  # results beside the script
ROOT = HERE.parents[2]  # the repository: models/
RESULTS = HERE


def _session(model_bytes: bytes, level: str, threads: int, priority: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = threads
    if priority:  # runs a reordered file in its order (as the planned session does)
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _diff(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, Any]:
    equal, worst = compare_outputs(a, b)
    return {"bitwise": equal, "max_abs_diff": worst, "max_rel_diff": relative_diff(a, b)}


def _scatter_runs(vocab: int, idx: np.ndarray, runs: int) -> dict[str, Any]:
    """``ScatterND(reduction="add")`` of [4, 512, 768] uniform updates into a [vocab, 768] zero table at
    ``idx`` ([4, 512, 1]), ``runs`` runs per thread count: distinct results, worst error against float64."""
    from onnx import TensorProto as TP
    from onnx import helper as h

    d, tokens = 768, (4, 512)
    g = h.make_graph(
        [h.make_node("ScatterND", ["data", "idx", "upd"], ["out"], reduction="add")], "scatter",
        [h.make_tensor_value_info("data", TP.FLOAT, [vocab, d]), h.make_tensor_value_info("idx", TP.INT64, [*tokens, 1]),
         h.make_tensor_value_info("upd", TP.FLOAT, [*tokens, d])],
        [h.make_tensor_value_info("out", TP.FLOAT, [vocab, d])],
    )
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 18)]).SerializeToString()
    rng = np.random.default_rng(0)
    feeds = {"data": np.zeros((vocab, d), np.float32), "idx": idx.astype(np.int64),
             "upd": rng.uniform(0.1, 1.0, (*tokens, d)).astype(np.float32)}
    exact = np.zeros((vocab, d))
    np.add.at(exact, feeds["idx"].reshape(-1), feeds["upd"].astype(np.float64).reshape(-1, d))
    used = np.unique(feeds["idx"])
    out: dict[str, Any] = {}
    for threads in (1, 2):
        s = _session(model, "ORT_DISABLE_ALL", threads)
        res = [s.run(None, feeds)[0][used] for _ in range(runs)]
        out[f"threads_{threads}"] = {
            "distinct_results": len({r.tobytes() for r in res}),
            "max_rel_err_vs_exact": max(float(np.abs(r - exact[used]).max() / np.abs(exact[used]).max()) for r in res),
        }
        del s
    return out


def scatter_row(runs: int = 10) -> dict[str, Any]:
    """The token-embedding gradient node alone (GPT-2's shapes): indices all 0 (the seeded feeds), and
    position-like indices (each of 512 rows hit by 4 tokens, 512 apart)."""
    return {
        "model": "ScatterND alone", "runs": runs,
        "zeros": _scatter_runs(50257, np.zeros((4, 512, 1)), runs),
        "positions": _scatter_runs(512, np.tile(np.arange(512), 4).reshape(4, 512, 1), runs),
    }


def _child(model_path: str, level: str, threads: int, runs: int, out_dir: str, order_file: str | None) -> None:
    """One session in its own process (its memory goes back to the OS when it ends): ``runs`` runs, each
    run's outputs saved as ``run<k>_<i>.npy`` in ``out_dir``."""
    import onnx

    model = onnx.load(model_path)
    feeds = random_feeds(model, None, 0)
    if order_file:
        order = json.loads(Path(order_file).read_text())
        nodes = [model.graph.node[i] for i in order]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    b = model.SerializeToString()
    del model
    s = _session(b, level, threads, priority=bool(order_file))
    for k in range(runs):
        for i, a in enumerate(s.run(None, feeds)):
            np.save(Path(out_dir) / f"run{k}_{i}.npy", a)


def _saved(d: Path, k: int) -> list[np.ndarray]:
    return [np.load(f, mmap_mode="r") for f in sorted(d.glob(f"run{k}_*.npy"), key=lambda f: int(f.stem.split("_")[1]))]


def model_row(name: str) -> dict[str, Any]:
    """Plain sessions of one corpus model (module docstring), each in a child process; outputs through files."""
    import subprocess
    import tempfile

    t0 = time.perf_counter()
    path = str(ROOT / "models" / f"{name}.onnx")
    row: dict[str, Any] = {"model": name}
    with tempfile.TemporaryDirectory() as tmp:
        from olla_onnx.formats import load_graph
        from olla_onnx.optimize import optimize_model

        order_file = Path(tmp) / "order.json"  # the plan's order (`optimize`, default settings)
        order_file.write_text(json.dumps([int(i) for i in optimize_model(load_graph(path)).order]))
        gc.collect()
        dirs = {}
        for label, level, threads, runs, order in (
            ("off2", "ORT_DISABLE_ALL", 2, 2, None), ("off1", "ORT_DISABLE_ALL", 1, 2, None),
            ("default1", "ORT_ENABLE_ALL", 1, 1, None), ("default2", "ORT_ENABLE_ALL", 2, 2, None),
            ("plan2", "ORT_DISABLE_ALL", 2, 2, order_file),
        ):
            d = Path(tmp) / label
            d.mkdir()
            cmd = [sys.executable, __file__, "--child", path, level, str(threads), str(runs), str(d)]
            subprocess.run(cmd + ([str(order)] if order else []), check=True)
            dirs[label] = d
        row["plan_order_vs_file_order_off_2threads"] = _diff(_saved(dirs["plan2"], 0), _saved(dirs["off2"], 0))
        row["plan_order_off_2threads_run1_vs_run2"] = _diff(_saved(dirs["plan2"], 0), _saved(dirs["plan2"], 1))
        row["default_2threads_run1_vs_run2"] = _diff(_saved(dirs["default2"], 0), _saved(dirs["default2"], 1))
        row["default_2threads_vs_off_2threads"] = _diff(_saved(dirs["default2"], 0), _saved(dirs["off2"], 0))
        row["off_2threads_run1_vs_run2"] = _diff(_saved(dirs["off2"], 0), _saved(dirs["off2"], 1))
        row["off_1thread_run1_vs_run2"] = _diff(_saved(dirs["off1"], 0), _saved(dirs["off1"], 1))
        row["off_1thread_vs_off_2threads"] = _diff(_saved(dirs["off1"], 0), _saved(dirs["off2"], 0))
        row["default_1thread_vs_off_1thread"] = _diff(_saved(dirs["default1"], 0), _saved(dirs["off1"], 0))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(d: dict[str, Any]) -> str:
    return "bitwise" if d["bitwise"] else f"{d['max_abs_diff']:.3g} (rel {d['max_rel_diff']:.2g})"


def _reading(r: dict[str, Any]) -> str:
    """One model's row in words: which of the causes (module docstring) its figures show."""
    race = not r["off_2threads_run1_vs_run2"]["bitwise"] or not r.get("plan_order_off_2threads_run1_vs_run2", {"bitwise": True})["bitwise"]
    steady1 = r["off_1thread_run1_vs_run2"]["bitwise"]
    fus = r["default_1thread_vs_off_1thread"]
    out = [f"**{r['model']}**:"]
    if race and steady1:
        worst = max(r["off_2threads_run1_vs_run2"]["max_abs_diff"], r.get("plan_order_off_2threads_run1_vs_run2", {}).get("max_abs_diff", 0.0))
        out.append(f"two runs of one plain session with 2 threads differ (up to {worst:.2g}) while runs with 1 thread are "
                   "bitwise equal: onnxruntime itself is not deterministic with 2 threads on this model, with no olla-onnx "
                   "allocator and in the file's order (most likely the embedding gradient's ScatterND(add), the one "
                   "kernel found non-deterministic alone, above);")
    elif not race:
        out.append("runs of one plain session are bitwise equal (2 threads and 1);")
    else:
        out.append("runs differ even with 1 thread;")
    out.append("the default options against optimizations off, both at 1 thread: "
               + ("bitwise equal." if fus["bitwise"] else f"{fus['max_abs_diff']:.2g} (the graph rewrites, deterministic at 1 thread)."))
    if "plan_order_vs_file_order_off_2threads" in r and not race:
        po = r["plan_order_vs_file_order_off_2threads"]
        out.append("The plan's order against the file's: " + ("bitwise equal." if po["bitwise"] else f"{po['max_abs_diff']:.2g}."))
    return " ".join(out)


def write_report(rows: dict[str, Any], out: Path) -> None:
    import onnxruntime as ort

    lines = [
        "# Output differences between onnxruntime sessions (#7): thread races and graph rewrites",
        "",
        "Written by `python docs/investigations/determinism/output_determinism.py --report` from `output_determinism.json`; "
        "commands in the script's docstring. " + f"{platform.machine()}, onnxruntime {ort.__version__}, plain "
        "onnxruntime sessions only (no olla-onnx allocator, no reordering): what differs here differs "
        "without olla-onnx.",
        "",
    ]
    sc = rows.get("ScatterND alone")
    if sc:
        lines += [
            "## The embedding-gradient node alone",
            "",
            "`ScatterND(reduction=\"add\")` of [4, 512, 768] updates (uniform in [0.1, 1)) into a zero table, "
            f"{sc['runs']} runs per thread count. *zeros*: a [50257, 768] table, every index 0 (GPT-2's token-embedding "
            "gradient under the seeded feeds, whose token ids are all 0); *positions*: a [512, 768] table, each row hit "
            "by 4 tokens 512 apart. Error: the largest error of the rows written against the float64 sum, over the "
            "largest such sum.",
            "",
            "| indices | intra-op threads | distinct results | max rel. error vs the exact sum |",
            "|---|---:|---:|---:|",
        ]
        for case in ("zeros", "positions"):
            for t in (1, 2):
                r = sc[case][f"threads_{t}"]
                lines.append(f"| {case} | {t} | {r['distinct_results']} | {r['max_rel_err_vs_exact']:.2g} |")
        lines.append("")
    models = [r for k, r in sorted(rows.items()) if k != "ScatterND alone"]
    if models:
        lines += [
            "## Full-size models, plain sessions",
            "",
            "Max abs difference over all outputs (normwise relative in brackets); *off* = `ORT_DISABLE_ALL` (the "
            "planned session's level), *default* = `ORT_ENABLE_ALL`.",
            "",
            "| model | off, 2 threads: run 1 vs run 2 | off, 1 thread: run 1 vs run 2 | off: 1 vs 2 threads | "
            "default vs off (1 thread) | default, 2 threads: run 1 vs run 2 | default vs off (2 threads) | "
            "plan's order vs file order (off, 2 threads) | plan's order: run 1 vs run 2 | s |",
            "|---|---|---|---|---|---|---|---|---|---:|",
        ]
        na = {"bitwise": None}
        for r in models:
            cells = [r.get(k, na) for k in (
                "off_2threads_run1_vs_run2", "off_1thread_run1_vs_run2", "off_1thread_vs_off_2threads",
                "default_1thread_vs_off_1thread", "default_2threads_run1_vs_run2", "default_2threads_vs_off_2threads",
                "plan_order_vs_file_order_off_2threads", "plan_order_off_2threads_run1_vs_run2")]
            lines.append(f"| {r['model']} | " + " | ".join("n/m" if c["bitwise"] is None else _fmt(c) for c in cells)
                         + f" | {r['seconds']} |")
        lines.append("")
        lines += ["What the rows say:", ""] + [f"- {_reading(r)}" for r in models] + [""]
    out.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=[])
    ap.add_argument("--scatter", action="store_true", help="the ScatterND node alone")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--json", type=Path, default=RESULTS / "output_determinism.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "output_determinism.md")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        c = args.child
        _child(c[0], c[1], int(c[2]), int(c[3]), c[4], c[5] if len(c) > 5 else None)
        return
    new = ([scatter_row()] if args.scatter else []) + [model_row(m) for m in args.models]
    for row in new:
        rows = _load(args.json)
        rows[row["model"]] = row
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps(row))
    if args.report:
        write_report(_load(args.json), args.out)


if __name__ == "__main__":
    main()
