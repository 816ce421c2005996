"""The fixed data of the exported steps' reference runs (``<name>.reference.json``, field ``data``), without torch:
the export script writes the references with it, and tests/test_train.py replays them."""

from __future__ import annotations

import numpy as np
import onnx


def fixed_data(model: onnx.ModelProto, step, seed: int, steps: int):
    """The data of ``<name>.reference.json`` (its ``data`` field): initial values by input name, and batches."""
    rng = np.random.default_rng(seed)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    init = {n: rng.uniform(-0.25, 0.25, shapes[n]).astype(np.float32) for n in step.inputs if n in step.parameters}
    init.update({n: np.zeros(shapes[n], np.float32) for n in step.state})
    batches = []
    for _ in range(steps):
        x = rng.standard_normal((8, 16)).astype(np.float32)
        batches.append((x, ((x[:, 0] > 0) + 2 * (x[:, 1] > 0)).astype(np.int64)))
    return init, batches
