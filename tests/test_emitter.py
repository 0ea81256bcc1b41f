"""The emitter's state and how its statements are written: ``Emitter.attempt`` undoes a failed
lowering completely (the fallback tiers of Resize and the function-body fallback rely on it), and
``render.statement`` writes each emitted call."""

from __future__ import annotations

import pytest
import torch

from onnx2fx.codegen.emitted import EmittedCall, NodeInfo
from onnx2fx.codegen.emitter import Emitter
from onnx2fx.codegen.render import statement
from onnx2fx.errors import UnsupportedOperatorError


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def _emitter() -> tuple[Emitter, object]:
    g = Emitter()
    g.begin_node(NodeInfo("n", "Conv", "", 17, ["y"]))
    with g.fake_mode:
        fake = torch.empty(1, 3, 8, 8)
    return g, g.input("x", fake)


def _contents(g: Emitter) -> tuple:
    out = g.generated
    return (list(out.init_lines), [statement(c) for c in out.forward_lines], dict(out.state),
            dict(out.parameter_origins), dict(out.module_origins), dict(out.modules), dict(out.helpers),
            list(out.warnings))


def test_attempt_undoes_everything_a_failed_lowering_emitted() -> None:
    g, x = _emitter()
    g.call("torch.relu", x)
    before = _contents(g)
    with pytest.raises(UnsupportedOperatorError), g.attempt():
        layer = g.add_module("conv", "nn.Conv2d", 3, 4, kernel_size=1, bias=False)
        g.bind_parameter(layer, "weight", torch.ones(4, 3, 1, 1), "w")
        g.call_module(layer, x)
        g.call(g.helper(_double), x)
        g.warn("tried")
        raise g.unsupported(None, "not this way")
    assert _contents(g) == before


def test_attempt_takes_back_the_attribute_a_weight_got_on_first_use() -> None:
    """An initializer first used in a failed attempt (a branch lowered inline, then as a module)
    gets its attribute again when it is next used: no reference to an attribute that is gone."""
    g, x = _emitter()
    weight = g.const(torch.ones(4, 3), "w", initializer="w")
    with pytest.raises(UnsupportedOperatorError), g.attempt():
        assert g.ref(weight) == "self.w"
        raise g.unsupported(None, "not this way")
    assert weight.code is None and g.generated.init_lines == [] and g.generated.initializer_attrs == {}
    assert g.ref(weight) == "self.w_1"
    assert g.generated.init_lines == ["self.w_1 = nn.Parameter(torch.empty((4, 3), dtype=torch.float32))"]
    assert g.generated.initializer_attrs == {"w": "w_1"}


def test_attempt_keeps_what_a_successful_lowering_emitted() -> None:
    g, x = _emitter()
    with g.attempt():
        g.call(g.helper(_double), x)
    assert [statement(c) for c in g.generated.forward_lines] == ["y = _double(x)"]
    assert list(g.generated.helpers) == ["_double"]


def test_snapshot_restore_returns_to_the_snapshot() -> None:
    g, x = _emitter()
    snapshot = g.generated.snapshot()
    g.call("torch.relu", x)
    g.warn("later")
    g.generated.restore(snapshot)
    assert g.generated.forward_lines == [] and g.generated.warnings == []


def test_statements_are_written_from_their_records() -> None:
    assert statement(EmittedCall("torch.relu(x)", "n", ["y"])) == "y = torch.relu(x)"
    assert statement(EmittedCall("torch.split(x, 2)", "n", ["a", "b"])) == "a, b = torch.split(x, 2)"
    assert statement(EmittedCall("self.lstm(x)", "n", ["y", "h", "c"], unpack="{0}, ({1}, {2})")) \
        == "y, (h, c) = self.lstm(x)"
    assert statement(EmittedCall("torch._assert(x.shape[0] == 2, 'm')", None)) == "torch._assert(x.shape[0] == 2, 'm')"
