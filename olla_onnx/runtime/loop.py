"""Training loops: run a training step many times, feeding updated parameters back in.

Used to check that the planned arena holds over many steps: no fallbacks, no
growth of the process's resident memory (RSS), the same results as
onnxruntime's default session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from olla_onnx.runtime.session import Session


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class LoopResult:
    """Final outputs, RSS after every step, and the loss (first output) per step."""

    outputs: list
    rss: np.ndarray
    losses: np.ndarray

    def rss_growth(self, warmup: int = 10) -> int:
        """RSS after the last step minus RSS after step ``warmup`` (bytes; can be negative)."""
        k = min(warmup, len(self.rss) - 1)
        return int(self.rss[-1] - self.rss[k])


def train_loop(session: Session, feeds: Mapping[str, np.ndarray], pairs: Mapping[str, str], steps: int) -> LoopResult:
    """Run ``steps`` steps; after each, input ``pairs[out]`` takes the value of output ``out``."""
    names = session.output_names()
    index = {n: i for i, n in enumerate(names)}
    missing = [o for o in pairs if o not in index]
    if missing:
        raise ValueError(f"outputs {missing} are not outputs of the session")
    cur = dict(feeds)
    rss = np.zeros(steps, dtype=np.int64)
    losses = np.zeros(steps, dtype=np.float64)
    outs: list = []
    for k in range(steps):
        outs = session.run(cur)
        for out, inp in pairs.items():
            cur[inp] = outs[index[out]]
        losses[k] = float(np.asarray(outs[0]).reshape(-1)[0]) if outs and outs[0].size else float("nan")
        rss[k] = rss_bytes()
    return LoopResult(outs, rss, losses)
