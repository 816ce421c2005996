"""The corpus: which model, at which batch, with which loss and optimizer.

Every entry has a full-size model and a tiny variant (same code, small widths)
for fast tests. :func:`reference_step` runs one real PyTorch step (the
module's own forward, ``loss.backward()``, ``torch.optim``) from the same
seeded inputs as the ONNX graph, for the numerical check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from olla_onnx.export import nets
from olla_onnx.export.trainstep import Optimizer, signature

SGD = Optimizer("sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)
ADAM = Optimizer("adam", lr=1e-3)
ADAMW = Optimizer("adamw", lr=3e-4, weight_decay=0.01)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; sequence and pixel logits are flattened first (class axis last or 1)."""
    if logits.dim() == 3:  # [batch, seq, vocab]
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())
    return F.cross_entropy(logits, target)


@dataclass(frozen=True)
class Variant:
    """One exported graph: a module factory and its batch."""

    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    classes: int
    input_high: int | None = None  # token ids: vocabulary size; None: float images/features
    # the numerical check's test point is found at this batch and tiled along the batch axis
    # (build.check_inputs); None: found at the full batch
    test_point_batch: int | None = None

    def batch_desc(self) -> str:
        kind = "int64 tokens" if self.input_high else "float32"
        return f"input {list(self.input_shape)} {kind}, target {list(self.target_shape)} int64 < {self.classes}"


@dataclass(frozen=True)
class Entry:
    name: str
    architecture: str
    optimizer: Optimizer
    full: Variant
    tiny: Variant
    loss: str = "cross-entropy (mean)"
    notes: str = ""  # (tiny batch-norm nets use 64x64 images and batch 8 or 16: batch norm over
    # 2 values at 1x1 spatial size is so ill-conditioned that float32 rounding alone moves
    # the gradients by ~1e-3 relative, in PyTorch as much as in onnxruntime)

    def variant(self, tiny: bool) -> Variant:
        return self.tiny if tiny else self.full

    def file_name(self, tiny: bool) -> str:
        return f"{self.name}_tiny" if tiny else self.name


def _v(make, inp, tgt, classes, high=None, test_point_batch=None) -> Variant:
    return Variant(make, tuple(inp), tuple(tgt), classes, high, test_point_batch)


CORPUS: tuple[Entry, ...] = (
    Entry("mlp", "MLP 784-2048-2048-10, ReLU", SGD,
          _v(lambda: nets.MLP((784, 2048, 2048, 10)), (256, 784), (256,), 10),
          _v(lambda: nets.MLP((16, 32, 32, 10)), (8, 16), (8,), 10)),
    Entry("cnn", "small CNN: 2x (conv3x3 + batch norm + ReLU + max-pool), linear; CIFAR-sized", SGD,
          _v(lambda: nets.SmallCNN((32, 64), 10, 32), (128, 3, 32, 32), (128,), 10),
          _v(lambda: nets.SmallCNN((4, 8), 10, 8), (4, 3, 8, 8), (4,), 10)),
    Entry("alexnet", "AlexNet (torchvision layout, no dropout)", SGD,
          _v(lambda: nets.AlexNet(), (32, 3, 224, 224), (32,), 1000),
          _v(lambda: nets.AlexNet(10, 1 / 16, 32, 64), (2, 3, 64, 64), (2,), 10)),
    Entry("vgg16", "VGG-16 (configuration D, no batch norm, no dropout)", SGD,
          _v(lambda: nets.VGG16(), (32, 3, 224, 224), (32,), 1000),
          _v(lambda: nets.VGG16(10, 1 / 16, 32, 32), (2, 3, 32, 32), (2,), 10)),
    Entry("resnet18", "ResNet-18 (basic blocks 2-2-2-2, batch norm with batch statistics)", SGD,
          _v(lambda: nets.ResNet(nets.BasicBlock, (2, 2, 2, 2)), (32, 3, 224, 224), (32,), 1000),
          _v(lambda: nets.ResNet(nets.BasicBlock, (2, 2, 2, 2), 10, 8), (8, 3, 64, 64), (8,), 10)),
    Entry("resnet50", "ResNet-50 (bottleneck blocks 3-4-6-3, batch norm with batch statistics)", SGD,
          _v(lambda: nets.ResNet(nets.Bottleneck, (3, 4, 6, 3)), (32, 3, 224, 224), (32,), 1000),
          _v(lambda: nets.ResNet(nets.Bottleneck, (3, 4, 6, 3), 10, 4), (16, 3, 64, 64), (16,), 10)),
    Entry("mobilenetv2", "MobileNetV2 (width 1.0, depthwise convolutions, ReLU6)", SGD,
          _v(lambda: nets.MobileNetV2(), (32, 3, 224, 224), (32,), 1000),
          _v(lambda: nets.MobileNetV2(10, 0.25, 64), (8, 3, 64, 64), (8,), 10)),
    Entry("unet", "U-Net, depth 4, base width 64, padded convs + batch norm, transposed-conv upsampling; "
                  "2-class per-pixel segmentation", ADAM,
          _v(lambda: nets.UNet(3, 2, 64, 4), (32, 3, 224, 224), (32, 224, 224), 2, test_point_batch=8),
          _v(lambda: nets.UNet(3, 2, 4, 2), (2, 3, 16, 16), (2, 16, 16), 2)),
    Entry("gpt2", "GPT-2 124M (12 layers, 768 wide, 12 heads, vocab 50257, tied embedding); "
                  "next-token loss", ADAMW,
          _v(lambda: nets.GPT2(), (4, 512), (4, 512), 50257, 50257),
          _v(lambda: nets.GPT2(64, 16, 32, 2, 2), (2, 16), (2, 16), 64, 64)),
    Entry("bert", "BERT-base (12 layers, 768 wide, 12 heads, vocab 30522, post-norm) with a "
                  "masked-LM head; loss over every position", ADAMW,
          _v(lambda: nets.BERT(), (4, 512), (4, 512), 30522, 30522),
          _v(lambda: nets.BERT(64, 16, 32, 2, 2), (2, 16), (2, 16), 64, 64)),
    Entry("vit_b16", "ViT-B/16 (12 layers, 768 wide, 12 heads, 16x16 patches, class token)", ADAMW,
          _v(lambda: nets.ViT(), (32, 3, 224, 224), (32,), 1000),
          _v(lambda: nets.ViT(16, 4, 32, 2, 2, 10), (2, 3, 16, 16), (2,), 10)),
)

BY_NAME = {e.name: e for e in CORPUS}


def build_module(variant: Variant, device: str = "cpu") -> nn.Module:
    with torch.device(device):
        return variant.make()


def example_inputs(entry: Entry, variant: Variant, module: nn.Module) -> list[torch.Tensor]:
    """Flat example inputs in signature order (uninitialised memory: only shapes matter)."""
    params = [torch.empty(p.shape) for _, p in module.named_parameters()]
    ex = params * (1 + len(entry.optimizer.slots))
    ex = [t.clone() if i >= len(params) else t for i, t in enumerate(ex)]
    x = torch.zeros(variant.input_shape, dtype=torch.long) if variant.input_high else torch.empty(variant.input_shape)
    y = torch.zeros(variant.target_shape, dtype=torch.long)
    ex += [x, y]
    if entry.optimizer.has_step:
        ex.append(torch.tensor(0.0))
    return ex


def metadata(entry: Entry, variant: Variant) -> dict[str, str]:
    """Metadata stored in the ONNX file (the input generator reads ``olla.high.*``)."""
    meta = {
        "olla.model": entry.name,
        "olla.architecture": entry.architecture,
        "olla.optimizer": entry.optimizer.describe(),
        "olla.loss": entry.loss,
        "olla.high.batch.target": str(variant.classes),
    }
    if variant.input_high:
        meta["olla.high.batch.input"] = str(variant.input_high)
    return meta


def reference_step(entry: Entry, variant: Variant, inputs: dict[str, np.ndarray],
                   dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    """One eager PyTorch training step from ``inputs`` (named as the graph's inputs); outputs by graph name.

    Uses the module's own forward, ``loss.backward()`` and the real
    ``torch.optim`` optimizer with its state set from the inputs. With
    ``dtype=torch.float64`` the whole step runs in double precision (a
    near-exact answer to measure float32 rounding against).
    """
    torch.manual_seed(0)
    inputs = {k: (v.astype(np.float64) if dtype == torch.float64 and v.dtype == np.float32 else v)
              for k, v in inputs.items()}
    module = build_module(variant).to(dtype)
    module.train()
    sig = signature(module, entry.optimizer)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for n in sig.params:
            params[n].copy_(torch.from_numpy(inputs[f"param.{n}"]))
    opt = entry.optimizer.torch_optimizer([params[n] for n in sig.params])
    for n in sig.params:
        st = {s: torch.from_numpy(inputs[f"state.{s}.{n}"].copy()) for s in sig.slots}
        if sig.has_step:
            st["step"] = torch.tensor(float(inputs["step"]), dtype=torch.float32)
        opt.state[params[n]] = st
    x = torch.from_numpy(inputs["batch.input"])
    y = torch.from_numpy(inputs["batch.target"])
    opt.zero_grad()
    loss = cross_entropy(module(x), y)
    loss.backward()
    opt.step()
    out = {"loss": loss.detach().numpy()}
    for n in sig.params:
        out[f"param_out.{n}"] = params[n].detach().numpy().copy()
    for s in sig.slots:
        for n in sig.params:
            out[f"state_out.{s}.{n}"] = opt.state[params[n]][s].detach().numpy().copy()
    if sig.has_step:
        out["step_out"] = np.asarray(float(opt.state[params[sig.params[0]]]["step"]), dtype=np.float32)
    return out
