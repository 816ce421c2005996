"""What an exported training step's inputs and outputs are: :class:`TrainingStep` (no torch needed).

:func:`olla_onnx.export.training_step` returns one and writes it (less the initial values) into the
ONNX file's ``metadata_props`` under :data:`METADATA_KEY`, as one JSON object::

    {"format": "olla-onnx-training-step", "version": 1,
     "inputs": [name, ...], "outputs": [name, ...],          # the graph's, in order
     "parameters": {input: module parameter name, ...},
     "state": {input: "<slot>.<parameter name>" or "step", ...},  # optimizer state (torch.optim's slot names)
     "batch": [input, ...],                                   # model inputs..., target
     "loss": output,
     "updates": {output: input, ...},                         # the new value of that input
     "optimizer": {"kind": ..., "lr": ..., ...}}

so that :class:`olla_onnx.train.Trainer` knows, from the file alone, which outputs to feed back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from olla_onnx.errors import OllaInputError

METADATA_KEY = "olla_onnx.training_step"
FORMAT = "olla-onnx-training-step"


@dataclass(frozen=True)
class TrainingStep:
    """The inputs and outputs of one exported training step, by name (see the module docstring).

    ``initial`` (not stored in the file): a value for every parameter and state input: the
    module's parameters when it was exported, zero optimizer state, step count 0.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    parameters: dict[str, str]
    state: dict[str, str]
    batch: tuple[str, ...]
    loss: str
    updates: dict[str, str]
    optimizer: dict[str, Any] = field(default_factory=dict)
    initial: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        fed = set(self.parameters) | set(self.state)
        if set(self.updates.values()) != fed or len(self.updates) != len(fed):
            raise OllaInputError("a training step's updates must name each parameter and state input once")
        unknown = (fed | set(self.batch)) - set(self.inputs) or ({self.loss} | set(self.updates)) - set(self.outputs)
        if unknown:
            raise OllaInputError(f"a training step names tensors that are not its inputs/outputs: {sorted(unknown)[:3]}")

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "version": 1, "inputs": list(self.inputs), "outputs": list(self.outputs),
            "parameters": self.parameters, "state": self.state, "batch": list(self.batch), "loss": self.loss,
            "updates": self.updates, "optimizer": self.optimizer,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainingStep:
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT or d.get("version") != 1:
                raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}")
            return cls(tuple(d["inputs"]), tuple(d["outputs"]), dict(d["parameters"]), dict(d["state"]),
                       tuple(d["batch"]), str(d["loss"]), dict(d["updates"]), dict(d.get("optimizer", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OllaInputError(f"unreadable training-step description ({METADATA_KEY}): {exc}") from None

    @classmethod
    def from_model(cls, model: Any) -> TrainingStep | None:
        """The description stored in an ONNX model (a ``ModelProto`` or a path); None if it has none."""
        if isinstance(model, (str, Path)):
            import onnx

            model = onnx.load(str(model), load_external_data=False)
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                return cls.from_json(prop.value)
        return None

    def store(self, model: Any) -> None:
        """Write this description into ``model.metadata_props`` (replacing an older one)."""
        keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, self.to_json()

    def by_parameter(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``values`` keyed by input name (e.g. :meth:`olla_onnx.train.Trainer.parameters`) -> keyed by the
        module's parameter names (for ``module.load_state_dict``); state and other names are left out."""
        return {self.parameters[k]: v for k, v in values.items() if k in self.parameters}
