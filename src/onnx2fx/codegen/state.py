"""Everything lowering has emitted so far, and the snapshots that let a failed lowering be undone."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..conversion_record import ParameterOrigin
from .emitted import EmittedCall, Helper
from .values import Value


@dataclass(frozen=True)
class EmitterSnapshot:
    """A point :meth:`EmitterState.restore` returns to: the lengths of the lists, which only grow,
    and copies of the tables, which are also rewritten."""

    init_lines: int
    forward_lines: int
    warnings: int
    helpers: dict[str, Helper]
    state: dict[str, torch.Tensor]
    parameter_origins: dict[str, ParameterOrigin]
    module_origins: dict[str, str]
    modules: dict[str, nn.Module]
    initializer_attrs: dict[str, str]
    materialised: int


@dataclass
class EmitterState:
    """What lowering has produced so far, all of which :meth:`Emitter.attempt` undoes when a
    lowering fails: the lines of ``__init__`` and ``forward``, the helpers copied into ``model.py``,
    the tensors of the state dict and their origins, the declared layers, and the warnings; and the
    code given to values on their first use (a constant's attribute, a shape's tensor), which names
    what is undone.

    The containers are changed in place, never replaced: a child emitter shares ``helpers``."""

    init_lines: list[str] = field(default_factory=list)
    forward_lines: list[EmittedCall] = field(default_factory=list)
    helpers: dict[str, Helper] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the generated module's state dict
    parameter_origins: dict[str, ParameterOrigin] = field(default_factory=dict)
    module_origins: dict[str, str] = field(default_factory=dict)  # submodule attribute -> ONNX node name
    modules: dict[str, nn.Module] = field(default_factory=dict)  # submodule attribute -> layer (meta device)
    warnings: list[str] = field(default_factory=list)
    initializer_attrs: dict[str, str] = field(default_factory=dict)  # initializer -> its attribute
    materialised: list[Value] = field(default_factory=list)  # values whose code ``Emitter.ref`` wrote

    def snapshot(self) -> EmitterSnapshot:
        return EmitterSnapshot(len(self.init_lines), len(self.forward_lines), len(self.warnings), dict(self.helpers),
                               dict(self.state), dict(self.parameter_origins), dict(self.module_origins),
                               dict(self.modules), dict(self.initializer_attrs), len(self.materialised))

    def restore(self, snapshot: EmitterSnapshot) -> None:
        del self.init_lines[snapshot.init_lines:]
        del self.forward_lines[snapshot.forward_lines:]
        del self.warnings[snapshot.warnings:]
        for value in self.materialised[snapshot.materialised:]:  # their attribute or line is gone
            value.code = None
        del self.materialised[snapshot.materialised:]
        tables: tuple[tuple[dict, dict], ...] = (
            (self.state, snapshot.state), (self.parameter_origins, snapshot.parameter_origins),
            (self.module_origins, snapshot.module_origins), (self.modules, snapshot.modules),
            (self.helpers, snapshot.helpers), (self.initializer_attrs, snapshot.initializer_attrs))
        for current, saved in tables:
            current.clear()
            current.update(saved)
