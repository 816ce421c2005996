"""Arena placement: give every buffer an offset so that buffers alive together never overlap.

``place(buffers, capacity=None, alignment=1, time_limit=60.0)`` is the entry
point; see :mod:`olla_onnx.place.strategy` (which steps run on which window)
and :mod:`.steps` (the steps and their tuned constants). Pieces:
:mod:`.problem` (buffers, max-load bound, the one placement checker),
:mod:`.greedy` (best-fit heuristics), :mod:`.search` (exact branch and bound;
its preorders in :mod:`.preorder`, its time sections in :mod:`.sections`),
:mod:`.split` (big buffers searched, small ones by best fit),
:mod:`.decompose` (hottest-window-first decomposition), :mod:`.ilp` (CVXPY +
SCIP model for small instances). Trace CSV files are
:mod:`olla_onnx.formats.trace`.
"""

from olla_onnx.ort_facts import DEFAULT_ALIGNMENT
from olla_onnx.place.strategy import Placement, independent_windows, place
from olla_onnx.place.greedy import best_fit, best_greedy
from olla_onnx.place.preorder import Preorder
from olla_onnx.place.problem import (
    Buffers,
    buffers_from_lifetimes,
    check_placement,
    max_load,
)
from olla_onnx.place.search import SearchResult, search_placement

__all__ = [
    "DEFAULT_ALIGNMENT",
    "Buffers",
    "Placement",
    "Preorder",
    "SearchResult",
    "best_fit",
    "best_greedy",
    "buffers_from_lifetimes",
    "check_placement",
    "independent_windows",
    "max_load",
    "place",
    "search_placement",
]
