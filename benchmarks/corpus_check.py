"""Numerical check of the full-size corpus graphs: one step in onnxruntime against one eager PyTorch step.

    nice python benchmarks/corpus_check.py                 # every full-size graph in models/manifest.json
    nice python benchmarks/corpus_check.py --only resnet18.onnx --only vgg16.onnx

Each graph is checked in its own subprocess (so its peak memory is its own,
read from the child's max RSS): seeded inputs (`olla_onnx.export.compare.make_inputs`,
seed 0), the PyTorch step (module forward, `loss.backward()`, `torch.optim`),
then onnxruntime (CPU provider, default options), then the comparison (loss
and every `param_out.*` within 1e-4 relative; state and update errors recorded).
Results go to benchmarks/results/corpus_check.json and into the `check`
field of models/manifest.json (models/README.md is rewritten from it).
No float64 cross-check here (it would double the memory); the tiny variants have it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
RESULTS = ROOT / "benchmarks" / "results" / "corpus_check.json"


def check_one(fname: str) -> dict:
    import gc

    import onnx

    from olla_onnx.export.compare import compare, make_inputs, run_onnxruntime
    from olla_onnx.export.corpus import BY_NAME, reference_step

    manifest = json.loads((MODELS / "manifest.json").read_text())
    rec = manifest["models"][fname]
    entry = BY_NAME[rec["model"]]
    model = onnx.load(MODELS / fname)
    inputs = make_inputs(model, 0)
    t0 = time.perf_counter()
    ref = reference_step(entry, entry.variant(rec["variant"] == "tiny"), inputs)
    gc.collect()
    t1 = time.perf_counter()
    got = run_onnxruntime(model, inputs)
    t2 = time.perf_counter()
    result = compare(got, ref, inputs).as_dict()
    result |= {"seed": 0, "torch_seconds": round(t1 - t0, 1), "onnxruntime_seconds": round(t2 - t1, 1),
               "float64_cross_check": "not run for full-size graphs",
               "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="FILE")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(check_one(args.one)), flush=True)
        return 0

    from olla_onnx.export.build import environment, load_manifest, save_manifest

    manifest = load_manifest(MODELS)
    files = args.only or [f for f, r in manifest["models"].items() if r["variant"] == "full"]
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": {}}
    results["command"] = "nice python benchmarks/corpus_check.py" + "".join(f" --only {f}" for f in args.only)
    results["environment"] = environment() | {"machine": platform.machine(), "cpus": __import__("os").cpu_count()}
    for fname in files:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", fname], capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            res = {"ok": False, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1],
                   "returncode": proc.returncode}
        else:
            res = json.loads(line[len("RESULT "):])
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        results["results"][fname] = res
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        manifest = load_manifest(MODELS)
        if fname in manifest["models"]:
            manifest["models"][fname]["check"] = res
            save_manifest(MODELS, manifest)
        print(f"{fname:24s} {'ok' if res.get('ok') else 'FAIL'} {json.dumps(res)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
