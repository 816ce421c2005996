"""Seeded inputs for running a model: the same feeds for every session that is compared."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from olla_onnx.errors import OllaInputError


def random_feeds(
    model, dims: Mapping[str, int] | None = None, seed: int = 0, default_dim: int | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input that is not an initializer.

    Floats uniform in [0.1, 1); integers and booleans zero (a valid index,
    label or mask for any size). A symbolic dimension takes its value from
    ``dims``, else ``default_dim``; with neither it is an :class:`OllaInputError`.
    """
    from onnx.helper import tensor_dtype_to_np_dtype

    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.dim_param and dims and d.dim_param in dims:
                shape.append(int(dims[d.dim_param]))
            elif default_dim is not None:
                shape.append(default_dim)
            else:
                raise OllaInputError(
                    f"input {vi.name!r} has an unknown dimension {d.dim_param or '?'!r}; pin it with --dim {d.dim_param or 'NAME'}=VALUE"
                )
        dtype = tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.uniform(0.1, 1.0, size=shape).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype=dtype)
    return feeds
