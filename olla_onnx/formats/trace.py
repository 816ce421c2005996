"""Buffer traces: the CSV format of placement problems and their solutions (MiniMalloc's).

A trace is CSV with a header line ``id,lower,upper,size`` (columns in any
order, names case-insensitive) and one buffer per line: buffer ``id`` needs
``size`` bytes on the half-open time interval ``[lower, upper)``, so buffers
whose intervals only touch (one's ``upper`` is the other's ``lower``) are
never alive together. A solution adds an ``offset`` column: the buffer's
first byte in the arena. Those fields but ``id`` are integers; other columns
are ignored, blank lines skipped. :func:`read_trace` and :func:`parse_trace` read it into
:class:`~olla_onnx.place.problem.Buffers` (plus the offsets, if any);
:func:`write_trace` writes it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from olla_onnx.errors import OllaInputError
from olla_onnx.place.problem import Buffers


def read_trace(path: str | Path) -> tuple[Buffers, np.ndarray | None]:
    """Read a trace CSV ``id,lower,upper,size[,offset]``; returns buffers and offsets (or ``None``).

    Errors (missing file, missing column, non-integer field, negative size,
    ``upper <= lower``) are :class:`OllaInputError` with the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise OllaInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OllaInputError(f"{path}: cannot read it ({exc})") from None
    return parse_trace(text, str(path))


def parse_trace(text: str, name: str = "<trace>") -> tuple[Buffers, np.ndarray | None]:
    """Parse trace CSV text (see :func:`read_trace`)."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None:
        raise OllaInputError(f"{name}: empty file; expected a header line 'id,lower,upper,size'")
    cols = [h.strip().lower() for h in header]
    need = ["id", "lower", "upper", "size"]
    missing = [c for c in need if c not in cols]
    if missing:
        raise OllaInputError(f"{name}: header {','.join(header)!r} lacks column(s) {', '.join(missing)}; expected 'id,lower,upper,size'")
    pos = {c: cols.index(c) for c in need}
    has_off = "offset" in cols
    if has_off:
        pos["offset"] = cols.index("offset")
    ids: list[str] = []
    vals: dict[str, list[int]] = {c: [] for c in pos if c != "id"}
    for line_no, row in enumerate(rows, start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) < len(cols):
            raise OllaInputError(f"{name}:{line_no}: {len(row)} fields, expected {len(cols)}")
        ids.append(row[pos["id"]].strip())
        for c in vals:
            field = row[pos[c]].strip()
            try:
                vals[c].append(int(field))
            except ValueError:
                raise OllaInputError(f"{name}:{line_no}: {c} {field!r} is not an integer") from None
    try:
        buffers = Buffers.build(ids, vals["lower"], vals["upper"], vals["size"])
    except OllaInputError as exc:
        raise OllaInputError(f"{name}: {exc}") from None
    offsets = np.asarray(vals["offset"], dtype=np.int64) if has_off else None
    return buffers, offsets


def write_trace(path: str | Path, buffers: Buffers, offsets: np.ndarray | None = None) -> None:
    """Write ``id,lower,upper,size[,offset]`` CSV."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "lower", "upper", "size"] + (["offset"] if offsets is not None else []))
        lo, up, sz = buffers.lower.tolist(), buffers.upper.tolist(), buffers.sizes.tolist()
        off = offsets.tolist() if offsets is not None else None
        for i, name in enumerate(buffers.ids):
            row = [name, lo[i], up[i], sz[i]]
            if off is not None:
                row.append(off[i])
            w.writerow(row)


__all__ = ["parse_trace", "read_trace", "write_trace"]
