"""AccuracyValidator: exact metric values, real inputs, and that it catches a wrong conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onnx2fx import AccuracyValidator, OnnxToFxConverter, ValidationInputError
from onnx2fx.validator import compare, load_inputs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"


def test_compare_metric_values() -> None:
    reference = np.array([1.0, -2.0, 4.0], dtype=np.float32)
    produced = np.array([1.0, -2.5, 4.0], dtype=np.float32)
    m = compare("y", reference, produced, tolerance=12.5)
    assert m.max_abs_error == 0.5
    assert m.mean_abs_error == pytest.approx(0.5 / 3)
    assert m.relative_error == pytest.approx(0.5 / 4.0 * 100)
    expected_cos = float(np.dot(reference, produced) / (np.linalg.norm(reference) * np.linalg.norm(produced)))
    assert m.cosine_similarity == pytest.approx(expected_cos)
    assert m.passed
    assert not compare("y", reference, produced, tolerance=12.4).passed


def test_compare_handles_nan_inf_and_shape_mismatch() -> None:
    a = np.array([np.nan, np.inf, 1.0])
    assert compare("y", a, a.copy(), 1e-9).relative_error == 0.0
    assert compare("y", a, np.array([0.0, np.inf, 1.0]), 1.0).relative_error == float("inf")
    bad = compare("y", np.zeros((2, 3)), np.zeros((3, 2)), 1.0)
    assert not bad.passed and bad.note == "shape [3, 2] differs from onnxruntime's [2, 3]"


def test_converted_example_passes_and_perturbed_weight_fails() -> None:
    gm = OnnxToFxConverter(EXAMPLE).convert()
    metrics = AccuracyValidator(EXAMPLE, gm, tolerance=1.0, num_samples=2).validate()
    assert metrics.passed and metrics.num_samples == 2
    assert metrics.relative_error < 1e-4
    assert metrics.input_shapes == {"image": [2, 3, 32, 32]}
    with torch.no_grad():
        gm.head.weight[0, 0] += 1.0
    broken = AccuracyValidator(EXAMPLE, gm, tolerance=1.0, num_samples=2).validate()
    assert not broken.passed and broken.relative_error > 1.0
    assert broken.to_dict()["outputs"][0]["name"] == "logits"


def test_real_inputs_from_npz_and_npy(tmp_path: Path) -> None:
    gm = OnnxToFxConverter(EXAMPLE).convert()
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    np.save(tmp_path / "in.npy", x)
    for source in (tmp_path / "in.npz", tmp_path / "in.npy", {"image": x}):
        metrics = AccuracyValidator(EXAMPLE, gm, inputs=source).validate()
        assert metrics.passed and metrics.num_samples == 1 and metrics.input_shapes == {"image": [4, 3, 32, 32]}


def test_input_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "wrong.npz", other=np.zeros(3))
    with pytest.raises(ValidationInputError, match=r"inputs \['image'\] are missing; given: \['other'\]"):
        load_inputs(tmp_path / "wrong.npz", ["image"])
    with pytest.raises(ValidationInputError, match="must be .npy or .npz"):
        (tmp_path / "x.txt").write_text("1")
        load_inputs(tmp_path / "x.txt", ["image"])
    with pytest.raises(ValidationInputError, match="does not exist"):
        AccuracyValidator(EXAMPLE, tmp_path / "missing.pt")
