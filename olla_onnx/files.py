"""File-system rules every writer follows: the input is never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

from olla_onnx.errors import OllaInputError


def same_file(a: Path | str, b: Path | str) -> bool:
    """True when ``a`` and ``b`` name the same file (same resolved path, or the same inode)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def refuse_input_path(target: Path | str | None, source: Path | str, what: str = "") -> None:
    """Raise a one-line :class:`OllaInputError` when ``target`` is the input file ``source``."""
    if target is not None and same_file(target, source):
        label = f"{what} {target}" if what else str(target)
        raise OllaInputError(f"{label} is the input file; choose another output path (the input is never overwritten)")
