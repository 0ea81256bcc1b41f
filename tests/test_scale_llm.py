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
