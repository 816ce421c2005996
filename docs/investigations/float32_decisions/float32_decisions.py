"""Where the float32 step of a ReLU net departs from the exact step: flipped decisions, not rounding growth.

    nice python docs/investigations/float32_decisions/float32_decisions.py --only resnet18.onnx
    nice python docs/investigations/float32_decisions/float32_decisions.py --only resnet50_tiny.onnx --seed 1 --point seeded

For one corpus graph (PyTorch only, no onnxruntime), at the seeded point
(`compare.make_inputs`) or at the check's moved point (`build.check_inputs`,
`--point moved`, the default is both), it runs

1. the PyTorch step in float64 (the reference), recording every ReLU / ReLU6
   decision (which side of each kink) and every max-pool argmax;
2. the PyTorch step in float32, plain;
3. the PyTorch step in float32 with the float64 step's decisions imposed
   (ReLU inputs masked by the float64 signs, max-pool outputs gathered at the
   float64 argmax), counting how many of its own decisions differ.

If (3) agrees with (1) to float32 rounding while (2) does not, the whole
disagreement is the few flipped decisions. Also counted at the float64 forward:
ReLU inputs within 1e-6 / 1e-5 (relative to the layer's max) of a kink and
max-pool windows whose top-2 gap is below that. Results: float32_decisions.json and .md
beside this script (the write-up: README.md). One model per subprocess.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # the repository
MODELS = ROOT / "models"
RESULTS = HERE / "float32_decisions.json"


class _Decisions:
    """Patches F.relu, F.hardtanh and F.max_pool2d: record decisions (float64) or impose recorded ones."""

    def __init__(self, mode: str, record: list | None = None):
        self.mode, self.record = mode, record if record is not None else []
        self.i = 0
        self.flips = {"relu": 0, "pool": 0}
        self.census = {"relu": 0, "relu_1e-6": 0, "relu_1e-5": 0, "pool_windows": 0, "pool_1e-6": 0, "pool_1e-5": 0}

    def __enter__(self):
        import torch
        import torch.nn.functional as F

        self.saved = F.relu, F.hardtanh, F.max_pool2d
        relu, hardtanh, max_pool2d = self.saved

        def p_relu(x, inplace=False):
            return p_hardtanh(x, 0.0, float("inf"))

        def p_hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
            if self.mode == "record":
                below, above = (x <= min_val).detach(), (x >= max_val).detach()
                self.record.append((below, above))
                a = x.detach().abs()
                scale = float(a.max()) or 1.0
                dist = (x.detach() - min_val).abs()
                if max_val != float("inf"):
                    dist = torch.minimum(dist, (x.detach() - max_val).abs())
                self.census["relu"] += x.numel()
                self.census["relu_1e-6"] += int((dist < 1e-6 * scale).sum())
                self.census["relu_1e-5"] += int((dist < 1e-5 * scale).sum())
                return hardtanh(x, min_val, max_val) if max_val != float("inf") else relu(x)
            below, above = self.record[self.i]
            self.i += 1
            self.flips["relu"] += int(((x <= min_val) != below).sum() + ((x >= max_val) != above).sum())
            lo = torch.full_like(x, min_val)
            out = torch.where(below, lo, x)
            return torch.where(above, torch.full_like(x, max_val), out) if max_val != float("inf") else out

        def p_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
            out, idx = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
            if self.mode == "record":
                from olla_onnx.export.testpoint import pool_near_ties

                self.record.append(idx)
                t6, gap = pool_near_ties(x.detach(), kernel_size, stride, padding, 1e-6)
                t5, _ = pool_near_ties(x.detach(), kernel_size, stride, padding, 1e-5)
                self.census["pool_windows"] += out.numel()
                self.census["pool_1e-6"] += len(t6)
                self.census["pool_1e-5"] += len(t5)
            else:
                ref_idx = self.record[self.i]
                self.i += 1
                self.flips["pool"] += int((idx != ref_idx).sum())
                out = x.flatten(2).gather(2, ref_idx.flatten(2)).view_as(out)
            return (out, idx) if return_indices else out

        F.relu, F.hardtanh, F.max_pool2d = p_relu, p_hardtanh, p_max_pool2d
        return self

    def __exit__(self, *exc):
        import torch.nn.functional as F

        F.relu, F.hardtanh, F.max_pool2d = self.saved
        return False


def run_one(fname: str, seed: int, point: str) -> dict:
    import gc

    import onnx
    import torch

    from olla_onnx.export.build import check_inputs
    from olla_onnx.export.compare import compare, make_inputs
    from olla_onnx.export.corpus import BY_NAME, reference_step

    rec = json.loads((MODELS / "manifest.json").read_text())["models"][fname]
    entry = BY_NAME[rec["model"]]
    tiny = rec["variant"] == "tiny"
    variant = entry.variant(tiny)
    model = onnx.load(MODELS / fname)
    if point == "seeded":
        inputs = make_inputs(model, seed)
    else:
        if seed != 0:
            raise SystemExit("the moved point is defined for seed 0")
        inputs, _, _ = check_inputs(entry, tiny, model)
    del model
    t0 = time.perf_counter()
    with _Decisions("record") as rec64:
        exact = reference_step(entry, variant, inputs, dtype=torch.float64)
    gc.collect()
    plain = reference_step(entry, variant, inputs)
    gc.collect()
    with _Decisions("impose", rec64.record) as imp:
        pinned = reference_step(entry, variant, inputs)
    del rec64.record[:]
    gc.collect()

    def errs(c) -> dict:
        return {"loss_rel_err": c.loss_rel, "max_param_rel_err": c.param_rel, "max_param_rel_err_output": c.param_name,
                "max_state_rel_err": c.state_rel, "max_update_rel_err": c.update_rel}

    return {"file": fname, "seed": seed, "point": point,
            "float32_vs_float64": errs(compare(plain, exact, inputs)),
            "float32_with_float64_decisions_vs_float64": errs(compare(pinned, exact, inputs)),
            "flipped_decisions_in_float32": imp.flips, "float64_census": rec64.census,
            "seconds": round(time.perf_counter() - t0, 1),
            "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def _md(results: dict) -> str:
    from olla_onnx.export.manifest import decisions_table

    return ("# float32 vs float64 PyTorch steps: flipped decisions\n\n"
            "From `docs/investigations/float32_decisions/float32_decisions.py` (see its docstring; command per row in the JSON); max relative "
            "error over updated parameters, and in brackets over the step `param_out - param`.\n\n"
            + decisions_table(results) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="FILE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--point", choices=["seeded", "moved", "both"], default="both")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], int(args.one[1]), args.one[2])), flush=True)
        return 0
    if not args.only:
        ap.error("give --only FILE")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    points = ["seeded", "moved"] if args.point == "both" else [args.point]
    for fname in args.only:
        for point in points:
            cmd = [sys.executable, __file__, "--one", fname, str(args.seed), point]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(f"{fname} {point}: failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}", flush=True)
                continue
            res = json.loads(line[len("RESULT "):])
            res["command"] = f"nice python docs/investigations/float32_decisions/float32_decisions.py --only {fname} --seed {args.seed} --point {point}"
            results[f"{fname} seed {args.seed} {point}"] = res
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
            RESULTS.with_suffix(".md").write_text(_md(results))
            print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
