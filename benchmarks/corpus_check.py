"""Numerical check of the full-size corpus graphs: one step in onnxruntime against one eager PyTorch step.

    nice python benchmarks/corpus_check.py                 # every full-size graph in models/manifest.json
    nice python benchmarks/corpus_check.py --only resnet18.onnx --only vgg16.onnx

Each graph is checked in its own subprocess (so its peak memory is its own,
read from the child's max RSS, also after each phase: `max_rss_gib_after`): the test point (`olla_onnx.export.build.check_inputs`:
the seeded inputs of `compare.make_inputs`, seed 0, moved so that every ReLU
and max-pool decision has a margin, see `olla_onnx/export/testpoint.py`; its
margins are recorded under `test_point`; a variant with a `test_point_batch` gets the point
found at that batch, tiled, see `check_inputs`), the PyTorch step (module forward,
`loss.backward()`, `torch.optim`), then onnxruntime (CPU provider, default
options), then the comparison (loss and every `param_out.*` within 1e-4
relative; state and update errors recorded). Freed memory is handed back to
the system between the phases (malloc_trim), so the peak is the largest phase.
Results go to benchmarks/results/corpus_check.json and into the `check`
field of models/manifest.json (models/README.md is rewritten from it).
With --float64 the step is also run in float64 PyTorch and both float32
answers are measured against it (the record, with `float64_max_rss_gib`, also
goes to corpus_check_float64.json): it tells a float32-rounding disagreement
from a wrong graph.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

from common import MODELS, RESULTS, ROOT

CHECKS = RESULTS / "corpus_check.json"
CHECKS_F64 = RESULTS / "corpus_check_float64.json"


def _trim() -> None:
    """Collect garbage and give freed heap memory back to the system (glibc), so phases do not add up."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def check_one(fname: str, float64: bool = False) -> dict:
    import onnx

    from olla_onnx.export.build import check_inputs
    from olla_onnx.export.compare import compare, run_onnxruntime
    from olla_onnx.export.corpus import BY_NAME, reference_step

    manifest = json.loads((MODELS / "manifest.json").read_text())
    rec = manifest["models"][fname]
    entry = BY_NAME[rec["model"]]
    tiny = rec["variant"] == "tiny"
    model = onnx.load(MODELS / fname)
    def rss() -> float:  # max RSS so far (monotone: the phase that raised it is the one that set it)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)

    t0 = time.perf_counter()
    inputs, _, point = check_inputs(entry, tiny, model)
    _trim()
    t1 = time.perf_counter()
    after = {"test_point": rss()}
    ref = reference_step(entry, entry.variant(tiny), inputs)
    _trim()
    t2 = time.perf_counter()
    after["torch"] = rss()
    got = run_onnxruntime(model, inputs)
    del model
    _trim()
    t3 = time.perf_counter()
    after["onnxruntime"] = rss()
    result = compare(got, ref, inputs).as_dict()
    result |= {"seed": 0, "test_point": point, "test_point_seconds": round(t1 - t0, 1),
               "torch_seconds": round(t2 - t1, 1), "onnxruntime_seconds": round(t3 - t2, 1),
               "max_rss_gib": rss(), "max_rss_gib_after": after}
    if float64:
        import torch

        exact = reference_step(entry, entry.variant(tiny), inputs, dtype=torch.float64)
        for label, answer in (("onnxruntime", got), ("torch_float32", ref)):
            c = compare(answer, exact, inputs)
            result[f"{label}_vs_float64"] = {"loss_rel_err": c.loss_rel, "max_param_rel_err": c.param_rel,
                                             "max_param_rel_err_output": c.param_name,
                                             "max_state_rel_err": c.state_rel, "max_update_rel_err": c.update_rel}
        result["float64_seconds"] = round(time.perf_counter() - t3, 1)
        result["float64_max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    else:
        result["float64_cross_check"] = "not run (benchmarks/corpus_check.py --float64)"
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="FILE")
    ap.add_argument("--float64", action="store_true",
                    help="also run the step in float64 PyTorch and measure both float32 answers against it; "
                         "the record goes to corpus_check_float64.json as well")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(check_one(args.one, args.float64)), flush=True)
        return 0
    paths = [CHECKS] + ([CHECKS_F64] if args.float64 else [])

    from olla_onnx.export.build import environment
    from olla_onnx.export.manifest import load_manifest, save_manifest

    manifest = load_manifest(MODELS)
    files = args.only or [f for f, r in manifest["models"].items() if r["variant"] == "full"]
    env = environment() | {"machine": platform.machine(), "cpus": __import__("os").cpu_count()}
    for fname in files:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--one", fname] + (["--float64"] if args.float64 else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            res = {"ok": False, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1],
                   "returncode": proc.returncode}
        else:
            res = json.loads(line[len("RESULT "):])
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        res["command"] = "nice python benchmarks/corpus_check.py" + (" --float64" if args.float64 else "") + f" --only {fname}"
        for path in paths:  # one record a file; each says the command that made it
            results = json.loads(path.read_text()) if path.exists() else {"results": {}}
            results.pop("command", None)
            results["environment"] = env
            results["results"][fname] = res
            path.write_text(json.dumps(results, indent=1) + "\n")
        manifest = load_manifest(MODELS)
        if fname in manifest["models"]:
            manifest["models"][fname]["check"] = res
            save_manifest(MODELS, manifest)
        print(f"{fname:24s} {'ok' if res.get('ok') else 'FAIL'} {json.dumps(res)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
