"""The scale benchmark's decoder (benchmarks/scale_llm.py), scaled down: the same graph and the same
external-data layout convert, keep their weights mapped, and match onnxruntime at every swept size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from onnx2fx import AccuracyValidator, OnnxToFxConverter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import scale_llm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = scale_llm.DecoderConfig(vocab=50, hidden=32, layers=2, heads=4, intermediate=48, max_positions=128)


def test_small_decoder_with_external_data_matches_onnxruntime_at_every_size(tmp_path: Path) -> None:
    path = scale_llm.build(tmp_path / "decoder", CONFIG)
    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == 2 * 7 + 2 + 3 + 3 + 1  # per layer 7, 2 norms per layer, embeddings, mask, head
    assert all(int(dict((e.key, e.value) for e in t.external_data)["offset"]) % scale_llm.ALIGNMENT == 0
               for t in external)
    assert (path.parent / "model.onnx.data").stat().st_size >= CONFIG.parameters * 4

    gm = OnnxToFxConverter(path).convert()
    assert sum(p.numel() for p in gm.parameters()) == CONFIG.parameters + CONFIG.max_positions ** 2
    metrics = AccuracyValidator(path, gm, tolerance=1e-4, num_samples=2, sweep=True,
                                input_shapes={"input_ids": [1, 16]}).validate()
    assert [(p.dimension, p.size, p.status) for p in metrics.sweep] == [
        ("batch", 3, "passed"), ("batch", 8, "passed"),
        ("sequence", 1, "passed"), ("sequence", 7, "passed"), ("sequence", 8, "passed"),
        ("sequence", 25, "passed")]
    assert metrics.passed, metrics.to_dict()
    torch.fx.symbolic_trace(gm)

    # The causal mask is the triangular buffer, not random data.
    ids = torch.from_numpy(np.arange(6).reshape(1, 6))
    with torch.no_grad():
        full = gm(ids)
        prefix = gm(ids[:, :3])
    torch.testing.assert_close(full[:, :3], prefix, rtol=1e-5, atol=1e-5)  # later tokens do not leak back


def test_float16_decoder_stays_float16_and_matches_onnxruntime_within_its_precision(tmp_path: Path) -> None:
    """The ``--fp16-3b`` layout, scaled down: weights stored and computed in float16 (the mask's
    masked scores are float16's lowest value, not -1e9, which float16 cannot hold)."""
    config = scale_llm.DecoderConfig(vocab=50, hidden=32, layers=2, heads=4, intermediate=48, max_positions=128,
                                     dtype="float16")
    path = scale_llm.build(tmp_path / "decoder", config)
    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {t.data_type for t in external} == {onnx.TensorProto.FLOAT16}
    assert (path.parent / "model.onnx.data").stat().st_size >= config.parameters * 2

    gm = OnnxToFxConverter(path).convert()
    assert {p.dtype for p in gm.parameters()} == {torch.float16}
    ids = np.arange(14).reshape(2, 7) % config.vocab
    with torch.no_grad():
        logits = gm(torch.from_numpy(ids))
    assert logits.dtype == torch.float16 and torch.isfinite(logits).all()
    metrics = AccuracyValidator(path, gm, tolerance=scale_llm.VALIDATION["float16"]["tolerance"], num_samples=2,
                                input_shapes={"input_ids": [2, 7]}).validate()
    assert metrics.passed and metrics.relative_error < 0.5, metrics.to_dict()
