"""How long-running library calls report progress without printing: a callback the CLI turns into a bar."""

from __future__ import annotations

from typing import Callable

#: ``progress(message, fraction_done)``: called now and then by long calls; ``fraction_done`` in [0, 1].
Progress = Callable[[str, float], None]


def silent(message: str, fraction: float) -> None:
    """The callback used when the caller passes none."""
