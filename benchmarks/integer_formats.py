"""Fixed-point and QOperator ONNX against the QDQ model: output SQNR and agreement with the simulation.

    python benchmarks/integer_formats.py --models digits resnet50 yolov8n --resolution 224

For each model (the trained digits CNN and the random-weight ResNet-50 as ``quant_compare.py`` builds
them; YOLOv8n with trained weights, the ``nudenet`` package's 320x320 detector from the real-file
corpus, on crops of scikit-image's photographs), ``ptq(formats=["qdq", "qoperator", "fixed-point"])``
with minmax W8A8 on the case's calibration samples, then every model in onnxruntime on the held-out
samples (basic and all graph optimizations): output SQNR of each integer model against the QDQ model
and against the float model, accuracy where there are labels, and the share of output elements equal
to the integer simulation (the written model converted back to torch). Prints a Markdown table and
writes ``--json`` when given.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quant_compare  # noqa: E402  (the model builders)

from onnx2fx import OnnxToFxConverter  # noqa: E402
from onnx2fx.quantization import ptq  # noqa: E402
from onnx2fx.quantization.integer import float_tensors_inside  # noqa: E402
from onnx2fx.quantization.qdq import ort_session  # noqa: E402


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    noise = float(((ref - other.astype(np.float64)) ** 2).sum())
    return float("inf") if noise == 0 else float(10 * np.log10(float((ref ** 2).sum()) / noise))


def build_yolov8n(work: Path, args: argparse.Namespace) -> quant_compare.Case:
    """nudenet's YOLOv8n (trained weights, exported by ultralytics) at 320x320 on photo crops: each
    scikit-image photograph cut at several random squares and resized, RGB scaled to [0, 1]."""
    from benchmarks.real_models_corpus.cache import model_path
    from benchmarks.real_models_corpus.entries import by_key
    from benchmarks.real_models_corpus.inputs import PHOTOS, _photo, _resized

    rng = np.random.default_rng(args.seed)
    photos = [_photo(name) for name in PHOTOS]

    def crops(count: int) -> np.ndarray:
        images = []
        for i in range(count):
            photo = photos[i % len(photos)]
            side = int(min(photo.shape[:2]) * rng.uniform(0.5, 1.0))
            top = int(rng.integers(0, photo.shape[0] - side + 1))
            left = int(rng.integers(0, photo.shape[1] - side + 1))
            images.append(_resized(np.ascontiguousarray(photo[top:top + side, left:left + side]), 320, 320))
        return (np.stack(images).transpose(0, 3, 1, 2) / 255.0).astype(np.float32)

    source = model_path(by_key("nudenet_320n"))
    return quant_compare.Case("yolov8n", "YOLOv8n (nudenet 320n, trained weights, 320x320)", source, "images",
                              crops(args.calib_samples), crops(args.eval_samples), 1,
                              notes=["inputs: random square crops of scikit-image's photographs"])


BUILDERS = {**quant_compare.BUILDERS, "yolov8n": build_yolov8n}


def run(path: Path, input_name: str, x: np.ndarray, optimized: bool, batch: int) -> np.ndarray:
    session = ort_session(path, optimized)
    return np.concatenate([session.run(None, {input_name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def measure(case: quant_compare.Case, work: Path, float_islands: bool = False) -> dict[str, Any]:
    converter = OnnxToFxConverter(case.onnx_path)
    converter.convert()
    converter.save(work / "converted")
    started = time.perf_counter()
    result = ptq(work / "converted" / "model_full.pt", case.calib, batch_size=case.batch_size, output_dir=work / "q",
                 formats=["qdq", "qoperator", "fixed-point"], progress=False, eval_data=case.evaluation[:16],
                 eval_samples=16, float_islands=float_islands)
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
    for fmt, file in (("qoperator", "model_ptq_qoperator.onnx"), ("fixed_point", "model_ptq_fixed_point.onnx")):
        # The written integer model converted back to torch (the QOperator form through the
        # converter's com.microsoft QLinear* lowerings) against onnxruntime, element by element.
        simulation = result.integer_model(fmt.replace("_", "-"))
        with torch.no_grad():
            simulated = np.concatenate([simulation(torch.from_numpy(case.evaluation[i:i + case.batch_size])).numpy()
                                        for i in range(0, len(case.evaluation), case.batch_size)])
        onnxruntime_out = run(work / "q" / file, case.input_name, case.evaluation, False, case.batch_size)
        row[fmt]["equal_to_simulation"] = float(np.mean(onnxruntime_out == simulated))
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
                equal = f"{r[fmt]['equal_to_simulation']:.4f}" if "equal_to_simulation" in r[fmt] else "–"
                accuracy = f"{v['accuracy']:.4f}" if "accuracy" in v else "–"
                lines.append(f"| {r['model']} | {label} ({opt}) | {v['vs_qdq_db']:.2f} | {v['vs_float_db']:.2f} | "
                             f"{accuracy} | {equal} |")
    for r in rows:
        for fmt, label in (("qoperator", "QOperator"), ("fixed_point", "fixed point")):
            islands = r[fmt]["float_islands"]
            if islands:
                lines.append(f"\n{r['model']}, {label}: {len(islands)} nodes in float: {', '.join(islands)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits", "resnet50", "yolov8n"],
                        choices=["digits", "resnet50", "yolov8n"])
    parser.add_argument("--float-islands", action="store_true",
                        help="run ops without an integer form in float (listed per model) instead of stopping")
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
            rows.append(measure(BUILDERS[name](work, args), work, args.float_islands))
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
