"""Write the reordered ONNX model: the input with its nodes in the new order, nothing else changed.

External data stays external under the same ``location`` names: when the
output goes to another folder, the data files the model names are copied
beside it (an existing file there with other contents is an error, never
overwritten). The result is checked with ``onnx.checker`` (from the path, so
external data and models above 2 GB are checked too).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import onnx
from onnx import ModelProto, TensorProto

from olla_onnx.errors import InvalidOrderError, OllaInputError
from olla_onnx.formats.onnx.read import stored_tensors
from olla_onnx.files import refuse_input_path, same_file


def reordered_model(model: ModelProto, order: Sequence[int]) -> ModelProto:
    """A copy of ``model`` whose top-level nodes are listed in ``order`` (indices into ``model.graph.node``).

    ``order`` must list every node exactly once. O(n) plus the copy.
    """
    n = len(model.graph.node)
    if sorted(order) != list(range(n)):
        seen: set[int] = set()
        bad = next((v for v in order if not (0 <= v < n) or v in seen or seen.add(v)), None)  # type: ignore[func-returns-value]
        what = f"entry {bad!r} is repeated or not a node index" if bad is not None else f"it has {len(order)} entries"
        raise InvalidOrderError(f"the order does not list each of the model's {n} nodes once: {what}")
    out = ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(model.graph.node[int(i)] for i in order)
    return out


def _external_locations(model: ModelProto) -> list[str]:
    locs: dict[str, None] = {}
    for t in stored_tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            for e in t.external_data:
                if e.key == "location":
                    locs[e.value] = None
    return list(locs)


def write_reordered_onnx(
    model: ModelProto,
    order: Sequence[int],
    path: Path | str,
    source: Path | str | None = None,
) -> None:
    """Write ``model`` with its nodes in ``order`` to ``path``, checked by ``onnx.checker``.

    ``source`` is the file the model was read from: writing over it is
    refused, and external data files are found beside it (required when the
    model has external data). Raises :class:`~olla_onnx.errors.OllaInputError`
    (one line) for a bad order, an output path that is the input, missing
    external data or a model the checker rejects (e.g. an order that is not
    topological); nothing is left at ``path`` in that case.
    """
    path = Path(path)
    src = Path(source) if source is not None else None
    if src is not None:
        refuse_input_path(path, src)
    out = reordered_model(model, order)

    locations = _external_locations(out)
    if locations:
        if src is None:
            raise OllaInputError("the model keeps weights in external data files; pass the input path (source=) to find them")
        for loc in locations:
            a, b = src.parent / loc, path.parent / loc
            if not a.is_file():
                raise OllaInputError(f"external data file {loc!r} is missing beside {src}")
            if same_file(a, b):
                continue
            if b.exists() and not filecmp.cmp(a, b, shallow=False):
                raise OllaInputError(
                    f"{b} exists with other contents; write the model to another folder (external data is never overwritten)"
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.write_bytes(out.SerializeToString())
        for loc in locations:
            a, b = src.parent / loc, path.parent / loc  # type: ignore[union-attr]
            if not same_file(a, b) and not b.exists():
                b.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(a, b)
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as exc:
            msg = " ".join(str(exc).split())
            raise OllaInputError(f"the reordered model fails onnx.checker: {msg[:300]}") from None
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
