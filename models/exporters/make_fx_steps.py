"""Write the ``make_fx`` training steps committed here, and 20 eager PyTorch steps of each as a reference.

    pip install '.[export]'          # PyTorch 2.13.0 CPU (onnxscript is not needed for this route)
    python models/exporters/make_fx_steps.py [--out-dir models/exporters]

Both are one step of the MLP 16-32-4 (``nn.Sequential(Linear, ReLU, Linear)``, ``torch.manual_seed(0)``) with
mean cross-entropy, batch 8, written by :func:`olla_onnx.export.training_step`:

- ``mlp_adam_fx.onnx``: Adam (lr 1e-3) with the TorchScript exporter's own names (``names="exporter"``:
  inputs ``arg0_1``..., outputs ``div``, ``118``...), so that the in-place pass must pair the updates from the
  dataflow (``tests/test_inplace_dataflow.py``). Inputs: the 4 parameters (fc1.weight, fc1.bias, fc2.weight,
  fc2.bias), their 4 first and 4 second moments, x [8, 16] float32, y [8] int64, the step count (float32
  scalar, steps taken before this one); outputs: the loss, the 4 new parameters, 4 + 4 new moments, the new
  step count.
- ``mlp_sgdm_fx.onnx``: SGD with momentum (lr 0.05, momentum 0.9), readable names (``param.0.weight``,
  ``state.momentum_buffer.0.weight``, ``batch.input``, ``batch.target``; ``loss``, ``param_out.0.weight``...).

Each file carries its :class:`olla_onnx.export.TrainingStep` (which input is which, which output updates
which). ``<name>.reference.json``: the losses of 20 eager PyTorch steps (the module's own forward,
``loss.backward()``, ``torch.optim`` single-tensor) from the fixed data :func:`reference_data.fixed_data` describes
(``tests/test_train.py`` makes the same data with numpy alone). Re-running rewrites every file byte for byte.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from olla_onnx.export.fx import eager_steps, training_step
from reference_data import fixed_data

STEPS, SEED = 20, 0
DATA = ("numpy.random.default_rng(seed): for each parameter input in file order uniform(-0.25, 0.25, shape) "
        "as float32; optimizer state zero, step count 0; then for each step x = standard_normal((8, 16)) as "
        "float32 and the class y = (x[:, 0] > 0) + 2 * (x[:, 1] > 0) as int64 (learnable)")
MODELS = {
    "mlp_adam_fx": dict(optimizer="adam", lr=1e-3, names="exporter"),
    "mlp_sgdm_fx": dict(optimizer="sgd", lr=0.05, momentum=0.9, names="readable"),
}


def module_and_batch() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    return module, (torch.randn(8, 16), torch.randint(0, 4, (8,)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    out_dir = ap.parse_args().out_dir
    for name, kw in MODELS.items():
        module, batch = module_and_batch()
        path = out_dir / f"{name}.onnx"
        step = training_step(module, F.cross_entropy, kw.pop("optimizer"), batch, path, **kw)
        model = onnx.load(path)
        init, batches = fixed_data(model, step, SEED, STEPS)
        losses, _ = eager_steps(module, F.cross_entropy, step, init, batches)
        ref = {"model": path.name, "torch": torch.__version__, "steps": STEPS, "seed": SEED, "data": DATA,
               "optimizer": step.optimizer, "loss": "cross-entropy (mean)", "eager_losses": losses}
        (out_dir / f"{name}.reference.json").write_text(json.dumps(ref, indent=1) + "\n")
        print(f"{path}: {len(model.graph.node)} nodes, {len(step.updates)} updates, {path.stat().st_size} bytes; "
              f"eager losses {losses[0]:.6f} -> {losses[-1]:.6f}")


if __name__ == "__main__":
    main()
