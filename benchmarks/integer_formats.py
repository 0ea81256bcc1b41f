"""Fixed-point and QOperator ONNX against the QDQ model: output SQNR and agreement with the simulation.

    python benchmarks/integer_formats.py --models digits resnet50 --resolution 64

For each model (built as ``quant_compare.py`` builds it: the trained digits CNN, the random-weight
ResNet-50), ``ptq(formats=["qdq", "qoperator", "fixed-point"])`` with minmax W8A8 on the case's
calibration samples, then every model in onnxruntime on the held-out samples (basic and all graph
optimizations): output SQNR of each integer model against the QDQ model and against the float model,
accuracy where there are labels, and the share of fixed-point output elements equal to the integer
simulation. Prints a Markdown table and writes ``--json`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quant_compare  # noqa: E402  (the model builders)

from onnx2fx import OnnxToFxConverter  # noqa: E402
from onnx2fx.quantization import ptq  # noqa: E402
from onnx2fx.quantization.integer import float_tensors_inside  # noqa: E402
from onnx2fx.quantization.qdq import ort_session  # noqa: E402


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    noise = float(((ref - other.astype(np.float64)) ** 2).sum())
    return float("inf") if noise == 0 else float(10 * np.log10(float((ref ** 2).sum()) / noise))


def run(path: Path, input_name: str, x: np.ndarray, optimized: bool, batch: int) -> np.ndarray:
    session = ort_session(path, optimized)
    return np.concatenate([session.run(None, {input_name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def measure(case: quant_compare.Case, work: Path) -> dict[str, Any]:
    converter = OnnxToFxConverter(case.onnx_path)
    converter.convert()
    converter.save(work / "converted")
    started = time.perf_counter()
    result = ptq(work / "converted" / "model_full.pt", case.calib, batch_size=case.batch_size, output_dir=work / "q",
                 formats=["qdq", "qoperator", "fixed-point"], progress=False, eval_data=case.evaluation[:16],
                 eval_samples=16)
    seconds = time.perf_counter() - started
    float_out = run(case.onnx_path, case.input_name, case.evaluation, False, case.batch_size)
    qdq = run(work / "q" / "model_ptq.onnx", case.input_name, case.evaluation, False, case.batch_size)
    row: dict[str, Any] = {"model": case.name, "title": case.title, "samples": len(case.evaluation),
                           "ptq_seconds": round(seconds, 1), "qdq_vs_float_db": sqnr_db(float_out, qdq)}
    if case.labels is not None:
        row["accuracy"] = {"float": float((float_out.argmax(1) == case.labels).mean()),
                           "qdq": float((qdq.argmax(1) == case.labels).mean())}
    for fmt, file in (("qoperator", "model_ptq_qoperator.onnx"), ("fixed_point", "model_ptq_fixed_point.onnx")):
        for optimized in (False, True):
            out = run(work / "q" / file, case.input_name, case.evaluation, optimized, case.batch_size)
            key = f"{fmt}{'_optimized' if optimized else ''}"
            row[key] = {"vs_qdq_db": sqnr_db(qdq, out), "vs_float_db": sqnr_db(float_out, out)}
            if case.labels is not None:
                row[key]["accuracy"] = float((out.argmax(1) == case.labels).mean())
        row[fmt]["float_islands"] = result.report[fmt]["writer"]["float_islands"]
    simulation = result.integer_model("fixed-point")
    with torch.no_grad():
        simulated = np.concatenate([simulation(torch.from_numpy(case.evaluation[i:i + case.batch_size])).numpy()
                                    for i in range(0, len(case.evaluation), case.batch_size)])
    fixed = run(work / "q" / "model_ptq_fixed_point.onnx", case.input_name, case.evaluation, False, case.batch_size)
    row["fixed_point"]["equal_to_simulation"] = float(np.mean(fixed == simulated))
    row["fixed_point"]["float_tensors_inside"] = len(float_tensors_inside(work / "q" / "model_ptq_fixed_point.onnx"))
    row["fixed_point"]["worst_relative_rescale_error"] = result.report["fixed_point"]["writer"]["max_relative_error"]
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | form | SQNR vs QDQ (dB) | SQNR vs float (dB) | accuracy | = integer simulation |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        acc = r.get("accuracy")
        qdq_accuracy = f"{acc['qdq']:.4f}" if acc else "–"
        lines.append(f"| {r['model']} | QDQ | – | {r['qdq_vs_float_db']:.2f} | {qdq_accuracy} | – |")
        for fmt, label in (("qoperator", "QOperator"), ("fixed_point", "fixed point")):
            for suffix, opt in (("", "basic"), ("_optimized", "all optimizations")):
                v = r[fmt + suffix]
                equal = f"{r['fixed_point']['equal_to_simulation']:.4f}" if fmt == "fixed_point" else "–"
                accuracy = f"{v['accuracy']:.4f}" if "accuracy" in v else "–"
                lines.append(f"| {r['model']} | {label} ({opt}) | {v['vs_qdq_db']:.2f} | {v['vs_float_db']:.2f} | "
                             f"{accuracy} | {equal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits", "resnet50"], choices=["digits", "resnet50"])
    parser.add_argument("--resolution", type=int, default=64, help="ResNet-50 input size")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.digits_calib_samples = 200  # the digits builder's calibration images, as in quant_compare.py
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            work = Path(folder) / name
            work.mkdir()
            rows.append(measure(quant_compare.BUILDERS[name](work, args), work))
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
