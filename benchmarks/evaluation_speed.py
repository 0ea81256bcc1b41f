"""Evaluation time of the converted model against onnxruntime on the same images.

    python benchmarks/evaluation_speed.py [--images 500] [--batch-size 8] [--threads N] [--repeats 2]

Generates ``--images`` synthetic 320x320 shapes images (onnx2fx.evaluation.shapes, seed 0), converts
the example detector (examples/shapes_detection/shapes_detector.onnx) and evaluates it twice per
form, alternating onnxruntime and torch so that load on the machine hits both alike. It prints each
form's best whole-evaluation time (reading images, preprocessing, the model, decoding, COCO metrics)
and model-only time, and the torch / onnxruntime ratios; the target is a whole-evaluation ratio of
at most 1.2. Both runtimes get the same thread count.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from onnx2fx.converter import OnnxToFxConverter
from onnx2fx.evaluation import evaluate_form, load_dataset, load_task_config
from onnx2fx.evaluation.runners import ModelForm, OnnxRunner
from onnx2fx.evaluation.shapes import write_shapes_dataset

DETECTOR = Path(__file__).resolve().parents[1] / "examples" / "shapes_detection" / "shapes_detector.onnx"


class _Form(ModelForm):
    threads: int = 1

    def open(self):  # noqa: ANN201 - a runner
        return OnnxRunner(self.path, self.threads) if self.runtime == "onnxruntime" else super().open()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", type=Path, default=DETECTOR, help="a reference-004 style detector")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _Form.threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        root = write_shapes_dataset(Path(tmp) / "shapes", args.images)
        converter = OnnxToFxConverter(args.model)
        converter.convert()
        converter.save(Path(tmp) / "converted")
        dataset = load_dataset(root)
        config = load_task_config("reference004")
        forms = [_Form("onnxruntime", "onnxruntime", args.model),
                 _Form("converted", "torch", Path(tmp) / "converted" / "model_full.pt", args.model)]
        best: dict[str, dict[str, float]] = {}
        metrics: dict[str, dict[str, float]] = {}
        for _ in range(args.repeats):
            for form in forms:
                result = evaluate_form(form, dataset, config, batch_size=args.batch_size)
                metrics[form.label] = result.metrics
                for key, value in result.seconds.items():
                    best.setdefault(form.label, {})[key] = min(value, best.get(form.label, {}).get(key, value))
    print(f"{args.images} images of 320x320, batch {args.batch_size}, {args.threads} thread(s), best of "
          f"{args.repeats}")
    for label, seconds in best.items():
        print(f"  {label:12s} evaluation {seconds['total']:7.2f} s   model {seconds['inference']:7.2f} s   "
              f"AP {metrics[label]['AP']:.4f}")
    ort_s, torch_s = best["onnxruntime"], best["converted"]
    print(f"ratio converted / onnxruntime: evaluation {torch_s['total'] / ort_s['total']:.3f}, "
          f"model {torch_s['inference'] / ort_s['inference']:.3f}")


if __name__ == "__main__":
    main()
