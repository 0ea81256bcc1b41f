"""Quantization-aware fine-tuning: accuracy recovery at W4A8, QDQ export of the fine-tuned weights,
streaming data, range learning, resume, torchrun, bad input and the CLI."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import onnx
import pytest
import torch
from digits import train_digits
from onnx import TensorProto, helper, numpy_helper
from support import convert_and_save
from typer.testing import CliRunner

from onnx2fx.cli import app
from onnx2fx.conversion_record import conversion_record
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import ptq, qft
from onnx2fx.quantization.data import InputSpec
from onnx2fx.quantization.fake_quant import FakeQuantize
from onnx2fx.quantization.learnable import LearnableFakeQuantize, freeze_ranges, make_learnable
from onnx2fx.quantization.qdq import ort_session
from onnx2fx.quantization.training_data import default_batch_size, training_data
from onnx2fx.reports import schema
from onnx2fx.validator import load_torch_model

runner = CliRunner()
qft_module = importlib.import_module("onnx2fx.quantization.qft")  # the package's `qft` is the function
training_module = importlib.import_module("onnx2fx.quantization.qft_training")


pytestmark = pytest.mark.usefixtures("one_thread")


def _accuracy(logits: np.ndarray | torch.Tensor, labels: np.ndarray) -> float:
    logits = logits.numpy() if isinstance(logits, torch.Tensor) else logits
    return float((logits.argmax(1) == labels).mean())


def _no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "q").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".q.")]


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = train_digits(tmp_path_factory.mktemp("digits"))
    np.savez(d.root / "train.npz", image=d.x_train)  # uncompressed: streamed through a memory map
    return d


@pytest.fixture(scope="module")
def digits_w4(digits: SimpleNamespace) -> SimpleNamespace:
    """W4A8 PTQ (int4 symmetric per-channel weights, minmax): the starting point of fine-tuning."""
    out = digits.root / "ptq_w4a8"
    result = ptq(digits.model, digits.x_train, weight_bits=4, samples=len(digits.x_train), output_dir=out,
                 progress=False)
    with torch.no_grad():
        accuracy = _accuracy(result.sim_model(torch.from_numpy(digits.x_test)), digits.y_test)
    return SimpleNamespace(result=result, out=out, accuracy=accuracy)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """MatMul with a constant weight, Relu, and Gemm with transB=0 (its nn.Linear weight is B transposed)."""
    root = tmp_path_factory.mktemp("mlp")
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 16)).astype(np.float32) * 0.5
    b = rng.normal(size=(16, 4)).astype(np.float32) * 0.5
    c = rng.normal(size=(4,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "b", "c"], ["y"], name="gemm", transB=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(c, "c")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "mlp.onnx"))
    x = rng.normal(size=(96, 8)).astype(np.float32)
    np.save(root / "x.npy", x)
    model = convert_and_save(root / "mlp.onnx", root / "converted")
    return SimpleNamespace(root=root, onnx=root / "mlp.onnx", model=model, x=x, data=root / "x.npy")


def _mlp_qft(mlp: SimpleNamespace, **kwargs):
    options = {"epochs": 1, "lr": 1e-3, "batch_size": 16, "calibration_samples": 64, "eval_samples": 32,
               "progress": False}
    return qft(mlp.model, mlp.data, **{**options, **kwargs})


# ---------------------------------------------------------------------------------- accuracy on real data
def test_digits_w4a8_qft_recovers_accuracy_and_exports_fine_tuned_weights(digits: SimpleNamespace,
                                                                          digits_w4: SimpleNamespace) -> None:
    out = digits.root / "qft"
    result = qft(digits.model, digits.root / "train.npz", from_ptq=digits_w4.out, epochs=1, lr=1e-3, batch_size=32,
                 eval_data=digits.x_test, eval_labels=digits.y_test, eval_samples=len(digits.x_test),
                 output_dir=out, progress=False)
    x_test = torch.from_numpy(digits.x_test)
    with torch.no_grad():
        qft_acc = _accuracy(result.sim_model(x_test), digits.y_test)
    ort_logits = ort_session(out / "model_qft.onnx", optimized=False).run(None, {"image": digits.x_test})[0]
    ort_acc = _accuracy(ort_logits, digits.y_test)
    drop = digits.float_acc - digits_w4.accuracy
    print(f"digits W4A8: float {digits.float_acc:.4f}, PTQ {digits_w4.accuracy:.4f}, QFT {qft_acc:.4f}, "
          f"QFT QDQ in onnxruntime {ort_acc:.4f}")
    assert drop * 100 >= 0.5  # 4-bit PTQ loses measurable accuracy on this model
    assert qft_acc - digits_w4.accuracy >= drop / 2  # one epoch of label-free QFT recovers at least half of it
    assert abs(ort_acc - qft_acc) * 100 <= 0.2

    report = result.report
    assert report["objective"] == {"kind": "distillation", "outputs": {"logits": "mse"}}
    assert report["accuracy"]["ptq"] == pytest.approx(digits_w4.accuracy)
    assert report["accuracy"]["qft"] == pytest.approx(qft_acc)
    assert report["accuracy"]["qdq_onnxruntime"] == pytest.approx(ort_acc)
    assert report["sqnr_db"]["after"] > report["sqnr_db"]["before"]
    assert report["loss"]["last_window_mean"] < report["loss"]["first_window_mean"]
    assert report["data"]["memory_mapped"] and report["data"]["samples"] == len(digits.x_train)
    assert report["checkpoints"] == 1 and report["int4_storage"] == "int8"
    assert {p.name for p in out.iterdir()} == set(qft_module.OUTPUT_FILES)
    saved = json.loads((out / "report.json").read_text())["quantization"]
    assert saved["ptq"]["settings"]["weights"]["bits"] == 4
    assert saved["qft"]["accuracy"]["qft"] == pytest.approx(qft_acc)
    assert "Quantization-aware fine-tuning" in (out / "report.md").read_text()

    # 4-bit weights as INT8 initializers holding [-8, 7] (opset 17 source); the encodings say 4 bits
    model = onnx.load(str(out / "model_qft.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantized = [a for name, a in weights.items() if name.endswith("weight_quantized")]
    assert quantized and all(a.dtype == np.int8 and a.min() >= -8 and a.max() <= 7 for a in quantized)
    encodings = json.loads((out / "encodings.json").read_text())
    params = {e["name"]: e for e in encodings["param_encodings"]}
    assert params["features.0.weight"]["bw"] == 4 and params["features.0.bias"]["bw"] == 32
    # the ONNX weights are the fine-tuned ones: DequantizeLinear(q) equals the model's fake-quantized weight
    conv = result.sim_model.features_0
    scale = np.asarray(params["features.0.weight"]["scale"], dtype=np.float32).reshape(-1, 1, 1, 1)
    with torch.no_grad():
        simulated = conv.weight_quantizer(conv.weight).numpy()
    assert np.array_equal(weights["features.0.weight_quantized"].astype(np.float32) * scale, simulated)
    before = load_torch_model(digits_w4.out / "model_ptq.pt")
    assert not torch.equal(before.features_0.weight, conv.weight)
    reloaded = load_torch_model(out / "model_qft.pt")
    with torch.no_grad():
        assert torch.equal(reloaded(x_test[:64]), result.sim_model(x_test[:64]))


def test_transposed_gemm_and_matmul_weights_map_back_to_their_initializers(mlp: SimpleNamespace,
                                                                           tmp_path: Path) -> None:
    result = _mlp_qft(mlp, output_dir=tmp_path / "q", range_learning=True, encoding_version="2.0.0")
    gm = result.sim_model
    origins = {o.initializer: (name, o.transform) for name, o in conversion_record(gm).parameters.items()}
    assert origins["b"][1] == "transpose"
    model = onnx.load(str(tmp_path / "q" / "model_qft.onnx"))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    document = {e["name"]: e for e in json.loads((tmp_path / "q" / "encodings.json").read_text())["encodings"]}
    for initializer in ("w1", "b"):
        name, transform = origins[initializer]
        param = gm.get_parameter(name)
        owner = gm.get_submodule(name.rpartition(".")[0]) if "." in name else gm
        quantizer = getattr(owner, "weight_quantizer", None) or next(
            m for m in gm.modules() if isinstance(m, FakeQuantize) and m.onnx_name == initializer)
        with torch.no_grad():
            simulated = quantizer(param).numpy()
        if transform == "transpose":
            simulated = simulated.T
        scale = np.asarray(document[initializer]["y_scale"], dtype=np.float32)
        stored = arrays[f"{initializer}_quantized"].astype(np.float32) * scale.reshape(1, -1)
        assert np.array_equal(stored, simulated), initializer
    # range learning moved the encodings, and the learned ones are what the files hold
    assert result.report["settings"]["learnable_quantizers"] > 0
    assert not any(isinstance(m, LearnableFakeQuantize) for m in gm.modules())
    ort_out = ort_session(tmp_path / "q" / "model_qft.onnx", optimized=False).run(None, {"x": mlp.x})[0]
    with torch.no_grad():
        sim_out = gm(torch.from_numpy(mlp.x)).numpy()
    step = float(result.activation_encodings["y"].scale[0])
    assert (np.abs(ort_out - sim_out) <= step * 1.001).mean() >= 0.999


def test_start_from_an_in_memory_ptq_result(mlp: SimpleNamespace) -> None:
    start = ptq(mlp.model, mlp.x, samples=64, progress=False)
    before = {k: v.clone() for k, v in start.sim_model.state_dict().items()}
    result = qft(mlp.model, mlp.data, from_ptq=start, epochs=1, lr=1e-3, batch_size=16, eval_samples=32,
                 progress=False)
    assert all(torch.equal(before[k], v) for k, v in start.sim_model.state_dict().items())  # trained a copy
    assert result.report["start"]["from"] == "the PTQ result"
    assert set(result.param_encodings) == set(start.param_encodings)
    assert set(result.activation_encodings) == set(start.activation_encodings)
    with pytest.raises(QuantizationError, match="settings are those of the PTQ"):
        qft(mlp.model, mlp.data, from_ptq=start, weight_bits=4, progress=False)


# ---------------------------------------------------------------------------------- resume
def test_resume_after_the_checkpoint_gives_the_same_weights(mlp: SimpleNamespace, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"epochs": 2, "range_learning": True, "seed": 3}
    whole = _mlp_qft(mlp, output_dir=tmp_path / "whole", **options)

    original = training_module.save_checkpoint

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(training_module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _mlp_qft(mlp, output_dir=tmp_path / "q", **options)
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["checkpoint.pt"]  # no partial export
    monkeypatch.setattr(training_module, "save_checkpoint", original)

    resumed = _mlp_qft(mlp, output_dir=tmp_path / "q", resume=True, **options)
    assert resumed.report["resumed_from_epoch"] == 1
    expected, got = whole.sim_model.state_dict(), resumed.sim_model.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.losses == whole.losses
    assert resumed.report["loss"]["per_epoch"] == whole.report["loss"]["per_epoch"]
    # other settings than the checkpoint's are refused
    with pytest.raises(QuantizationError, match="other settings"):
        _mlp_qft(mlp, output_dir=tmp_path / "q", resume=True, **{**options, "seed": 4})


# ---------------------------------------------------------------------------------- several processes
def test_torchrun_two_cpu_processes_end_with_the_same_weights(mlp: SimpleNamespace, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import os, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from onnx2fx.quantization import qft\n"
        "out = sys.argv[1]\n"
        "r = qft(sys.argv[2], sys.argv[3], output_dir=out + '/q', epochs=1, lr=1e-3, range_learning=True,\n"
        "        batch_size=8, calibration_samples=32, eval_samples=16, progress=False)\n"
        "torch.save(r.sim_model.state_dict(), f\"{out}/rank{os.environ['RANK']}.pt\")\n"
        "torch.save(r.losses, f\"{out}/losses{os.environ['RANK']}.pt\")\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the installed onnx2fx, as a user's torchrun would use
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tmp_path), str(mlp.model), str(mlp.data)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert torch.load(tmp_path / "losses0.pt") == torch.load(tmp_path / "losses1.pt")
    start = load_torch_model(mlp.model)
    trained = [name for name, o in conversion_record(start).parameters.items() if o.initializer in ("w1", "b")]
    assert len(trained) == 2 and not any(torch.equal(first[n], start.get_parameter(n)) for n in trained)
    report = json.loads((tmp_path / "q" / "report.json").read_text())["quantization"]["qft"]
    assert report["settings"]["world_size"] == 2 and report["settings"]["backend"] == "gloo"
    # 96 samples over 2 processes in batches of 8: 6 steps each, every sample seen once
    assert report["data"]["steps_per_epoch"] == 6 and report["data"]["samples_seen"] == 96


# ---------------------------------------------------------------------------------- data, learnable ranges
def test_streaming_sources_shard_and_keep_labels(tmp_path: Path) -> None:
    spec = [InputSpec("x", 1, [None, 3])]
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    y = np.arange(10, dtype=np.int64)
    np.savez(tmp_path / "stored.npz", x=x)
    np.savez_compressed(tmp_path / "packed.npz", x=x)
    np.save(tmp_path / "y.npy", y)
    stored = training_data(tmp_path / "stored.npz", spec, labels=tmp_path / "y.npy", batch_size=4, seed=1)
    packed = training_data(tmp_path / "packed.npz", spec, batch_size=4, seed=1)
    assert stored.description["memory_mapped"] and not stored.warnings and packed.warnings
    shards = [list(stored.batches(0, rank, 2)) for rank in (0, 1)]
    assert [b.size for b in shards[0]] == [4, 1] == [b.size for b in shards[1]]
    seen = torch.cat([b.labels for shard in shards for b in shard])
    assert sorted(seen.tolist()) == list(range(10))  # disjoint shards covering everything
    for batch in shards[0] + shards[1]:
        assert torch.equal(batch.inputs[0], torch.from_numpy(x)[batch.labels])  # inputs stay with their labels
    again = [b.labels for b in stored.batches(0, 0, 2)]
    assert all(torch.equal(a, b.labels) for a, b in zip(again, shards[0]))  # the order depends on (seed, epoch)
    assert not torch.equal(next(stored.batches(1)).labels, next(stored.batches(0)).labels)
    assert torch.equal(next(packed.batches(0)).inputs[0], next(stored.batches(0)).inputs[0])
    loader = [(torch.from_numpy(x[i:i + 2]), torch.from_numpy(y[i:i + 2])) for i in range(0, 10, 2)]
    iterable = training_data(loader, spec, batch_size=2)
    assert iterable.has_labels and [b.labels.tolist() for b in iterable.batches(0, 1, 2)] == [[2, 3], [6, 7]]
    assert len(list(iterable.batches(0, 0, 2))) == 2  # the fifth batch has no partner: dropped on both


def test_default_batch_leaves_an_epoch_at_least_100_steps_per_process() -> None:
    assert [default_batch_size(n) for n in (100, 1024, 1599, 1600, 3199, 3200, 50_000)] == [8, 8, 8, 16, 16, 32, 32]
    assert default_batch_size(6400, world=2) == 32 and default_batch_size(6399, world=2) == 16
    assert default_batch_size(None) == 32  # an iterable's own batches decide; 32 is only nominal
    spec = [InputSpec("x", 1, [None, 3])]
    data = training_data(np.zeros((1000, 3), np.float32), spec)
    assert data.batch_size == 8 and data.steps() == 125 and data.description["batch_size"] == 8
    assert training_data(np.zeros((1000, 3), np.float32), spec, batch_size=4).steps() == 250
    with pytest.raises(QuantizationError, match="^batch size must be positive, got 0$"):
        training_data(np.zeros((1000, 3), np.float32), spec, batch_size=0)


def test_learnable_quantizer_matches_fixed_one_and_freezes_back() -> None:
    from onnx2fx.quantization import Encoding, QuantConfig, QuantGrid

    fq = FakeQuantize("t", "activation", QuantConfig().activations)
    fq.set_encoding(Encoding.from_range(-1.0, 3.0, QuantGrid(8, False), False))
    # seeded: at an exact rounding tie the learnable path may land one step away from the fixed one
    x = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 2
    fixed = fq(x)
    params = make_learnable([fq])
    assert isinstance(fq, LearnableFakeQuantize) and len(params) == 2  # asymmetric: scale and zero point
    y = fq(x.requires_grad_())
    assert torch.equal(y.detach(), fixed)
    y.square().sum().backward()
    assert fq.scale.grad is not None and fq.zero_point.grad is not None and x.grad is not None
    with torch.no_grad():
        fq.scale.mul_(1.5)
        fq.zero_point.add_(0.4)
    learned = fq(x).detach()
    assert freeze_ranges(torch.nn.Sequential(fq)) == 1 and type(fq) is FakeQuantize
    assert fq.zero_point.dtype == torch.int32 and torch.equal(fq(x), learned)


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case", ["missing-data", "missing-file", "labels-count", "from-without-ptq",
                                  "resume-without-checkpoint", "supervised-without-labels"])
def test_bad_input_is_a_typed_error_without_output(mlp: SimpleNamespace, tmp_path: Path, case: str) -> None:
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "labels.npy", np.zeros(10, dtype=np.int64))
    kwargs, match = {
        "missing-data": ({"train_data": None}, "no training data"),
        "missing-file": ({"train_data": tmp_path / "nowhere.npy"}, "does not exist"),
        "labels-count": ({"labels": tmp_path / "labels.npy"}, "10 labels for 96"),
        "from-without-ptq": ({"from_ptq": tmp_path / "empty"}, "holds no PTQ results"),
        "resume-without-checkpoint": ({"resume": True}, "nothing to resume"),
        "supervised-without-labels": ({"supervised": True}, "needs labels"),
    }[case]
    arguments = {"train_data": mlp.data, **kwargs}
    with pytest.raises(QuantizationError, match=match):
        qft(mlp.model, arguments.pop("train_data"), output_dir=tmp_path / "q", progress=False, **arguments)
    _no_output(tmp_path)


# ---------------------------------------------------------------------------------- CLI
def test_cli_qft_end_to_end(tmp_path: Path, mlp: SimpleNamespace) -> None:
    converted = tmp_path / "output"
    assert runner.invoke(app, ["convert", str(mlp.onnx), "-o", str(converted)]).exit_code == 0
    labels = (mlp.x[:, 0] > 0).astype(np.int64)  # two classes: cross-entropy on the 4 logits
    np.save(tmp_path / "labels.npy", labels)
    result = runner.invoke(app, ["qft", str(converted / "model_full.pt"), "-o", str(tmp_path / "qft_output"),
                                 "--train-data", str(mlp.data), "--labels", str(tmp_path / "labels.npy"),
                                 "--epochs", "1", "--lr", "1e-3", "--batch-size", "16", "--samples", "64",
                                 "--eval-samples", "32", "--range-learning", "--encoding-version", "0.6.1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "qft_output"
    assert {p.name for p in out.iterdir()} == set(qft_module.OUTPUT_FILES)
    document = json.loads((out / "report.json").read_text())
    jsonschema.validate(document, schema())
    report = document["quantization"]
    assert report["ptq"]["status"] == "ok" and report["qft"]["objective"]["kind"] == "cross_entropy"
    assert report["qft"]["settings"]["range_learning"] and report["qft"]["data"]["steps_per_epoch"] == 6
    assert {"float", "ptq", "qft", "qdq_onnxruntime"} <= set(report["qft"]["accuracy"])
    assert json.loads((out / "encodings.json").read_text())["version"] == "0.6.1"
    assert "fine-tuned" in result.output and "SQNR" in result.output

    resumed = runner.invoke(app, ["qft", str(converted / "model_full.pt"), "-o", str(out), "--train-data",
                                  str(mlp.data), "--labels", str(tmp_path / "labels.npy"), "--epochs", "2", "--lr",
                                  "1e-3", "--batch-size", "16", "--samples", "64", "--eval-samples", "32",
                                  "--range-learning", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "report.json").read_text())["quantization"]["qft"]["resumed_from_epoch"] == 1

    (tmp_path / "empty").mkdir()
    bad = runner.invoke(app, ["qft", str(converted / "model_full.pt"), "-o", str(tmp_path / "q"), "--train-data",
                              str(mlp.data), "--from", str(tmp_path / "empty")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.output.startswith("error: QuantizationError: --from folder") and len(bad.output.splitlines()) <= 3
    assert not (tmp_path / "q").exists()


def test_batchnorm_statistics_stay_frozen_and_outputs_use_mse(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "wb")]
    inits += [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
              (("s", rng.uniform(0.5, 1.5, 4)), ("b", rng.normal(size=4)), ("m", rng.normal(size=4)),
               ("v", rng.uniform(0.5, 2.0, 4)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "wb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"], name="bn")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bn.onnx"))
    model = convert_and_save(tmp_path / "bn.onnx", tmp_path / "converted")
    x = rng.normal(size=(32, 3, 6, 6)).astype(np.float32) * 3  # far from the running statistics
    result = qft(model, x, epochs=1, lr=1e-2, calibration_samples=32, progress=False)
    assert result.report["objective"]["outputs"] == {"y": "mse"}
    # no batch size given: 8 for 32 samples (an epoch of fewer than 100 steps at any size)
    assert result.report["settings"]["batch_size"] == 8 and result.report["data"]["steps_per_epoch"] == 4
    start = load_torch_model(model)
    norms = [(n, m) for n, m in result.sim_model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    for name, module in norms:
        original = start.get_submodule(name)
        for key in ("running_mean", "running_var"):
            assert torch.equal(getattr(module, key), getattr(original, key)), key
        for key in ("weight", "bias"):  # the affine scale and shift train (and the QDQ export writes them)
            assert not torch.equal(getattr(module, key), getattr(original, key)), key
    conv = next(n for n, o in conversion_record(start).parameters.items() if o.initializer == "w")
    assert not torch.equal(result.sim_model.get_parameter(conv), start.get_parameter(conv))
    assert result.report["settings"]["trained_weights"] == 1
