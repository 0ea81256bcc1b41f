"""Quantization of converted models: post-training quantization (PTQ) with our own fake-quant FX
pass, streaming calibrators, AIMET encodings and QDQ ONNX export.

    from onnx2fx.quantization import ptq
    result = ptq("out/model_full.pt", calib_loader, output_dir="quantized/")
    result.sim_model          # GraphModule with fake-quant, trainable
    result.report["sqnr_db"]  # output SQNR against the float model
"""

from __future__ import annotations

from .config import QuantConfig, QuantSpec
from .grid import Encoding, QuantGrid
from .ptq import PTQResult, ptq

__all__ = ["Encoding", "PTQResult", "QuantConfig", "QuantGrid", "QuantSpec", "ptq"]
