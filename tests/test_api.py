"""The top-level library API: one import, values returned, every order checked by the simulator."""

from pathlib import Path

import olla_onnx
from olla_onnx import load_graph, optimize_model, simulate
from olla_onnx.plan import check_plan

MODEL = Path(__file__).resolve().parents[1] / "models" / "mlp_tiny.onnx"


def test_public_names_resolve():
    for name in olla_onnx.__all__:
        assert getattr(olla_onnx, name) is not None


def test_optimize_model_returns_checked_values():
    loaded = load_graph(MODEL)
    res = optimize_model(loaded, time_limit=1.0)
    # the plan's graph: the model's, with the in-place updates it found applied
    assert simulate(res.graph, list(res.order)).peak == res.peak_optimized
    assert simulate(loaded.graph, list(res.order)).peak == res.peak_optimized_without_inplace
    assert res.inplace and res.peak_optimized < res.peak_optimized_without_inplace
    assert res.lower_bound <= res.peak_optimized <= min(res.peak_input_order, res.peak_ort_default)
    check_plan(res.plan, loaded.graph)
    assert res.arena_bytes >= res.peak_optimized - res.resident_bytes
    report = res.report()
    for key in ("nodes", "resident_bytes", "peak_input_order", "peak_ort_default", "peak_optimized",
                "lower_bound", "optimal", "arena_bytes", "seconds"):
        assert key in report


def test_alignment_padding_is_the_unavoidable_part_of_fragmentation():
    loaded = load_graph(MODEL)
    for alignment in (64, 256):
        res = optimize_model(loaded, time_limit=0.5, alignment=alignment)
        transient = res.peak_optimized - res.resident_bytes
        sizes = [t.size for t in res.graph.tensors.values()]
        assert res.arena_lower_bound >= transient  # every size rounded up to the alignment
        if any(s % alignment for s in sizes if s):
            assert 0.0 <= res.alignment_padding <= res.fragmentation
        assert res.report()["alignment_padding"] == res.alignment_padding
    # mlp_tiny's tensors are small against 256 bytes: padding is most of what is above the peak there
    assert res.alignment_padding > 0.5 * res.fragmentation > 0
