"""onnxruntime's DynamicQuantizeLSTM, computed the way its CPU kernel computes it.

The operator is an ONNX LSTM whose W (directions, inputs, 4 * hidden) and R (directions, hidden,
4 * hidden) are 8-bit; onnxruntime quantizes the float operands of both products on the fly, so the
result depends on how and over which elements it does that. Its kernel (``LSTMBase::ComputeImpl``,
``UniDirectionalLstm``, ``rnn::detail::ComputeGemm`` with quantized weights), per direction (the
reverse one reverses the sequence in time, runs forward, and reverses its output back):

1. ``X · W`` once for the whole sequence: one range (widened to include 0) over all
   ``steps × batch × inputs`` elements, scale ``(max - min) / 255``, uint8 zero point and values by
   ``x / scale`` rounded half to even and saturated (``quant.ort_dynamic_quantize``); the integer
   product times ``a_scale * w_scale`` in float32.
2. At each step, ``h · R`` the same way, with its own range over the rows quantized together, added
   to the step's row of (1): ``C = float(acc) * scale + C``, a multiply and an add (two roundings).
   The rows quantized together are the batch, or, where onnxruntime splits the batch over its
   threads (batch > 4, or 2 to 4 rows with hidden size <= 256), ``ceil(batch / threads)`` rows;
   this computes one row per range, which is onnxruntime whenever its threads are at least the
   batch size (with batch 1 every thread count gives the same).
3. Gates in ONNX order (i, o, f, c): peephole terms added first, then the bias ``Wb + Rb`` (summed
   once in float32), then the clip (``clip``, or the largest float32); sigmoid and tanh are MLAS's
   rational approximations (:mod:`.mlas`), other activations their formulas;
   ``C_t = C_{t-1} * f + i * g`` and ``h_t = act(C_t) * o``, each product rounded (no FMA).

Copied into ``model.py`` (``Emitter.helper``) as ``_ort_quantized_lstm`` and ``_ort_lstm_activation``,
together with the helpers they call, and registered there as an operator (``torch.ops.onnx2fx``):
its time loop runs tens of thousands of small operations (every gate's MLAS activation emulates
fused multiply-adds), which ``torch.export`` would otherwise trace one by one, unrolled at one
sequence length. As an operator it is one node whose steps stay dynamic, and ``onnx2fx export``
writes it back as the ``com.microsoft`` DynamicQuantizeLSTM it came from.
"""

from __future__ import annotations

import torch

from .mlas import mlas_logistic, mlas_tanh
from .quant import ort_dynamic_quantize, ort_quantized_gemm
from .recurrent import activation, onnx_lstm_outputs_like


def ort_lstm_activation(name: str, x: torch.Tensor, alpha: float | None, beta: float | None) -> torch.Tensor:
    """One of the LSTM's activation functions as onnxruntime's kernel evaluates it."""
    if name.lower() == "sigmoid":
        return mlas_logistic(x)
    if name.lower() == "tanh":
        return mlas_tanh(x)
    return activation(name, x, alpha, beta)


def ort_quantized_lstm(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None,
                       h0: torch.Tensor | None, c0: torch.Tensor | None, p: torch.Tensor | None,
                       directions: list[str], activations: list[str], alphas: list[float | None],
                       betas: list[float | None], clip: float | None, input_forget: bool,
                       w_scale: torch.Tensor, w_zero_point: torch.Tensor, r_scale: torch.Tensor,
                       r_zero_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DynamicQuantizeLSTM's outputs Y (steps, directions, batch, hidden), Y_h and Y_c."""
    steps, batch = x.shape[0], x.shape[1]
    hidden = r.shape[1]
    per_row = batch > 4 or (batch >= 2 and hidden <= 256)  # onnxruntime splits the batch over threads
    limit = torch.finfo(torch.float32).max if clip is None else clip
    per_direction = len(activations) // len(directions)
    ys, hs, cs = [], [], []
    for d, direction in enumerate(directions):
        acts = list(zip(activations, alphas, betas))[d * per_direction:(d + 1) * per_direction]
        seq = x.flip(0) if direction == "reverse" else x
        projected = ort_quantized_gemm(seq.reshape(steps * batch, -1), w[d], w_scale[d], w_zero_point[d], False)
        projected = projected.reshape(steps, batch, 4 * hidden)
        bias = b[d, :4 * hidden] + b[d, 4 * hidden:] if b is not None else torch.zeros(4 * hidden, dtype=x.dtype)
        bias_i, bias_o, bias_f, bias_c = bias.chunk(4)
        h = h0[d] if h0 is not None else torch.zeros(batch, hidden, dtype=x.dtype)
        c = c0[d] if c0 is not None else torch.zeros(batch, hidden, dtype=x.dtype)
        outputs = []
        for t in range(steps):
            q, h_scale, h_zero_point = ort_dynamic_quantize(h, per_row)
            centred_r = r[d].to(torch.float64) - r_zero_point[d].reshape(-1)[0].to(torch.float64)
            acc = ((q - h_zero_point).to(torch.float64) @ centred_r).to(torch.float32)
            pre = acc * (h_scale * r_scale[d].reshape(-1)) + projected[t]
            pre_i, pre_o, pre_f, pre_c = pre.chunk(4, -1)
            if p is not None:
                peep_i, peep_o, peep_f = p[d].chunk(3)
                pre_i = pre_i + c * peep_i
            gate_i = ort_lstm_activation(acts[0][0], torch.clamp(pre_i + bias_i, -limit, limit), *acts[0][1:])
            if input_forget:
                gate_f = 1.0 - gate_i
            else:
                if p is not None:
                    pre_f = pre_f + c * peep_f
                gate_f = ort_lstm_activation(acts[0][0], torch.clamp(pre_f + bias_f, -limit, limit), *acts[0][1:])
            gate_c = ort_lstm_activation(acts[1][0], torch.clamp(pre_c + bias_c, -limit, limit), *acts[1][1:])
            c = c * gate_f + gate_i * gate_c
            if p is not None:
                pre_o = pre_o + c * peep_o
            gate_o = ort_lstm_activation(acts[0][0], torch.clamp(pre_o + bias_o, -limit, limit), *acts[0][1:])
            h = ort_lstm_activation(acts[2][0], c, *acts[2][1:]) * gate_o
            outputs.append(h)
        y = torch.stack(outputs)
        ys.append(y.flip(0) if direction == "reverse" else y)
        hs.append(h)
        cs.append(c)
    return torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)


def ort_quantized_lstm_op(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None,
                          h0: torch.Tensor | None, c0: torch.Tensor | None, p: torch.Tensor | None,
                          directions: str, activations: str, alphas: list[float], betas: list[float],
                          clip: float | None, input_forget: bool, hidden_size: int, w_scale: torch.Tensor,
                          w_zero_point: torch.Tensor, r_scale: torch.Tensor,
                          r_zero_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ort_quantized_lstm` with arguments a registered operator's schema can hold: the
    directions and activations joined by commas, a missing alpha or beta as NaN. ``hidden_size``
    (R's second dimension) is what the ONNX node written back needs."""
    def optional(values: list[float]) -> list[float | None]:
        return [None if v != v else v for v in values]

    return ort_quantized_lstm(x, w, r, b, h0, c0, p, directions.split(","), activations.split(","), optional(alphas),
                              optional(betas), clip, input_forget, w_scale, w_zero_point, r_scale, r_zero_point)


def ort_quantized_lstm_fake(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None,
                            h0: torch.Tensor | None, c0: torch.Tensor | None, p: torch.Tensor | None,
                            directions: str, activations: str, alphas: list[float], betas: list[float],
                            clip: float | None, input_forget: bool, hidden_size: int, w_scale: torch.Tensor,
                            w_zero_point: torch.Tensor, r_scale: torch.Tensor,
                            r_zero_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What tracing sees of the operator: Y (steps, directions, batch, hidden), Y_h and Y_c."""
    return onnx_lstm_outputs_like(x, len(directions.split(",")), hidden_size)


# The registered operators' names start with this (a digest of the implementation follows).
ORT_QUANTIZED_LSTM_PREFIX = "ort_quantized_lstm_"
