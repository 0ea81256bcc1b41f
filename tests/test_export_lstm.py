"""``nn.LSTM`` through the dynamo exporter: one ONNX LSTM node per layer, any sequence length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support import ort_run

from onnx2fx import OnnxToFxConverter
from onnx2fx.export import export_onnx
from onnx2fx.export_lstm import OnnxLstm, onnx_lstms


@pytest.mark.parametrize(("layers", "bidirectional", "batch_first", "bias"),
                         [(1, False, False, True), (2, True, True, True), (3, False, True, False),
                          (2, True, False, False)])
def test_onnx_lstm_computes_what_nn_lstm_computes(layers: int, bidirectional: bool, batch_first: bool,
                                                  bias: bool) -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                         bias=bias).eval()
    wrapped = OnnxLstm(lstm)
    states = layers * (2 if bidirectional else 1)
    x = torch.randn((3, 11, 5) if batch_first else (11, 3, 5))
    hx = (torch.randn(states, 3, 7), torch.randn(states, 3, 7))
    with torch.no_grad():
        for args in ((x,), (x, hx), (x[0] if batch_first else x[:, 0],)):
            if len(args) == 1 and args[0].dim() == 2:
                args = (args[0],)
            expected, (h, c) = lstm(*args)
            produced, (h2, c2) = wrapped(*args)
            for a, b in ((produced, expected), (h2, h), (c2, c)):
                assert a.shape == b.shape
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_swap_is_undone_and_leaves_other_layers_alone() -> None:
    model = torch.nn.Sequential(torch.nn.LSTM(4, 4), torch.nn.GRU(4, 4), torch.nn.LSTM(4, 4, proj_size=2))
    before = list(model)
    with onnx_lstms(model) as count:
        assert count == 1
        assert isinstance(model[0], OnnxLstm)
        assert model[1] is before[1] and model[2] is before[2]  # GRU and a projected LSTM are not swapped
    assert list(model) == before


class _Stack(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.head(y)


def test_a_dynamic_sequence_length_exports_with_dynamo_as_onnx_lstm_nodes(tmp_path: Path) -> None:
    """torch.export alone would unroll the LSTM at the example's length and fix it there."""
    torch.manual_seed(0)
    source = tmp_path / "source.onnx"
    torch.onnx.export(_Stack().eval(), (torch.randn(2, 7, 4),), str(source), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "steps"}})
    gm = OnnxToFxConverter(source).convert()
    result = export_onnx(gm, tmp_path / "back.onnx", source=source)
    assert (result.exporter, result.fallback_reason) == ("dynamo", None)
    assert [c.label for c in result.checks] == ["base sizes", "batch=3", "steps=33"]
    assert result.relative_error < 1e-4, result.checks
    back = onnx.load(str(result.path))
    assert [n.op_type for n in back.graph.node].count("LSTM") == 2
    rng = np.random.default_rng(0)
    for batch, steps in ((1, 1), (2, 5), (3, 40)):
        feeds = {"x": rng.standard_normal((batch, steps, 4)).astype(np.float32)}
        np.testing.assert_allclose(ort_run(back, feeds)[0], ort_run(onnx.load(str(source)), feeds)[0], rtol=1e-4,
                                   atol=1e-5)
    assert any(isinstance(m, torch.nn.LSTM) for m in gm.modules())  # the converted module keeps its nn.LSTM
