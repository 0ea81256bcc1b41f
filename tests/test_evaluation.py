"""Task metrics: pycocotools' numbers, output decoding, comparison grades, dataset errors, end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from onnx2fx.errors import DatasetError, EvaluationError  # noqa: E402
from onnx2fx.evaluation import (  # noqa: E402
    coco_metrics,
    compare_evaluations,
    evaluate,
    grade,
    load_dataset,
    load_task_config,
)
from onnx2fx.evaluation.comparison import comparison_markdown  # noqa: E402
from onnx2fx.evaluation.postprocess import decode  # noqa: E402
from onnx2fx.evaluation.preprocess import Placement  # noqa: E402
from onnx2fx.evaluation.runners import INT8_WEIGHTS_NOTE, ModelForm, reads_int8_weights  # noqa: E402
from onnx2fx.evaluation.shapes import write_shapes_dataset  # noqa: E402
from onnx2fx.quantization.ort_cpu import u8s8_saturates  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = ROOT / "examples" / "shapes_detection" / "shapes_detector.onnx"

GROUND_TRUTH = {
    "images": [{"id": 1, "file_name": "a.png", "width": 400, "height": 300},
               {"id": 2, "file_name": "b.png", "width": 400, "height": 300}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 20.0, 100.0, 100.0], "area": 10000.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [200.0, 50.0, 100.0, 100.0], "area": 10000.0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [50.0, 60.0, 100.0, 100.0], "area": 10000.0, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "triangle"}, {"id": 2, "name": "square"}],
}


def _pycocotools_stats(tmp_path: Path, predictions: list[dict]) -> list[float]:
    """The COCO API used the way its own documentation shows: files, loadRes, evaluate/accumulate/summarize."""
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps(GROUND_TRUTH))
    dt_file.write_text(json.dumps(predictions))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(str(dt_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def _predictions(shift: float = 0.0) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "bbox": [a["bbox"][0] + shift, *a["bbox"][1:]], "score": 0.9} for a in GROUND_TRUTH["annotations"]]


def test_identical_predictions_score_one(tmp_path: Path) -> None:
    metrics = coco_metrics(GROUND_TRUTH, _predictions())
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == metrics["AR100"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["APs"] == metrics["APm"] == -1.0  # only large objects: COCO says undefined
    assert list(metrics.values()) == _pycocotools_stats(tmp_path, _predictions())


def test_shifted_boxes_give_pycocotools_numbers(tmp_path: Path) -> None:
    # A 100x100 box moved 10 px sideways has IoU 90*100 / (110*100) = 0.818: a match at the thresholds
    # 0.50 ... 0.80 (7 of COCO's 10), a miss at 0.85 ... 0.95, so AP = 0.7.
    metrics = coco_metrics(GROUND_TRUTH, _predictions(10.0))
    assert list(metrics.values()) == _pycocotools_stats(tmp_path, _predictions(10.0))
    assert metrics["AP"] == pytest.approx(0.7, abs=1e-12)
    assert metrics["AP50"] == metrics["AP75"] == pytest.approx(1.0, abs=1e-12)


def test_no_predictions_score_zero() -> None:
    metrics = coco_metrics(GROUND_TRUTH, [])
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0


def test_reference004_outputs_decode_to_original_pixels() -> None:
    config = load_task_config("reference004")
    outputs = {
        "location": np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.75, 1.0]]], np.float32),
        "score": np.array([[0.5, 0.9, 0.0001]], np.float32),
        "category": np.array([[2, 1, 3]], np.int64),
    }
    # A 200 x 100 image stretched to the 320 x 320 input: normalized boxes scale by the original size.
    placement = Placement(200, 100, 320, 320, 320 / 200, 320 / 100)
    (detections,) = decode(outputs, config, [placement], [1, 2, 3])
    np.testing.assert_allclose(detections.boxes, [[0, 0, 200, 100], [20, 20, 100, 60], [50, 50, 150, 100]],
                               atol=1e-4)
    np.testing.assert_allclose(detections.scores, [0.9, 0.5, 0.0001], rtol=1e-6)
    assert detections.categories.tolist() == [1, 2, 3]  # 1-indexed ids are dataset ids as they are

    thresholded = load_task_config({"postprocess": {"score_threshold": 0.3, "max_detections": 1}})
    (kept,) = decode(outputs, thresholded, [placement], [1, 2, 3])
    assert kept.categories.tolist() == [1] and kept.scores.tolist() == pytest.approx([0.9])


def test_yolo_head_decodes_with_nms_and_letterbox() -> None:
    config = load_task_config({"preset": "yolo", "postprocess": {"score_threshold": 0.25, "iou_threshold": 0.5}})
    # [1, 4 + 2 classes, 4 anchors]: cx, cy, w, h (input pixels), then class scores.
    anchors = np.array([
        [100, 100, 40, 40, 0.9, 0.1],   # class 0, kept
        [102, 100, 40, 40, 0.8, 0.1],   # class 0, IoU 0.905 with the first: suppressed
        [102, 100, 40, 40, 0.05, 0.7],  # class 1 at the same place: another class, kept
        [250, 200, 20, 60, 0.1, 0.2],   # best score 0.2 < 0.25: dropped
    ], np.float32)
    head = anchors.T[None]
    # A 640 x 320 image letterboxed into 320 x 320: scale 0.5, 80 px of padding above and below.
    placement = Placement(640, 320, 320, 320, 0.5, 0.5, 0.0, 80.0)
    (detections,) = decode({"output0": head}, config, [placement], [5, 7])
    np.testing.assert_allclose(detections.scores, [0.9, 0.7], rtol=1e-6)
    assert detections.categories.tolist() == [5, 7]  # class i -> i-th dataset category
    np.testing.assert_allclose(detections.boxes, [[160, 0, 240, 80], [164, 0, 244, 80]], atol=1e-4)
    # The same head as [B, anchors, 4 + classes] decodes the same way.
    (transposed,) = decode({"output0": np.ascontiguousarray(anchors[None])}, config, [placement], [5, 7])
    np.testing.assert_allclose(transposed.boxes, detections.boxes)


def test_grades_at_the_threshold_boundaries() -> None:
    assert grade(0.0) == "excellent"
    assert grade(0.000999) == "excellent" and grade(-0.000999) == "excellent"
    assert grade(0.001) == "good" and grade(-0.001) == "good"
    assert grade(0.009999) == "good"
    assert grade(0.01) == "warning" and grade(-0.01) == "warning"


def _evaluation(label: str, metrics: dict[str, float], ids: list[int] | None = None) -> dict:
    ids = ids or [1, 2, 3]
    return {"label": label, "task": "detection", "model": f"{label}.onnx", "runtime": "onnxruntime",
            "metrics": metrics, "dataset": {"name": "d", "source": "d", "layout": "coco", "count": len(ids),
                                            "image_ids": ids, "ground_truth_sha256": "x"}}


def test_comparison_json_grades_each_metric_and_the_worst_headline() -> None:
    # Against a reference of 0 the differences are exactly the values, so the boundaries are exact.
    ref = _evaluation("float", {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR100": 0.0, "APs": 0.0})
    exact = _evaluation("torch", {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR100": 0.0, "APs": 0.0})
    near = _evaluation("int8", {"AP": 0.000999, "AP50": 0.001, "AP75": -0.001, "AR100": 0.0, "APs": 0.5})
    over = _evaluation("int4", {"AP": 0.009999, "AP50": 0.01, "AP75": 0.0, "AR100": -0.01, "APs": 0.0})
    document = compare_evaluations([ref, exact, near, over])
    by_label = {c["label"]: c for c in document["candidates"]}
    assert by_label["torch"]["grade"] == "excellent"
    assert by_label["int8"]["metrics"]["AP"] == {"reference": 0.0, "value": 0.000999, "difference": 0.000999,
                                                 "grade": "excellent"}
    assert {k: m["grade"] for k, m in by_label["int8"]["metrics"].items()} == {
        "AP": "excellent", "AP50": "good", "AP75": "good", "AR100": "excellent", "APs": "warning"}
    assert by_label["int8"]["grade"] == "good"  # APs is not a headline metric
    assert {k: m["grade"] for k, m in by_label["int4"]["metrics"].items()} == {
        "AP": "good", "AP50": "warning", "AP75": "excellent", "AR100": "warning", "APs": "excellent"}
    assert by_label["int4"]["grade"] == "warning"
    assert document["grade"] == "warning"
    assert document["headline_metrics"] == ["AP", "AP50", "AP75", "AR100"]


def test_comparison_flags_different_images() -> None:
    metrics = {"AP": 0.5, "AP50": 0.5, "AP75": 0.5, "AR100": 0.5}
    document = compare_evaluations([_evaluation("a", metrics), _evaluation("b", metrics, [1, 2, 4, 5])])
    (candidate,) = document["candidates"]
    assert candidate["grade"] == "warning"
    assert candidate["dataset_consistency"] == {"consistent": False, "image_count": {"reference": 3, "candidate": 4},
                                                "same_image_ids": False,
                                                "problems": ["3 images against 4", "different image ids"]}


def test_int8_weight_files_carry_a_note_where_onnxruntime_clips_their_sums(tmp_path: Path) -> None:
    """A QDQ file with int8 weights (a DequantizeLinear of an int8 initializer) is noted on a CPU where
    onnxruntime clips u8 x s8 sums; the same model with uint8 weights, or without quantization, is not.
    The note reaches comparison.json and its Markdown."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def conv_model(weight_type: int | None) -> Path:
        weight = np.ones((2, 1, 1, 1), np.float32)
        inits, nodes, w_name = [], [], "w"
        if weight_type is None:
            inits.append(numpy_helper.from_array(weight, "w"))
        else:
            dtype = np.int8 if weight_type == TensorProto.INT8 else np.uint8
            inits += [numpy_helper.from_array(weight.astype(dtype), "w_q"),
                      numpy_helper.from_array(np.array(0.5, np.float32), "w_s")]
            nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w_dq"]))
            w_name = "w_dq"
        nodes.append(helper.make_node("Conv", ["x", w_name], ["y"]))
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        path = tmp_path / f"conv_{weight_type}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
        return path

    int8_file, uint8_file, float_file = (conv_model(t) for t in (TensorProto.INT8, TensorProto.UINT8, None))
    assert [reads_int8_weights(p) for p in (int8_file, uint8_file, float_file)] == [True, False, False]
    # onnxruntime's quantize_dynamic writes an LSTM's W and R (inputs 1 and 2) as int8 for its u8 x s8 kernels
    lstm = helper.make_node("DynamicQuantizeLSTM", ["x", "W", "R", "B"], ["y"], domain="com.microsoft", hidden_size=2)
    lstm_graph = helper.make_graph(
        [lstm], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((1, 3, 8), np.int8), "W"),
         numpy_helper.from_array(np.zeros((1, 2, 8), np.int8), "R"),
         numpy_helper.from_array(np.zeros((1, 16), np.float32), "B")])
    lstm_file = tmp_path / "lstm.onnx"
    onnx.save(helper.make_model(lstm_graph, opset_imports=[helper.make_opsetid("", 13),
                                                            helper.make_opsetid("com.microsoft", 1)]), lstm_file)
    assert reads_int8_weights(lstm_file)
    expected = [INT8_WEIGHTS_NOTE] if u8s8_saturates() else []
    assert ModelForm("q", "onnxruntime", int8_file).notes() == expected
    assert ModelForm("u", "onnxruntime", uint8_file).notes() == []
    assert ModelForm("t", "torch", int8_file).notes() == []
    metrics = {"AP": 0.5, "AP50": 0.5, "AP75": 0.5, "AR100": 0.5}
    noted = {**_evaluation("qdq", metrics), "notes": [INT8_WEIGHTS_NOTE]}
    document = compare_evaluations([_evaluation("float", metrics), noted])
    assert document["candidates"][0]["notes"] == [INT8_WEIGHTS_NOTE]
    assert f"Note: {INT8_WEIGHTS_NOTE}." in comparison_markdown(document)


def test_comparison_needs_two_evaluations_of_one_task() -> None:
    with pytest.raises(EvaluationError, match="at least two"):
        compare_evaluations([_evaluation("a", {})])
    other = {**_evaluation("b", {}), "task": "classification"}
    with pytest.raises(EvaluationError, match="different tasks"):
        compare_evaluations([_evaluation("a", {}), other])


def test_missing_image_is_named(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path / "coco", 3)
    (root / "images" / "000001.png").unlink()
    with pytest.raises(DatasetError, match=r"image 000001.png \(id 2\) listed in .*annotations.json does not exist"):
        load_dataset(root)
    jsonl = write_shapes_dataset(tmp_path / "jsonl", 3, layout="jsonl")
    (jsonl / "data" / "000002.png").unlink()
    with pytest.raises(DatasetError, match=r"image data/000002.png listed in .*dataset.jsonl line 3 does not exist"):
        load_dataset(jsonl)


def test_corrupt_annotations_are_named(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path / "coco", 2)
    document = json.loads((root / "annotations.json").read_text())
    document["annotations"][1]["bbox"] = [1, 2, -3, 4]
    (root / "annotations.json").write_text(json.dumps(document))
    with pytest.raises(DatasetError, match=r"annotation 2 has bbox \[1, 2, -3, 4\]: expected \[x, y, width, height\]"):
        load_dataset(root)
    document["annotations"][1]["bbox"] = [1, 2, 3, 4]
    document["annotations"][0]["image_id"] = 99
    (root / "annotations.json").write_text(json.dumps(document))
    with pytest.raises(DatasetError, match="annotation 1 refers to image id 99, which is not in 'images'"):
        load_dataset(root)
    (root / "annotations.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"annotations.json is not valid JSON"):
        load_dataset(root)

    jsonl = write_shapes_dataset(tmp_path / "jsonl", 2, layout="jsonl")
    lines = (jsonl / "dataset.jsonl").read_text().splitlines()
    (jsonl / "dataset.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"dataset.jsonl line 2 is not valid JSON"):
        load_dataset(jsonl)
    entry = json.loads(lines[1])
    entry["labels"] = [0] * len(entry["boxes"])
    (jsonl / "dataset.jsonl").write_text(lines[0] + "\n" + json.dumps(entry) + "\n")
    with pytest.raises(DatasetError, match=r"line 2 has label 0: expected a 1-indexed integer category"):
        load_dataset(jsonl)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path / "coco", 2)
    (root / "images" / "000001.png").write_bytes(b"not a png")
    dataset = load_dataset(root)  # sizes come from annotations.json; the pixels are read at evaluation
    with pytest.raises(DatasetError, match=r"image .*000001.png cannot be read"):
        dataset.samples[1].load_rgb()


def test_task_config_keys_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text("preset: yolo\npreprocess:\n  sise: [640, 640]\n")
    with pytest.raises(EvaluationError, match=r"task.yaml: unknown key\(s\) preprocess.sise"):
        load_task_config(path)
    path.write_text("preset: yolo\npreprocess:\n  size: [640, 640]\n  resize: crop\n")
    with pytest.raises(EvaluationError, match=r"'preprocess.resize' is 'crop', expected one of stretch"):
        load_task_config(path)
    path.write_text("preset: yolo\npreprocess:\n  size: [640, 640]\npostprocess:\n  iou_threshold: 0.6\n")
    config = load_task_config(path)
    assert config.preprocess.size == (640, 640) and config.preprocess.resize == "letterbox"
    assert config.postprocess.iou_threshold == 0.6 and config.postprocess.max_detections == 300


def _classifier(tmp_path: Path) -> Path:
    """An ONNX model whose logits are its input (a Linear layer with the identity matrix)."""
    model = torch.nn.Linear(6, 6, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(6))
    path = tmp_path / "identity.onnx"
    torch.onnx.export(model, (torch.zeros(1, 6),), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


def test_npz_classification_top1_top5_and_confusion_matrix(tmp_path: Path) -> None:
    from onnx2fx.converter import OnnxToFxConverter

    model = _classifier(tmp_path)
    converter = OnnxToFxConverter(model)
    converter.convert()
    converter.save(tmp_path / "converted")
    # Scores rank the classes 0 > 1 > ... > 5 except where a row says otherwise.
    inputs = np.tile(np.array([6, 5, 4, 3, 2, 1], np.float32), (5, 1))
    inputs[1, 3] = 9  # predicts 3
    labels = np.array([0, 3, 1, 5, 4])  # top-1 right for rows 0 and 1; row 2's label is 2nd, row 4's 5th
    np.savez(tmp_path / "data.npz", inputs=inputs, labels=labels)
    run = evaluate([model, tmp_path / "converted"], tmp_path / "data.npz", output_dir=tmp_path / "out",
                   batch_size=2)
    for result in run.results:
        assert result.metrics == {"top1": 2 / 5, "top5": 4 / 5}
    assert run.comparison is not None and run.comparison["grade"] == "excellent"
    assert (tmp_path / "out" / "identity_onnx" / "visualizations" / "confusion_matrix.png").is_file()
    predictions = json.loads((tmp_path / "out" / "model_full_pt" / "predictions.json").read_text())
    assert [p["category_id"] for p in predictions] == [0, 3, 0, 0, 0]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "coco", 6)


@pytest.mark.skipif(not DETECTOR.is_file(), reason="the example detector is committed with the example")
def test_shapes_detector_float_onnx_and_converted_torch_agree(tmp_path: Path, shapes: Path) -> None:
    from onnx2fx.converter import OnnxToFxConverter

    torch.set_num_threads(1)
    converter = OnnxToFxConverter(DETECTOR)
    converter.convert()
    converter.save(tmp_path / "converted")
    run = evaluate([DETECTOR, tmp_path / "converted"], shapes, output_dir=tmp_path / "out", batch_size=4)
    onnx_result, torch_result = run.results
    assert onnx_result.metrics["AP50"] > 0.3  # the example detector finds the shapes
    for name, value in onnx_result.metrics.items():
        assert abs(torch_result.metrics[name] - value) < 0.001, name
    assert run.comparison["grade"] == "excellent"
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert comparison["candidates"][0]["dataset_consistency"]["consistent"] is True
    assert comparison["dataset"]["count"] == 6
    out = tmp_path / "out" / "shapes_detector_onnx"
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.json", "ground_truth_coco.json", "metrics.json",
                                                     "predictions.json", "visualizations"]
    assert len(list((out / "visualizations").glob("*_detected.png"))) == 6
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(predictions[0]) == {"image_id", "category_id", "bbox", "score"}
    # The same images in reference 004's layout give the same metrics.
    jsonl = write_shapes_dataset(tmp_path / "jsonl", 6, layout="jsonl")
    again = evaluate(DETECTOR, jsonl, batch_size=3)
    assert again.results[0].metrics == pytest.approx(onnx_result.metrics, abs=1e-9)


@pytest.mark.skipif(not DETECTOR.is_file(), reason="the example detector is committed with the example")
def test_cli_evaluate_limit_and_compare(tmp_path: Path, shapes: Path) -> None:
    from typer.testing import CliRunner

    from onnx2fx.cli import app

    cli = CliRunner()
    first = cli.invoke(app, ["evaluate", str(DETECTOR), "--dataset", str(shapes), "-o", str(tmp_path / "a"),
                             "--limit", "4", "-b", "2"])
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text())["dataset"]["image_ids"] == [1, 2, 3, 4]
    second = cli.invoke(app, ["evaluate", str(DETECTOR), "--dataset", str(shapes), "-o", str(tmp_path / "b"),
                              "--limit", "3"])
    assert second.exit_code == 0, second.output
    compared = cli.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o",
                                str(tmp_path / "comparison.json")])
    assert compared.exit_code == 1  # different images: a warning
    document = json.loads((tmp_path / "comparison.json").read_text())
    assert document["candidates"][0]["dataset_consistency"]["problems"] == ["4 images against 3",
                                                                            "different image ids",
                                                                            "different ground truth"]
    missing = cli.invoke(app, ["evaluate", str(DETECTOR), "--dataset", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "DatasetError: dataset" in missing.output


def test_report_gains_a_task_metrics_section(tmp_path: Path) -> None:
    import jsonschema
    from typer.testing import CliRunner

    from onnx2fx.cli import app
    from onnx2fx.pipeline import PipelineOptions, run_model
    from onnx2fx.reports import schema

    model = _classifier(tmp_path)
    run_model(model, tmp_path / "report", PipelineOptions(traceability=False))
    inputs = np.eye(6, dtype=np.float32)[[0, 1, 2, 3]]
    np.savez(tmp_path / "data.npz", inputs=inputs, labels=np.array([0, 1, 2, 5]))
    result = CliRunner().invoke(app, ["evaluate", str(model), str(tmp_path / "report" / "model_full.pt"),
                                      "--dataset", str(tmp_path / "data.npz"), "-o", str(tmp_path / "eval"),
                                      "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    jsonschema.validate(report, schema())
    section = report["task_metrics"]
    # Row 3 scores class 3 alone; the ties below it rank 0, 1, 2, 4 before its label 5: top-5 misses too.
    assert [f["metrics"] for f in section["forms"]] == [{"top1": 0.75, "top5": 0.75}] * 2
    assert section["grade"] == "excellent" and section["folder"] == "../eval"
    assert section["pictures"] == ["../eval/identity_onnx/visualizations/confusion_matrix.png",
                                   "../eval/model_full_pt/visualizations/confusion_matrix.png"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Task metrics" in markdown and "| model_full_pt | torch | 0.75 | 0.75 | excellent |" in markdown
    assert "<img src='../eval/identity_onnx/visualizations/confusion_matrix.png'" in \
        (tmp_path / "report" / "report.html").read_text()


def test_torchvision_outputs_decode_in_input_pixels() -> None:
    config = load_task_config("torchvision")
    outputs = {"boxes": np.array([[32, 64, 160, 320], [0, 0, 10, 10]], np.float32),
               "labels": np.array([18, 1], np.int64), "scores": np.array([0.3, 0.8], np.float32)}
    placement = Placement(640, 480, 320, 320, 0.5, 320 / 480)  # stretched from 640 x 480
    (detections,) = decode(outputs, config, [placement], [1, 18])
    assert detections.categories.tolist() == [1, 18]  # torchvision's labels are COCO category ids
    np.testing.assert_allclose(detections.boxes, [[0, 0, 20, 15], [64, 96, 320, 480]], atol=1e-4)
    with pytest.raises(EvaluationError, match="hold one image: use --batch-size 1"):
        decode(outputs, config, [placement, placement], [1, 18])


def test_image_folder_classes_are_sorted_folder_names(tmp_path: Path) -> None:
    from PIL import Image

    for name, count in (("zebra", 2), ("cat", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 6)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "cat" / "notes.txt").write_text("not an image")
    dataset = load_dataset(tmp_path / "data")
    assert (dataset.task, dataset.layout) == ("classification", "imagefolder")
    assert [c["name"] for c in dataset.categories] == ["cat", "zebra"]
    assert [(s.name, s.label) for s in dataset.samples] == [("cat/0.png", 0), ("zebra/0.png", 1), ("zebra/1.png", 1)]
