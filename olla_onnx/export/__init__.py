"""The training-graph corpus generator (needs the ``export`` extra: torch, onnxscript).

``python -m olla_onnx.export --all`` regenerates ``models/``. Modules:

- :mod:`~olla_onnx.export.trainstep`: one training step of an ``nn.Module`` as one ONNX graph.
- :mod:`~olla_onnx.export.nets`: the architectures in plain ``torch.nn``.
- :mod:`~olla_onnx.export.corpus`: the corpus entries and the eager PyTorch reference step.
- :mod:`~olla_onnx.export.compare`: seeded inputs, onnxruntime run, comparison (no torch needed).
- :mod:`~olla_onnx.export.testpoint`: moves the seeded inputs to where every ReLU and max-pool
  decision has a margin, so that a float32 step is a faithful computation there.
- :mod:`~olla_onnx.export.build`: export + check.
- :mod:`~olla_onnx.export.manifest`: the manifest and the README written from it.

Importing this package does not import torch.
"""
