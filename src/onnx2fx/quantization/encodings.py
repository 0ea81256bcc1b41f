"""``encodings.json`` in AIMET's formats, keyed by the ONNX tensor and initializer names.

Three versions, as AIMET writes them:

- ``0.6.1``: ``activation_encodings`` / ``param_encodings`` map each name to a list of
  ``{"bitwidth", "dtype": "int", "is_symmetric": "True"|"False", "max", "min", "offset",
  "scale"}`` (one entry per channel), plus ``excluded_layers`` and ``quantizer_args``.
- ``1.0.0`` (default): both sections are lists of ``{"name", "dtype": "INT", "enc_type":
  "PER_TENSOR"|"PER_CHANNEL", "is_sym": bool, "bw": int, "scale": [float], "offset": [int]}``.
- ``2.0.0``: one ``encodings`` list of ``{"name", "output_dtype": "uint8"|"int8"|..., "y_scale",
  "y_zero_point", "axis"}`` (ONNX QuantizeLinear semantics; ``y_zero_point`` omitted when zero,
  ``axis`` only per channel, scalars for per-tensor encodings).

AIMET's ``offset`` is minus the zero point on the unsigned grid (int8 symmetric -> -128), and
``min = offset * scale``, ``max = min + (2^bw - 1) * scale``. Tensors that share their input's
encoding (Reshape, MaxPool, ...) are listed with that encoding, so a runtime sees every tensor
of the quantized graph; int32 biases are parameter encodings with 32 bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import ENCODING_VERSIONS, QuantConfig
from .grid import Encoding

QUANT_SCHEME_NAMES = {"minmax": "post_training_tf", "mse": "post_training_tf_enhanced",
                      "percentile": "post_training_percentile", "entropy": "post_training_entropy"}


def build_encodings(version: str, activations: Mapping[str, Encoding], params: Mapping[str, Encoding],
                    config: QuantConfig, excluded: Sequence[str] = (), producer_version: str = "") -> dict[str, Any]:
    """The ``encodings.json`` document of ``version`` for these encodings."""
    if version not in ENCODING_VERSIONS:
        raise ValueError(f"encoding version {version!r} is not one of {list(ENCODING_VERSIONS)}")
    if version == "2.0.0":
        entries = [{"name": name, **_entry_2_0_0(enc)} for name, enc in {**activations, **params}.items()]
        return {"version": "2.0.0", "encodings": entries}
    quantizer_args = {"activation_bitwidth": config.activations.bits, "dtype": "int",
                      "is_symmetric": config.weights.symmetric, "param_bitwidth": config.weights.bits,
                      "per_channel_quantization": config.weights.per_channel,
                      "quant_scheme": QUANT_SCHEME_NAMES.get(config.scheme, config.scheme)}
    if version == "0.6.1":
        return {"version": "0.6.1",
                "activation_encodings": {name: _entries_0_6_1(enc) for name, enc in activations.items()},
                "param_encodings": {name: _entries_0_6_1(enc) for name, enc in params.items()},
                "excluded_layers": list(excluded), "quantizer_args": quantizer_args}
    return {"version": "1.0.0",
            "activation_encodings": [{"name": name, **_entry_1_0_0(enc)} for name, enc in activations.items()],
            "param_encodings": [{"name": name, **_entry_1_0_0(enc)} for name, enc in params.items()],
            "excluded_layers": list(excluded), "quantizer_args": quantizer_args,
            "producer": {"package": "onnx2fx", "version": producer_version}}


def encoded_names(document: Mapping[str, Any]) -> list[str]:
    """Every tensor or initializer name an encodings document refers to."""
    if document.get("version") == "2.0.0":
        return [e["name"] for e in document["encodings"]]
    names: list[str] = []
    for section in ("activation_encodings", "param_encodings"):
        value = document.get(section, {})
        names.extend(value.keys() if isinstance(value, Mapping) else (e["name"] for e in value))
    return names


def _entries_0_6_1(enc: Encoding) -> list[dict[str, Any]]:
    offsets = enc.unsigned_offset
    steps = (1 << enc.grid.bits) - 1
    entries = []
    for scale, offset in zip(enc.scale.tolist(), offsets.tolist()):
        lo = float(offset) * float(scale)
        entries.append({"bitwidth": enc.grid.bits, "dtype": "int", "is_symmetric": str(bool(enc.symmetric)),
                        "max": lo + steps * float(scale), "min": lo, "offset": int(offset), "scale": float(scale)})
    return entries


def _entry_1_0_0(enc: Encoding) -> dict[str, Any]:
    return {"dtype": "INT", "enc_type": "PER_CHANNEL" if enc.axis is not None else "PER_TENSOR",
            "is_sym": bool(enc.symmetric), "bw": enc.grid.bits, "scale": [float(s) for s in enc.scale.tolist()],
            "offset": [int(o) for o in enc.unsigned_offset.tolist()]}


def _entry_2_0_0(enc: Encoding) -> dict[str, Any]:
    per_channel = enc.axis is not None
    scale = [float(s) for s in enc.scale.tolist()]
    zero_point = [int(z) for z in enc.zero_point.tolist()]
    entry: dict[str, Any] = {"output_dtype": enc.grid.dtype, "y_scale": scale if per_channel else scale[0]}
    if any(zero_point):
        entry["y_zero_point"] = zero_point if per_channel else zero_point[0]
    if per_channel:
        entry["axis"] = int(enc.axis)  # type: ignore[arg-type]
    return entry
