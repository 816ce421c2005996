"""The exact search's view of time: sections, their totals, overlaps and independent groups.

A *section* is a time slice between two consecutive distinct start or end
times; the set of buffers alive is constant on it. The search
(:mod:`olla_onnx.place.search`) works on section indices: buffer ``i`` spans
sections ``first[i]:stop[i]``. Built once per search, O(n log n + n * k)
for k buffers alive together (the overlap lists).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sections:
    """The sections of one problem (see the module notes).

    ``times``: section boundaries; ``count``: number of sections;
    ``first``/``stop``: each buffer's section span; ``neighbours[i]``: the
    buffers alive together with ``i``; ``total[s]``: bytes alive in section
    ``s``; ``crossings[k]``: buffers spanning the boundary between sections
    ``k`` and ``k + 1``; ``members[ptr[s]:ptr[s + 1]]``: the buffers alive in
    section ``s``.
    """

    times: np.ndarray
    count: int
    first: np.ndarray
    stop: np.ndarray
    neighbours: list[np.ndarray]
    total: np.ndarray
    crossings: np.ndarray
    members: np.ndarray
    ptr: np.ndarray

    @staticmethod
    def build(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray) -> "Sections":
        """Sections of the buffers ``[lower[i], upper[i])`` of ``sizes[i]`` bytes (int64 arrays)."""
        n = sizes.size
        times = np.unique(np.concatenate([lower, upper]))
        slo = np.searchsorted(times, lower).astype(np.int64)
        shi = np.searchsorted(times, upper).astype(np.int64)
        count = max(times.size - 1, 0)
        # Overlap lists: i and j overlap iff lower_i < upper_j and lower_j < upper_i.
        nbrs: list[np.ndarray] = []
        for i in range(n):
            m = (lower < upper[i]) & (upper > lower[i])
            m[i] = False
            nbrs.append(np.flatnonzero(m))
        total = np.zeros(count + 1, dtype=np.int64)
        np.add.at(total, slo, sizes)
        np.add.at(total, shi, -sizes)
        cuts = np.zeros(count + 1, dtype=np.int64)
        inner = shi - slo > 1
        np.add.at(cuts, slo[inner], 1)
        np.add.at(cuts, shi[inner] - 1, -1)
        # Section membership as a flat array (section s owns memb[ptr[s]:ptr[s+1]]).
        if count:
            span = shi - slo
            owner = np.repeat(np.arange(n), span)
            sec = np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span) + np.repeat(slo, span)
            o = np.lexsort((owner, sec))
            memb = owner[o]
            ptr = np.searchsorted(sec[o], np.arange(count + 1))
        else:
            memb = np.zeros(0, dtype=np.int64)
            ptr = np.zeros(1, dtype=np.int64)
        return Sections(
            times=times,
            count=count,
            first=slo,
            stop=shi,
            neighbours=nbrs,
            total=np.cumsum(total)[:count],
            crossings=np.cumsum(cuts)[: max(count - 1, 0)],
            members=memb,
            ptr=ptr,
        )

    def partitions(self) -> list[tuple[np.ndarray, int, int]]:
        """Independent groups ``(buffers, first section, stop section)``: split where no buffer spans the boundary."""
        if self.first.size == 0:
            return []
        cutpoints = [0] + (np.flatnonzero(self.crossings == 0) + 1).tolist() + [self.count]
        out = []
        for a, b in zip(cutpoints[:-1], cutpoints[1:]):
            idx = np.flatnonzero((self.first >= a) & (self.first < b))
            if idx.size:
                out.append((idx, a, b))
        return out
