"""The command line: one-line errors with exit code 2, inputs never overwritten, outputs valid."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from olla_onnx.formats.nodelink import graph_from_node_link, load_node_link
from olla_onnx.ir.memory import simulate
from olla_onnx.plan import load_plan


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "olla_onnx", *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]


def diamond(tmp_path: Path, **kw) -> Path:
    data = {
        "directed": True,
        "nodes": [{"id": "a", "size": 100}, {"id": "b", "size": 10}, {"id": "c", "size": 50}, {"id": "d", "size": 1}],
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "a", "target": "c"},
            {"source": "b", "target": "d"},
            {"source": "c", "target": "d"},
        ],
    }
    data.update(kw)
    p = tmp_path / "g.json"
    p.write_text(json.dumps(data))
    return p


def test_json_graph_without_sizes(tmp_path):
    p = diamond(tmp_path)
    data = json.loads(p.read_text())
    del data["nodes"][2]["size"]
    p.write_text(json.dumps(data))
    one_line_error(cli("inspect", str(p)), "has no 'size' attribute")


def test_cycle(tmp_path):
    p = diamond(tmp_path)
    data = json.loads(p.read_text())
    data["edges"].append({"source": "d", "target": "a"})
    p.write_text(json.dumps(data))
    one_line_error(cli("inspect", str(p)), "cycle")


def test_missing_file_and_unknown_format(tmp_path):
    one_line_error(cli("inspect", str(tmp_path / "nope.onnx")), "nope.onnx")
    other = tmp_path / "g.txt"
    other.write_text("hello")
    one_line_error(cli("inspect", str(other)), "g.txt")


def test_bad_dim_option(tmp_path):
    one_line_error(cli("inspect", str(diamond(tmp_path)), "--dim", "batch"), "NAME=VALUE")


def test_refuses_to_overwrite_the_input(tmp_path):
    p = diamond(tmp_path)
    before = p.read_bytes()
    one_line_error(cli("optimize", str(p), "-o", str(p)), "input file")
    one_line_error(cli("optimize", str(p), "-o", str(tmp_path / "o.json"), "--plan", str(p)), "input file")
    assert p.read_bytes() == before


def test_optimize_node_link_end_to_end(tmp_path):
    p = diamond(tmp_path)
    before = p.read_bytes()
    out, plan, rep = tmp_path / "o.json", tmp_path / "plan.json", tmp_path / "r.json"
    proc = cli("optimize", str(p), "-o", str(out), "--plan", str(plan), "--report-json", str(rep))
    assert proc.returncode == 0, proc.stderr
    assert p.read_bytes() == before
    report = json.loads(rep.read_text())
    for key in ("nodes", "resident_bytes", "peak_input_order", "peak_optimized", "lower_bound", "optimal", "arena_bytes", "seconds"):
        assert key in report
    g, _ = load_node_link(out)
    # the written order is the file order of OUT, and it attains the reported peak
    assert simulate(g, list(range(g.num_nodes))).peak == report["peak_optimized"]
    assert report["peak_optimized"] <= report["peak_input_order"]
    assert report["lower_bound"] <= report["peak_optimized"]
    assert report["peak_optimized"] == 160  # a is read by both b and c: a + b + c at the second reader
    loaded = load_plan(plan, g)
    assert loaded.arena_bytes == report["arena_bytes"]
    assert report["arena_bytes"] >= report["peak_optimized"] - report["resident_bytes"]


def test_inspect_report_json(tmp_path):
    p = diamond(tmp_path)
    rep = tmp_path / "r.json"
    proc = cli("inspect", str(p), "--report-json", str(rep))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(rep.read_text())
    assert r["nodes"] == 4 and r["peak_input_order"] == 160 and 150 <= r["lower_bound"] <= 160
