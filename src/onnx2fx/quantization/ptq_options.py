"""Everything :func:`~.ptq.ptq` takes besides the model and its calibration data, as one value.

A caller that quantizes several models the same way (the batch runner, QFT running PTQ first)
builds one :class:`PtqOptions` and passes it on; a caller with one or two settings passes them as
keywords to ``ptq``, which are the same names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import QuantConfig
from .data import ImageOptions


@dataclass(frozen=True)
class PtqOptions:
    """How :func:`~.ptq.ptq` quantizes, and where it writes.

    Attributes:
        output_dir: when given, write the output folder (atomically).
        onnx_path: the source ONNX model; defaults to the one recorded at conversion.
        input_shapes: input name -> full shape (batch first), for checks and random data;
            ``""`` names the only input.
        config: a :class:`QuantConfig`, a mapping of its keys, or a YAML/JSON file; ``scheme``,
            ``weight_bits``, ``activation_bits`` and ``per_channel`` override it.
        samples: at most this many calibration samples.
        batch_size: at most this many samples per calibration and evaluation batch.
        encoding_version: the AIMET format of ``encodings.json`` (``0.6.1``, ``1.0.0``, ``2.0.0``).
        random_calibration: calibrate on random data when no data is given (recorded as a warning).
        eval_data: inputs for the accuracy figures; defaults to the first ``eval_samples``
            calibration samples.
        seed: the seed of random calibration data and of AdaRound.
        image_options: how a folder of images becomes input arrays (mean, std).
        progress: draw progress bars; by default when standard error is a terminal.
        cle: cross-layer equalization of consecutive convolutions before calibration
            (:mod:`.cle`; overrides the config's ``cle``). The float reference of the figures is
            then the equalized model, which computes the same outputs, so per-layer figures
            compare like with like.
        bias_correction: empirical bias correction after calibration (:mod:`.bias_correction`;
            overrides the config's ``bias_correction``), estimated on the first calibration samples.
            The initializers either changes are written into the QDQ model.
        adaround: learned rounding of the weights after calibration (:mod:`.adaround`; overrides
            the config's ``adaround``), on the first calibration samples: the weight encodings
            stay as calibrated and each weight moves onto the grid point, the nearest one or its
            neighbour, that best reconstructs its layer's output. It runs before bias correction,
            which then corrects what is left of the error against the float weights.
        adaround_iterations: optimisation steps per layer (overrides the config's
            ``adaround_iterations``).
        formats: the ONNX forms :meth:`PTQResult.save` writes, any of ``qdq`` (``model_ptq.onnx``),
            ``qoperator`` and ``fixed-point`` (``model_ptq_qoperator.onnx``,
            ``model_ptq_fixed_point.onnx``; :mod:`.integer`).
        float_islands: in the integer forms, run nodes that have no integer form in float between
            DequantizeLinear and QuantizeLinear (listed in the report) instead of failing.
        sensitivity: measure each weight layer's effect on the output SQNR, with only that layer
            quantized and with everything but that layer quantized (:mod:`.sensitivity`; report
            section ``sensitivity``, a table in report.md and, with matplotlib, sensitivity.png).
        mixed_precision_target_db: raise the bit widths of the most sensitive layers (weights to
            8 bits, then outputs to 16 bits) until the simulated output SQNR reaches this many dB
            (:mod:`.mixed_precision`; report section ``mixed_precision``).
    """

    output_dir: str | os.PathLike[str] | None = None
    onnx_path: str | os.PathLike[str] | None = None
    input_shapes: Mapping[str, Sequence[int]] | None = None
    config: QuantConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None
    scheme: str | None = None
    weight_bits: int | None = None
    activation_bits: int | None = None
    per_channel: bool | None = None
    samples: int = 512
    batch_size: int = 16
    encoding_version: str = "1.0.0"
    random_calibration: bool = False
    eval_data: Any = None
    eval_samples: int = 64
    seed: int = 0
    image_options: ImageOptions | None = None
    progress: bool | None = None
    cle: bool | None = None
    bias_correction: bool | None = None
    adaround: bool | None = None
    adaround_iterations: int | None = None
    formats: str | Sequence[str] = ("qdq",)
    float_islands: bool = False
    sensitivity: bool = False
    mixed_precision_target_db: float | None = None

    def with_keywords(self, keywords: Mapping[str, Any], function: str = "ptq") -> PtqOptions:
        """These options with ``keywords`` (field names) replacing their values; a name that is
        not a field is the TypeError Python raises for an unexpected keyword of ``function``."""
        fields = {f.name for f in dataclasses.fields(self)}
        for name in keywords:
            if name not in fields:
                raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
        return dataclasses.replace(self, **keywords) if keywords else self
