"""Allocators onnxruntime calls back into: a recording one and a planned-arena one.

onnxruntime's allocator interface hands over only a size. A session's
requests during one run are, however, the same sequence of sizes run after
run (file order, sequential execution, memory pattern off). So:

1. :class:`ArenaAllocator` starts in *recording* mode: it serves every request
   from a heap and records the trace (alloc/free events, exact sizes).
2. :func:`plan_trace` places the buffers of one run's trace in one arena
   (every buffer live on ``[alloc event, free event)``) — the plan comes from
   what onnxruntime really does, its in-place reuse included.
3. :meth:`ArenaAllocator.install` switches it to *replay*: the i-th request of
   a run gets the i-th planned buffer, at ``arena + offset``, when its size is
   the recorded one and no live buffer occupies those bytes; any other request
   is served from the fallback heap and counted (:attr:`ArenaStats.fallbacks`).

Memory comes from a :class:`Memory` (host: 64-byte aligned ``aligned_alloc``;
CUDA: ``cudaMalloc``). :class:`RecordingAllocator` is the measuring device
for onnxruntime's own sessions: exact bytes in use, peak, trace.

:class:`EnvAllocator` is the one process-wide ``OrtAllocator`` registered in
onnxruntime's environment; it forwards each request to the allocator of the
session that is running (:meth:`EnvAllocator.serving`) and each free to the
allocator that served the pointer. Its callbacks read no module globals, so a
late free during interpreter shutdown still finds what it needs.

Modules: :mod:`.memory` (raw host and CUDA memory, the alignment),
:mod:`.recording` (the event log, :class:`AllocTrace`, :class:`RecordingAllocator`),
:mod:`.planning` (:func:`plan_trace`), :mod:`.arena` (:class:`ArenaAllocator`),
:mod:`.env` (:class:`EnvAllocator`). Their public names are importable from here.
"""

from olla_onnx.runtime.allocator.arena import ArenaAllocator, ArenaStats
from olla_onnx.runtime.allocator.env import Backend, EnvAllocator, env_allocator
from olla_onnx.runtime.allocator.backends import ALIGNMENT, CudaMemory, HostMemory, Memory, round_up
from olla_onnx.runtime.allocator.planning import TracePlan, greedy_offsets, plan_trace
from olla_onnx.runtime.allocator.recording import AllocTrace, EventLog, RecordingAllocator

__all__ = [
    "ALIGNMENT",
    "AllocTrace",
    "ArenaAllocator",
    "ArenaStats",
    "Backend",
    "CudaMemory",
    "EnvAllocator",
    "EventLog",
    "HostMemory",
    "Memory",
    "RecordingAllocator",
    "TracePlan",
    "env_allocator",
    "greedy_offsets",
    "plan_trace",
    "round_up",
]
