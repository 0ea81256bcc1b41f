"""Target-model zoo regressions: each model exported by its own library, converted, and compared.

The models marked ``ci`` in ``benchmarks/zoo`` (the small ones) run in every test run; the rest are
``slow`` (``python -m pytest -m slow tests/test_zoo.py``). ``benchmarks/zoo_parity.py`` measures the
whole zoo and writes docs/zoo.md; this file guards the same properties: relative error against
onnxruntime within 1e-3 %, ``symbolic_trace`` and ``torch.export`` accept the converted model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.zoo.registry import export_model, load_all  # noqa: E402
from onnx2fx import AccuracyValidator, OnnxToFxConverter  # noqa: E402

GATE_PERCENT = 1e-3
ZOO = load_all()


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


# Measured gaps, kept visible rather than loosening the gate (docs/zoo.md has the numbers).
KNOWN_GAPS = {
    "fasterrcnn": "about 1.4e-3 %: convolution rounding (torch vs onnxruntime kernels) amplified by the random-weight "
    "heads and near-tied TopK candidates; onnxruntime differs from itself by 1.3e-3 % between optimization levels",
}


def _params() -> list:
    params = []
    for name, model in ZOO.items():
        marks = [] if model.ci else [pytest.mark.slow]
        if name in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=False))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", _params())
def test_zoo_model_converts_with_parity(name: str, zoo_dir: Path) -> None:
    model = ZOO[name]
    path = export_model(name, zoo_dir)
    gm = OnnxToFxConverter(path).convert()
    inputs = model.inputs(1)
    metrics = AccuracyValidator(path, gm, tolerance=GATE_PERCENT, inputs=inputs, ort_optimization="disable").validate()
    assert metrics.relative_error <= GATE_PERCENT, f"{name}: {metrics.relative_error:.3g} % against onnxruntime"
    example = tuple(torch.from_numpy(v) for v in inputs.values())
    torch.fx.symbolic_trace(gm)
    program = torch.export.export(gm, example)
    exported_out = program.module()(*example)
    eager_out = gm(*example)
    flat_exported = exported_out if isinstance(exported_out, (tuple, list)) else [exported_out]
    flat_eager = eager_out if isinstance(eager_out, (tuple, list)) else [eager_out]
    for got, want in zip(flat_exported, flat_eager, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", [n for n, m in ZOO.items() if m.ci and m.dynamic_batch])
def test_zoo_dynamic_batch_export_runs_at_batch_two(name: str, zoo_dir: Path) -> None:
    model = ZOO[name]
    path = export_model(name, zoo_dir, dynamic_batch=True)
    gm = OnnxToFxConverter(path).convert()
    metrics = AccuracyValidator(path, gm, tolerance=GATE_PERCENT, inputs=model.inputs(2),
                                ort_optimization="disable").validate()
    assert metrics.relative_error <= GATE_PERCENT
    assert all(shape[0] == 2 for shape in metrics.input_shapes.values())
    # One conversion, every dynamic dimension swept (batch 1, 3 and 8 around the base 2; spatial
    # dimensions, where the export made them dynamic, at sizes of which onnxruntime rejects the odd ones).
    swept = AccuracyValidator(path, gm, tolerance=GATE_PERCENT, num_samples=1, sweep=True,
                              input_shapes={k: list(v.shape) for k, v in model.inputs(2).items()},
                              ort_optimization="disable").validate()
    assert all(p.ok for p in swept.sweep), [p for p in swept.sweep if not p.ok]
    batch = swept.sweep[0].dimension  # the first dynamic dimension: the batch
    assert [(p.size, p.status) for p in swept.sweep if p.dimension == batch] == [
        (1, "passed"), (3, "passed"), (8, "passed")]
    for dim in {p.dimension for p in swept.sweep}:  # each tried at a second size onnxruntime accepts
        assert any(p.status == "passed" for p in swept.sweep if p.dimension == dim), dim
