"""ptq()'s options as one PtqOptions value (keywords still work and override it) and its report as
a typed PtqReport that reads, and serialises, like the dictionary it replaced."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support import convert_and_save

from onnx2fx.quantization import PtqOptions, PtqReport, ptq

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("options")
    model = convert_and_save(EXAMPLE, root / "converted")
    calib = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    return SimpleNamespace(root=root, model=model, calib=calib)


def test_options_and_keywords_quantize_alike(tiny: SimpleNamespace) -> None:
    options = PtqOptions(samples=16, scheme="mse", progress=False)
    by_options = ptq(tiny.model, tiny.calib, options=options)
    by_keywords = ptq(tiny.model, tiny.calib, samples=16, scheme="mse", progress=False)
    assert by_options.activation_encodings.keys() == by_keywords.activation_encodings.keys()
    assert all(e.same_as(by_keywords.activation_encodings[t]) for t, e in by_options.activation_encodings.items())
    assert by_options.report["settings"] == by_keywords.report["settings"]
    # a keyword replaces the option's value, and leaves the options as they were
    overridden = ptq(tiny.model, tiny.calib, options=options, scheme="minmax", encoding_version="2.0.0")
    assert overridden.report["calibration"]["scheme"] == "minmax" and overridden.encoding_version == "2.0.0"
    assert options.scheme == "mse"


def test_unknown_keyword_is_a_type_error(tiny: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match="^ptq\\(\\) got an unexpected keyword argument 'sample'$"):
        ptq(tiny.model, tiny.calib, sample=16)


def test_report_is_a_typed_mapping_of_its_json(tiny: SimpleNamespace, tmp_path: Path) -> None:
    result = ptq(tiny.model, tiny.calib, samples=16, progress=False)
    report = result.report
    assert isinstance(report, PtqReport) and report.sqnr_db == report["sqnr_db"]
    assert list(report)[:3] == ["status", "source_onnx", "model"]
    assert list(report)[-3:] == ["qdq", "warnings", "seconds"]
    assert "files" not in report and report.get("fixed_point") is None and report["qdq"] is None
    assert report == report.to_dict() and {**report} == report.to_dict()
    with pytest.raises(KeyError, match="not a section"):
        report["sqnr"] = 1.0
    with pytest.raises(TypeError, match="always has 'status'"):
        del report["status"]

    result.save(tmp_path / "q")
    assert list(report)[-2:] == ["seconds", "files"] and report["files"]["qdq_onnx"] == "model_ptq.onnx"
    assert report["qdq"]["status"] == "ok"
    saved = json.loads((tmp_path / "q" / "report.json").read_text())["quantization"]["ptq"]
    assert list(saved) == list(report)
    assert json.loads(json.dumps(report.to_dict())) == saved
