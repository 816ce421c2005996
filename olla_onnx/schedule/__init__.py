"""Node ordering for minimal peak memory: heuristics, bounds, exact search, decomposition.

One entry point, :func:`optimize_order` (:mod:`.portfolio`). The modules, each usable alone:

* :mod:`.portfolio`: :func:`optimize_order`, the stages run in turn under one time limit, and its result;
* :mod:`.reduce`: the compact problem (resident tensors out, sizes / GCD), ASAP/ALAP windows, the
  relaxation with shared constants pinned;
* :mod:`.heuristics`: memory-aware list scheduling, beam search;
* :mod:`.bounds`: the per-node min-cut lower bound (dominates the ancestor bound), the pair min-cut
  bound, the last-step bound;
* :mod:`.chain`: the nested down-set integer program over the nodes at the peak (a bound and an order);
* :mod:`.relax`: lower bounds from exact DPs on relaxed regions around the peak;
* :mod:`.dp`: exact DP over down-sets, on the whole graph or a window of an order;
* :mod:`.fastdp`: the same DP one level at a time with numpy (what the portfolio runs);
* :mod:`.local`: node and group moves at the peak, exact re-solving of windows, restarts from min-cut splits;
* :mod:`.decompose`: segments of an order solved apart and stitched;
* :mod:`.ilp`: the time-indexed integer program (CVXPY + SCIP), the incumbent as cutoff.
"""

from __future__ import annotations

from olla_onnx.schedule.portfolio import ScheduleResult, optimize_order

__all__ = ["ScheduleResult", "optimize_order"]
