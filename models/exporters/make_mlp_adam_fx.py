"""Write ``mlp_adam_fx.onnx``: one Adam training step of a tiny MLP, traced by ``torch.fx``'s ``make_fx`` and
exported by the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) with the names it gives
(inputs ``arg0_1``..., outputs named after their nodes): nothing in the file says which output updates which
input, so olla-onnx's in-place pass must find the pairs from the dataflow (``tests/test_inplace_dataflow.py``).

    pip install torch==2.13.0        # CPU wheel; onnxscript is not needed for dynamo=False
    python models/exporters/make_mlp_adam_fx.py [--out models/exporters/mlp_adam_fx.onnx]

Flat inputs, in order: the 4 parameters (fc1.weight, fc1.bias, fc2.weight, fc2.bias), their 4 first moments,
their 4 second moments, the batch (x [8, 16] float32, y [8] int64) and the step count (float32 scalar, steps
taken before this one). Flat outputs: the loss, the 4 new parameters, 4 new first and 4 new second moments, the
new step count. The update is ``olla_onnx.export.trainstep.optimizer_update`` (torch.optim's single-tensor Adam).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from olla_onnx.export.trainstep import Optimizer, decomposition_table, optimizer_update

OPT = Optimizer("adam", lr=1e-3)


def trace() -> tuple[torch.fx.GraphModule, tuple]:
    """The traced step and its example inputs."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    names = [n for n, _ in module.named_parameters()]
    n = len(names)

    def step_fn(*flat):
        params = {k: t.detach().requires_grad_() for k, t in zip(names, flat[:n])}
        ms, vs = flat[n:2 * n], flat[2 * n:3 * n]
        x, y, step = flat[3 * n], flat[3 * n + 1], flat[3 * n + 2] + 1
        loss = nn.functional.cross_entropy(torch.func.functional_call(module, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        new_p, new_m, new_v = [], [], []
        with torch.no_grad():
            for p, g, m, v in zip(params.values(), grads, ms, vs):
                q, (m2, v2) = optimizer_update(OPT, p.detach(), g, [m, v], step)
                new_p.append(q)
                new_m.append(m2)
                new_v.append(v2)
        return (loss.detach(), *new_p, *new_m, *new_v, step)

    ps = [p.detach().clone() for p in module.parameters()]
    example = (*ps, *[torch.zeros_like(p) for p in ps], *[torch.zeros_like(p) for p in ps],
               torch.randn(8, 16), torch.randint(0, 4, (8,)), torch.tensor(3.0))
    gm = make_fx(step_fn, decomposition_table=decomposition_table())(*example)
    # the TorchScript exporter has no symbolic for _to_copy (aten.to is the same cast) nor for the copies,
    # and writes sum over dim=[] with float axes
    aten = torch.ops.aten
    for node in list(gm.graph.nodes):
        if node.target is aten._to_copy.default and set(node.kwargs) <= {"dtype", "device"}:
            node.target, node.args, node.kwargs = aten.to.dtype, (node.args[0], node.kwargs["dtype"]), {}
        elif node.target is aten.sum.dim_IntList and not node.args[1] and len(node.args) == 2 and not node.kwargs:
            node.target, node.args = aten.sum.default, (node.args[0],)  # dim=[]: exported with float axes
        elif node.target in (aten.lift_fresh_copy.default, aten.alias.default):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm, example


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("mlp_adam_fx.onnx"))
    out = ap.parse_args().out
    gm, example = trace()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gm, example, str(out), dynamo=False, opset_version=18)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    print(f"{out}: {len(model.graph.node)} nodes, inputs {[i.name for i in model.graph.input][:3]}..., "
          f"outputs {[o.name for o in model.graph.output][:3]}..., {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
