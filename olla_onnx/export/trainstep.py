"""One training step (forward, backward, optimizer update) of a PyTorch module as one ONNX graph.

Route (torch 2.13, CPU, no real compute while exporting):

1. A functional step: ``torch.func.functional_call`` for the forward and the
   loss, ``torch.autograd.grad`` for the gradients, then the optimizer's own
   arithmetic written out exactly as ``torch.optim``'s single-tensor code does it.
2. ``make_fx`` traces it with fake tensors and a decomposition table (core
   ATen, plus convolution backward -- written here -- max-pool backward and
   functional batch norm), so the backward pass is ordinary ATen ops.
3. ``torch.export`` + ``run_decompositions`` on the traced module, then
   ``torch.onnx.export(..., dynamo=True, optimize=False)``.
4. onnxscript's constant folding and unused-node removal only (no fusion
   rewrites: they must not drop Adam's ``+ eps``), then the graph inputs and
   outputs get the corpus names (``param.*``, ``state.<slot>.*``,
   ``batch.input``, ``batch.target``, ``step``; ``loss``, ``param_out.*``,
   ``state_out.<slot>.*``, ``step_out``).

Guarantees of :func:`export_train_step`: default-domain ONNX ops only;
parameters and optimizer state are graph inputs (no weight initializers);
every shape static; the model passes ``onnx.checker`` with ``full_check``.
Cost: a few seconds for small models, up to a minute or two for the
124M-parameter transformers (time goes to tracing and to the exporter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import onnx
import torch
from torch import nn
from torch._decomp import core_aten_decompositions, get_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

aten = torch.ops.aten
FOLD_OUTPUT_SIZE_LIMIT = 65536  # elements


@dataclass(frozen=True)
class Optimizer:
    """An optimizer configuration: ``kind`` is ``"sgd"``, ``"adam"`` or ``"adamw"`` (SGD with ``momentum=0``
    keeps no state)."""

    kind: str
    lr: float
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    @property
    def slots(self) -> tuple[str, ...]:
        """Optimizer state slots per parameter, in torch.optim's names."""
        if self.kind == "sgd":
            return ("momentum_buffer",) if self.momentum else ()
        return ("exp_avg", "exp_avg_sq")

    @property
    def has_step(self) -> bool:
        return self.kind != "sgd"

    def torch_optimizer(self, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
        """The equivalent ``torch.optim`` optimizer (single-tensor code path)."""
        if self.kind == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, foreach=False)
        cls = torch.optim.Adam if self.kind == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay, foreach=False)

    def describe(self) -> str:
        if self.kind == "sgd":
            return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"
        name = "Adam" if self.kind == "adam" else "AdamW"
        return f"{name}(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"


# ---------------------------------------------------------------- decompositions


def _conv_weight_grad(x, gout, wshape, stride, padding, dilation, groups):
    """d(conv(x, w))/dw contracted with ``gout``, as one grouped convolution."""
    n, cin = x.shape[0], x.shape[1]
    cin_g = cin // groups
    nd = x.dim() - 2
    xs = x.reshape(n, groups, cin_g, *x.shape[2:]).transpose(0, 2).reshape(cin_g, groups * n, *x.shape[2:])
    gs = gout.transpose(0, 1)  # [cout, n, ...]
    out = aten.convolution(xs, gs, None, dilation, padding, stride, False, [0] * nd, groups)
    # out: [cin_g, cout, k'...]; the kernel may come out larger than k when the
    # stride does not divide the padded input: keep the first k.
    out = out.transpose(0, 1)
    for d in range(nd):
        out = out.narrow(2 + d, 0, wshape[2 + d])
    return out


def _convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    nd = input.dim() - 2
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    grad_input = grad_weight = grad_bias = None
    if not transposed:
        if output_mask[0]:
            op = []
            for d in range(nd):
                k = weight.shape[2 + d]
                full = (grad_output.shape[2 + d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (k - 1) + 1
                op.append(input.shape[2 + d] - full)
            grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True, op, groups)
        if output_mask[1]:
            grad_weight = _conv_weight_grad(input, grad_output, weight.shape, stride, padding, dilation, groups)
    else:
        if groups != 1:
            raise NotImplementedError("grouped transposed convolution backward")
        if output_mask[0]:
            grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, False, [0] * nd, 1)
        if output_mask[1]:
            # y = C_w^T x, so <g, C_w^T x> = <C_w g, x>: the weight gradient of a
            # plain convolution with input g and output gradient x.
            grad_weight = _conv_weight_grad(grad_output, input, weight.shape, stride, padding, dilation, 1)
    if output_mask[2]:
        grad_bias = grad_output.sum([0] + list(range(2, grad_output.dim())))
    return grad_input, grad_weight, grad_bias


def decomposition_table() -> dict:
    """Core ATen decompositions plus the backward ops the ONNX exporter cannot take."""
    table = dict(core_aten_decompositions())
    table.update(get_decompositions([
        aten.max_pool2d_with_indices_backward,
        aten._native_batch_norm_legit_functional,
        aten._native_batch_norm_legit,
        aten._native_batch_norm_legit.no_stats,
        aten.native_batch_norm,
    ]))
    table[aten.convolution_backward.default] = _convolution_backward
    return table


# ---------------------------------------------------------------- the functional step


def optimizer_update(opt: Optimizer, p, g, states, step):
    """New parameter and new state tensors, the arithmetic of torch.optim's single-tensor path.

    ``step`` is the step count after increment (a float32 scalar tensor) or None.
    """
    if opt.kind == "sgd":
        if opt.weight_decay:
            g = g + opt.weight_decay * p
        if not opt.momentum:
            return p - opt.lr * g, []
        (buf,) = states
        buf = buf * opt.momentum + g
        return p - opt.lr * buf, [buf]
    b1, b2 = opt.betas
    m, v = states
    if opt.kind == "adam" and opt.weight_decay:
        g = g + opt.weight_decay * p
    if opt.kind == "adamw":
        p = p * (1 - opt.lr * opt.weight_decay)
    m = m + (1 - b1) * (g - m)  # lerp(m, g, 1 - b1)
    v = v * b2 + (1 - b2) * g * g
    t = step.to(torch.float64)
    bc1 = 1 - torch.pow(torch.tensor(b1, dtype=torch.float64), t)
    bc2 = 1 - torch.pow(torch.tensor(b2, dtype=torch.float64), t)
    step_size = (opt.lr / bc1).to(p.dtype)
    bc2_sqrt = torch.sqrt(bc2).to(p.dtype)
    denom = v.sqrt() / bc2_sqrt + opt.eps
    return p - step_size * (m / denom), [m, v]


@dataclass(frozen=True)
class StepSignature:
    """Names of the flat inputs and outputs of the step, in order."""

    params: tuple[str, ...]
    slots: tuple[str, ...]
    has_step: bool

    @property
    def input_names(self) -> list[str]:
        names = [f"param.{p}" for p in self.params]
        names += [f"state.{s}.{p}" for s in self.slots for p in self.params]
        names += ["batch.input", "batch.target"]
        return names + (["step"] if self.has_step else [])

    @property
    def output_names(self) -> list[str]:
        names = ["loss"] + [f"param_out.{p}" for p in self.params]
        names += [f"state_out.{s}.{p}" for s in self.slots for p in self.params]
        return names + (["step_out"] if self.has_step else [])


def signature(module: nn.Module, opt: Optimizer) -> StepSignature:
    """Parameters in ``named_parameters`` order (tied weights once, under their first name)."""
    return StepSignature(tuple(n for n, _ in module.named_parameters()), opt.slots, opt.has_step)


def updated(opt, params: list, grads, state: list, step) -> list:
    """The new parameters, then each state slot's new tensors (slot by slot), from one optimizer update
    (:func:`optimizer_update`) of every parameter; ``state[j][i]`` is slot ``j`` of parameter ``i``."""
    s = len(state)
    new_p, new_s = [], [[] for _ in range(s)]
    with torch.no_grad():
        for i, (p, g) in enumerate(zip(params, grads)):
            q, st = optimizer_update(opt, p.detach(), g, [state[j][i] for j in range(s)], step)
            new_p.append(q)
            for j in range(s):
                new_s[j].append(st[j])
    return [*new_p, *(t for slot in new_s for t in slot)]



def make_step_fn(module: nn.Module, loss_fn: Callable, opt: Optimizer, sig: StepSignature) -> Callable:
    """The training step as a function of the flat inputs of ``sig``, returning its flat outputs."""
    n, s = len(sig.params), len(sig.slots)

    def step_fn(*flat):
        params = {name: t.detach().requires_grad_() for name, t in zip(sig.params, flat[:n])}
        state = [flat[n * (1 + j): n * (2 + j)] for j in range(s)]
        x, y = flat[n * (1 + s)], flat[n * (1 + s) + 1]
        step = flat[n * (1 + s) + 2] + 1 if sig.has_step else None
        loss = loss_fn(torch.func.functional_call(module, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        out = [loss.detach(), *updated(opt, list(params.values()), grads, state, step)]
        return tuple(out + ([step] if sig.has_step else []))

    return step_fn


# ---------------------------------------------------------------- to ONNX


class _Wrapped(nn.Module):
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, *args):
        return self.gm(*args)


def export_train_step(module: nn.Module, loss_fn: Callable, opt: Optimizer, example: Sequence[torch.Tensor],
                      opset: int = 18) -> onnx.ModelProto:
    """One training step of ``module`` as an ONNX model with the corpus names.

    ``example`` holds the flat inputs in :class:`StepSignature` order (their
    values are never read: tracing uses fake tensors). The module may live on
    the meta device; its parameters are replaced by the graph inputs.
    """
    import onnxscript.optimizer

    sig = signature(module, opt)
    if len(example) != len(sig.input_names):
        raise ValueError(f"expected {len(sig.input_names)} example inputs, got {len(example)}")
    fn = make_step_fn(module, loss_fn, opt, sig)
    gm = make_fx(fn, decomposition_table=decomposition_table(), tracing_mode="fake")(*example)
    ep = torch.export.export(_Wrapped(gm), tuple(example), strict=False)
    # torch.onnx.export runs ep.run_decompositions() with its own table (core ATen)
    program = torch.onnx.export(ep, (), dynamo=True, optimize=False, opset_version=opset, verbose=False)
    model = program.model_proto
    # fold only small results: a folded [512, 512] int64 causal-mask index per layer would
    # make GPT-2's file ~30 MB; bigger constants stay the (cheap) nodes that compute them
    onnxscript.optimizer.fold_constants(model, output_size_limit=FOLD_OUTPUT_SIZE_LIMIT)
    onnxscript.optimizer.remove_unused_nodes(model)
    model = rename_io(model, sig.input_names, sig.output_names)
    strip_debug_info(model)
    model.producer_name = "olla_onnx.export"
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces, doc strings and graph metadata (most of the file size)."""
    g = model.graph
    for node in g.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        del vi.metadata_props[:]
        vi.doc_string = ""
    del g.metadata_props[:]
    g.doc_string = ""
    del model.metadata_props[:]


def rename_io(model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str]) -> onnx.ModelProto:
    """Give the graph inputs and outputs the corpus names, positionally.

    An output that is a graph input, or that appears twice, gets an Identity so
    every graph output is its own value.
    """
    g = model.graph
    if len(g.input) != len(inputs) or len(g.output) != len(outputs):
        raise ValueError(f"graph has {len(g.input)} inputs/{len(g.output)} outputs, "
                         f"expected {len(inputs)}/{len(outputs)}")
    mapping = {vi.name: new for vi, new in zip(g.input, inputs)}
    input_old = set(mapping)
    extra: list[onnx.NodeProto] = []
    seen: set[str] = set()
    for vi, new in zip(g.output, outputs):
        old = vi.name
        if old in input_old or old in seen or old in mapping:
            extra.append(onnx.helper.make_node("Identity", [old], [new], name=f"identity_{new}"))
            vi.name = new
            continue
        seen.add(old)
        mapping[old] = new

    def m(name: str) -> str:
        return mapping.get(name, name)

    for node in g.node:
        node.input[:] = [m(x) for x in node.input]
        node.output[:] = [m(x) for x in node.output]
    for node in extra:
        node.input[:] = [m(x) for x in node.input]
    g.node.extend(extra)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = m(vi.name)
    return model
