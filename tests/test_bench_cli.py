"""`olla-onnx bench` outside the repository: --models-dir and --results-dir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_cli import cli, one_line_error

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_bench_without_a_models_folder_is_one_line_exit_2(tmp_path):
    one_line_error(cli("bench", cwd=tmp_path), "models folder models does not exist")
    one_line_error(cli("bench", "--models-dir", str(tmp_path / "nope"), cwd=tmp_path), "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(cli("bench", "--models-dir", str(tmp_path / "empty"), cwd=tmp_path), "no full-size model")


def test_bench_reads_and_writes_the_folders_given(tmp_path):
    models = tmp_path / "corpus"
    models.mkdir()
    shutil.copy(MODELS / "mlp_sgd_handwritten.onnx", models)
    shutil.copy(MODELS / "mlp_tiny.onnx", models)  # *_tiny: left out by default
    out = tmp_path / "out"
    proc = cli("bench", "--models-dir", str(models), "--results-dir", str(out), "--no-run", "--time-limit", "0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["mlp_sgd_handwritten"]
    assert f"--models-dir {models}" in (out / "bench.md").read_text()
