"""The command line: exit codes, one-line errors, outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnx2fx.cli import app, parse_shapes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
runner = CliRunner()


def test_convert_then_validate(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["convert", str(EXAMPLE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model.py", "weights.safetensors", "model_full.pt",
                                               "conversion.json"}
    result = runner.invoke(app, ["validate", str(EXAMPLE), str(out / "model_full.pt"), "--tolerance", "1.0",
                                 "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "Passed: True" in result.output
    assert '"passed": true' in (tmp_path / "m.json").read_text()


def test_validate_with_shape_option(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["convert", str(EXAMPLE), "-o", str(out), "--shape", "image=1,3,32,32"]).exit_code == 0
    result = runner.invoke(app, ["validate", str(EXAMPLE), str(out / "model_full.pt"), "-s", "5,3,32,32", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "[5, 10]" in result.output


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff" * 10])
def test_bad_model_is_exit_code_2_with_one_line_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    result = runner.invoke(app, ["convert", str(bad), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ModelFormatError: ")
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_file_and_bad_shape() -> None:
    result = runner.invoke(app, ["convert", "does-not-exist.onnx"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["convert", str(EXAMPLE), "--shape", "image=1,a"])
    assert result.exit_code == 2 and "sizes must be integers" in result.output


def test_help_explains_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "convert" in result.output and "validate" in result.output
    result = runner.invoke(app, ["validate", "--help"])
    assert "--tolerance" in result.output and "percent" in result.output


def test_parse_shapes() -> None:
    assert parse_shapes(["x=1,3,8,8", "2x4"]) == {"x": [1, 3, 8, 8], "": [2, 4]}


def test_a_model_path_that_is_not_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    runner = CliRunner()
    expected = ((fifo, f"OSError: model file {fifo} is not a regular file (a FIFO, socket or device)"),
                (folder, f"IsADirectoryError: model file {folder} is a folder; give the .onnx file inside it"))
    for path, message in expected:
        result = runner.invoke(app, ["convert", str(path), "-o", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()
