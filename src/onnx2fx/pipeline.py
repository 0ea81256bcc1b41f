"""One model, end to end: convert, save, validate, check traceability, write the report.

Each stage records its own failure in the report instead of stopping the others where that makes
sense (a model that fails validation still gets its traceability checked). ``report.json`` is
written last, so its presence means the model's folder is complete.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UnsupportedOperatorError
from .reports import new_report, write_report


@dataclass
class PipelineOptions:
    """What to run for each model; the batch config can override these per model."""

    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    tolerance: float = 1.0
    samples: int = 3
    seed: int = 0
    inputs: str | None = None  # .npy / .npz with real inputs
    calibration: str | None = None  # PTQ calibration data (.npy/.npz/folder); random data when None
    formats: tuple[str, ...] = ("qdq",)  # quantized ONNX forms PTQ/QFT write: qdq, qoperator, fixed-point
    per_layer: bool = False
    sweep: bool = False  # every dynamic dimension at several sizes (size_sweep.py)
    traceability: bool = True
    compile: bool = False


class PeakMemory:
    """Peak resident memory of this process while a block runs (Linux; ``None`` elsewhere)."""

    def __enter__(self) -> PeakMemory:
        self.start = _status_bytes("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:  # "5" resets the high-water mark
                f.write("5")
        except OSError:
            self.start = None
        self.peak: int | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_bytes("VmHWM")
        self.peak = hwm if self.start is not None else None


def _status_bytes(field_name: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def run_model(model_path: Path, out_dir: Path, options: PipelineOptions | None = None) -> dict[str, Any]:
    """Run every stage for ``model_path`` into ``out_dir`` and return the report (also written)."""
    from .converter import OnnxToFxConverter
    from .fx_tracer import check_traceability
    from .validator import AccuracyValidator

    options = options or PipelineOptions()
    report = new_report(model_path)
    converter = OnnxToFxConverter(model_path, input_shapes=options.input_shapes)
    start = time.perf_counter()
    try:
        with PeakMemory() as memory:
            gm = converter.convert()
            converter.save(out_dir)
    except Exception as exc:
        report["conversion"].update(status="failed", error=_error(exc), seconds=round(time.perf_counter() - start, 3))
        if isinstance(exc, UnsupportedOperatorError):
            report["conversion"]["unsupported_ops"] = [exc.op_type]
        write_report(report, out_dir)
        return report
    info = converter.conversion_record()
    params = [p for p in gm.parameters()]
    report["model"].update(opset=info["opset_imports"].get(""), ir_version=info["ir_version"],
                           producer=info["producer"] or None)
    report["conversion"].update(
        status="ok", error=None, seconds=round(time.perf_counter() - start, 3), peak_rss_bytes=memory.peak,
        node_count=info["node_count"], op_counts=info["op_counts"], forward_lines=info["forward_lines"],
        idioms=info["idioms"], parameters=sum(p.numel() for p in params),
        parameter_bytes=sum(p.numel() * p.element_size() for p in params), warnings=info["warnings"],
        unsupported_ops=[])

    validator = AccuracyValidator(model_path, gm, tolerance=options.tolerance, num_samples=options.samples,
                                  seed=options.seed, input_shapes=options.input_shapes, inputs=options.inputs,
                                  sweep=options.sweep)
    feed: dict[str, np.ndarray] | None = None
    try:
        metrics = validator.validate()
        report["accuracy"] = metrics.to_dict()
        feed = validator.input_sets(validator.session())[0]
        if options.per_layer:
            from .layer_compare import compare_layers

            report["accuracy"]["per_layer"] = compare_layers(model_path, gm, feed, options.tolerance).to_dict()
    except Exception as exc:
        report["accuracy"] = {"passed": False, "tolerance_percent": options.tolerance,
                              "relative_error": float("inf"), "outputs": [], "error": _error(exc)}

    if options.traceability and feed is not None:
        inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in feed.values())
        dynamic = any(shape[:1] == [None] for shape in info["input_shapes"].values())
        report["traceability"] = check_traceability(gm, inputs, dynamic_batch=dynamic,
                                                    compile=options.compile).to_dict()
    write_report(report, out_dir)
    return report


def report_passed(report: Mapping[str, Any]) -> bool:
    """A model passes when it converted and validated within tolerance."""
    accuracy = report.get("accuracy") or {}
    return report["conversion"]["status"] == "ok" and bool(accuracy.get("passed"))
