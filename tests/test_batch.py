"""``onnx2fx batch`` and ``onnx2fx report``: worker isolation, crashes and timeouts, atomic model
folders, resume, config files, summary files and exit codes."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import onnx2fx.batch as batch_module
from onnx2fx.batch import (
    BatchConfig,
    WorkerTask,
    find_models,
    load_config,
    parse_config,
    run_batch,
    run_worker,
    summary_schema,
)
from onnx2fx.cli import app
from onnx2fx.errors import BatchError
from onnx2fx.pipeline import PipelineOptions
from onnx2fx.reports import schema as report_schema

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
runner = CliRunner()
QUICK = PipelineOptions(samples=1, traceability=False)  # for tests of the batch machinery only
MODEL_FILES = {"model.py", "weights.safetensors", "model_full.pt", "conversion.json", "report.json", "report.md",
               "report.html", "batch.json"}


# ------------------------------------------------------------------ workers (module level: they must pickle)
def crashing_worker(task: WorkerTask) -> None:
    """Segfaults for crash.onnx; the real worker for everything else."""
    if Path(task.model_path).name == "crash.onnx":
        os.kill(os.getpid(), signal.SIGSEGV)
    run_worker(task)


def killed_after_writing_worker(task: WorkerTask) -> None:
    """For mlp.onnx: writes the whole model folder into its staging folder, then is killed before
    the batch can move it into place."""
    run_worker(task)
    if Path(task.model_path).name == "mlp.onnx":
        os.kill(os.getpid(), signal.SIGKILL)


def misbehaving_worker(task: WorkerTask) -> None:
    name = Path(task.model_path).name
    if name == "hang.onnx":
        time.sleep(600)
    if name == "exit.onnx":
        os._exit(3)
    if name == "raise.onnx":
        raise RuntimeError("boom outside any stage")
    run_worker(task)


# ------------------------------------------------------------------ models
def make_mlp(path: Path, seed: int = 0) -> Path:
    """Gemm -> Relu -> Gemm with a dynamic batch."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 16)), ("b1", (16,)), ("w2", (16, 4)), ("b2", (4,)))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_nms(path: Path) -> Path:
    """ImageDecoder (decoding encoded images): valid ONNX that has no torch lowering."""
    graph = helper.make_graph(
        [helper.make_node("ImageDecoder", ["encoded"], ["image"])], "decoder",
        [helper.make_tensor_value_info("encoded", TensorProto.UINT8, [64])],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_models(root: Path) -> Path:
    make_mlp(root / "mlp.onnx")
    (root / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLE, root / "sub" / "tiny_cnn.onnx")
    make_nms(root / "nms.onnx")
    (root / "corrupt.onnx").write_bytes(b"\x00garbage\xff" * 10)
    make_mlp(root / "crash.onnx", seed=1)
    return root


CONFIG = """\
defaults:
  samples: 2
models:
  mlp:
    tolerance: 0.5
  sub/tiny_cnn.onnx:
    input_shapes: {image: [3, 3, 32, 32]}
"""


# ------------------------------------------------------------------ helpers
def staging_folders(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_dir() and p.name.startswith(".") and ".partial-" in p.name]


def report_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("report.json")}


def check_schemas(out: Path) -> dict[str, Any]:
    """Every report.json matches the report schema and summary.json the summary schema."""
    reports = list(out.rglob("report.json"))
    assert reports
    for path in reports:
        jsonschema.validate(json.loads(path.read_text()), report_schema())
    summary = json.loads((out / "summary.json").read_text())
    jsonschema.validate(summary, summary_schema())
    return summary


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


def by_path(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["path"]: m for m in summary["models"]}


# ------------------------------------------------------------------ one batch, run through the CLI
@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("batch")
    models = make_models(root / "models")
    (root / "batch.yaml").write_text(CONFIG)
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:  # the CLI runs the default worker: make crash.onnx crash
        mp.setattr(batch_module, "run_worker", crashing_worker)
        result = runner.invoke(app, ["batch", str(models), "-o", str(out), "--jobs", "2", "--config",
                                     str(root / "batch.yaml"), "--ptq"])
    return {"root": root, "models": models, "out": out, "result": result}


def own_copy(first_run: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A private copy of the first run's folders, for a test that changes them: the shared run
    stays as the batch left it, whatever order the tests run in."""
    root = tmp_path / "batch"
    shutil.copytree(first_run["root"], root, symlinks=True)
    return {"root": root, "models": root / "models", "out": root / "out", "result": first_run["result"]}


def test_cli_exit_code_and_table(first_run: dict[str, Any]) -> None:
    result = first_run["result"]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for name in ("mlp.onnx", "sub/tiny_cnn.onnx", "nms.onnx", "corrupt.onnx", "crash.onnx"):
        assert name in result.output
    assert "FAILED: 2 ok, 2 failed, 1 crashed, 0 skipped, 0 up-to-date" in result.output
    assert "QFT requested" not in result.output


def test_good_models_have_complete_folders(first_run: dict[str, Any]) -> None:
    out = first_run["out"]
    for folder in (out / "mlp", out / "sub" / "tiny_cnn"):
        assert MODEL_FILES <= {p.name for p in folder.iterdir()}, folder
        report = json.loads((folder / "report.json").read_text())
        assert report["conversion"]["status"] == "ok" and report["accuracy"]["passed"]
        assert report["accuracy"]["num_samples"] == 2  # config defaults
    mlp = json.loads((out / "mlp" / "report.json").read_text())
    assert mlp["accuracy"]["tolerance_percent"] == 0.5  # config entry by stem
    cnn = json.loads((out / "sub" / "tiny_cnn" / "report.json").read_text())
    assert cnn["accuracy"]["input_shapes"] == {"image": [3, 3, 32, 32]}  # config entry by path
    record = json.loads((out / "mlp" / "batch.json").read_text())
    assert record["outcome"] == "ok" and record["options"]["tolerance"] == 0.5 and record["options"]["ptq"] is True
    assert not staging_folders(out)


def test_failures_and_crash_are_recorded(first_run: dict[str, Any]) -> None:
    out = first_run["out"]
    summary = check_schemas(out)
    models = by_path(summary)
    assert [m["path"] for m in summary["models"]] == sorted(models)
    assert {p: m["status"] for p, m in models.items()} == {
        "corrupt.onnx": "failed", "crash.onnx": "crashed", "mlp.onnx": "ok", "nms.onnx": "failed",
        "sub/tiny_cnn.onnx": "ok"}
    assert summary["counts"] == {"ok": 2, "failed": 2, "crashed": 1, "skipped": 0, "up-to-date": 0}
    assert summary["passed"] is False and summary["jobs"] == 2 and summary["ptq"] is True

    nms = models["nms.onnx"]
    assert nms["error"]["type"] == "UnsupportedOperatorError" and "ImageDecoder" in nms["error"]["message"]
    assert nms["unsupported_ops"] == ["ImageDecoder"] and nms["passed"] is False
    corrupt = models["corrupt.onnx"]
    assert corrupt["error"]["type"] == "ModelFormatError" and "byte" in corrupt["error"]["message"]
    crash = models["crash.onnx"]
    assert crash["error"] == {"type": "WorkerCrashed", "message": "worker crashed with signal SIGSEGV"}
    assert crash["output"] == "crash" and crash["relative_error"] is None
    good = models["mlp.onnx"]
    assert good["error"] is None and good["passed"] is True and 0 <= good["relative_error"] < 0.5
    assert good["conversion_seconds"] > 0 and good["seconds"] > 0
    assert good["quantization"]["ptq"]["status"] == "ok" and good["quantization"]["qft"] is None
    assert {"model_ptq.pt", "model_ptq.onnx", "encodings.json"} <= {p.name for p in (out / "mlp" / "ptq").iterdir()}
    assert any("random" in w for w in good["quantization"]["ptq"]["warnings"])
    assert nms["quantization"]["ptq"]["status"] == "not_run"

    # The crashed model still gets a complete (report-only) folder saying why, and the worker's log.
    crash_report = json.loads((out / "crash" / "report.json").read_text())
    assert crash_report["conversion"]["error"]["message"] == "worker crashed with signal SIGSEGV"
    assert "Segmentation fault" in (out / "crash" / "worker.log").read_text()
    assert not (out / "crash" / "model.py").exists()
    for name in ("nms", "corrupt"):
        report = json.loads((out / name / "report.json").read_text())
        assert report["quantization"]["ptq"]["requested"] is True
        message = report["quantization"]["ptq"]["message"]
        assert message == "post-training quantization (PTQ) was requested but did not run"

    md = (out / "summary.md").read_text()
    assert "| [nms.onnx](nms/report.md) | failed |" in md and "WorkerCrashed" in md


def test_report_command_regenerates(first_run: dict[str, Any], tmp_path: Path) -> None:
    out = own_copy(first_run, tmp_path / "copy")["out"]
    (out / "mlp" / "report.md").unlink()
    (out / "nms" / "report.html").unlink()
    (out / "summary.md").unlink()
    before = {p: p.read_text() for p in out.rglob("report.json")}
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "mlp" / "report.md").read_text().startswith("# mlp")
    assert (out / "nms" / "report.html").is_file()
    assert (out / "summary.md").read_text().startswith("# Batch summary")
    assert {p: p.read_text() for p in out.rglob("report.json")} == before
    assert runner.invoke(app, ["report", str(out / "sub" / "tiny_cnn")]).exit_code == 0
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "neither report.json" in flat(result.output)
    (tmp_path / "summary.json").write_text("{not json")
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "BatchError" in result.output and "Traceback" not in result.output
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "report.json").write_text("{}")
    result = runner.invoke(app, ["report", str(tmp_path / "model")])
    assert result.exit_code == 2 and "not a valid onnx2fx report" in flat(result.output)


def test_resume_skips_then_force_redoes(first_run: dict[str, Any], tmp_path: Path) -> None:
    run = own_copy(first_run, tmp_path)
    out, models, root = run["out"], run["models"], run["root"]
    config = load_config(root / "batch.yaml")
    before = report_mtimes(out)
    summary = run_batch(models, out, config=config, jobs=2, ptq=True, worker=crashing_worker)
    statuses = {r.path: r.status for r in summary.results}
    # Everything is up to date except the crash, which is retried (crashes can be transient).
    assert statuses == {"corrupt.onnx": "up-to-date", "crash.onnx": "crashed", "mlp.onnx": "up-to-date",
                        "nms.onnx": "up-to-date", "sub/tiny_cnn.onnx": "up-to-date"}
    after = report_mtimes(out)
    assert {k: v for k, v in after.items() if not k.startswith("crash")} == \
        {k: v for k, v in before.items() if not k.startswith("crash")}
    # Up-to-date models keep their recorded outcome: the batch still fails because nms/corrupt did.
    assert not summary.passed and summary.exit_code == 1
    assert {r.path: r.passed for r in summary.results}["nms.onnx"] is False
    assert check_schemas(out)["counts"]["up-to-date"] == 4

    # Other options make a model out of date; --force redoes up-to-date ones. Skip the failing ones.
    skip = parse_config({"defaults": {"samples": 2},
                         "models": {"mlp": {"tolerance": 0.5}, "sub/tiny_cnn.onnx": {"input_shapes": {
                             "image": [3, 3, 32, 32]}}, "nms": {"skip": True}, "corrupt": {"skip": True},
                             "crash": {"skip": True}}})
    summary = run_batch(models, out, config=skip, jobs=2, ptq=True, force=True)
    assert {r.path: r.status for r in summary.results} == {
        "corrupt.onnx": "skipped", "crash.onnx": "skipped", "mlp.onnx": "ok", "nms.onnx": "skipped",
        "sub/tiny_cnn.onnx": "ok"}
    assert summary.passed and summary.exit_code == 0
    redone = report_mtimes(out)
    assert redone["mlp/report.json"] > before["mlp/report.json"]
    assert redone["sub/tiny_cnn/report.json"] > before["sub/tiny_cnn/report.json"]
    assert redone["nms/report.json"] == before["nms/report.json"]
    check_schemas(out)


# ------------------------------------------------------------------ interruptions
def test_killed_worker_and_leftover_staging(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_mlp(models / "mlp.onnx")
    make_mlp(models / "deep" / "other.onnx", seed=2)
    out = tmp_path / "out"
    leftover = out / ".mlp.partial-xyz" / "mlp"  # what an interrupted run leaves: a half-written folder
    leftover.mkdir(parents=True)
    (leftover / "model.py").write_text("# half written")
    (out / "deep" / ".other.partial-abc").mkdir(parents=True)

    summary = run_batch(models, out, QUICK, jobs=2, worker=killed_after_writing_worker)
    assert not staging_folders(out)
    assert sorted(summary.removed_leftovers) == sorted(
        [str(out / ".mlp.partial-xyz"), str(out / "deep" / ".other.partial-abc")])
    result = {r.path: r for r in summary.results}
    assert result["mlp.onnx"].status == "crashed"
    assert result["mlp.onnx"].error["message"].startswith("worker crashed with signal SIGKILL")
    assert result["deep/other.onnx"].status == "ok"
    # Nothing the killed worker wrote reached the model folder: only the crash report.
    assert {p.name for p in (out / "mlp").iterdir()} == {"report.json", "report.md", "report.html", "batch.json"}
    check_schemas(out)

    # The next run retries the crash and completes; other options make deep/other.onnx out of date.
    config = parse_config({"models": {"deep/other": {"tolerance": 2.0}}})
    summary = run_batch(models, out, QUICK, config=config, jobs=2)
    assert {r.path: r.status for r in summary.results} == {"deep/other.onnx": "ok", "mlp.onnx": "ok"}
    assert MODEL_FILES <= {p.name for p in (out / "mlp").iterdir()}
    assert summary.exit_code == 0 and not staging_folders(out)
    summary = run_batch(models, out, QUICK, config=config, jobs=2)
    assert {r.status for r in summary.results} == {"up-to-date"} and summary.exit_code == 0


def _children(pid: int) -> dict[int, str]:
    """Child pid -> command line, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
    return found


def _reap(pid: int, timeout: float) -> int | None:
    """Wait for a child of this process; its wait status, or None if it is still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl")
def test_killed_batch_leaves_no_half_written_folder(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_mlp(models / "mlp.onnx")
    out = tmp_path / "out"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the batch's orphaned processes become ours to reap
    try:
        with open(tmp_path / "batch.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "onnx2fx.cli", "batch", str(models), "-o", str(out),
                                     "-j", "1"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not list(out.glob(".mlp.partial-*/mlp/model.py")):  # the worker is mid-way: files written
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "batch.log").read_text()
                time.sleep(0.02)
            children = _children(proc.pid)
            proc.kill()  # SIGKILL: the batch gets no chance to clean up
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        workers = [pid for pid, cmdline in children.items() if "spawn_main" in cmdline]
        assert len(workers) == 1, children
        statuses = {pid: _reap(pid, 20) for pid in children}  # the worker dies with the batch
    finally:
        libc.prctl(36, 0)
    status = statuses[workers[0]]
    assert status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not (out / "mlp").exists()  # never half-written: the folder only appears when complete
    assert staging_folders(out)

    summary = run_batch(models, out, QUICK, jobs=1)
    assert [r.status for r in summary.results] == ["ok"]
    assert MODEL_FILES <= {p.name for p in (out / "mlp").iterdir()}
    assert not staging_folders(out)


def test_timeout_exit_and_exception_outside_stages(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for name in ("hang", "exit", "raise"):
        make_mlp(models / f"{name}.onnx")
    config = parse_config({"models": {"hang": {"timeout": 2}}})
    summary = run_batch(models, tmp_path / "out", config=config, jobs=2, worker=misbehaving_worker)
    result = {r.path: r for r in summary.results}
    assert result["hang.onnx"].status == "crashed"
    assert result["hang.onnx"].error == {"type": "WorkerTimeout", "message": "worker exceeded 2 s"}
    assert result["exit.onnx"].status == "crashed"
    assert result["exit.onnx"].error["message"] == "worker exited with code 3"
    assert result["raise.onnx"].status == "failed"
    assert result["raise.onnx"].error == {"type": "RuntimeError", "message": "boom outside any stage"}
    assert "Traceback" in (tmp_path / "out" / "raise" / "worker.log").read_text()
    assert summary.exit_code == 1
    check_schemas(tmp_path / "out")


# ------------------------------------------------------------------ config and bad input (no workers run)
@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  a:\n    tolerence: 1\n", "models.a: unknown key 'tolerence'"),
    ("defaults:\n  samples: two\n", "defaults.samples: expected an integer >= 1, got str 'two'"),
    ("defaults:\n  tolerance: true\n", "defaults.tolerance: expected a number >= 0"),
    ("defaults:\n  skip: 1\n", "defaults.skip: expected true or false"),
    ("models:\n  a:\n    input_shapes: {x: [1, a]}\n", "models.a.input_shapes.x: expected a list of positive integers"),
    ("models:\n  a:\n    inputs: missing.npz\n", "inputs file"),
    ("models:\n  a:\n    inputs: data.txt\n", "is not a .npy or .npz file"),
    ("models: [a, b]\n", "models: expected a mapping"),
    ("jobs: 3\n", "unknown key 'jobs' at the top level"),
    ("defaults: {timeout: -1}\n", "defaults.timeout: expected a number of seconds > 0"),
    ("defaults:\n  sweep: often\n", "defaults.sweep: expected true or false, got str 'often'"),
    ("defaults:\n  tolerance: [1\n", "invalid YAML"),
    ("- 1\n", "expected a mapping"),
])
def test_bad_config_is_exit_code_2(tmp_path: Path, text: str, message: str) -> None:
    make_mlp(tmp_path / "models" / "a.onnx")
    config = tmp_path / "batch.yaml"
    config.write_text(text)
    result = runner.invoke(app, ["batch", str(tmp_path / "models"), "-o", str(tmp_path / "out"), "-c", str(config)])
    assert result.exit_code == 2, result.output
    output = flat(result.output)
    assert output.startswith("error: BatchError: ") and message in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()


def test_sweep_option_reaches_the_report(tmp_path: Path) -> None:
    make_mlp(tmp_path / "models" / "a.onnx")
    result = runner.invoke(app, ["batch", str(tmp_path / "models"), "-o", str(tmp_path / "out"), "--sweep", "-j", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "a" / "report.json").read_text())
    assert [(p["dimension"], p["size"], p["status"]) for p in report["accuracy"]["sweep"]] == [
        ("batch", 1, "passed"), ("batch", 3, "passed"), ("batch", 8, "passed")]
    assert json.loads((tmp_path / "out" / "a" / "batch.json").read_text())["options"]["sweep"] is True


def test_bad_folders_are_exit_code_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["batch", str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "does not exist" in flat(result.output)
    result = runner.invoke(app, ["batch", str(tmp_path), "-o", str(tmp_path / "out"), "-c", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and "config file" in flat(result.output)
    make_mlp(tmp_path / "m" / "a.onnx")
    make_mlp(tmp_path / "m" / "a" / "b.onnx")
    result = runner.invoke(app, ["batch", str(tmp_path / "m"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "BatchError" in result.output and "inside the output folder" in flat(result.output)


def test_config_precedence_and_discovery(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"")
    config = parse_config({"defaults": {"tolerance": 2, "samples": 4},
                           "models": {"b": {"tolerance": 3, "inputs": "x.npz"}, "a/b.onnx": {"tolerance": 4},
                                      "./c": {"skip": True}, "ghost": {}}}, base=tmp_path)
    assert config.settings_for("a/b.onnx") == {"tolerance": 4.0, "samples": 4, "inputs": str(tmp_path / "x.npz")}
    assert config.settings_for("z/b.onnx")["tolerance"] == 3.0
    assert config.settings_for("c.onnx")["skip"] is True and config.settings_for("d.onnx") == {
        "tolerance": 2.0, "samples": 4}
    assert config.unmatched(["a/b.onnx", "c.onnx"]) == ["ghost"]
    assert config.with_defaults(tolerance=0.1, timeout=None).settings_for("d.onnx")["tolerance"] == 0.1
    with pytest.raises(BatchError, match="timeout"):
        BatchConfig().with_defaults(timeout=0)
    with pytest.raises(BatchError, match="name the same model"):
        parse_config({"models": {"a": {}, "a.onnx": {}}})

    # An output folder inside the models folder is not searched; neither are staging folders.
    models = tmp_path / "models"
    make_mlp(models / "a.onnx")
    make_mlp(models / "out" / "old.onnx")
    (models / "sub" / ".x.partial-1").mkdir(parents=True)
    make_mlp(models / "sub" / ".x.partial-1" / "y.onnx")
    assert find_models(models, models / "out") == ["a.onnx"]
    assert find_models(models) == ["a.onnx", "out/old.onnx"]
    summary = run_batch(models, models / "out", config=parse_config({"defaults": {"skip": True}}))
    assert [(r.path, r.status, r.passed) for r in summary.results] == [("a.onnx", "skipped", None)]
    assert summary.exit_code == 0
    jsonschema.validate(json.loads((models / "out" / "summary.json").read_text()), summary_schema())


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    yield
    import multiprocessing

    assert not multiprocessing.active_children()


def test_ptq_and_qft_per_model_with_config_data(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_mlp(models / "mlp.onnx")
    make_mlp(models / "nodata.onnx", seed=1)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))
    config = tmp_path / "batch.yaml"
    config.write_text("models:\n  mlp:\n    calibration: calib.npy\n")
    summary = run_batch(models, tmp_path / "out", config=config, jobs=1, ptq=True, qft=True)
    assert summary.passed
    mlp = json.loads((tmp_path / "out" / "mlp" / "report.json").read_text())
    jsonschema.validate(mlp, report_schema())
    assert mlp["quantization"]["ptq"]["status"] == "ok" and mlp["quantization"]["qft"]["status"] == "ok"
    assert mlp["quantization"]["ptq"]["calibration"]["samples"] == 64
    assert {"model_qft.pt", "model_qft.onnx", "encodings.json"} <= {p.name for p in (tmp_path / "out" / "mlp" /
                                                                                     "qft").iterdir()}
    nodata = json.loads((tmp_path / "out" / "nodata" / "report.json").read_text())
    assert nodata["quantization"]["ptq"]["status"] == "ok"  # random calibration, with a warning
    assert nodata["quantization"]["qft"] == {
        "requested": True, "status": "skipped",
        "message": "QFT needs training data: set `calibration` for this model in the batch config"}
