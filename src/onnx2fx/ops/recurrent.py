"""Recurrent layers: LSTM, GRU and RNN.

With constant weights and the configuration torch's layers implement (default activations, no
clipping, no peepholes, no per-sequence lengths; GRU with ``linear_before_reset``) they become
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` with the ONNX weights bound (gates reordered). Everything else
uses :func:`_recurrent`, the ONNX equations step by step, copied into ``model.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op

_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
# ONNX gate order -> torch gate order (row blocks of W, R and the biases)
_TORCH_GATES = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}  # LSTM: iofc -> ifco; GRU: zrh -> rzh


def onnx_lstm_outputs_like(x: torch.Tensor, directions: int, hidden_size: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empty tensors shaped as an ONNX LSTM's outputs for input ``x`` (steps, batch, inputs): Y
    (steps, directions, batch, hidden), Y_h and Y_c (directions, batch, hidden); what tracing sees
    of an LSTM run as one registered operator."""
    state = x.new_empty((directions, x.shape[1], hidden_size))
    return x.new_empty((x.shape[0], directions, x.shape[1], hidden_size)), state, state.clone()


def activation(name: str, x: torch.Tensor, alpha: float | None, beta: float | None) -> torch.Tensor:
    """The activation functions ONNX recurrent layers accept, by name."""
    name = name.lower()
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "affine":
        return x * (1.0 if alpha is None else alpha) + (0.0 if beta is None else beta)
    if name == "leakyrelu":
        return torch.nn.functional.leaky_relu(x, 0.01 if alpha is None else alpha)
    if name == "thresholdedrelu":
        return torch.where(x > (1.0 if alpha is None else alpha), x, torch.zeros_like(x))
    if name == "scaledtanh":
        return (1.0 if alpha is None else alpha) * torch.tanh(x * (1.0 if beta is None else beta))
    if name == "hardsigmoid":
        return torch.clamp(x * (0.2 if alpha is None else alpha) + (0.5 if beta is None else beta), 0, 1)
    if name == "elu":
        return torch.nn.functional.elu(x, 1.0 if alpha is None else alpha)
    if name == "softsign":
        return x / (1 + x.abs())
    if name == "softplus":
        return torch.nn.functional.softplus(x)
    raise ValueError(f"unknown activation {name}")


def _recurrent(kind: str, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None,
               lengths: torch.Tensor | None, h0: torch.Tensor | None, c0: torch.Tensor | None,
               p: torch.Tensor | None, directions: list[str], activations: list[str],
               alphas: list[float | None], betas: list[float | None], clip: float | None, input_forget: bool,
               linear_before_reset: bool, layout: int) -> tuple[torch.Tensor, ...]:
    """ONNX LSTM / GRU / RNN, one time step after another (outputs Y, Y_h and, for LSTM, Y_c)."""
    if layout:
        x = x.transpose(0, 1)
        h0 = h0.transpose(0, 1) if h0 is not None else None
        c0 = c0.transpose(0, 1) if c0 is not None else None
    steps, batch = x.shape[0], x.shape[1]
    hidden = r.shape[-1]
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    per_direction = len(activations) // len(directions)
    lengths = lengths.to(torch.int64) if lengths is not None else torch.full((batch,), steps, dtype=torch.int64)
    time = torch.arange(steps).reshape(-1, 1)
    reverse_order = torch.where(time < lengths, lengths - 1 - time, time)  # (steps, batch)
    ys, hs, cs = [], [], []
    for d, direction in enumerate(directions):
        acts = list(zip(activations, alphas, betas))[d * per_direction:(d + 1) * per_direction]

        def act(i: int, v: torch.Tensor) -> torch.Tensor:
            name, alpha, beta = acts[i]  # noqa: B023
            return activation(name, v, alpha, beta)

        wb = b[d, :gates * hidden] if b is not None else torch.zeros(gates * hidden, dtype=x.dtype)
        rb = b[d, gates * hidden:] if b is not None else torch.zeros(gates * hidden, dtype=x.dtype)
        seq = x
        if direction == "reverse":
            seq = x.gather(0, reverse_order.unsqueeze(-1).expand(x.shape))
        h = h0[d] if h0 is not None else torch.zeros(batch, hidden, dtype=x.dtype)
        c = c0[d] if c0 is not None else torch.zeros(batch, hidden, dtype=x.dtype)
        outputs = []
        for t in range(steps):
            xw = seq[t] @ w[d].t() + wb
            hr = h @ r[d].t() + rb
            if kind == "LSTM":
                pre = xw + hr
                if clip is not None:
                    pre = pre.clamp(-clip, clip)
                i_pre, o_pre, f_pre, c_pre = pre.chunk(4, -1)
                if p is not None:
                    pi, po, pf = p[d].chunk(3)
                    i_pre, f_pre = i_pre + pi * c, f_pre + pf * c
                gate_i = act(0, i_pre)
                gate_f = 1 - gate_i if input_forget else act(0, f_pre)
                c_new = gate_f * c + gate_i * act(1, c_pre)
                if p is not None:
                    o_pre = o_pre + po * c_new
                h_new = act(0, o_pre) * act(2, c_new)
            elif kind == "GRU":
                xz, xr, xh = xw.chunk(3, -1)
                hz, hr_, hh = hr.chunk(3, -1)
                z_pre, r_pre = xz + hz, xr + hr_
                if clip is not None:
                    z_pre, r_pre = z_pre.clamp(-clip, clip), r_pre.clamp(-clip, clip)
                z, reset = act(0, z_pre), act(0, r_pre)
                if linear_before_reset:
                    h_pre = xh + reset * hh
                else:
                    h_pre = xh + (reset * h) @ r[d, 2 * hidden:].t() + rb[2 * hidden:]
                if clip is not None:
                    h_pre = h_pre.clamp(-clip, clip)
                h_new = (1 - z) * act(1, h_pre) + z * h
                c_new = c
            else:
                pre = xw + hr
                if clip is not None:
                    pre = pre.clamp(-clip, clip)
                h_new = act(0, pre)
                c_new = c
            valid = (t < lengths).reshape(-1, 1)
            h = torch.where(valid, h_new, h)
            c = torch.where(valid, c_new, c)
            outputs.append(torch.where(valid, h_new, torch.zeros_like(h_new)))
        y = torch.stack(outputs)
        if direction == "reverse":
            y = y.gather(0, reverse_order.unsqueeze(-1).expand(y.shape))
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y, y_h, y_c = torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)
    if layout:
        y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    return (y, y_h, y_c) if kind == "LSTM" else (y, y_h)


@dataclass(frozen=True)
class RecurrentSettings:
    """A recurrent node's attributes, normalised: one activation (with its alpha and beta) per
    function and direction, in the order the ONNX equations use them."""

    directions: list[str]
    activations: list[str]
    alphas: list[float | None]
    betas: list[float | None]
    hidden: int
    layout: int


def recurrent_settings(g: Emitter, kind: str, r: Value, attrs: dict) -> RecurrentSettings:
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise g.unsupported("direction", f"value {direction!r}")
    directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    activations = list(attrs.get("activations") or _DEFAULT_ACTIVATIONS[kind] * len(directions))
    n = len(activations)
    alphas = list(attrs.get("activation_alpha") or [])
    betas = list(attrs.get("activation_beta") or [])
    return RecurrentSettings(directions, activations, [alphas[i] if i < len(alphas) else None for i in range(n)],
                             [betas[i] if i < len(betas) else None for i in range(n)],
                             attrs.get("hidden_size") or r.static_shape()[-1], attrs.get("layout", 0))


def recurrent_output_spec(g: Emitter, kind: str, x: Value, settings: RecurrentSettings) -> list[tuple[list, object]]:
    """Sizes and dtypes of Y, Y_h and, for LSTM, Y_c."""
    layout, hidden, nd = settings.layout, settings.hidden, len(settings.directions)
    steps, batch = (g.dim(x, 1), g.dim(x, 0)) if layout else (g.dim(x, 0), g.dim(x, 1))
    y_shape = [batch, steps, nd, hidden] if layout else [steps, nd, batch, hidden]
    h_shape = [batch, nd, hidden] if layout else [nd, batch, hidden]
    return [(y_shape, x.dtype), (h_shape, x.dtype)] + ([(h_shape, x.dtype)] if kind == "LSTM" else [])


def lower_recurrent(g: Emitter, kind: str, x: Value, w: Value, r: Value, b: Value | None, lengths: Value | None,
           h0: Value | None, c0: Value | None, p: Value | None, attrs: dict) -> tuple[Value, ...]:
    settings = recurrent_settings(g, kind, r, attrs)
    module = _as_module(g, kind, x, w, r, b, lengths, h0, c0, p, attrs, settings.directions, settings.activations,
                        settings.hidden, settings.layout)
    if module is not None:
        return module
    spec = recurrent_output_spec(g, kind, x, settings)
    g.helper(activation)
    return g.call(g.helper(_recurrent, leaf=True), kind, x, w, r, b, lengths, h0, c0, p, settings.directions,
                  settings.activations, settings.alphas, settings.betas, attrs.get("clip"),
                  bool(attrs.get("input_forget", 0)), bool(attrs.get("linear_before_reset", 0)), settings.layout,
                  n_outputs=len(spec), out_spec=spec)


def _as_module(g: Emitter, kind: str, x: Value, w: Value, r: Value, b: Value | None, lengths: Value | None,
               h0: Value | None, c0: Value | None, p: Value | None, attrs: dict, directions: list[str],
               activations: list[str], hidden: int, layout: int) -> tuple[Value, ...] | None:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` when torch's layer computes exactly the same thing."""
    defaults = _DEFAULT_ACTIVATIONS[kind] * len(directions)
    rnn_relu = kind == "RNN" and [a.lower() for a in activations] == ["relu"] * len(directions)
    if any(v.const is None for v in (w, r) + ((b,) if b is not None else ())) or lengths is not None \
            or directions == ["reverse"] or attrs.get("clip") is not None or attrs.get("input_forget") \
            or (p is not None and (p.const is None or bool(p.const.any()))) \
            or ([a.lower() for a in activations] != [a.lower() for a in defaults] and not rnn_relu) \
            or attrs.get("activation_alpha") or attrs.get("activation_beta") \
            or (kind == "GRU" and not attrs.get("linear_before_reset", 0)):
        return None
    if not x.dtype.is_floating_point:
        return None
    gates = _TORCH_GATES[kind]
    input_size = w.static_shape()[-1]
    kwargs: dict[str, object] = {}
    if rnn_relu:
        kwargs["nonlinearity"] = "relu"
    if b is None:
        kwargs["bias"] = False
    if layout:
        kwargs["batch_first"] = True
    if len(directions) == 2:
        kwargs["bidirectional"] = True
    if x.dtype != torch.float32:
        kwargs["dtype"] = x.dtype
    attr = g.add_module(kind.lower(), f"nn.{kind}", input_size, hidden, **kwargs)

    def reorder(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[i * hidden:(i + 1) * hidden] for i in gates])

    for d in range(len(directions)):
        suffix = "_reverse" if d else ""
        g.bind_parameter(attr, f"weight_ih_l0{suffix}", reorder(w.const[d]), w.origin_initializer, "gate order")
        g.bind_parameter(attr, f"weight_hh_l0{suffix}", reorder(r.const[d]), r.origin_initializer, "gate order")
        if b is not None:
            n = len(gates) * hidden
            for name, part in (("ih", b.const[d, :n]), ("hh", b.const[d, n:])):
                g.bind_parameter(attr, f"bias_{name}_l0{suffix}", reorder(part), b.origin_initializer, "gate order")
    states: list[Value] = [_state(g, v, layout) for v in (h0, c0) if v is not None]
    if kind == "LSTM" and len(states) == 1:
        return None
    nd = len(directions)
    # The layer's result sizes, written here rather than found by running it on fake tensors:
    # torch's decomposition loops over the time steps, which would fix a dynamic length to its hint.
    steps, batch = (g.dim(x, 1), g.dim(x, 0)) if layout else (g.dim(x, 0), g.dim(x, 1))
    y_sizes = [batch, steps, nd * hidden] if layout else [steps, batch, nd * hidden]
    state_spec = ([nd, batch, hidden], x.dtype)
    if kind == "LSTM":
        args = (x, tuple(states)) if states else (x,)
        y, y_h, y_c = g.call_module(attr, *args, n_outputs=3, unpack="{0}, ({1}, {2})",
                                    out_spec=[(y_sizes, x.dtype), state_spec, state_spec])
    else:
        y, y_h = g.call_module(attr, x, *states, n_outputs=2, out_spec=[(y_sizes, x.dtype), state_spec])
        y_c = None
    # torch: (seq, batch, nd * hidden) -> ONNX (seq, nd, batch, hidden); batch first: (batch, seq, nd, hidden)
    if layout:
        y = g.method(y, "reshape", [g.dim(y, 0), g.dim(y, 1), nd, hidden])
        y_h = g.method(y_h, "transpose", 0, 1)
        y_c = g.method(y_c, "transpose", 0, 1) if y_c is not None else None
    else:
        y = g.method(g.method(y, "reshape", [g.dim(y, 0), g.dim(y, 1), nd, hidden]), "transpose", 1, 2)
    return (y, y_h, y_c) if kind == "LSTM" else (y, y_h)


def _state(g: Emitter, v: Value, layout: int) -> Value:
    return g.method(v, "transpose", 0, 1) if layout else v


def recurrent_attributes(**kwargs: object) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


@onnx_op("LSTM", 7)
def lstm(g: Emitter, x: Value, w: Value, r: Value, b: Value | None = None, sequence_lens: Value | None = None,
         initial_h: Value | None = None, initial_c: Value | None = None, p: Value | None = None, *,
         activation_alpha: list[float] | None = None, activation_beta: list[float] | None = None,
         activations: list[str] | None = None, clip: float | None = None, direction: str = "forward",
         hidden_size: int | None = None, input_forget: int = 0, layout: int = 0) -> tuple[Value, ...]:
    return lower_recurrent(g, "LSTM", x, w, r, b, sequence_lens, initial_h, initial_c, p, recurrent_attributes(
        activation_alpha=activation_alpha, activation_beta=activation_beta, activations=activations, clip=clip,
        direction=direction, hidden_size=hidden_size, input_forget=input_forget, layout=layout))


@onnx_op("GRU", 7)
def gru(g: Emitter, x: Value, w: Value, r: Value, b: Value | None = None, sequence_lens: Value | None = None,
        initial_h: Value | None = None, *, activation_alpha: list[float] | None = None,
        activation_beta: list[float] | None = None, activations: list[str] | None = None, clip: float | None = None,
        direction: str = "forward", hidden_size: int | None = None, linear_before_reset: int = 0,
        layout: int = 0) -> tuple[Value, ...]:
    return lower_recurrent(g, "GRU", x, w, r, b, sequence_lens, initial_h, None, None, recurrent_attributes(
        activation_alpha=activation_alpha, activation_beta=activation_beta, activations=activations, clip=clip,
        direction=direction, hidden_size=hidden_size, linear_before_reset=linear_before_reset, layout=layout))


@onnx_op("RNN", 7)
def rnn(g: Emitter, x: Value, w: Value, r: Value, b: Value | None = None, sequence_lens: Value | None = None,
        initial_h: Value | None = None, *, activation_alpha: list[float] | None = None,
        activation_beta: list[float] | None = None, activations: list[str] | None = None, clip: float | None = None,
        direction: str = "forward", hidden_size: int | None = None, layout: int = 0) -> tuple[Value, ...]:
    return lower_recurrent(g, "RNN", x, w, r, b, sequence_lens, initial_h, None, None, recurrent_attributes(
        activation_alpha=activation_alpha, activation_beta=activation_beta, activations=activations, clip=clip,
        direction=direction, hidden_size=hidden_size, layout=layout))
