"""``onnx2fx batch --dataset``: task metrics of every model form a batch produces, graded against
the float model, recorded in each model folder, its report and the summary; errors before any work."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

pytest.importorskip("pycocotools")

from test_batch import make_mlp  # noqa: E402

import onnx2fx.batch as batch_module  # noqa: E402
from onnx2fx.batch import EvaluationTask, WorkerTask, run_batch, run_worker, summary_schema  # noqa: E402
from onnx2fx.batch.display import BatchDisplay  # noqa: E402
from onnx2fx.batch.evaluation import EvaluationPlanner, evaluate_model  # noqa: E402
from onnx2fx.cli import app  # noqa: E402
from onnx2fx.errors import BatchError  # noqa: E402
from onnx2fx.evaluation import evaluate  # noqa: E402
from onnx2fx.evaluation.shapes import write_shapes_dataset  # noqa: E402
from onnx2fx.quantization.ort_cpu import u8s8_saturates  # noqa: E402
from onnx2fx.reports import schema as report_schema  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = ROOT / "examples" / "shapes_detection" / "shapes_detector.onnx"
runner = CliRunner()


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


def crash_in_evaluation_worker(task: WorkerTask) -> None:
    """The real worker, except that crash.onnx dies (SIGSEGV) once its evaluation has begun."""
    if Path(task.model_path).name == "crash.onnx":
        import onnx2fx.batch.worker as worker_module

        def crash(*args: Any, progress: Any, **kwargs: Any) -> dict[str, Any]:
            progress("evaluating crash_onnx (1/2) 8/16")
            os.kill(os.getpid(), signal.SIGSEGV)
            raise AssertionError("unreachable")

        worker_module.evaluate_model = crash  # this process only: the worker is a spawned process
    run_worker(task)


# ------------------------------------------------------------------ the shapes detector, through the CLI
@pytest.fixture(scope="module")
def detector_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The committed detector and an MLP (whose evaluation on images must fail), with PTQ, on 4
    generated images; the progress the batch was shown is recorded."""
    root = tmp_path_factory.mktemp("batch_eval")
    shapes = write_shapes_dataset(root / "shapes", 4)
    models = root / "models"
    models.mkdir()
    shutil.copy(DETECTOR, models / "shapes_detector.onnx")
    make_mlp(models / "mlp.onnx")
    (root / "batch.yaml").write_text("defaults:\n  samples: 1\nmodels:\n  shapes_detector:\n"
                                     "    calibration: shapes/images\n")
    progress: list[tuple[str, str]] = []
    original = BatchDisplay.progress

    def record(self: BatchDisplay, rel: str, text: str) -> None:
        progress.append((rel, text))
        original(self, rel, text)

    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BatchDisplay, "progress", record)
        result = runner.invoke(app, ["batch", str(models), "-o", str(out), "-j", "1", "-c", str(root / "batch.yaml"),
                                     "--ptq", "--dataset", str(shapes), "--eval-limit", "4"])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else None
    return {"root": root, "shapes": shapes, "models": models, "out": out, "result": result, "summary": summary,
            "progress": progress}


@pytest.mark.skipif(not DETECTOR.is_file(), reason="the example detector is committed with the example")
def test_every_form_is_evaluated_and_graded(detector_run: dict[str, Any]) -> None:
    result, out, summary = detector_run["result"], detector_run["out"], detector_run["summary"]
    assert result.exit_code == 0, result.output  # an evaluation that fails does not fail the batch
    jsonschema.validate(summary, summary_schema())
    assert summary["schema_version"] == "1.1" and summary["evaluation"] is True and summary["ptq"] is True
    models = {m["path"]: m for m in summary["models"]}
    detector = models["shapes_detector.onnx"]
    assert detector["status"] == "ok" and detector["passed"] is True
    evaluation = detector["evaluation"]
    assert {k: evaluation[k] for k in ("status", "message", "task", "dataset", "images", "folder", "reference",
                                       "error")} == {
        "status": "ok", "message": None, "task": "detection", "dataset": "shapes", "images": 4,
        "folder": "shapes_detector/evaluation", "reference": "shapes_detector_onnx", "error": None}
    forms = {f["label"]: f for f in evaluation["forms"]}
    assert [(f["label"], f["role"], f["runtime"]) for f in evaluation["forms"]] == [
        ("shapes_detector_onnx", "float", "onnxruntime"), ("model_full_pt", "converted", "torch"),
        ("model_ptq_pt", "ptq", "torch"), ("model_ptq_onnx", "ptq", "onnxruntime")]

    # The float form's metrics are what `evaluate` gives on the same 4 images.
    alone = evaluate(DETECTOR, detector_run["shapes"], limit=4).results[0].metrics
    assert forms["shapes_detector_onnx"]["metrics"] == pytest.approx(alone, abs=1e-12)
    assert alone["AP50"] > 0.3  # the example detector finds the shapes
    # The converted model scores what the float model scores.
    for name, value in alone.items():
        assert abs(forms["model_full_pt"]["metrics"][name] - value) < 0.001, name
    assert forms["shapes_detector_onnx"]["grade"] == "reference" and forms["model_full_pt"]["grade"] == "excellent"
    # W8A8 with 4 calibration images: the simulation and its QDQ model agree with each other. The QDQ
    # model runs fully optimized, as deployed: onnxruntime fuses it into u8 x s8 kernels, which clip
    # pair sums on CPUs without VNNI (onnx2fx.quantization.ort_cpu), so less closely there.
    ptq_sim, ptq_onnx = forms["model_ptq_pt"]["metrics"], forms["model_ptq_onnx"]["metrics"]
    agreement = 0.03 if u8s8_saturates() else 0.01
    assert abs(ptq_sim["AP"] - ptq_onnx["AP"]) < agreement and abs(ptq_sim["AP"] - alone["AP"]) < 0.05
    comparison = json.loads((out / "shapes_detector" / "evaluation" / "comparison.json").read_text())
    assert {c["label"]: c["grade"] for c in comparison["candidates"]} == {
        label: form["grade"] for label, form in forms.items() if form["grade"] != "reference"}
    assert evaluation["grade"] == comparison["grade"]
    assert comparison["candidates"][0]["dataset_consistency"]["consistent"] is True


@pytest.mark.skipif(not DETECTOR.is_file(), reason="the example detector is committed with the example")
def test_evaluation_files_report_and_summary(detector_run: dict[str, Any]) -> None:
    out, summary = detector_run["out"], detector_run["summary"]
    folder = out / "shapes_detector" / "evaluation"
    assert sorted(p.name for p in folder.iterdir()) == ["comparison.json", "comparison.md", "model_full_pt",
                                                        "model_ptq_onnx", "model_ptq_pt", "shapes_detector_onnx"]
    for form in ("model_full_pt", "model_ptq_onnx"):
        document = json.loads((folder / form / "evaluation.json").read_text())
        assert ".partial-" not in document["model"]  # the path it has once installed
        assert Path(document["model"]).resolve().is_file()
        assert len(list((folder / form / "visualizations").glob("*_detected.png"))) == 4

    report = json.loads((out / "shapes_detector" / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    section = report["task_metrics"]
    assert section["status"] == "ok" and section["error"] is None and section["failed_forms"] == []
    assert section["folder"] == "evaluation" and [f["role"] for f in section["forms"]] == [
        "float", "converted", "ptq", "ptq"]
    assert "## Task metrics" in (out / "shapes_detector" / "report.md").read_text()

    evaluation = {m["path"]: m for m in summary["models"]}["shapes_detector.onnx"]["evaluation"]
    converted = evaluation["forms"][1]["metrics"]
    row = (f"| [shapes_detector.onnx](shapes_detector/evaluation/comparison.md) | shapes (4) | model_full_pt "
           f"(converted) | torch | {converted['AP']:.4f} | {converted['AP50']:.4f} | {converted['AP75']:.4f} | "
           f"{converted['AR100']:.4f} | excellent |")
    assert row in (out / "summary.md").read_text()
    assert "task metrics" in detector_run["result"].output
    assert "shapes_detector.onnx — task metrics on 4 images" in flat(detector_run["result"].output)


@pytest.mark.skipif(not DETECTOR.is_file(), reason="the example detector is committed with the example")
def test_failed_evaluation_keeps_the_model_results(detector_run: dict[str, Any]) -> None:
    out, summary = detector_run["out"], detector_run["summary"]
    mlp = {m["path"]: m for m in summary["models"]}["mlp.onnx"]
    assert mlp["status"] == "ok" and mlp["passed"] is True and mlp["error"] is None
    assert mlp["quantization"]["ptq"]["status"] == "ok"
    evaluation = mlp["evaluation"]
    assert evaluation["status"] == "failed" and evaluation["folder"] is None and evaluation["grade"] is None
    assert [(f["label"], f["metrics"]) for f in evaluation["forms"]] == [
        ("mlp_onnx", None), ("model_full_pt", None), ("model_ptq_pt", None), ("model_ptq_onnx", None)]
    # 320 x 320 images do not fit an MLP on 8 features: each form says so, the error names all four.
    assert evaluation["error"]["message"].startswith(f"mlp_onnx: {evaluation['forms'][0]['error']['type']}: ")
    assert all(f"{label}: " in evaluation["error"]["message"]
               for label in ("mlp_onnx", "model_full_pt", "model_ptq_pt", "model_ptq_onnx"))
    assert ".partial-" not in evaluation["error"]["message"]
    assert not (out / "mlp" / "evaluation").exists()
    assert {"model.py", "model_full.pt", "report.json", "ptq"} <= {p.name for p in (out / "mlp").iterdir()}
    report = json.loads((out / "mlp" / "report.json").read_text())
    jsonschema.validate(report, report_schema())
    assert report["task_metrics"]["status"] == "failed" and report["accuracy"]["passed"] is True
    assert "**Evaluation failed**" in (out / "mlp" / "report.md").read_text()
    assert "- mlp.onnx: evaluation failed: " in (out / "summary.md").read_text()
    assert "mlp.onnx — evaluation failed: " in flat(detector_run["result"].output)


@pytest.mark.skipif(not DETECTOR.is_file(), reason="the example detector is committed with the example")
def test_progress_names_each_stage_and_form(detector_run: dict[str, Any]) -> None:
    shown = [text for rel, text in detector_run["progress"] if rel == "shapes_detector.onnx"]
    # The first and last lines are always seen: the parent reads the file once more after the worker ends.
    assert shown[0] == "converting and validating" and shown[-1] == "writing evaluation/"
    allowed = {"converting and validating", "PTQ", "evaluating", "writing evaluation/"}
    labels = ("shapes_detector_onnx (1/4)", "model_full_pt (2/4)", "model_ptq_pt (3/4)", "model_ptq_onnx (4/4)")
    allowed |= {f"evaluating {label}" for label in labels}
    allowed |= {f"evaluating {label} 4/4" for label in labels}
    assert set(shown) <= allowed, shown


@pytest.mark.skipif(not DETECTOR.is_file(), reason="the example detector is committed with the example")
def test_rerun_is_up_to_date_until_the_evaluation_changes(detector_run: dict[str, Any], tmp_path: Path) -> None:
    first = detector_run["root"]
    shutil.copytree(first / "out", tmp_path / "out")  # the shared run's folders stay as they are
    config = ["-c", str(first / "batch.yaml"), "--ptq", "--dataset", str(first / "shapes")]
    again = runner.invoke(app, ["batch", str(first / "models"), "-o", str(tmp_path / "out"), "-j", "1", *config,
                                "--eval-limit", "4"])
    assert again.exit_code == 0, again.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["up-to-date"] == 2
    before = {m["path"]: m["evaluation"] for m in detector_run["summary"]["models"]}
    after = {m["path"]: m["evaluation"] for m in summary["models"]}
    for path in before:  # recorded paths are those of the first run's folder; the results are the same
        assert after[path]["status"] == before[path]["status"] and after[path]["grade"] == before[path]["grade"]
        assert [f["metrics"] for f in after[path]["forms"]] == [f["metrics"] for f in before[path]["forms"]]
    # Another limit is another evaluation: both models run again (the MLP alone, to keep this short).
    config_mlp = tmp_path / "mlp.yaml"
    config_mlp.write_text("defaults:\n  samples: 1\nmodels:\n  shapes_detector:\n    skip: true\n")
    rerun = run_batch(first / "models", tmp_path / "out", jobs=1, config=config_mlp, ptq=True,
                      dataset=first / "shapes", eval_limit=3)
    assert [(r.path, r.status) for r in rerun.results] == [("mlp.onnx", "ok"), ("shapes_detector.onnx", "skipped")]
    assert rerun.results[0].evaluation["images"] == 3
    assert rerun.results[1].evaluation == {
        "status": "not_run", "message": "the model was skipped by the config", "task": None, "dataset": None,
        "images": None, "folder": None, "reference": None, "grade": None, "forms": [], "error": None}
    assert "- shapes_detector.onnx: evaluation not run: the model was skipped by the config" in (
        tmp_path / "out" / "summary.md").read_text()



# ------------------------------------------------------------------ classification, and a crash while evaluating
def _classification_data(path: Path, model: Path, count: int = 16) -> np.ndarray:
    """Inputs for the MLP and, as labels, the float model's own answers: top-1 is 1.0 by construction."""
    inputs = np.random.default_rng(3).standard_normal((count, 8)).astype(np.float32)
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": inputs})[0]
    labels = logits.argmax(axis=1)
    labels[:4] = np.argsort(logits[:4], axis=1)[:, 0]  # four rows labelled with their least likely class
    np.savez(path, inputs=inputs, labels=labels)
    return labels


def test_classification_and_a_crash_during_evaluation(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_mlp(models / "mlp.onnx")
    make_mlp(models / "crash.onnx", seed=1)
    _classification_data(tmp_path / "data.npz", models / "mlp.onnx")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_module, "run_worker", crash_in_evaluation_worker)
        result = runner.invoke(app, ["batch", str(models), "-o", str(tmp_path / "out"), "-j", "1", "--dataset",
                                     str(tmp_path / "data.npz"), "--eval-batch-size", "5"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    jsonschema.validate(summary, summary_schema())
    models_ = {m["path"]: m for m in summary["models"]}
    mlp = models_["mlp.onnx"]["evaluation"]
    assert mlp["status"] == "ok" and mlp["task"] == "classification" and mlp["images"] == 16
    # 12 of 16 labels are the model's answer, 4 its least likely class: top-1 12/16; with 4 classes,
    # every label is in the top 5.
    assert [f["metrics"] for f in mlp["forms"]] == [{"top1": 0.75, "top5": 1.0}] * 2
    assert [f["grade"] for f in mlp["forms"]] == ["reference", "excellent"] and mlp["grade"] == "excellent"
    assert (tmp_path / "out" / "mlp" / "evaluation" / "model_full_pt" / "visualizations" /
            "confusion_matrix.png").is_file()

    # The crash came after the conversion: the model keeps its folder and result, the evaluation failed.
    crash = models_["crash.onnx"]
    assert crash["status"] == "ok" and crash["passed"] is True
    assert crash["evaluation"]["status"] == "failed" and crash["evaluation"]["forms"] == []
    assert crash["evaluation"]["error"] == {
        "type": "WorkerCrashed", "message": "worker crashed with signal SIGSEGV while evaluating crash_onnx (1/2) 8/16"}
    assert {"model.py", "model_full.pt", "report.json", "worker.log"} <= {
        p.name for p in (tmp_path / "out" / "crash").iterdir()}
    assert not (tmp_path / "out" / "crash" / "evaluation").exists()
    assert json.loads((tmp_path / "out" / "crash" / "batch.json").read_text())["outcome"] == "ok"


def test_one_failing_form_leaves_the_others(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_mlp(models / "mlp.onnx")
    labels = _classification_data(tmp_path / "data.npz", models / "mlp.onnx")
    summary = run_batch(models, tmp_path / "out", jobs=1, ptq=True, dataset=tmp_path / "data.npz")
    assert summary.results[0].evaluation["status"] == "ok"
    folder = tmp_path / "out" / "mlp"
    (folder / "ptq" / "model_ptq.pt").write_bytes(b"not a pickle")
    planner = EvaluationPlanner()
    task = planner.task_for("mlp.onnx", {"dataset": str(tmp_path / "data.npz")})
    assert isinstance(task, EvaluationTask) and task.dataset_record["count"] == len(labels)
    report = json.loads((folder / "report.json").read_text())
    section = evaluate_model(models / "mlp.onnx", folder, task, report["quantization"])
    assert section["status"] == "failed"
    assert [f["label"] for f in section["forms"]] == ["mlp_onnx", "model_full_pt", "model_ptq_onnx"]
    (failed,) = section["failed_forms"]
    assert failed["label"] == "model_ptq_pt" and failed["role"] == "ptq" and failed["runtime"] == "torch"
    message = f"{folder / 'ptq' / 'model_ptq.pt'} cannot be loaded as a torch model: "
    assert failed["error"]["type"] == "EvaluationError" and failed["error"]["message"].startswith(message)
    assert section["error"]["message"].startswith(f"model_ptq_pt: EvaluationError: {message}")
    assert section["comparison"]["grades"] == {"model_full_pt": "excellent", "model_ptq_onnx": section["grade"]}
    assert sorted(p.name for p in (folder / "evaluation").iterdir()) == [
        "comparison.json", "comparison.md", "mlp_onnx", "model_full_pt", "model_ptq_onnx"]


# ------------------------------------------------------------------ errors before any work
def test_missing_dataset_and_task_config_are_named(tmp_path: Path) -> None:
    make_mlp(tmp_path / "models" / "a.onnx")
    shapes = write_shapes_dataset(tmp_path / "shapes", 2)
    models, out = str(tmp_path / "models"), str(tmp_path / "out")

    def fails(*args: str) -> str:
        result = runner.invoke(app, ["batch", models, "-o", out, *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()
        return flat(result.output)

    assert fails("--dataset", str(tmp_path / "nowhere")) == (
        f"error: BatchError: command line: dataset: dataset {tmp_path / 'nowhere'} does not exist")
    config = tmp_path / "batch.yaml"
    config.write_text("models:\n  a:\n    dataset: shapes\n    task: tasks/a.yaml\n")
    assert fails("-c", str(config)) == (
        f"error: BatchError: {config}: models.a.task: task config {tmp_path / 'tasks' / 'a.yaml'} does not exist "
        "(or give a preset: reference004, torchvision, yolo, logits)")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.yaml").write_text("preset: yolo\npreprocess:\n  sise: [640, 640]\n")
    assert fails("-c", str(config)).startswith(
        f"error: BatchError: {config}: models.a.task: task config {tmp_path / 'tasks' / 'a.yaml'}: unknown key(s) "
        "preprocess.sise (allowed: ")
    config.write_text("defaults:\n  dataset: missing/\n")
    assert fails("-c", str(config)) == (
        f"error: BatchError: {config}: defaults.dataset: dataset {tmp_path / 'missing'} does not exist")
    config.write_text("defaults:\n  eval_limit: 0\n")
    assert fails("-c", str(config)) == (
        f"error: BatchError: {config}: defaults.eval_limit: expected an integer >= 1 (images evaluated), got int 0")
    # A dataset with a missing image, and a task config for another kind of dataset: before any model runs.
    (shapes / "images" / "000001.png").unlink()
    assert fails("--dataset", str(shapes)) == (
        f"error: DatasetError: image 000001.png (id 2) listed in {shapes / 'annotations.json'} does not exist under "
        f"{shapes / 'images'} or {shapes}")
    shapes = write_shapes_dataset(tmp_path / "shapes2", 2)
    assert fails("--dataset", str(shapes), "--task", "logits") == (
        f"error: BatchError: a.onnx: the task config logits is for classification, but the dataset {shapes} is a "
        "detection dataset")
    with pytest.raises(BatchError, match="a.onnx: the task config logits is for classification"):
        run_batch(tmp_path / "models", tmp_path / "out", dataset=shapes, task="logits")
    assert not (tmp_path / "out").exists()


def test_evaluation_settings_without_a_dataset_warn(tmp_path: Path) -> None:
    make_mlp(tmp_path / "models" / "a.onnx")
    config = tmp_path / "batch.yaml"
    config.write_text("defaults:\n  task: logits\n  skip: true\n")  # skipped: nothing runs
    summary = run_batch(tmp_path / "models", tmp_path / "out", config=config)
    assert summary.warnings == []  # a skipped model is not evaluated anyway
    config.write_text("models:\n  a:\n    task: logits\n    skip: true\n  b:\n    eval_limit: 3\n")
    make_mlp(tmp_path / "models" / "b.onnx")
    summary = run_batch(tmp_path / "models", tmp_path / "out", config=config, jobs=1)
    assert summary.warnings == ["evaluation settings but no dataset for b.onnx: not evaluated (give --dataset or a "
                                "`dataset` in the config)"]
    # Without a dataset nothing is evaluated.
    assert [r.evaluation for r in summary.results] == [None, None] and summary.to_dict()["evaluation"] is False
    assert not (tmp_path / "out" / "b" / "evaluation").exists()
    assert "## Task metrics" not in (tmp_path / "out" / "summary.md").read_text()


def test_a_model_with_a_batch_of_one_gets_one_image_a_call(tmp_path: Path) -> None:
    import onnx

    from onnx2fx.converter import OnnxToFxConverter

    model = onnx.load(str(make_mlp(tmp_path / "dynamic.onnx")))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1  # [batch, ...] -> [1, ...]
    onnx.save(model, str(tmp_path / "one.onnx"))
    _classification_data(tmp_path / "data.npz", tmp_path / "dynamic.onnx", count=6)
    converter = OnnxToFxConverter(tmp_path / "one.onnx")
    converter.convert()
    converter.save(tmp_path / "folder")
    task = EvaluationPlanner().task_for("one.onnx", {"dataset": str(tmp_path / "data.npz")})
    assert task is not None and task.batch_size == 8
    section = evaluate_model(tmp_path / "one.onnx", tmp_path / "folder", task, {"ptq": None, "qft": None})
    assert section["status"] == "ok", section["error"]
    assert [f["metrics"] for f in section["forms"]] == [{"top1": 2 / 6, "top5": 1.0}] * 2
    assert section["grade"] == "excellent"
