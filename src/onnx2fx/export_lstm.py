"""``nn.LSTM`` written as ONNX LSTM nodes by the dynamo exporter, at any sequence length.

``torch.export`` unrolls an ``nn.LSTM`` over the time steps of its example, so the exported program
guards the sequence length to that one value and the ONNX file would reject every other length.
For the export only (:func:`onnx_lstms`), each ``nn.LSTM`` of the converted module is swapped for
:class:`OnnxLstm`, which computes the same thing through a registered operator, one ONNX-layout LSTM
layer per call (``torch.ops.onnx2fx.onnx_lstm_layer``): ``torch.export`` records one node whose
steps stay symbolic, and the translation table writes it as the ONNX ``LSTM`` node it stands for.
The module is restored afterwards; what users train and run keeps its ``nn.LSTM``.

ONNX orders the gates (input, output, forget, cell) where torch orders them (input, forget, cell,
output), keeps one ``W``/``R``/``B`` per direction stacked on a leading axis and returns ``Y`` as
(steps, directions, batch, hidden); :class:`OnnxLstm` holds its weights in that layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .ops.recurrent import onnx_lstm_outputs_like

# torch's gate blocks (i, f, g, o) in ONNX's order (i, o, f, c)
_TORCH_TO_ONNX = (0, 3, 1, 2)
_ONNX_TO_TORCH = (0, 2, 3, 1)


def _reorder(weight: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    blocks = weight.chunk(4, 0)
    return torch.cat([blocks[i] for i in order], 0)


@torch.library.custom_op("onnx2fx::onnx_lstm_layer", mutates_args=())
def onnx_lstm_layer(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
                    c0: torch.Tensor, hidden_size: int, direction: str
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer with ONNX's operands: x (steps, batch, inputs), w (directions, 4 * hidden,
    inputs), r (directions, 4 * hidden, hidden), b (directions, 8 * hidden), h0 and c0 (directions,
    batch, hidden), ``direction`` forward or bidirectional; returns Y (steps, directions, batch,
    hidden), Y_h and Y_c."""
    directions = 2 if direction == "bidirectional" else 1
    params = []
    for d in range(directions):
        params += [_reorder(w[d], _ONNX_TO_TORCH), _reorder(r[d], _ONNX_TO_TORCH),
                   _reorder(b[d, :4 * hidden_size], _ONNX_TO_TORCH), _reorder(b[d, 4 * hidden_size:], _ONNX_TO_TORCH)]
    y, h, c = torch.lstm(x, (h0, c0), params, True, 1, 0.0, False, directions == 2, False)
    y = y.reshape(x.shape[0], x.shape[1], directions, hidden_size).permute(0, 2, 1, 3).contiguous()
    return y, h, c


@onnx_lstm_layer.register_fake
def _onnx_lstm_layer_fake(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
                          c0: torch.Tensor, hidden_size: int, direction: str
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return onnx_lstm_outputs_like(x, 2 if direction == "bidirectional" else 1, hidden_size)


def translate_onnx_lstm_layer(x: Any, w: Any, r: Any, b: Any, h0: Any, c0: Any, hidden_size: int,
                              direction: str) -> Any:
    """The dynamo exporter's translation: the ONNX LSTM node."""
    from onnxscript import opset14 as op

    return op.LSTM(x, w, r, b, None, h0, c0, hidden_size=hidden_size, direction=direction)


class OnnxLstm(nn.Module):
    """An ``nn.LSTM`` (inference, no projection) computed one ONNX LSTM layer at a time."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.hidden_size = lstm.hidden_size
        self.num_layers = lstm.num_layers
        self.directions = 2 if lstm.bidirectional else 1
        self.direction = "bidirectional" if lstm.bidirectional else "forward"
        self.batch_first = lstm.batch_first
        for layer in range(lstm.num_layers):
            ws, rs, bs = [], [], []
            for d in range(self.directions):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(lstm, "weight_ih" + suffix), getattr(lstm, "weight_hh" + suffix)
                zeros = w_ih.new_zeros(4 * lstm.hidden_size)
                b_ih = getattr(lstm, "bias_ih" + suffix) if lstm.bias else zeros
                b_hh = getattr(lstm, "bias_hh" + suffix) if lstm.bias else zeros
                ws.append(_reorder(w_ih.detach(), _TORCH_TO_ONNX))
                rs.append(_reorder(w_hh.detach(), _TORCH_TO_ONNX))
                bs.append(torch.cat([_reorder(b_ih.detach(), _TORCH_TO_ONNX), _reorder(b_hh.detach(), _TORCH_TO_ONNX)]))
            self.register_buffer(f"w{layer}", torch.stack(ws))
            self.register_buffer(f"r{layer}", torch.stack(rs))
            self.register_buffer(f"b{layer}", torch.stack(bs))

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
            hx = None if hx is None else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        elif self.batch_first:
            x = x.transpose(0, 1)
        states = self.num_layers * self.directions
        if hx is None:
            zeros = x.new_zeros((states, x.shape[1], self.hidden_size))
            hx = (zeros, zeros)
        hs, cs = [], []
        for layer in range(self.num_layers):
            span = slice(layer * self.directions, (layer + 1) * self.directions)
            y, h, c = torch.ops.onnx2fx.onnx_lstm_layer(x, getattr(self, f"w{layer}"), getattr(self, f"r{layer}"),
                                                        getattr(self, f"b{layer}"), hx[0][span], hx[1][span],
                                                        self.hidden_size, self.direction)
            x = y.permute(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], self.directions * self.hidden_size)
            hs.append(h)
            cs.append(c)
        h_n, c_n = torch.cat(hs, 0), torch.cat(cs, 0)
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)


def _swappable(module: nn.Module) -> bool:
    return type(module) is nn.LSTM and module.proj_size == 0 and module.mode == "LSTM"


@contextmanager
def onnx_lstms(model: nn.Module) -> Iterator[int]:
    """Within the block, every plain ``nn.LSTM`` of ``model`` is an :class:`OnnxLstm`; yields how
    many were swapped and puts the originals back on exit."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if _swappable(child):
                    setattr(parent, name, OnnxLstm(child))
                    swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)
