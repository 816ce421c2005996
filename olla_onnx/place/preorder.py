"""The exact search's static preorders: which buffer it tries first at an offset.

The search (:mod:`olla_onnx.place.search`) builds a placement from the bottom
of the arena up; among the buffers that could go next at the same offset it
tries them in a fixed *preorder*. A preorder is written as letters, each a
measure of a buffer sorted in descending order: the first letter decides, the
next ones break ties, the buffer index breaks the last ties (MiniMalloc's
notation; Moffitt, "MiniMalloc: A Lightweight Memory Allocator for
Hardware-Accelerated Machine Learning", ASPLOS 2023):

- ``W``: lifetime width ``upper - lower``;
- ``A``: area, width times size;
- ``T``: peak, the largest section total the buffer sees (bytes alive in the
  busiest time slice of its lifetime);
- ``Z``: size;
- ``L``: start ``lower``;
- ``U``: end ``upper``.

:class:`Preorder` names the preorders this package uses; any string of these
letters works where a preorder is asked for. A preorder changes the order of
the search, never its answer. With a ``rank_span`` the measures are taken
inside that time window only (a window of a bigger problem: what lies outside
it is not ranked).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Preorder(StrEnum):
    """A static preorder of the search; each member is its letter string (see the module notes)."""

    #: Longest lifetime first; ties: larger area, then higher peak (MiniMalloc's WAT).
    LIFETIME_AREA_PEAK = "WAT"
    #: Highest peak first; ties: larger area, then longer lifetime (MiniMalloc's TAW).
    PEAK_AREA_LIFETIME = "TAW"
    #: Highest peak first; ties: longer lifetime, then larger area (MiniMalloc's TWA).
    PEAK_LIFETIME_AREA = "TWA"
    #: Highest peak first; ties: longer lifetime.
    PEAK_LIFETIME = "TW"
    #: Largest area first; ties: longer lifetime.
    AREA_LIFETIME = "AW"
    #: Largest size first; ties: longer lifetime, then higher peak.
    SIZE_LIFETIME_PEAK = "ZWT"
    #: Highest peak first; ties: larger size, then longer lifetime.
    PEAK_SIZE_LIFETIME = "TZW"
    #: Latest end first; ties: longer lifetime, then higher peak.
    END_LIFETIME_PEAK = "UWT"


#: MiniMalloc's three preorders: the search runs them round robin by default.
MINIMALLOC_PREORDERS: tuple[Preorder, ...] = (
    Preorder.LIFETIME_AREA_PEAK,
    Preorder.PEAK_AREA_LIFETIME,
    Preorder.PEAK_LIFETIME_AREA,
)


def preorder_ranks(measures: dict[str, np.ndarray], preorder: str) -> np.ndarray:
    """Rank of each buffer under ``preorder`` (descending by each letter's measure, ties by index)."""
    n = measures["W"].size
    keys = [np.arange(n)] + [-measures[c] for c in reversed(preorder)]
    order = np.lexsort(keys)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def peaks(total: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """``max(total[first[i]:stop[i]])`` for every buffer ``i`` (the ``T`` measure). O(n * span)."""
    return np.array([total[s0:s1].max() for s0, s1 in zip(first.tolist(), stop.tolist())], dtype=np.int64)


class PreorderMeasures:
    """The measures of every letter, for buffers on the search's sections.

    ``times`` are the section boundaries, ``total`` the bytes alive per section
    (for ``T``); ``rank_span`` limits the measures to a time window. The
    sections each buffer is ranked on are ``first[i]:stop[i]``.
    """

    def __init__(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        sizes: np.ndarray,
        times: np.ndarray,
        total: np.ndarray,
        rank_span: tuple[int, int] | None = None,
    ) -> None:
        if rank_span is not None:
            r_lo = np.minimum(np.maximum(lower, rank_span[0]), upper - 1)
            r_up = np.maximum(np.minimum(upper, rank_span[1]), r_lo + 1)
        else:
            r_lo, r_up = lower, upper
        self.first = np.searchsorted(times, r_lo, side="right").astype(np.int64) - 1
        self.stop = np.maximum(np.searchsorted(times, r_up).astype(np.int64), self.first + 1)
        width = (r_up - r_lo).astype(np.int64)
        self.cols = {
            "W": width,
            "A": width * sizes,
            "T": peaks(total, self.first, self.stop),
            "Z": sizes,
            "L": lower,
            "U": upper,
        }

    def ranks(self, preorder: str) -> np.ndarray:
        """Every buffer's rank under ``preorder``."""
        return preorder_ranks(self.cols, preorder)

    def ranks_now(self, sub: np.ndarray, total: np.ndarray, preorder: str) -> np.ndarray:
        """Ranks of the buffers ``sub`` among themselves, with ``T`` from today's section totals."""
        cols = {k: v[sub] for k, v in self.cols.items() if k != "T"}
        cols["T"] = peaks(total, self.first[sub], self.stop[sub])
        return preorder_ranks(cols, preorder)
