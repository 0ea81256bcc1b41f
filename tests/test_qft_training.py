"""Fine-tuning beyond the weights: the start from the PTQ result, trained biases and normalization
parameters written into the QDQ model, per-channel weight scales, the learning-rate schedule and
label-free distillation."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import convert_and_save

from onnx2fx.conversion_record import conversion_record
from onnx2fx.errors import QuantizationError
from onnx2fx.quantization import ptq, qft
from onnx2fx.quantization.config import DEFAULT_SUPERGROUPS
from onnx2fx.quantization.lr_schedule import LrSchedule
from onnx2fx.quantization.qdq import ort_session

qft_module = importlib.import_module("onnx2fx.quantization.qft")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A transformer-like block: MatMul + Add (bias), LayerNormalization, Gemm (int32 bias), Softmax-free
    logits; every kind of trainable parameter once."""
    root = tmp_path_factory.mktemp("block")
    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(size=(8, 16)) * 0.4, "b1": rng.normal(size=16) * 0.1,
             "gamma": rng.uniform(0.8, 1.2, size=16), "beta": rng.normal(size=16) * 0.1,
             "w2": rng.normal(size=(5, 16)) * 0.4, "b2": rng.normal(size=5) * 0.1}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
         helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
         helper.make_node("LayerNormalization", ["hb", "gamma", "beta"], ["n"], name="ln", axis=-1),
         helper.make_node("Relu", ["n"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="gemm", transB=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "block.onnx"))
    x = rng.normal(size=(128, 8)).astype(np.float32)
    model = convert_and_save(root / "block.onnx", root / "converted")
    return SimpleNamespace(root=root, model=model, x=x)


def _parameter(gm: torch.nn.Module, initializer: str) -> torch.Tensor:
    name = next(n for n, o in conversion_record(gm).parameters.items() if o.initializer == initializer)
    return gm.get_parameter(name)


# The block's MatMul output keeps its quantizer (MatMul + bias is otherwise one group in the QDQ
# form) so that the QDQ file and the simulation agree exactly: a float MatMul differs between
# onnxruntime and torch in the last bit, and the LayerNorm turns a flipped rounding of its input
# into several output steps.
MATMUL_OUTPUT_QUANTIZED = {"supergroups": [list(p) for p in DEFAULT_SUPERGROUPS if p != ("MatMul", "Add")]}


def test_biases_and_norms_train_and_the_qdq_model_uses_them(block: SimpleNamespace, tmp_path: Path) -> None:
    start = ptq(block.model, block.x, weight_bits=4, samples=128, config=MATMUL_OUTPUT_QUANTIZED, progress=False)
    result = qft(block.model, block.x, from_ptq=start, output_dir=tmp_path / "q", epochs=2, lr=1e-2, batch_size=16,
                 eval_samples=128, progress=False)
    trained = result.report["settings"]["trained"]
    assert trained == {"weights": 8 * 16 + 5 * 16, "biases": 16 + 5, "norms": 32, "ranges": 16 + 5}
    for initializer in ("b1", "gamma", "beta", "b2"):
        assert not torch.equal(_parameter(result.sim_model, initializer), _parameter(start.sim_model, initializer))
    # the QDQ model holds the trained values: float ones as they are, the Gemm bias on its int32 grid
    written = onnx.load(str(tmp_path / "q" / "model_qft.onnx"))
    stored = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    for initializer in ("b1", "gamma", "beta"):
        assert np.array_equal(stored[initializer], _parameter(result.sim_model, initializer).detach().numpy())
    gemm = result.sim_model.get_submodule(next(n for n, o in conversion_record(result.sim_model).parameters.items()
                                                if o.initializer == "b2").rpartition(".")[0])
    with torch.no_grad():
        simulated_bias = gemm.bias_quantizer(gemm.bias).numpy()
    bias_scale = result.param_encodings["b2"].scale.astype(np.float32)
    assert np.array_equal(stored["b2_quantized"].astype(np.float32) * bias_scale, simulated_bias)
    # and so onnxruntime computes what the fine-tuned simulation computes
    qdq = ort_session(tmp_path / "q" / "model_qft.onnx", optimized=False).run(None, {"x": block.x})[0]
    with torch.no_grad():
        simulated = result.sim_model(torch.from_numpy(block.x)).numpy()
    step = float(result.activation_encodings["y"].scale[0])
    assert np.abs(qdq - simulated).max() <= step * 1.001
    assert result.report["qdq"]["within_one_step"] == 1.0


def test_fine_tuning_starts_from_the_adarounded_and_bias_corrected_ptq(block: SimpleNamespace,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    start = ptq(block.model, block.x, weight_bits=4, samples=128, adaround=True, adaround_iterations=20,
                bias_correction=True, progress=False)
    assert start.report["adaround"]["initializers"] and start.report["bias_correction"]["initializers"]
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original = qft_module.train_model

    def record_start(sim, *args, **kwargs):
        seen["state"] = {k: v.clone() for k, v in sim.gm.state_dict().items()}
        return original(sim, *args, **kwargs)

    monkeypatch.setattr(qft_module, "train_model", record_start)
    qft(block.model, block.x, from_ptq=start, epochs=1, lr=1e-3, batch_size=32, eval_samples=32, progress=False)
    expected = start.sim_model.state_dict()
    for initializer in (*start.report["adaround"]["initializers"], *start.report["bias_correction"]["initializers"]):
        name = next(n for n, o in conversion_record(start.sim_model).parameters.items() if o.initializer == initializer)
        assert torch.equal(seen["state"][name], expected[name]), initializer
    float_model = torch.load(block.model, weights_only=False)
    b1 = _parameter(float_model, "b2")
    assert not torch.equal(b1, expected[next(n for n, o in conversion_record(start.sim_model).parameters.items()
                                             if o.initializer == "b2")])  # bias correction did change it


def test_per_channel_weight_scales_train_and_are_exported(block: SimpleNamespace) -> None:
    start = ptq(block.model, block.x, weight_bits=4, samples=128, progress=False)
    result = qft(block.model, block.x, from_ptq=start, epochs=2, lr=1e-2, batch_size=16, eval_samples=32,
                 train=["weights"], progress=False)
    for initializer in ("w1", "w2"):
        before, after = start.param_encodings[initializer], result.param_encodings[initializer]
        assert after.axis == before.axis and after.scale.shape == before.scale.shape
        assert not np.array_equal(after.scale, before.scale)
        assert np.array_equal(after.zero_point, before.zero_point)  # symmetric: the zero point stays
    assert result.report["settings"]["trained"]["biases"] == 0 and result.report["settings"]["range_learning"] == \
        "weights"
    for initializer in ("b1", "gamma"):
        assert torch.equal(_parameter(result.sim_model, initializer), _parameter(start.sim_model, initializer))
    # activation encodings stay those of the PTQ unless asked for
    assert all(np.array_equal(result.activation_encodings[t].scale, e.scale)
               for t, e in start.activation_encodings.items())


def test_label_free_distillation_lowers_its_loss(block: SimpleNamespace) -> None:
    result = qft(block.model, block.x, weight_bits=4, calibration_samples=128, epochs=3, lr=3e-3, range_lr=3e-3,
                 batch_size=16, eval_samples=64, progress=False)
    report = result.report
    assert report["objective"] == {"kind": "distillation", "outputs": {"y": "mse"}}
    assert report["loss"]["steps"] == 24
    first, second, third = report["loss"]["per_epoch"]
    assert first > second > third and third < 0.9 * first  # the mean loss falls epoch by epoch
    assert report["sqnr_db"]["after"] > report["sqnr_db"]["before"]
    assert report["settings"]["lr_schedule"] == {"kind": "cosine", "total_steps": 24, "warmup_steps": 3,
                                                 "final_factor": 0.0}


def test_cosine_schedule_with_warmup_at_given_steps() -> None:
    schedule = LrSchedule("cosine", total_steps=10, warmup=0.2)
    assert schedule.warmup_steps == 2
    factors = [schedule.factor(s) for s in range(10)]
    assert factors[0] == 0.5 and factors[1] == 1.0 and factors[2] == 1.0 and factors[9] == 0.0
    assert factors[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))  # never rises after the warm-up
    assert LrSchedule("constant", 10).factor(7) == 1.0
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 1.0}])
    schedule.apply(optimizer, [1e-3, 1e-2], 5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3 * factors[5], 1e-2 * factors[5]])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"train": ["weights", "everything"]}, "train takes a list from"),
    ({"range_learning": "some"}, "range learning 'some' is not one of"),
    ({"lr_schedule": "step"}, "learning-rate schedule 'step' is not one of"),
    ({"warmup": 1.0}, "warmup is a share of the steps"),
    ({"bias_lr": -1.0}, "the bias learning rate must be a positive number"),
    ({"distillation": "l1"}, "distillation 'l1' is not one of"),
])
def test_bad_training_options_are_typed_errors(block: SimpleNamespace, kwargs: dict, match: str) -> None:
    with pytest.raises(QuantizationError, match=match):
        qft(block.model, block.x, progress=False, **kwargs)


def test_an_optimized_session_onnxruntime_cannot_build_is_reported_not_fatal(block: SimpleNamespace, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    qdq_module = importlib.import_module("onnx2fx.quantization.qdq")
    build = qdq_module.ort_session

    def refuse_fusions(path: Path, optimized: bool):
        if optimized:
            raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Type 'tensor(uint4)' of MaxPool\nmore")
        return build(path, optimized)

    monkeypatch.setattr(qdq_module, "ort_session", refuse_fusions)
    result = ptq(block.model, block.x, weight_bits=4, activation_bits=4, samples=64, output_dir=tmp_path / "p",
                 config=MATMUL_OUTPUT_QUANTIZED, progress=False)
    check = result.report["qdq"]
    assert check["status"] == "ok" and check["within_one_step"] == 1.0
    assert check["optimized"] == {"outputs": [], "within_one_step": None,
                                  "error": "RuntimeError: [ONNXRuntimeError] : 10 : INVALID_GRAPH : Type "
                                           "'tensor(uint4)' of MaxPool"}
