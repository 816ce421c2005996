"""File-system rules every reader and writer follows: one-line errors, the input never overwritten."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def read_json(path: Path | str, label: str = "", error: type[OllaInputError] = OllaInputError) -> Any:
    """The parsed JSON file; a missing, unreadable or malformed file is one line of ``error`` (``label`` names it)."""
    path = Path(path)
    name = f"{label} {path}" if label else str(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{name} does not exist") from None
    except IsADirectoryError:
        raise error(f"{name} is a directory, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{name} is not valid JSON (truncated or corrupt?): {exc}") from None
