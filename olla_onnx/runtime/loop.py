"""Training loops: run a training step many times, feeding updated parameters back in.

Used to check that the planned arena holds over many steps: no fallbacks, no
growth of the process's resident memory (RSS), the same results as
onnxruntime's default session. With an in-place session (pairs bound with IO
binding) the updated parameters are already in the input buffers after a
step: nothing is copied back for them, nor out of them but after the last
step (:attr:`LoopResult.outputs`).
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
    """Run ``steps`` steps; after each, input ``pairs[out]`` takes the value of output ``out``.

    Pairs the session updates in place (:attr:`Session.inplace`) need no copy;
    the others are copied into the input (``feeds`` itself is never modified).
    """
    names = session.output_names()
    index = {n: i for i, n in enumerate(names)}
    missing = [o for o in pairs if o not in index]
    if missing:
        raise ValueError(f"outputs {missing} are not outputs of the session")
    bound = session.inplace
    wrong = [o for o, i in bound.items() if pairs.get(o) != i]
    if wrong:  # the session writes them into their inputs whatever the loop says
        raise ValueError(f"outputs {wrong} are updated in place, but the loop's pairs do not feed them back into those inputs")
    copy_back = {o: i for o, i in pairs.items() if o not in bound}
    cur = dict(feeds)
    if bound:
        session.load(cur)
    rss = np.zeros(steps, dtype=np.int64)
    losses = np.zeros(steps, dtype=np.float64)
    outs: list = []
    for k in range(steps):
        if bound:
            outs = session.step(copy_paired=k == steps - 1)  # paired outputs copied out once, at the end
            for out, inp in copy_back.items():
                session.binding.set_input(inp, outs[index[out]])  # type: ignore[union-attr]
        else:
            outs = session.run(cur)
            for out, inp in copy_back.items():
                cur[inp] = outs[index[out]]
        losses[k] = float(np.asarray(outs[0]).reshape(-1)[0]) if outs and outs[0].size else float("nan")
        rss[k] = rss_bytes()
    return LoopResult(outs, rss, losses)
