"""The whole pipeline over a set of models: inspect, optimize, place, run; one row per model.

Every figure in a row comes from the same code the commands use; nothing is
copied from elsewhere. Rows are plain dicts so they go to JSON and markdown
alike.

Each model is optimized twice: *order only* (``--no-inplace``: the order
search and plan as before) and *order + in-place* (the default of `optimize`:
updated parameters and optimizer state written into their inputs' buffers,
:mod:`olla_onnx.passes.inplace`). The table shows both side by side; the plots and the
order-only columns come from the first, the in-place columns from the second.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from olla_onnx.units import mib


def bench_model(
    path: Path,
    time_limit: float,
    run: bool,
    dims: dict[str, int] | None = None,
    plot_dir: Path | None = None,
    run_limit_bytes: int = 2 << 30,
    inplace: bool = True,
) -> dict[str, Any]:
    """One row: sizes, stock-order peaks, optimized peak, bound, arena, times, measured peaks;
    with ``inplace``, the same for order + in-place updates (keys ending in ``_inplace``).

    With ``plot_dir``, also draws ``<plot_dir>/<model>.png`` from the order-only result."""
    from olla_onnx.formats import load_graph
    from olla_onnx.optimize import optimize_model

    t0 = time.perf_counter()
    loaded = load_graph(path, dims=dims)
    res = optimize_model(loaded, time_limit=time_limit, inplace=False)
    ipr = optimize_model(loaded, time_limit=time_limit) if inplace else None
    row: dict[str, Any] = {
        "model": path.stem,
        "nodes": res.nodes,
        "resident_bytes": res.resident_bytes,
        "peak_input_order": res.peak_input_order,
        "peak_ort_default": res.peak_ort_default,
        "peak_optimized": res.peak_optimized,
        "lower_bound": res.lower_bound,
        "gap": (res.peak_optimized - res.lower_bound) / res.lower_bound if res.lower_bound else 0.0,
        "optimal": res.optimal,
        "method": res.method,
        "arena_bytes": res.arena_bytes,
        "fragmentation": res.fragmentation,
        "order_seconds": round(res.order_seconds, 2),
        "place_seconds": round(res.place_seconds, 2),
        "seconds": round(res.seconds, 2),
    }
    base = row["peak_ort_default"] if row["peak_ort_default"] is not None else row["peak_input_order"]
    transient_base = base - res.resident_bytes
    row["transient_saving_vs_ort"] = transient_saving(transient_base, res.peak_optimized - res.resident_bytes)
    # The most any order can save: no order peaks below the sound lower bound.
    row["transient_saving_bound"] = transient_saving(transient_base, res.lower_bound - res.resident_bytes)
    if ipr is not None:
        row.update({
            "inplace_pairs": len(ipr.inplace),
            "inplace_bytes": ipr.inplace_bytes,
            "peak_inplace": ipr.peak_optimized,
            "lower_bound_inplace": ipr.lower_bound,
            "optimal_inplace": ipr.optimal,
            "arena_bytes_inplace": ipr.arena_bytes,
            "order_seconds_inplace": round(ipr.order_seconds, 2),
            "transient_saving_vs_ort_inplace": transient_saving(transient_base, ipr.peak_optimized - ipr.resident_bytes),
            "transient_saving_bound_inplace": transient_saving(transient_base, ipr.lower_bound - ipr.resident_bytes),
        })
    if plot_dir is not None:
        _draw(loaded, res, plot_dir / f"{path.stem}.png")
    if run and loaded.runs_in_onnxruntime:
        if res.peak_ort_default is not None and res.peak_ort_default > run_limit_bytes:
            row["run_error"] = f"not run: predicted peak above {mib(run_limit_bytes, ',.0f')} MiB (--run-limit-mib)"
        else:
            row.update(_measure(loaded, res))
            if ipr is not None and ipr.inplace:
                m = _measure(loaded, ipr)
                plain_keys = ("inplace_equals_plain", "inplace_max_abs_diff")
                row.update({f"{k}_inplace": v for k, v in m.items() if k != "peak_ort_default_bytes" and k not in plain_keys})
                row.update({k: m[k] for k in plain_keys if k in m})
    row["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return row


def transient_saving(base_transient: int, transient: int) -> float:
    """Fraction of ``base_transient`` bytes saved by peaking at ``transient`` (0 when there is nothing to save)."""
    return (base_transient - transient) / base_transient if base_transient > 0 else 0.0


def _draw(loaded, res, out: Path) -> None:
    from olla_onnx.plot import plot_memory

    stock = loaded.stock_orders()
    orders = {"input order (file)": stock["input_order"]}
    if "ort_default" in stock:
        orders["onnxruntime default order"] = stock["ort_default"]
    orders["optimized order (olla-onnx)"] = list(res.order)
    plot_memory(loaded.graph, orders, res.plan, out, title=f"{out.stem}: live memory per step")


def _measure(loaded, res) -> dict[str, Any]:
    """Measured onnxruntime peaks: the default session, and the optimized file served from its plan."""
    import tempfile

    from olla_onnx.optimize import write_outputs
    from olla_onnx.run import run_model

    try:
        with tempfile.TemporaryDirectory() as tmp:
            out, plan = Path(tmp) / "opt.onnx", Path(tmp) / "plan.json"
            write_outputs(loaded, res, out, plan)
            m = run_model(out, plan).report()
    except Exception as exc:  # keep the other rows: a failed measurement is reported, not hidden
        return {"run_error": f"{type(exc).__name__}: {exc}"}
    keys = ("peak_ort_default_bytes", "peak_planned_bytes", "outputs_equal", "max_abs_diff", "max_rel_diff",
            "fallbacks", "prediction_error", "planned_equals_unplanned", "ort_run_to_run_variation", "step_time_ratio")
    out = {k: m.get(k) for k in keys}
    if m.get("inplace_pairs"):
        out["inplace_equals_plain"] = m.get("inplace_equals_plain")
        out["inplace_max_abs_diff"] = m.get("inplace_max_abs_diff")
        out["inplace_verdict"] = m.get("inplace_verdict")
    return out


def bench(
    paths: Sequence[Path],
    time_limit: float = 6.0,
    run: bool = True,
    progress: Callable[[str, int], None] | None = None,
    plot_dir: Path | None = None,
    run_limit_bytes: int = 2 << 30,
    inplace: bool = True,
) -> list[dict[str, Any]]:
    """Rows for every model in ``paths``, in order; a model that fails gives a row with its error."""
    rows = []
    for i, p in enumerate(paths):
        if progress:
            progress(p.stem, i)
        try:
            rows.append(bench_model(p, time_limit, run, plot_dir=plot_dir, run_limit_bytes=run_limit_bytes, inplace=inplace))
        except Exception as exc:
            rows.append({"model": p.stem, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def corpus_models(models_dir: Path) -> list[Path]:
    """The models ``bench`` runs when none are given: every full-size ``*.onnx`` in ``models_dir``
    (``*_tiny`` left out), sorted. A folder that does not exist is an :class:`~olla_onnx.errors.OllaInputError`."""
    from olla_onnx.errors import OllaInputError

    if not models_dir.is_dir():
        raise OllaInputError(f"models folder {models_dir} does not exist: give --models-dir DIR, or models as arguments")
    return sorted(p for p in models_dir.glob("*.onnx") if not p.stem.endswith("_tiny"))


def _mib(b: Any) -> str:
    return "" if b is None else mib(b)


def _equal(r: dict[str, Any]) -> str:
    if "outputs_equal" not in r:
        return r.get("run_error", "")
    text = "equal" if r["outputs_equal"] else f"differ by {r.get('max_rel_diff') or 0:.1e} (normwise)"
    if not r["outputs_equal"] and r.get("ort_run_to_run_variation") is not None:
        text += f"; onnxruntime's own run-to-run variation {r['ort_run_to_run_variation']:.1e}"
    if r.get("inplace_equals_plain") is True:
        text += "; in-place run = plain planned run (bitwise)"
    elif r.get("inplace_equals_plain") is False:
        real = r.get("inplace_verdict") in (None, "beyond")
        text += (f"; in-place run {'DIFFERS from' if real else 'differs from'} the plain planned run by "
                 f"{r.get('inplace_max_abs_diff') or 0:.3g}" + ("" if real else ", as onnxruntime's own variation explains"))
    return text


def _pairs(r: dict[str, Any]) -> str:
    if "inplace_pairs" not in r:
        return ""
    return f"{_mib(r['inplace_bytes'])} ({r['inplace_pairs']})"


def _avg(rows: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return f"{sum(vals) / len(vals):.1%} (over {len(vals)})" if vals else "unknown"


def _pct(x: Any) -> str:
    return "" if x is None else f"{x:.1%}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table (MiB; peaks include resident bytes): order only, then order + in-place."""
    head = (
        "| model | nodes | resident MiB | peak, file order | peak, onnxruntime default order | optimized peak |"
        " lower bound | gap | proven optimal | transient saving vs ORT default | most saving any order can give |"
        " in-place MiB (pairs) | peak, order + in-place | lower bound, in-place | proven, in-place |"
        " transient saving vs ORT default, order + in-place | most saving, order + in-place |"
        " arena MiB | fragmentation | order s | place s | measured ORT default MiB | measured planned MiB |"
        " measured planned + in-place MiB | outputs vs default session |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |" + " |" * 23)
            continue
        lines.append(
            "| {model} | {nodes:,} | {res} | {pin} | {port} | {popt} | {lb} | {gap:.3%} | {opt} | {sav:.1%} | {savb} |"
            " {pairs} | {pip} | {lbip} | {optip} | {savip} | {savbip} | {arena} |"
            " {frag:.2%} | {osecs:.1f} | {psecs:.1f} | {mdef} | {mplan} | {mip} | {eq} |".format(
                model=r["model"],
                nodes=r["nodes"],
                res=_mib(r["resident_bytes"]),
                pin=_mib(r["peak_input_order"]),
                port=_mib(r["peak_ort_default"]),
                popt=_mib(r["peak_optimized"]),
                lb=_mib(r["lower_bound"]),
                gap=r["gap"],
                opt="yes" if r["optimal"] else "no",
                sav=r["transient_saving_vs_ort"],
                savb=_pct(r.get("transient_saving_bound")),
                pairs=_pairs(r),
                pip=_mib(r.get("peak_inplace")),
                lbip=_mib(r.get("lower_bound_inplace")),
                optip="" if "optimal_inplace" not in r else ("yes" if r["optimal_inplace"] else "no"),
                savip=_pct(r.get("transient_saving_vs_ort_inplace")),
                savbip=_pct(r.get("transient_saving_bound_inplace")),
                arena=_mib(r["arena_bytes"]),
                frag=r["fragmentation"],
                osecs=r["order_seconds"],
                psecs=r["place_seconds"],
                mdef=_mib(r.get("peak_ort_default_bytes")),
                mplan=_mib(r.get("peak_planned_bytes")),
                mip=_mib(r.get("peak_planned_bytes_inplace")),
                eq=_equal(r),
            )
        )
    ok = [r for r in rows if "error" not in r]
    if ok:
        avg = sum(r["transient_saving_vs_ort"] for r in ok) / len(ok)
        secs = [r["order_seconds"] for r in ok]
        lines.append("")
        lines.append(
            f"Average transient saving against onnxruntime's default order: {avg:.1%} over {len(ok)} models; "
            f"order search median {statistics.median(secs):.1f} s, max {max(secs):.1f} s; "
            f"proven optimal: {sum(bool(r['optimal']) for r in ok)} of {len(ok)}. "
            f"No order can save more than the lower bound allows: {_avg(ok, 'transient_saving_bound')} on average."
        )
        ip = [r for r in ok if "transient_saving_vs_ort_inplace" in r]
        if ip:
            avg_ip = sum(r["transient_saving_vs_ort_inplace"] for r in ip) / len(ip)
            lines.append("")
            lines.append(
                f"With in-place updates (order + in-place): average transient saving against onnxruntime's default "
                f"order {avg_ip:.1%} over {len(ip)} models; proven optimal (every pair in place): "
                f"{sum(bool(r['optimal_inplace']) for r in ip)} of {len(ip)}; the lower bounds allow at most "
                f"{_avg(ip, 'transient_saving_bound_inplace')} on average."
            )
    return "\n".join(lines) + "\n"
