"""Placement problems: buffers with lifetimes, CSV I/O, the max-load bound and the checker.

A buffer ``i`` needs ``sizes[i]`` bytes on the half-open time interval
``[lower[i], upper[i])``. A placement gives every buffer an ``offset``; it is
valid when two buffers alive at the same time never share a byte and every
buffer lies inside ``[0, arena)``. The trace format is the MiniMalloc one:
CSV ``id,lower,upper,size`` (a solution adds ``offset``).
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_left, insort
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from olla_onnx.errors import OllaInputError


@dataclass(frozen=True)
class Buffers:
    """Buffers to place: ``ids[i]`` lives on ``[lower[i], upper[i])`` and needs ``sizes[i]`` bytes.

    Arrays are int64 and read-only; ``upper > lower`` and ``sizes >= 0`` hold for
    every buffer (checked by :meth:`build`).
    """

    ids: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    sizes: np.ndarray

    @staticmethod
    def build(ids: Sequence[object], lower: Sequence[int], upper: Sequence[int], sizes: Sequence[int]) -> "Buffers":
        """Validate and freeze; :class:`OllaInputError` names the first bad buffer."""
        lo = np.asarray(lower, dtype=np.int64).reshape(-1)
        up = np.asarray(upper, dtype=np.int64).reshape(-1)
        sz = np.asarray(sizes, dtype=np.int64).reshape(-1)
        names = tuple(str(i) for i in ids)
        if not (len(names) == lo.size == up.size == sz.size):
            raise OllaInputError("ids, lower, upper and sizes must have the same length")
        bad = np.flatnonzero(up <= lo)
        if bad.size:
            i = int(bad[0])
            raise OllaInputError(f"buffer {names[i]!r}: upper {int(up[i])} <= lower {int(lo[i])} (the interval [lower, upper) is empty)")
        bad = np.flatnonzero(sz < 0)
        if bad.size:
            i = int(bad[0])
            raise OllaInputError(f"buffer {names[i]!r}: negative size {int(sz[i])}")
        if len(set(names)) != len(names):
            seen: set[str] = set()
            dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise OllaInputError(f"buffer id {dup!r} appears twice")
        for a in (lo, up, sz):
            a.setflags(write=False)
        return Buffers(names, lo, up, sz)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray) -> "Buffers":
        """The buffers at positions ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        return Buffers.build([self.ids[i] for i in idx], self.lower[idx], self.upper[idx], self.sizes[idx])


def aligned_sizes(sizes: np.ndarray, alignment: int) -> np.ndarray:
    """Sizes rounded up to a multiple of ``alignment`` (the space a buffer takes in an aligned arena)."""
    if alignment < 1:
        raise OllaInputError(f"alignment must be a positive integer, got {alignment}")
    a = np.int64(alignment)
    return (np.asarray(sizes, dtype=np.int64) + a - 1) // a * a


def load_profile(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(times, load)``: ``load[k]`` is the bytes alive on ``[times[k], times[k+1])``. O(n log n)."""
    times = np.unique(np.concatenate([lower, upper]))
    delta = np.zeros(times.size, dtype=np.int64)
    np.add.at(delta, np.searchsorted(times, lower), sizes)
    np.add.at(delta, np.searchsorted(times, upper), -sizes)
    return times, np.cumsum(delta)


def max_load(lower: np.ndarray, upper: np.ndarray, sizes: np.ndarray) -> int:
    """The most bytes alive at any moment: a lower bound on every arena. O(n log n)."""
    if len(sizes) == 0:
        return 0
    return int(load_profile(lower, upper, sizes)[1].max())


def check_placement(
    lower: np.ndarray,
    upper: np.ndarray,
    sizes: np.ndarray,
    offsets: np.ndarray,
    capacity: int | None = None,
    alignment: int = 1,
) -> int:
    """Verify a placement and return its arena size ``max(offset + size)``.

    Raises :class:`ValueError` naming the first two buffers alive at the same time
    whose byte ranges overlap, a negative or misaligned offset, or a buffer that
    ends above ``capacity``. Every pair alive together is alive at the later of
    their start times, so checking each buffer against the buffers alive when it
    starts covers all pairs; the alive set is kept sorted by offset.
    O(n log n + n * k) for k buffers alive at once.
    """
    lower = np.asarray(lower, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(sizes)
    if offsets.shape != (n,):
        raise ValueError(f"{offsets.size} offsets for {n} buffers")
    if n == 0:
        return 0
    if (offsets < 0).any():
        i = int(np.flatnonzero(offsets < 0)[0])
        raise ValueError(f"buffer {i} has a negative offset {int(offsets[i])}")
    if alignment > 1 and (offsets % alignment).any():
        i = int(np.flatnonzero(offsets % alignment)[0])
        raise ValueError(f"buffer {i}: offset {int(offsets[i])} is not a multiple of {alignment}")
    tops = offsets + sizes
    arena = int(tops.max())
    if capacity is not None and arena > capacity:
        i = int(np.argmax(tops))
        raise ValueError(f"buffer {i} ends at {arena}, above the capacity {capacity}")
    # Events: starts sorted by time; ends removed lazily before each start.
    live = np.flatnonzero(sizes > 0)
    by_start = live[np.argsort(lower[live], kind="stable")]
    by_end = live[np.argsort(upper[live], kind="stable")]
    active: list[tuple[int, int]] = []  # (offset, buffer) sorted
    e = 0
    lo_l, up_l, off_l, top_l = lower.tolist(), upper.tolist(), offsets.tolist(), tops.tolist()
    end_l = by_end.tolist()
    for b in by_start.tolist():
        t = lo_l[b]
        while e < len(end_l) and up_l[end_l[e]] <= t:
            c = end_l[e]
            k = bisect_left(active, (off_l[c], c))
            if k < len(active) and active[k][1] == c:
                active.pop(k)
            e += 1
        key = (off_l[b], b)
        k = bisect_left(active, key)
        if k > 0:
            c = active[k - 1][1]
            if top_l[c] > off_l[b]:
                raise ValueError(f"buffers {c} and {b} are alive together at time {t} and overlap in bytes")
        if k < len(active):
            c = active[k][1]
            if top_l[b] > off_l[c]:
                raise ValueError(f"buffers {b} and {c} are alive together at time {t} and overlap in bytes")
        insort(active, key)
    return arena


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


def buffers_from_lifetimes(lt) -> Buffers:
    """Buffers of a :class:`olla_onnx.ir.memory.Lifetimes`: tensor ``names[i]`` on ``[start, end + 1)``.

    Resident tensors are not in ``Lifetimes`` (they live outside the arena).
    """
    return Buffers.build(lt.names, lt.start, np.asarray(lt.end, dtype=np.int64) + 1, lt.sizes)
