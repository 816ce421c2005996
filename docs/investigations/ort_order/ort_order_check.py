"""Check the onnxruntime default-order emulation against the order onnxruntime's profiler shows.

Usage: python docs/investigations/ort_order/ort_order_check.py [MODEL.onnx ...] [--torch] [--out FILE.md]

With no models given: every models/*.onnx and, when torch is importable, small torch
modules exported both with the dynamo and the TorchScript exporter (``--torch`` adds
those to the models given). For each graph: the emulated order (Constant nodes
dropped) vs the profiled order of an ORT_DISABLE_ALL + DEFAULT session, and the
profiled order of an ORT_DISABLE_ALL + PRIORITY_BASED session vs the file order.
The graphs built with onnx.helper in the tests (tests/onnx_models.py and others) get
the same check in ``tests/test_ort_order.py``. The write-up: README.md beside this script.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import onnx
import onnxruntime

from olla_onnx.formats.onnx.read import load_onnx
from olla_onnx.ort_facts.default_order import file_order, ort_default_order, ort_priority_order
from olla_onnx.runtime.profile import profiled_order

ROOT = Path(__file__).resolve().parents[3]  # the repository: models/


def torch_models(tmp: Path) -> list[Path]:
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        return []
    torch.manual_seed(0)

    class GPT(nn.Module):
        def __init__(self, v=64, d=32, layers=2, t=16):
            super().__init__()
            self.emb, self.pos = nn.Embedding(v, d), nn.Parameter(torch.zeros(t, d))
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True) for _ in range(layers)
            )
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, v)

        def forward(self, idx):
            x = self.emb(idx) + self.pos
            for b in self.blocks:
                x = b(x)
            return self.head(self.ln(x))

    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                        nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))  # fmt: skip
    mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.LayerNorm(64), nn.Linear(64, 4))
    out = []
    for name, mod, args in [("gpt", GPT(), (torch.randint(0, 64, (2, 16)),)), ("cnn", cnn, (torch.randn(2, 3, 16, 16),)),
                            ("mlp", mlp, (torch.randn(8, 16),))]:  # fmt: skip
        for dynamo in (True, False):
            p = tmp / f"torch_{name}_{'dynamo' if dynamo else 'torchscript'}.onnx"
            torch.onnx.export(mod.eval(), args, str(p), dynamo=dynamo, opset_version=18)
            out.append(p)
    return out


def check(label: str, graph, model: onnx.ModelProto) -> str:
    emu = [v for v in ort_default_order(graph) if graph.nodes[v].op_type != "Constant"]
    ran = profiled_order(model, "default")
    prio = profiled_order(model, "priority")
    fo = [v for v in file_order(graph) if graph.nodes[v].op_type != "Constant"]
    emu_prio = [v for v in ort_priority_order(graph) if graph.nodes[v].op_type != "Constant"]
    shape_ops = sum(n.op_type in ("Shape", "Size") for n in graph.nodes)
    return (f"| {label} | {graph.num_nodes} | {len(ran)} | {'yes' if emu == ran else '**no**'} | "
            f"{'yes' if ran == fo else 'no'} | {'yes' if emu_prio == prio else '**no**'} | {'yes' if prio == fo else 'no'} | "
            f"{shape_ops} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--torch", action="store_true", help="also the torch exports with models given (always without)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = a.models or sorted((ROOT / "models").glob("*.onnx"))
        if a.torch or not a.models:
            paths = paths + torch_models(Path(tmp))
        for p in paths:
            g, _ = load_onnx(p)
            rows.append(check(p.name, g, onnx.load(str(p))))
    given = "".join(f" {p}" for p in a.models) + (" --torch" if a.torch else "") + (f" --out {a.out}" if a.out else "")
    head = [
        "# onnxruntime default order: emulation vs profiler",
        "",
        f"Command: `python docs/investigations/ort_order/ort_order_check.py{given}`  ",
        f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, Python {platform.python_version()}, {platform.machine()}",
        "",
        "Sessions use ORT_DISABLE_ALL, one intra-op thread, CPU. Nodes ran = profiler kernel events of top-level nodes",
        "(Constant nodes never run: onnxruntime makes them initializers).",
        "",
        "| graph | nodes | nodes ran | emulated DEFAULT == profiled | DEFAULT == file order | emulated PRIORITY_BASED == profiled | PRIORITY_BASED == file order | Shape/Size nodes |",
        "|---|---:|---:|---|---|---|---|---:|",
    ]
    text = "\n".join(head + rows) + "\n"
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
