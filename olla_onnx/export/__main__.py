"""``python -m olla_onnx.export``: (re)generate the training-graph corpus in ``models/``.

    python -m olla_onnx.export --all                 # every model, full and tiny
    python -m olla_onnx.export --only gpt2 --only bert
    python -m olla_onnx.export --all --tiny-only     # the fast-test variants only
    python -m olla_onnx.export --all --tiny-only --check-only   # re-check the committed files, no export

Tiny variants are always checked against PyTorch and their PyTorch outputs
saved to ``models/reference/<file>.npz``; full variants are checked with
``--check-full`` or by ``benchmarks/corpus_check.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m olla_onnx.export", description=__doc__.split("\n")[0])
    ap.add_argument("--all", action="store_true", help="export every corpus entry")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="export this entry (repeatable)")
    ap.add_argument("--tiny-only", action="store_true", help="only the tiny variants")
    ap.add_argument("--full-only", action="store_true", help="only the full-size variants")
    ap.add_argument("--check-full", action="store_true", help="also check full-size variants against PyTorch")
    ap.add_argument("--check-only", action="store_true",
                    help="do not export: check the committed .onnx files (tiny: rewrite reference/*.npz)")
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--list", action="store_true", help="list the entries and exit")
    args = ap.parse_args(argv)

    from olla_onnx.export.corpus import BY_NAME, CORPUS

    if args.list:
        for e in CORPUS:
            print(f"{e.name:12s} {e.optimizer.describe():60s} {e.architecture}")
        return 0
    if not args.all and not args.only:
        ap.error("give --all or --only NAME")
    unknown = [n for n in args.only if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {sorted(BY_NAME)}")
    entries = CORPUS if args.all else [BY_NAME[n] for n in args.only]
    variants = [True] if args.tiny_only else [False] if args.full_only else [True, False]

    from olla_onnx.export import build, manifest as corpus_manifest
    from olla_onnx.units import mib

    args.models_dir.mkdir(parents=True, exist_ok=True)
    env = build.environment()
    t_all = time.perf_counter()
    failed = []
    for entry in entries:
        for tiny in variants:
            t0 = time.perf_counter()
            if args.check_only:
                import onnx

                fname = f"{entry.file_name(tiny)}.onnx"
                model = onnx.load(args.models_dir / fname)
                rec = dict(corpus_manifest.load_manifest(args.models_dir)["models"][fname])
                rec.pop("check", None)
            else:
                model, rec = build.export_one(entry, tiny, args.models_dir)
            manifest = corpus_manifest.load_manifest(args.models_dir)  # fresh: another run may have written it
            manifest["environment"] = env
            old = manifest["models"].get(rec["file"], {})
            if tiny or args.check_full:
                rec["check"], ref, moved = build.check_against_torch(entry, tiny, model)
                if tiny:
                    build.save_reference(args.models_dir / "reference" / f"{entry.file_name(tiny)}.npz", ref, moved)
            elif "check" in old and all(old.get(k) == rec[k] for k in ("nodes", "batch", "optimizer")):
                rec["check"] = old["check"]  # same graph size and batch; the recorded full check stays
            manifest["models"][rec["file"]] = rec
            corpus_manifest.save_manifest(args.models_dir, manifest)
            chk = rec.get("check")
            status = "not checked" if chk is None else ("check ok" if chk["ok"] else "CHECK FAILED")
            if chk is not None and not (tiny or args.check_full):
                status = "recorded check " + ("ok" if chk["ok"] else "failed")
            if chk is not None and not chk["ok"] and (tiny or args.check_full):  # checked in this run
                failed.append(rec["file"])
            print(f"{rec['file']:28s} {rec['nodes']:6d} nodes  {mib(rec['parameter_bytes'], '8.1f')} MiB params  "
                  f"{status}  {time.perf_counter() - t0:6.1f} s", flush=True)
    print(f"done in {time.perf_counter() - t_all:.1f} s", flush=True)
    if failed:
        print(f"numerical check failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
