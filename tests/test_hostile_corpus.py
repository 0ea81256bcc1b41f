"""The hostile-file corpus (tests/hostile/make_corpus.py): every case is refused with its typed
error and a message naming what is wrong, by the Python API and by ``onnx2fx convert`` (exit code
2, no output folder and no staging folder left behind)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hostile.make_corpus import CASES, W16, HostileCase, external_tensor, main, tensor_model
from typer.testing import CliRunner

from onnx2fx import OnnxToFxConverter, _core, errors
from onnx2fx.cli import app

runner = CliRunner()


def test_the_corpus_has_more_than_40_cases():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("hostile", CASES, ids=[c.name for c in CASES])
def test_hostile_case_is_refused(hostile: HostileCase, tmp_path: Path):
    folder = tmp_path / hostile.name
    folder.mkdir()
    hostile.build(folder)
    model = folder / "model.onnx"
    expected = getattr(errors, hostile.error)

    with pytest.raises(expected) as caught:
        OnnxToFxConverter(model).convert()
    assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"
    assert re.search(hostile.message, str(caught.value)), str(caught.value)

    out = tmp_path / "out"
    result = runner.invoke(app, ["convert", str(model), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert re.search(hostile.message, " ".join(result.output.split())), result.output
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder either


def test_make_corpus_writes_every_case_and_its_expectations(tmp_path: Path):
    main(tmp_path)
    import json

    expectations = json.loads((tmp_path / "cases.json").read_text())
    assert sorted(expectations) == sorted(c.name for c in CASES)
    assert all((tmp_path / name / "model.onnx").exists() for name in expectations)


def test_external_file_replaced_after_loading_keeps_the_checked_bytes(tmp_path: Path):
    """A file that changes between the check and the read: the reader maps the descriptor it
    checked, so replacing the file afterwards (rename over it) does not change what is read."""
    (tmp_path / "model.onnx").write_bytes(tensor_model(external_tensor("w", [4], location="w.bin")))
    (tmp_path / "w.bin").write_bytes(W16)
    model = _core.load_model(str(tmp_path / "model.onnx"))
    (tmp_path / "other.bin").write_bytes(np.full(4, 7.0, np.float32).tobytes())
    (tmp_path / "other.bin").replace(tmp_path / "w.bin")
    assert model.graph.initializers[0].numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
