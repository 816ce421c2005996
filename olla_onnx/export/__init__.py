"""Training steps from PyTorch to ONNX (needs the ``export`` extra: torch, onnxscript), and the corpus generator.

A user's step, the ``make_fx`` route (:mod:`~olla_onnx.export.fx`; torch only)::

    from olla_onnx.export import training_step
    step = training_step(model, F.cross_entropy, "adam", (x, y), "step.onnx", lr=1e-3)
    step.inputs, step.updates, step.initial   # which input is which, which output updates which, start values

``python -m olla_onnx.export --all`` regenerates the corpus in ``models/``. Modules:

- :mod:`~olla_onnx.export.fx`: :func:`training_step` (the public route above).
- :mod:`~olla_onnx.export.step`: :class:`TrainingStep`, the description stored in the file (no torch).
- :mod:`~olla_onnx.export.trainstep`: one training step of an ``nn.Module`` as one ONNX graph (the corpus's
  route: ``torch.export`` and the dynamo exporter, onnxscript's folding); the optimizers' arithmetic.
- :mod:`~olla_onnx.export.nets`: the architectures in plain ``torch.nn``.
- :mod:`~olla_onnx.export.corpus`: the corpus entries and the eager PyTorch reference step.
- :mod:`~olla_onnx.export.compare`: seeded inputs, onnxruntime run, comparison (no torch needed).
- :mod:`~olla_onnx.export.testpoint`: moves the seeded inputs to where every ReLU and max-pool
  decision has a margin, so that a float32 step is a faithful computation there.
- :mod:`~olla_onnx.export.build`: export + check.
- :mod:`~olla_onnx.export.manifest`: the manifest and the README written from it.

Importing this package does not import torch.
"""

from typing import Any

_LAZY = {"training_step": "olla_onnx.export.fx", "TrainingStep": "olla_onnx.export.step"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'olla_onnx.export' has no attribute {name!r}")
