"""Quantization of converted models: post-training quantization (PTQ) with our own fake-quant FX
pass, streaming calibrators, AIMET encodings and QDQ ONNX export, and quantization-aware
fine-tuning (QFT) of the result.

    from onnx2fx.quantization import ptq, qft
    result = ptq("out/model_full.pt", calib_loader, output_dir="quantized/")
    result.sim_model          # GraphModule with fake-quant, trainable
    result.report["sqnr_db"]  # output SQNR against the float model
    tuned = qft("out/model_full.pt", train_loader, from_ptq="quantized/", epochs=1, lr=1e-5)
    tuned.save("qft_output/")
"""

from __future__ import annotations

from .config import QuantConfig, QuantSpec
from .grid import Encoding, QuantGrid
from .ptq import PTQResult, ptq
from .ptq_options import PtqOptions
from .ptq_report import PtqReport
from .qft import QFTResult, qft

__all__ = ["Encoding", "PTQResult", "PtqOptions", "PtqReport", "QFTResult", "QuantConfig", "QuantGrid", "QuantSpec",
           "ptq", "qft"]
