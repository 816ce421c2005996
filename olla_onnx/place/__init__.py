"""Arena placement: give every buffer an offset so that buffers alive together never overlap.

``place(buffers, capacity=None, alignment=1, time_limit=60.0)`` is the entry
point; see :mod:`olla_onnx.place.strategy`. Pieces: :mod:`.problem` (buffers, trace
CSV, max-load bound, checker), :mod:`.greedy` (best-fit heuristics),
:mod:`.search` (exact branch and bound), :mod:`.ilp` (CVXPY + SCIP model for
small instances).
"""

from olla_onnx.ort_facts import DEFAULT_ALIGNMENT
from olla_onnx.place.strategy import Placement, independent_windows, place
from olla_onnx.place.greedy import best_fit, best_greedy
from olla_onnx.place.problem import (
    Buffers,
    buffers_from_lifetimes,
    check_placement,
    max_load,
    read_trace,
    write_trace,
)
from olla_onnx.place.search import SearchResult, search_placement

__all__ = [
    "DEFAULT_ALIGNMENT",
    "Buffers",
    "Placement",
    "SearchResult",
    "best_fit",
    "best_greedy",
    "buffers_from_lifetimes",
    "check_placement",
    "independent_windows",
    "max_load",
    "place",
    "read_trace",
    "search_placement",
    "write_trace",
]
