"""One training step of a PyTorch module as one ONNX file, the ``make_fx`` route: :func:`training_step`.

Route (PyTorch 2.13, CPU; ``pip install '.[export]'``, onnxscript not needed):

1. A functional step of flat inputs (parameters, optimizer state, batch, step count): the forward with
   ``torch.func.functional_call``, the loss, ``torch.autograd.grad``, then the optimizer's arithmetic as
   ``torch.optim``'s single-tensor code does it (:func:`olla_onnx.export.trainstep.optimizer_update`).
2. ``make_fx`` traces it on the example values with core ATen decompositions
   (:func:`olla_onnx.export.trainstep.decomposition_table`): the backward pass becomes ordinary ATen ops.
3. Three rewrites the TorchScript exporter needs (:func:`torchscript_rewrites`), then
   ``torch.onnx.export(..., dynamo=False, opset_version=18)``.
4. The graph inputs and outputs get readable names (or keep the exporter's), and the
   :class:`~olla_onnx.export.step.TrainingStep` that says which is which is stored in the file.

Guarantees: parameters and optimizer state are graph inputs, their new values graph outputs (the loss
first); every shape static (the example batch's); ``onnx.checker`` with ``full_check`` passes. Tried on
MLPs and a small CNN (Conv2d, MaxPool2d) with cross-entropy and squared-error losses, SGD with and
without momentum, Adam and AdamW (the tests run the two committed MLP steps of ``models/exporters/``). A
module with buffers (batch norm's running statistics) is refused (use
:func:`olla_onnx.export.trainstep.export_train_step`); other ops may lack a TorchScript symbolic. Cost:
two real steps in eager PyTorch (tracing, then the exporter's own trace), about a second for small models.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from olla_onnx.errors import OllaInputError
from olla_onnx.export.step import TrainingStep
from olla_onnx.export.trainstep import Optimizer, decomposition_table, rename_io, updated

aten = torch.ops.aten
KINDS = ("sgd", "adam", "adamw")


def make_optimizer(kind: str, lr: float, momentum: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8, weight_decay: float = 0.0) -> Optimizer:
    """An :class:`~olla_onnx.export.trainstep.Optimizer` with ``torch.optim``'s defaults (SGD without momentum)."""
    if kind not in KINDS:
        raise OllaInputError(f"optimizer {kind!r}: choose one of {', '.join(KINDS)}")
    return Optimizer(kind, lr=float(lr), momentum=float(momentum), betas=(float(betas[0]), float(betas[1])),
                     eps=float(eps), weight_decay=float(weight_decay))


def describe_optimizer(opt: Optimizer) -> dict[str, Any]:
    """The hyperparameters that matter for ``opt.kind`` (as stored in the file)."""
    if opt.kind == "sgd":
        return {"kind": "sgd", "lr": opt.lr, "momentum": opt.momentum, "weight_decay": opt.weight_decay}
    return {"kind": opt.kind, "lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps, "weight_decay": opt.weight_decay}


def step_function(module: nn.Module, loss_fn: Callable, opt: Optimizer, names: Sequence[str], n_batch: int) -> Callable:
    """The step as a function of the flat inputs (parameters, each slot's state, batch, step count) returning
    (loss, new parameters, each slot's new state, new step count); the batch is (model inputs..., target)."""
    n, s = len(names), len(opt.slots)

    def step_fn(*flat):
        params = {k: t.detach().requires_grad_() for k, t in zip(names, flat[:n])}
        state = [flat[n * (1 + j): n * (2 + j)] for j in range(s)]
        batch = flat[n * (1 + s): n * (1 + s) + n_batch]
        step = flat[n * (1 + s) + n_batch] + 1 if opt.has_step else None
        loss = loss_fn(torch.func.functional_call(module, params, tuple(batch[:-1])), batch[-1])
        grads = torch.autograd.grad(loss, list(params.values()))
        out = [loss.detach(), *updated(opt, list(params.values()), grads, state, step)]
        return tuple(out + ([step] if opt.has_step else []))

    return step_fn


def torchscript_rewrites(gm: torch.fx.GraphModule) -> None:
    """What the TorchScript exporter cannot take: it has no symbolic for ``_to_copy`` (``aten.to`` is the same
    cast) nor for the copies, and writes a sum over ``dim=[]`` with float axes. Rewrites ``gm`` in place."""
    for node in list(gm.graph.nodes):
        if node.target is aten._to_copy.default and set(node.kwargs) <= {"dtype", "device"}:
            node.target, node.args, node.kwargs = aten.to.dtype, (node.args[0], node.kwargs["dtype"]), {}
        elif node.target is aten.sum.dim_IntList and not node.args[1] and len(node.args) == 2 and not node.kwargs:
            node.target, node.args = aten.sum.default, (node.args[0],)
        elif node.target in (aten.lift_fresh_copy.default, aten.alias.default):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()


def readable_names(params: Sequence[str], slots: Sequence[str], n_batch: int, has_step: bool) -> tuple[list[str], list[str]]:
    """Input and output names in the corpus's style (``param.*``, ``state.<slot>.*``, ``batch.input``,
    ``batch.target``, ``step``; ``loss``, ``param_out.*``, ``state_out.<slot>.*``, ``step_out``)."""
    ins = [f"param.{p}" for p in params] + [f"state.{s}.{p}" for s in slots for p in params]
    ins += ["batch.input"] if n_batch == 2 else [f"batch.input.{k}" for k in range(n_batch - 1)]
    ins += ["batch.target"] + (["step"] if has_step else [])
    outs = ["loss"] + [f"param_out.{p}" for p in params] + [f"state_out.{s}.{p}" for s in slots for p in params]
    return ins, outs + (["step_out"] if has_step else [])


def training_step(
    model: nn.Module,
    loss_fn: Callable,
    optimizer: str,
    example_batch: Sequence[Any],
    path: str | Path,
    *,
    lr: float = 1e-3,
    momentum: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    names: str = "readable",
    opset: int = 18,
) -> TrainingStep:
    """Write one training step of ``model`` to the ONNX file ``path``; return what its inputs and outputs are.

    The step is ``loss = loss_fn(model(*inputs), target)`` on ``example_batch = (inputs..., target)``
    (tensors or arrays; their shapes and dtypes are fixed in the file), the gradients of every parameter,
    and one update by ``optimizer``: ``"sgd"`` (``momentum``, ``weight_decay``), ``"adam"`` or ``"adamw"``
    (``betas``, ``eps``, ``weight_decay``), the arithmetic of ``torch.optim``'s single-tensor code.
    Graph inputs: parameters, optimizer state, batch, step count (Adam); outputs: the loss, then the new
    value of each parameter and state input (:attr:`TrainingStep.updates`). ``names="readable"`` names
    them ``param.fc1.weight``, ``param_out.fc1.weight``...; ``"exporter"`` keeps the exporter's names.
    ``model`` is traced as it is (train/eval mode) and not modified.
    """
    if names not in ("readable", "exporter"):
        raise OllaInputError(f"names={names!r}: choose 'readable' or 'exporter'")
    if any(True for _ in model.buffers()):
        raise OllaInputError("the module has buffers (e.g. batch norm's running statistics), which this route does "
                             "not update; see olla_onnx.export.trainstep.export_train_step")
    if len(example_batch) < 2:
        raise OllaInputError("example_batch is (model inputs..., target): give at least two tensors")
    opt = make_optimizer(optimizer, lr, momentum, betas, eps, weight_decay)
    named = list(model.named_parameters())
    pnames = [n for n, _ in named]
    params = [p.detach().clone() for _, p in named]
    batch = [torch.as_tensor(np.asarray(b)) if not isinstance(b, torch.Tensor) else b.detach() for b in example_batch]
    state = [torch.zeros_like(p) for _ in opt.slots for p in params]
    example = (*params, *state, *batch) + ((torch.tensor(0.0),) if opt.has_step else ())
    gm = make_fx(step_function(model, loss_fn, opt, pnames, len(batch)), decomposition_table=decomposition_table())(*example)
    torchscript_rewrites(gm)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gm, example, buf, dynamo=False, opset_version=opset)
    proto = onnx.load_from_string(buf.getvalue())
    n_in, n_out = len(example), 1 + len(params) * (1 + len(opt.slots)) + int(opt.has_step)
    if names == "readable":
        proto = rename_io(proto, *readable_names(pnames, opt.slots, len(batch), opt.has_step))
    ins, outs = [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
    if len(ins) != n_in or len(outs) != n_out or len(set(outs)) != n_out:
        raise OllaInputError(f"the exporter wrote {len(ins)} inputs/{len(outs)} outputs, expected {n_in}/{n_out} "
                             "(an unused parameter or batch input is dropped by the exporter)")
    n, s = len(params), len(opt.slots)
    step = TrainingStep(
        inputs=tuple(ins), outputs=tuple(outs),
        parameters={ins[i]: pnames[i] for i in range(n)},
        state={**{ins[n * (1 + j) + i]: f"{opt.slots[j]}.{pnames[i]}" for j in range(s) for i in range(n)},
               **({ins[-1]: "step"} if opt.has_step else {})},
        batch=tuple(ins[n * (1 + s): n * (1 + s) + len(batch)]), loss=outs[0],
        updates={**{outs[1 + k]: ins[k] for k in range(n * (1 + s))}, **({outs[-1]: ins[-1]} if opt.has_step else {})},
        optimizer=describe_optimizer(opt),
        initial={name: t.numpy().copy() for name, t in zip(ins, example) if name not in ins[n * (1 + s): n * (1 + s) + len(batch)]},
    )
    step.store(proto)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return step


def eager_steps(model: nn.Module, loss_fn: Callable, step: TrainingStep, init: dict[str, np.ndarray],
                batches: Sequence[Sequence[Any]]) -> tuple[list[float], dict[str, np.ndarray]]:
    """The reference: ``len(batches)`` eager PyTorch steps of a copy of ``model`` (its own forward,
    ``loss.backward()``, a fresh ``torch.optim`` optimizer from ``step.optimizer``, single-tensor path)
    from the parameters in ``init`` (keyed by input name). Returns the losses (float32 values) and the
    final parameters keyed by input name. The optimizer starts from zero state, as :attr:`TrainingStep.initial`."""
    module = copy.deepcopy(model)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for inp, pname in step.parameters.items():
            params[pname].copy_(torch.from_numpy(np.asarray(init[inp])))
    o = step.optimizer
    opt = make_optimizer(o["kind"], o["lr"], o.get("momentum", 0.0), tuple(o.get("betas", (0.9, 0.999))),
                         o.get("eps", 1e-8), o.get("weight_decay", 0.0))
    torch_opt = opt.torch_optimizer([params[p] for p in step.parameters.values()])
    losses = []
    for b in batches:
        t = [torch.as_tensor(np.asarray(x)) for x in b]
        torch_opt.zero_grad()
        loss = loss_fn(module(*t[:-1]), t[-1])
        loss.backward()
        torch_opt.step()
        losses.append(float(loss.detach().numpy()))
    return losses, {inp: params[p].detach().numpy().copy() for inp, p in step.parameters.items()}
