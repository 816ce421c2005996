"""A test point at which a float32 training step is a faithful computation: every decision has a margin.

Why: a ReLU network's step is not a continuous function of rounding. With
~1e8 ReLU inputs some lie within float32 rounding (1e-7..1e-6 relative) of
zero, and two correct float32 implementations put a few of them on different
sides of the kink; likewise a max-pool window whose two largest values are
within rounding of each other sends the gradient to a different element.
Each such flipped decision changes a weight gradient by ~1/sqrt(batch x
positions) -- percent level at batch 32 -- so at the plain seeded point
PyTorch float32 misses PyTorch float64 by 2.5e-4 (ResNet-18) to 9e-3
(ResNet-50) in updated parameters, exactly as far as onnxruntime misses
PyTorch. Taking the float64 step's ReLU decisions in the float32 step
removes all of it (ResNet-18: 2.5e-4 -> 6e-7; see models/README.md).

:func:`decision_margin_point` moves the seeded point (``compare.make_inputs``)
by a small, documented amount so that no decision is within rounding:

- every ReLU / ReLU6 (hardtanh) input: the bias of the last module with a
  per-channel bias that ran before it (the batch norm, convolution or linear
  layer whose output the ReLU reads, directly or through a residual add)
  is shifted per channel by the least amount that puts every value at least
  ``RELU_TARGET`` (1e-3) channel standard deviations from the kink(s); where
  no shift within ``window`` (0.05 std) does, to the middle of the widest gap
  the channel's values leave around the kink within that window (full-size
  batches: ~1e5 values a channel, margins of a few 1e-5 std);
- every max-pool window with a positive maximum: where the two largest
  values are closer than ``pool_tau`` (1e-5) x max|input|, and every ReLU
  input that is then closer than ``RELU_FLOOR`` (1e-5) std to its kink, the
  float image batch is moved along the gradient of those gaps (first order,
  float64, batch statistics held, bias shifts frozen), round after round,
  keeping the best batch, until none is left or two rounds bring no progress
  (a perturbation of ~1e-4 on N(0,1) pixels).

Both are computed in float64 PyTorch and then rounded to float32; a last
float64 pass over the rounded point measures what is recorded
(``relu_min_margin``: min |input - kink| / channel std; ``pool_min_gap``: min
top-2 gap / max|input| over windows with a positive maximum;
``pool_near_ties_left``, ``relu_inputs_below_floor``). Models without ReLUs or
max-pools (the transformers) keep the seeded point unchanged. Cost: three
float64 forward passes plus, per round, one forward and a chunked input
gradient (U-Net at batch 8: ~16 min on the shared 2-core machine, ~6.5 GiB RSS;
ResNet-50: ~3 min). Memory and time grow about linearly with the batch.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RELU_WINDOW = 0.05  # max bias shift, in units of the channel's std
RELU_TARGET = 1e-3  # margin (in channel stds) that is enough: ~100x the float32 forward error
RELU_FLOOR = 1e-5  # ReLU inputs closer than this (in channel stds) to a kink are pushed away via the images
POOL_TAU = 1e-5  # top-2 gaps below this x max|input| are broken
MAX_ROUNDS = 8
CHUNK = 4  # samples per chunk in the input-gradient pass


def widest_gap_shift(values: np.ndarray, kinks: tuple[float, ...], window: float,
                     enough: float = float("inf")) -> tuple[float, float]:
    """A shift ``d`` in ``[-window, window]`` for which ``min |values + d - k|`` over ``kinks`` is large.

    Returns ``(d, margin)``: the smallest ``|d|`` whose margin reaches ``enough``
    if there is one, else the ``d`` of the largest margin (the smallest ``|d|``
    among equal ones). Exact: the margin is the distance from ``d`` to the
    nearest "hit" ``k - value``, a piecewise-linear function whose maxima over
    the window are at its ends or at midpoints of consecutive hits, and whose
    level set ``margin >= enough`` is a union of intervals ending ``enough``
    away from hits. Cost: O(n) plus sorting the hits within ``2 window`` of zero.
    """
    hits = np.concatenate([k - np.asarray(values, dtype=np.float64) for k in kinks])
    inner = np.abs(hits) < 2 * window
    outer = hits[~inner]
    # beyond the nearest outer hit on each side no hit can be nearest to a d in the window
    pts = list(hits[inner])
    if (outer > 0).any():
        pts.append(float(outer[outer > 0].min()))
    if (outer < 0).any():
        pts.append(float(outer[outer < 0].max()))
    pts = np.sort(np.asarray(pts, dtype=np.float64))
    if pts.size == 0:
        return 0.0, float("inf")
    cand = np.concatenate([[0.0, -window, window], np.clip((pts[:-1] + pts[1:]) / 2, -window, window)])
    if np.isfinite(enough):  # the ends of the "margin >= enough" intervals nearest to zero
        cand = np.concatenate([cand, np.clip(np.concatenate([pts - enough, pts + enough]), -window, window)])
    idx = np.searchsorted(pts, cand)
    left = pts[np.clip(idx - 1, 0, pts.size - 1)]
    right = pts[np.clip(idx, 0, pts.size - 1)]
    margin = np.minimum(np.abs(cand - left), np.abs(cand - right))
    ok = margin >= enough * (1 - 1e-12)
    if ok.any():
        i = np.flatnonzero(ok)
        best = int(i[np.argmin(np.abs(cand[i]))])
    else:
        best = int(np.lexsort((np.abs(cand), -margin))[0])
    return float(cand[best]), float(margin[best])


def pool_near_ties(x: torch.Tensor, kernel, stride, padding, tau: float) -> tuple[list[tuple[int, int, int]], float]:
    """Windows of ``max_pool2d(x, kernel, stride, padding)`` with a positive maximum whose top-2 gap is
    below ``tau * max|x|``: ``(sample, flat index of the max, flat index of the runner-up)`` (indices
    within the sample), and the smallest relative gap over all windows with a positive maximum."""
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    s = k if stride is None or stride == [] else ((stride, stride) if isinstance(stride, int) else tuple(stride))
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    n_, c_, h_, w_ = x.shape
    scale = float(x.detach().abs().max()) or 1.0
    xp = F.pad(x.detach(), (p[1], p[1], p[0], p[0]), value=float("-inf"))
    wo = (w_ + 2 * p[1] - k[1]) // s[1] + 1
    ties, min_gap = [], float("inf")
    for n in range(n_):
        u = F.unfold(xp[n:n + 1].reshape(c_, 1, *xp.shape[2:]), k, stride=s)  # [C, k*k, windows]
        top = u.topk(2, dim=1)
        gap = (top.values[:, 0] - top.values[:, 1]) / scale
        pos = top.values[:, 0] > 0
        if bool(pos.any()):
            min_gap = min(min_gap, float(gap[pos].min()))
        for c, l in ((gap < tau) & pos).nonzero().tolist():
            oh, ow = divmod(l, wo)
            flat = []
            for t in (0, 1):
                kh, kw = divmod(int(top.indices[c, t, l]), k[1])
                flat.append((c * h_ + oh * s[0] + kh - p[0]) * w_ + ow * s[1] + kw - p[1])
            ties.append((n, flat[0], flat[1]))
    return ties, min_gap


class _Stop(Exception):
    pass


class _Pass:
    """One float64 forward of the module with ReLU, hardtanh, max-pool and batch norm intercepted."""

    def __init__(self, module: nn.Module, mode: str, tau: float, window: float,
                 bn_stats: list | None = None, tie_lists: list | None = None, stop_after_pool: int | None = None,
                 risk_lists: list | None = None):
        self.module, self.mode, self.tau, self.window = module, mode, tau, window
        self.names = {m: n for n, m in module.named_modules()}
        self.last: list[nn.Module | None] = [None]
        self.deltas: dict[str, np.ndarray] = {}
        self.relu_margins: list[float] = []
        self.ties: list[list[tuple[int, int, int]]] = []
        self.pool_gaps: list[float] = []
        self.bn_stats = bn_stats if bn_stats is not None else []
        self.record_bn = bn_stats is None
        self.bn_i = 0
        self.tie_lists = tie_lists
        self.pool_i = 0
        self.stop_after_pool = stop_after_pool
        self.gaps: list[torch.Tensor] = []  # differentiable relative gaps (mode "grad")
        self.chunk0 = 0
        # ReLU inputs within RELU_FLOOR std of a kink, per ReLU call: (sample, flat index, side, kink, std)
        self.risks: list[tuple[np.ndarray, ...]] = []
        self.risk_lists = risk_lists
        self.relu_i = 0

    def _risks(self, xt: np.ndarray, sd: np.ndarray, kinks: tuple[float, ...], shape: tuple[int, ...]) -> None:
        per_sample = int(np.prod(shape[2:], dtype=np.int64))
        found = []
        for k in kinks:
            j, m = np.nonzero(np.abs(xt - k) < RELU_FLOOR * sd[:, None])
            side = np.sign(xt[j, m] - k)
            side[side == 0] = 1.0
            found.append((m // per_sample, j * per_sample + m % per_sample, side, np.full(j.size, k), sd[j]))
        self.risks.append(tuple(np.concatenate(parts) for parts in zip(*found)))

    def _decide(self, x: torch.Tensor, kinks: tuple[float, ...]) -> torch.Tensor:
        mod = self.last[0]
        c = x.shape[1]
        if mod is None or mod.bias is None or tuple(mod.bias.shape) != (c,):
            raise RuntimeError(f"no per-channel bias feeds the ReLU on {tuple(x.shape)}")
        i = self.relu_i
        self.relu_i += 1
        if self.mode == "grad":  # distances of the at-risk inputs from their kinks, pushed outwards
            n, flat, side, kink, sd = self.risk_lists[i]
            mine = (n >= self.chunk0) & (n < self.chunk0 + x.shape[0])
            if mine.any():
                t = (lambda a: torch.from_numpy(a[mine]))
                val = x.flatten(1)[t(n) - self.chunk0, t(flat)]
                self.gaps.append((t(side) * (val - t(kink)) / t(sd)).sum() * (self.tau / RELU_FLOOR))
            return x
        xt = x.detach().transpose(0, 1).reshape(c, -1).numpy()
        sd = xt.std(axis=1)
        sd[sd == 0] = 1.0
        if self.mode == "measure":
            for j in range(c):
                self.relu_margins.append(float(min(np.abs(xt[j] - k).min() for k in kinks) / sd[j]))
            self._risks(xt, sd, kinks, tuple(x.shape))
            return x
        d = np.zeros(c)
        for j in range(c):
            d[j], margin = widest_gap_shift(xt[j], kinks, self.window * sd[j], RELU_TARGET * sd[j])
            self.relu_margins.append(margin / sd[j])
        self._risks(xt + d[:, None], sd, kinks, tuple(x.shape))
        key = self.names[mod] + ".bias"
        self.deltas[key] = self.deltas.get(key, 0.0) + d
        with torch.no_grad():
            mod.bias += torch.from_numpy(d).to(mod.bias.dtype)
        return x + torch.from_numpy(d).to(x.dtype).view([1, c] + [1] * (x.dim() - 2))

    @contextmanager
    def active(self) -> Iterator[None]:
        relu, hardtanh, max_pool2d, batch_norm = F.relu, F.hardtanh, F.max_pool2d, F.batch_norm
        hooks = [m.register_forward_hook(lambda m, i, o: self.last.__setitem__(0, m))
                 for m in self.module.modules() if isinstance(getattr(m, "bias", None), nn.Parameter)]

        def p_relu(x, inplace=False):
            return relu(self._decide(x, (0.0,)))

        def p_hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
            return hardtanh(self._decide(x, (min_val, max_val)), min_val, max_val)

        def p_max_pool2d(x, kernel_size, stride=None, padding=0, *args, **kwargs):
            i = self.pool_i
            self.pool_i += 1
            if self.mode == "grad":
                mine = [t for t in self.tie_lists[i] if self.chunk0 <= t[0] < self.chunk0 + x.shape[0]]
                if mine:  # one gather for all of this call's ties (one indexing op per tie is O(ties x size))
                    n, a, b = (torch.tensor(v) for v in zip(*mine))
                    flat = x.flatten(1)
                    scale = float(x.detach().abs().max()) or 1.0
                    self.gaps.append((flat[n - self.chunk0, a] - flat[n - self.chunk0, b]).sum() / scale)
            else:
                ties, gap = pool_near_ties(x, kernel_size, stride, padding, self.tau)
                self.ties.append(ties)
                self.pool_gaps.append(gap)
            out = max_pool2d(x, kernel_size, stride, padding, *args, **kwargs)
            if self.stop_after_pool is not None and i >= self.stop_after_pool:
                raise _Stop
            return out

        def p_batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
                         momentum=0.1, eps=1e-5):
            if running_mean is not None or not training:
                return batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
            if self.record_bn:
                dims = [0] + list(range(2, x.dim()))
                xd = x.detach()
                self.bn_stats.append((xd.mean(dims), xd.var(dims, unbiased=False)))
                return batch_norm(x, None, None, weight, bias, True, momentum, eps)
            mean, var = self.bn_stats[self.bn_i]
            self.bn_i += 1
            return batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

        F.relu, F.hardtanh, F.max_pool2d, F.batch_norm = p_relu, p_hardtanh, p_max_pool2d, p_batch_norm
        try:
            yield
        finally:
            F.relu, F.hardtanh, F.max_pool2d, F.batch_norm = relu, hardtanh, max_pool2d, batch_norm
            for h in hooks:
                h.remove()


def decision_margin_point(make_module: Callable[[], nn.Module], inputs: dict[str, np.ndarray],
                          window: float = RELU_WINDOW, pool_tau: float = POOL_TAU,
                          max_rounds: int = MAX_ROUNDS) -> tuple[dict[str, np.ndarray], dict]:
    """The inputs moved to a point where every ReLU and max-pool decision has a margin (module docstring).

    ``make_module()`` builds the module (any dtype; it is moved to float64);
    ``inputs`` are named as the graph's inputs. Returns the new inputs (only
    ``param.*.bias`` entries and a float ``batch.input`` can change) and a
    record: margins measured at the returned float32 point, the number of
    shifted biases, the largest shifts, rounds and seconds.
    """
    t0 = time.perf_counter()
    image = inputs["batch.input"].dtype == np.float32
    x_in = torch.from_numpy(inputs["batch.input"].astype(np.float64)) if image else torch.from_numpy(inputs["batch.input"])

    # 1. ReLU margins: one pass over the whole forward; the shifts stay fixed from here on (moving
    #    them again would move every value behind them, and so every max-pool gap there)
    pas = _Pass(_float64_module(make_module, inputs), "nudge", pool_tau, window)
    _forward(pas, x_in)
    if not pas.ties and not pas.deltas:
        return dict(inputs), {"decisions": 0, "seconds": round(time.perf_counter() - t0, 1)}
    deltas, module, stats, ties, risks = pas.deltas, pas.module, pas.bn_stats, pas.ties, pas.risks
    n_pools = len(ties)
    del pas
    # 2. max-pool near ties, and ReLU inputs the image moves below RELU_FLOOR: move the image batch
    #    along the gradient of those gaps (first order, batch statistics held), keep the best batch,
    #    stop when no round helps twice
    rounds, stall, best = 0, 0, (float("inf"), x_in)
    while True:
        n_ties = sum(len(t) for t in ties) + sum(len(r[0]) for r in risks)
        if n_ties < best[0]:
            best, stall = (n_ties, x_in), 0
        else:
            stall += 1
        if n_ties == 0 or not image or rounds >= max_rounds or stall >= 2:
            break
        last_pool = n_pools - 1
        grad = torch.zeros_like(x_in)
        samples = sorted({n for t in ties for n, _, _ in t} | {int(n) for r in risks for n in r[0]})
        for c0 in range(0, x_in.shape[0], CHUNK):
            if not any(c0 <= n < c0 + CHUNK for n in samples):
                continue
            g = _Pass(module, "grad", pool_tau, window, bn_stats=stats, tie_lists=ties, risk_lists=risks,
                      stop_after_pool=last_pool if not any(len(r[0]) for r in risks) else None)
            g.chunk0 = c0
            xc = x_in[c0:c0 + CHUNK].clone().requires_grad_()
            _forward(g, xc, grad=True)
            if g.gaps:
                (gx,) = torch.autograd.grad(sum(g.gaps), xc)
                grad[c0:c0 + CHUNK] = gx
        # each gap grows by about step * |d gap/dx|^2; aim at 4 tau for every one
        x_in = x_in + (4 * pool_tau * n_ties / float((grad * grad).sum())) * grad
        rounds += 1
        det = _Pass(module, "measure", pool_tau, window)
        _forward(det, x_in)
        stats, ties, risks = det.bn_stats, det.ties, det.risks
        del grad, det
        gc.collect()
    x_in = best[1]
    del module, stats, ties, risks
    gc.collect()

    out = dict(inputs)
    for key, d in deltas.items():
        out[f"param.{key}"] = (np.asarray(inputs[f"param.{key}"], dtype=np.float64) + d).astype(np.float32)
    if image:
        out["batch.input"] = x_in.numpy().astype(np.float32)
    shifts = [float(np.max(np.abs(out[f"param.{k}"].astype(np.float64) - inputs[f"param.{k}"]))) for k in deltas]
    info = {
        "decisions": "ReLU bias shifts + max-pool near-tie breaking (olla_onnx.export.testpoint)",
        "relu_window_std": window, "pool_tau": pool_tau,
        **measure_point(make_module, out, pool_tau),  # at the rounded float32 point, nothing moved
        "shifted_biases": len(shifts), "max_bias_shift": max(shifts) if shifts else 0.0,
        "max_input_shift": float(np.max(np.abs(out["batch.input"].astype(np.float64) - inputs["batch.input"])))
        if image else 0.0,
        "tie_rounds": rounds, "seconds": round(time.perf_counter() - t0, 1),
    }
    return out, info


def _float64_module(make_module: Callable[[], nn.Module], point: dict[str, np.ndarray]) -> nn.Module:
    """``make_module()`` in float64 and train mode, with its parameters taken from ``point``."""
    torch.manual_seed(0)
    m = make_module().to(torch.float64)
    m.train()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(point[f"param.{n}"], dtype=np.float64)))
    return m


def _forward(pas: _Pass, x: torch.Tensor, grad: bool = False) -> None:
    with pas.active(), torch.set_grad_enabled(grad):
        try:
            pas.module(x)
        except _Stop:
            pass


def measure_point(make_module: Callable[[], nn.Module], point: dict[str, np.ndarray],
                  pool_tau: float = POOL_TAU) -> dict:
    """The decision margins at ``point`` (nothing moved), from one float64 forward pass.

    ``relu_min_margin``: min |ReLU input - kink| / channel std (None without ReLUs);
    ``pool_min_gap``: min top-2 gap / max|input| over max-pool windows with a positive
    maximum (None without max-pools); ``pool_near_ties_left``: windows whose gap is below
    ``pool_tau``; ``relu_inputs_below_floor``: ReLU inputs closer than ``RELU_FLOOR`` std
    to a kink. Cost: one float64 forward with a per-channel pass over every ReLU input.
    """
    x = point["batch.input"]
    meas = _Pass(_float64_module(make_module, point), "measure", pool_tau, RELU_WINDOW)
    _forward(meas, torch.from_numpy(x.astype(np.float64) if x.dtype == np.float32 else x))
    info = {
        "relu_min_margin": min(meas.relu_margins) if meas.relu_margins else None,
        "pool_min_gap": min(meas.pool_gaps) if meas.pool_gaps else None,
        "pool_near_ties_left": sum(len(t) for t in meas.ties),
        "relu_inputs_below_floor": sum(len(r[0]) for r in meas.risks), "relu_floor_std": RELU_FLOOR,
    }
    del meas
    gc.collect()
    return info
