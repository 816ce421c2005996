"""The decision-margin test point (olla_onnx.export.testpoint) against brute force."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from olla_onnx.export.testpoint import (  # noqa: E402
    decision_margin_point, measure_point, pool_near_ties, widest_gap_shift)


def _margin(values: np.ndarray, kinks, d: float) -> float:
    return float(min(np.abs(values + d - k).min() for k in kinks))


@pytest.mark.parametrize("seed", range(40))
def test_widest_gap_shift_is_the_best_shift_on_a_fine_grid(seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(int(rng.integers(1, 60)))
    kinks = (0.0,) if seed % 2 else (0.0, float(rng.uniform(0.5, 2.0)))
    window = float(rng.uniform(0.01, 0.5))
    d, margin = widest_gap_shift(values, kinks, window)
    assert -window <= d <= window
    assert margin == pytest.approx(_margin(values, kinks, d), abs=1e-12)
    grid = np.linspace(-window, window, 4001)
    best = max(_margin(values, kinks, g) for g in grid)
    assert margin >= best - 1e-12  # the grid cannot beat the exact gap search


@pytest.mark.parametrize("seed", range(40))
def test_widest_gap_shift_takes_the_least_shift_that_is_enough(seed):
    rng = np.random.default_rng(100 + seed)
    values = rng.standard_normal(int(rng.integers(1, 80)))
    kinks = (0.0,) if seed % 2 else (0.0, 1.0)
    window, enough = 0.3, float(rng.uniform(0.001, 0.05))
    d, margin = widest_gap_shift(values, kinks, window, enough)
    grid = np.linspace(-window, window, 6001)
    ok = [g for g in grid if _margin(values, kinks, g) >= enough]
    if ok:
        assert margin >= enough * (1 - 1e-9) and abs(d) <= min(abs(g) for g in ok) + 1e-12
    else:
        assert margin == pytest.approx(widest_gap_shift(values, kinks, window)[1])


def test_widest_gap_shift_leaves_a_clear_point_alone():
    d, margin = widest_gap_shift(np.array([-1.0, 1.0]), (0.0,), 0.1)
    assert d == 0.0 and margin == 1.0


def _brute_ties(x: np.ndarray, k: int, s: int, p: int, tau: float):
    n_, c_, h_, w_ = x.shape
    scale = np.abs(x).max()
    ties, min_gap = set(), np.inf
    for n in range(n_):
        for c in range(c_):
            for oh in range((h_ + 2 * p - k) // s + 1):
                for ow in range((w_ + 2 * p - k) // s + 1):
                    cells = [(x[n, c, h, w], (c * h_ + h) * w_ + w)
                             for h in range(oh * s - p, oh * s - p + k) for w in range(ow * s - p, ow * s - p + k)
                             if 0 <= h < h_ and 0 <= w < w_]
                    cells.sort(key=lambda t: -t[0])
                    if cells[0][0] <= 0:
                        continue
                    gap = (cells[0][0] - cells[1][0]) / scale
                    min_gap = min(min_gap, gap)
                    if gap < tau:
                        ties.add((n, cells[0][1], cells[1][1]))
    return ties, min_gap


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 0)])
def test_pool_near_ties_equal_brute_force(k, s, p):
    rng = np.random.default_rng(k * 10 + s + p)
    x = np.maximum(rng.standard_normal((2, 3, 7, 7)), 0.0)
    # plant near ties: copy a value next to itself with a tiny difference
    for n, c, h, w in [(0, 0, 2, 2), (1, 2, 4, 3), (0, 1, 5, 5)]:
        x[n, c, h, w] = 5.0 + rng.uniform()
        x[n, c, h, w + 1] = x[n, c, h, w] - 1e-9
    ties, min_gap = pool_near_ties(torch.from_numpy(x), k, s, p, 1e-6)
    want, want_gap = _brute_ties(x, k, s, p, 1e-6)
    assert {(n, a, b) for n, a, b in ties} == want and want
    assert min_gap == pytest.approx(want_gap, abs=1e-15)


def _cnn_margins(make, point):
    """Min ReLU margin (|input| / channel std) and min max-pool top-2 gap of SmallCNN at ``point``,
    read by forward hooks on the batch norms (the ReLU inputs) and a brute-force pool scan."""
    m = make().double().train()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(torch.from_numpy(point[f"param.{n}"].astype(np.float64)))
    seen = {}
    for name in ("bn1", "bn2"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o.detach().numpy()))
    with torch.no_grad():
        m(torch.from_numpy(point["batch.input"].astype(np.float64)))
    margins, gaps = [], []
    for out in seen.values():
        per_channel = out.transpose(1, 0, 2, 3).reshape(out.shape[1], -1)
        margins += list(np.abs(per_channel).min(axis=1) / per_channel.std(axis=1))
        gaps.append(_brute_ties(np.maximum(out, 0), 2, 2, 0, 0.0)[1])
    return min(margins), min(gaps)


def test_point_on_a_small_cnn_has_the_margins_it_records():
    from olla_onnx.export.nets import SmallCNN

    def make():
        return SmallCNN((4, 8), 10, 8)

    rng = np.random.default_rng(3)
    module = make()
    seeded = {f"param.{n}": (rng.standard_normal(p.shape) * 0.3).astype(np.float32) for n, p in module.named_parameters()}
    seeded["batch.input"] = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    seeded["batch.input"][0, :, 1:7, 1:7] = 0.5  # a flat patch: exact ties in the first max-pool
    assert _cnn_margins(make, seeded)[1] == 0.0
    moved, rec = decision_margin_point(make, seeded)
    assert rec["tie_rounds"] >= 1 and rec["pool_near_ties_left"] == 0
    changed = {k for k in seeded if not np.array_equal(seeded[k], moved[k])}
    assert "batch.input" in changed and changed <= {"param.bn1.bias", "param.bn2.bias", "batch.input"}
    assert 0 < rec["max_input_shift"] < 1e-3 and rec["max_bias_shift"] < 0.2
    relu_margin, pool_gap = _cnn_margins(make, moved)
    assert relu_margin == pytest.approx(rec["relu_min_margin"], rel=1e-6) and relu_margin > 9e-4
    assert pool_gap == pytest.approx(rec["pool_min_gap"], rel=1e-6) and pool_gap >= 1e-5


def test_tiled_test_point_gives_the_small_batch_step():
    """A variant with ``test_point_batch`` gets the small-batch point tiled (build.check_inputs): with
    batch statistics and a mean loss the tiled step is the small-batch step, margins included."""
    import dataclasses
    from pathlib import Path

    import onnx

    from olla_onnx.export.build import check_inputs
    from olla_onnx.export.corpus import BY_NAME, reference_step

    entry = BY_NAME["unet"]
    small = onnx.load(Path(__file__).resolve().parent.parent / "models" / "unet_tiny.onnx")
    b = entry.tiny.input_shape[0]
    big = onnx.ModelProto()
    big.CopyFrom(small)
    for vi in big.graph.input:
        if vi.name.startswith("batch."):
            vi.type.tensor_type.shape.dim[0].dim_value = 3 * b
    tiled = dataclasses.replace(entry.tiny, input_shape=(3 * b,) + entry.tiny.input_shape[1:],
                                target_shape=(3 * b,) + entry.tiny.target_shape[1:], test_point_batch=b)
    tiled_entry = dataclasses.replace(entry, tiny=tiled)
    p_small, moved_small, rec_small = check_inputs(entry, True, small)
    p_big, moved_big, rec_big = check_inputs(tiled_entry, True, big)
    assert moved_small and set(moved_big) == set(moved_small) | {"batch.input", "batch.target"}
    for k, v in p_small.items():
        want = np.concatenate([v] * 3) if k.startswith("batch.") else v
        assert np.array_equal(p_big[k], want), k
    assert rec_big["tiled"]["copies"] == 3 and rec_big["tiled"]["test_point_batch"] == b
    # the record carries the small-batch margins; measured at the tiled point they are the same
    measured = measure_point(tiled.make, p_big)
    assert measured["relu_min_margin"] == pytest.approx(rec_small["relu_min_margin"], rel=1e-6)
    assert measured["pool_min_gap"] == pytest.approx(rec_small["pool_min_gap"], rel=1e-6)
    assert measured["pool_near_ties_left"] == rec_small["pool_near_ties_left"] == 0
    assert rec_big["relu_min_margin"] == rec_small["relu_min_margin"]
    # the step itself: same loss, same updated parameters and state (float64: no rounding to hide behind)
    s_small = reference_step(entry, entry.tiny, p_small, dtype=torch.float64)
    s_big = reference_step(tiled_entry, tiled, p_big, dtype=torch.float64)
    assert set(s_small) == set(s_big)
    for k, v in s_small.items():
        assert np.allclose(s_big[k], v, rtol=1e-9, atol=1e-12 * max(1.0, float(np.max(np.abs(v))))), k
    moved = max(float(np.max(np.abs(s_small[k] - p_small[k.replace("param_out.", "param.")])))
                for k in s_small if k.startswith("param_out."))
    assert moved > 1e-6  # the step changed something
