"""Train with an ONNX training step in onnxruntime, served from the planned arena, updates in place: :class:`Trainer`.

    from olla_onnx.train import Trainer
    with Trainer("step.onnx", init=step.initial) as trainer:   # step: olla_onnx.export.training_step's
        losses = trainer.run([(x, y)], steps=20)                  # 20 steps, cycling through the batches
        params = trainer.parameters()                             # copies, keyed by graph input name

A step file (forward, loss, backward, optimizer update in one graph) takes the parameters and the
optimizer state as graph inputs and gives their new values as graph outputs. :attr:`Trainer.updates`
says which output is the new value of which input: from the file's
:class:`~olla_onnx.export.step.TrainingStep` (:func:`olla_onnx.export.training_step` writes it) or the
``updates`` argument. The graph inputs not in ``init`` are the batch.

Given a raw step, the Trainer optimizes it first (:func:`olla_onnx.optimize.optimize_model`: node order,
arena plan, in-place pairs); given a plan (a file, a :class:`~olla_onnx.plan.Plan` or an
:class:`~olla_onnx.optimize.OptimizeResult`) it checks it against the model and uses its order and pairs.
The first :meth:`Trainer.step` opens onnxruntime's planned session
(:func:`olla_onnx.runtime.measure.open_planned`): it records the step's allocations on the initial values
and the first batch, places them in one arena, and serves every later step from it. The plan's in-place
pairs are bound through IO binding (:class:`olla_onnx.runtime.session.InplaceBinding`): onnxruntime
writes each updated parameter or state tensor over its input, so they stay in one buffer each, step after
step.

Guarantees:

- each step computes what the planned session computes (the plan's order, no graph rewrites); the
  arena and IO binding change where tensors live, never what is computed (``tests/test_train.py``: 20
  steps bitwise equal to a plain loop over onnxruntime's default session, for the committed steps);
- the pairs are the plan's, checked safe (every other reader of an input runs before its update), and
  after each step the binding checks that onnxruntime wrote each paired output at its input's address;
- a request the arena plan does not fit (another batch shape, a lazy allocation) is served from the heap
  and counted (:meth:`stats` ``fallbacks``), never placed over a live buffer;
- the caller's arrays (``init``, batches) are never written; :meth:`parameters` copies unless asked not to.

Cost:

- construction: loading the model, and without a plan the order search and placement (``time_limit``);
- the first step: 3 extra runs of the step to record (6 with ``mem_reuse=None``: both settings of
  onnxruntime's own buffer reuse, the smaller arena kept), not counted as training steps, and the arena
  placement (``arena_time_limit``);
- each step: the batch copied into its input buffers; the loss and any other output no input takes back
  copied out of the arena (its bytes are reused by the next step); an update the plan could not pair in
  place copied into its input's buffer (none for the steps ``training_step`` writes). Parameters and state
  paired in place: no copy;
- memory: the arena, one buffer per graph input, onnxruntime's small heap allocations.

CPU only (the CUDA branch of the session machinery has not been run in this project).
"""

from __future__ import annotations

import itertools
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from olla_onnx.errors import OllaInputError
from olla_onnx.optimize import DEFAULT_TIME_LIMIT, OptimizeResult

#: Seconds for placing the recorded requests of one step in the arena (:func:`~olla_onnx.runtime.measure.open_planned`).
ARENA_TIME_LIMIT = 5.0


class Trainer:
    """Run a training step again and again in onnxruntime's planned session (see the module docstring).

    ``model``: an ``.onnx`` path or a loaded ONNX model (:func:`olla_onnx.load_graph`). ``plan``: None
    (optimize now, ``time_limit`` seconds of order search), a plan file, a :class:`~olla_onnx.plan.Plan`
    or an :class:`~olla_onnx.optimize.OptimizeResult` for this model. ``init``: a value for every input
    an output updates (parameters, optimizer state, step count) and any other constant input.
    ``updates`` (output -> input): defaults to the file's :class:`~olla_onnx.export.step.TrainingStep`.
    ``loss``: the output :meth:`step` returns (default: the description's, else the first output).
    ``dims`` pins symbolic dimensions; ``mem_reuse``: see :func:`~olla_onnx.runtime.measure.open_planned`.
    ``inplace=False`` binds no pair (every update is copied back into its input after each step).
    """

    def __init__(
        self,
        model: Any,
        plan: Any = None,
        *,
        init: Mapping[str, Any],
        updates: Mapping[str, str] | None = None,
        loss: str | None = None,
        time_limit: float = DEFAULT_TIME_LIMIT,
        arena_time_limit: float = ARENA_TIME_LIMIT,
        mem_reuse: bool | None = None,
        dims: Mapping[str, int] | None = None,
        inplace: bool = True,
    ) -> None:
        from olla_onnx.export.step import TrainingStep
        from olla_onnx.formats.onnx.write import reordered_model
        from olla_onnx.plan import check_plan

        loaded, plan = _load(model, plan, dims)
        self.optimized: OptimizeResult | None = None
        if plan is None:
            from olla_onnx.optimize import optimize_model

            self.optimized = optimize_model(loaded, time_limit=time_limit)
            plan = self.optimized.plan
        check_plan(plan, loaded.graph)  # a PlanError before anything runs
        self.plan = plan
        proto = _full_model(loaded)
        self.description = TrainingStep.from_model(proto)
        inits = {t.name for t in proto.graph.initializer}
        self.inputs = tuple(vi.name for vi in proto.graph.input if vi.name not in inits)
        self.outputs = tuple(vo.name for vo in proto.graph.output)
        self._declared = {vi.name: _declared(vi) for vi in proto.graph.input}
        if updates is None and self.description is None:
            raise OllaInputError(f"{loaded.path.name} does not say which outputs update which inputs (no "
                                 "olla_onnx.export.TrainingStep in it): give updates={output: input, ...}")
        self.updates = dict(updates if updates is not None else self.description.updates)  # type: ignore[union-attr]
        self.loss = loss or (self.description.loss if self.description is not None else self.outputs[0])
        self.inplace = {p.output: p.input for p in plan.inplace} if inplace else {}
        self._check(init)
        self._init = {k: np.array(v, copy=True) for k, v in init.items()}  # the caller's arrays stay theirs
        self.batch_names = tuple(n for n in self.inputs if n not in self._init)
        self._copy_back = {o: i for o, i in self.updates.items() if o not in self.inplace}
        self._bytes = reordered_model(proto, plan.order_indices(loaded.graph)).SerializeToString()
        self._arena_time_limit, self._mem_reuse = arena_time_limit, mem_reuse
        self._session: Any = None
        self._cur: dict[str, np.ndarray] = {}  # a session without in-place pairs: the inputs of the next step
        self._final: dict[str, np.ndarray] | None = None
        self._finalizer: Any = None
        self.info: dict[str, Any] = {}
        self.steps = 0

    def _check(self, init: Mapping[str, Any]) -> None:
        outs, ins = set(self.outputs), set(self.inputs)
        bad = [f"{o} -> {i}" for o, i in self.updates.items() if o not in outs or i not in ins]
        if bad:
            raise OllaInputError(f"updates name tensors that are not graph outputs/fed inputs: {bad[:3]}")
        if len(set(self.updates.values())) != len(self.updates):
            raise OllaInputError("updates feed two outputs into one input")
        wrong = [f"{o} -> {i}" for o, i in self.inplace.items() if self.updates.get(o) != i]
        if wrong:  # the session writes them into those inputs whatever updates says
            raise OllaInputError(f"the plan writes {wrong[:3]} in place, but updates does not feed them back so")
        if self.loss not in outs:
            raise OllaInputError(f"loss {self.loss!r} is not a graph output")
        missing = [i for i in self.updates.values() if i not in init]
        unknown = [k for k in init if k not in ins]
        if missing or unknown:
            raise OllaInputError(f"init lacks the updated inputs {missing[:3]}" if missing else
                                 f"init names tensors that are not fed graph inputs: {unknown[:3]}")

    # ------------------------------------------------------------------ training

    def step(self, batch: Mapping[str, Any] | Sequence[Any]) -> float:
        """One training step on ``batch`` (arrays in :attr:`batch_names` order, or a mapping by name); the loss.

        Each array takes its input's dtype (a same-kind cast) and must have the first batch's shape.
        """
        if self._final is not None:
            raise RuntimeError("the Trainer is closed")
        feeds = self._feeds(batch)
        if self._session is None:
            self._open(feeds)
        s = self._session
        if s.binding is not None:
            for name, arr in feeds.items():
                s.binding.set_input(name, arr)
            outs = s.step(copy_paired=False)  # paired outputs: their inputs' buffers, not copied
            for out, inp in self._copy_back.items():
                s.binding.set_input(inp, outs[self._index[out]])
        else:
            self._cur.update(feeds)
            outs = s.run(self._cur)
            for out, inp in self._copy_back.items():
                self._cur[inp] = outs[self._index[out]]
        self.steps += 1
        return float(np.asarray(outs[self._index[self.loss]]).reshape(-1)[0])

    def run(self, batches: Iterable[Any], steps: int | None = None) -> np.ndarray:
        """:meth:`step` over ``batches``; with ``steps``, exactly that many, cycling through ``batches``.
        The losses (float64 holding each float32 loss exactly)."""
        it: Iterable[Any] = batches if steps is None else itertools.islice(itertools.cycle(batches), steps)
        return np.array([self.step(b) for b in it], dtype=np.float64)

    def _feeds(self, batch: Mapping[str, Any] | Sequence[Any]) -> dict[str, np.ndarray]:
        if isinstance(batch, Mapping):
            extra = [k for k in batch if k not in self.batch_names]
            if extra:
                raise OllaInputError(f"the batch names {extra[:3]}, not batch inputs {list(self.batch_names)}")
            values = [batch[n] if n in batch else None for n in self.batch_names]
        else:
            values = list(batch)
            if len(values) != len(self.batch_names):
                raise OllaInputError(f"a batch is {len(self.batch_names)} arrays {list(self.batch_names)}, got {len(values)}")
        feeds = {}
        for name, v in zip(self.batch_names, values):
            if v is None:
                raise OllaInputError(f"the batch has no value for {name!r}")
            dtype, dims = self._declared[name]
            arr = np.asarray(v)
            if dtype is not None and arr.dtype != dtype:
                try:
                    arr = arr.astype(dtype, casting="same_kind")
                except TypeError:
                    raise OllaInputError(f"batch input {name!r} is {arr.dtype}; the step takes {dtype}") from None
            want = self._shapes.get(name) if self._session is not None else dims
            if want is not None and (len(want) != arr.ndim or any(w is not None and w != a for w, a in zip(want, arr.shape))):
                raise OllaInputError(f"batch input {name!r} has shape {list(arr.shape)}; the step takes {list(want)}")
            feeds[name] = arr
        return feeds

    def _open(self, feeds: Mapping[str, np.ndarray]) -> None:
        from olla_onnx.runtime.measure import open_planned

        first = {**self._init, **feeds}
        s, info = open_planned(self._bytes, first, "cpu", self._arena_time_limit, self._mem_reuse,
                               inplace=self.inplace or None)
        self._finalizer = weakref.finalize(self, s.close)  # also at interpreter exit, before teardown
        self._session, self.info = s, info
        self.info.pop("recorded_outputs", None)
        if s.binding is not None:
            s.load(first)  # the recording ran steps from these values: start again from them
        else:
            self._cur = dict(first)
        self._index = {n: k for k, n in enumerate(s.output_names())}
        self._shapes = {n: tuple(a.shape) for n, a in feeds.items()}

    # ------------------------------------------------------------------ reading back

    def parameters(self, copy: bool = True) -> dict[str, np.ndarray]:
        """The current value of every updated input (parameters, optimizer state, step count), by input name.

        ``copy=False``: read-only views of the live buffers (no copy; they change with the next step).
        :meth:`olla_onnx.export.step.TrainingStep.by_parameter` keys them by the module's parameter names.
        """
        if self._final is not None:
            source = self._final
        elif self._session is None:
            source = self._init
        elif self._session.binding is not None:
            source = self._session.binding.host
        else:
            source = self._cur
        out = {}
        for name in self.inputs:
            if name in self.updates.values():
                v = np.array(source[name], copy=True) if copy else source[name].view()
                if not copy:
                    v.flags.writeable = False
                out[name] = v
        return out

    def stats(self) -> Any:
        """The arena allocator's :class:`~olla_onnx.runtime.allocator.ArenaStats` (None before the first step)."""
        return self._session.measured.stats() if self._session is not None else None

    def close(self) -> None:
        """Free the session and its arena; :meth:`parameters` still answers (from a copy). Idempotent."""
        if self._final is None:
            self._final = self.parameters(copy=True)
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _load(model: Any, plan: Any, dims: Mapping[str, int] | None) -> tuple[Any, Any]:
    """(the loaded ONNX model, the plan or None); a plan file is read before the model (its format first)."""
    from olla_onnx.formats import LoadedModel, load_graph
    from olla_onnx.plan import Plan, load_plan, plan_uses_workspace

    if isinstance(plan, OptimizeResult):
        plan = plan.plan
    elif isinstance(plan, (str, Path)):
        plan = load_plan(Path(plan))
    elif plan is not None and not isinstance(plan, Plan):
        raise OllaInputError(f"plan: give a plan file, a Plan or an OptimizeResult, not {type(plan).__name__}")
    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, (str, Path)):
        loaded = load_graph(model, dims, workspace=plan is None or plan_uses_workspace(plan))
    else:
        raise OllaInputError(f"model: give an .onnx path or a loaded model, not {type(model).__name__}")
    if not loaded.runs_in_onnxruntime:
        raise OllaInputError(f"{loaded.path.name}: training runs ONNX models in onnxruntime; this is {loaded.format}")
    return loaded, plan


def _full_model(loaded: Any) -> Any:
    """The model with its external data (the loaded IR's copy has none)."""
    from olla_onnx.formats.onnx.read import read_onnx_with_data

    return read_onnx_with_data(loaded.path)


def _declared(vi: Any) -> tuple[Any, tuple[int | None, ...] | None]:
    """(numpy dtype or None, dims with None for symbolic ones, or None) of a graph input."""
    from onnx.helper import tensor_dtype_to_np_dtype

    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        return None, None
    dtype = np.dtype(tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim) if tt.HasField("shape") else None
    return dtype, dims
