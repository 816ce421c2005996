"""Compare the recorded JSON of two runs of the benchmarks: every figure but timings, row by row.

Usage:
    python benchmarks/compare_runs.py DIR_A DIR_B

Each DIR holds ordering.json, ordering-inplace.json, placement_challenging.json, placement_synthetic.json,
placement_corpus.json and prediction_cpu.json as the benchmarks write them (their --out option). Prints, per
benchmark, how many rows are identical and each field that differs. Anytime searches under a time limit can land
differently from run to run on a loaded machine: compare two runs of the same code to see that noise.
"""
import json, sys
from pathlib import Path
A, B = Path(sys.argv[1]), Path(sys.argv[2])
TIME = ("seconds", "time", "wall", "load", "meta", "rss", "mem_available")
def rows(name, d):
    if name.startswith("ordering"):
        return {r["model"].split("/")[-1]: r for r in d}
    if name == "prediction_cpu":
        return {(r["model"], r["order"]): r for r in d}
    key = {"placement_challenging": "problems", "placement_synthetic": "traces", "placement_corpus": "rows"}[name]
    items = d[key]
    if isinstance(items, dict):
        return items
    out = {}
    for r in items:
        k = tuple(r.get(x) for x in ("model", "name", "problem", "seed", "order", "alignment") if x in r)
        out[k] = r
    return out
for name in ["ordering", "ordering-inplace", "placement_challenging", "placement_synthetic", "placement_corpus", "prediction_cpu"]:
    fa, fb = A / f"{name}.json", B / f"{name}.json"
    if not fa.exists() or not fb.exists():
        print(f"{name}: missing"); continue
    ra, rb = rows(name, json.loads(fa.read_text())), rows(name, json.loads(fb.read_text()))
    same, diffs = 0, []
    for k in sorted(set(ra) | set(rb), key=str):
        if k not in ra or k not in rb:
            diffs.append((k, "missing in one")); continue
        d = [(f, ra[k].get(f), rb[k].get(f)) for f in sorted(set(ra[k]) | set(rb[k]))
             if not any(t in f for t in TIME) and ra[k].get(f) != rb[k].get(f)]
        if d: diffs.append((k, d))
        else: same += 1
    print(f"## {name}: {same} identical, {len(diffs)} differ")
    for k, d in diffs: print("  ", k, str(d)[:300])
