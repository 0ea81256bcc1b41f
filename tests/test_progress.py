"""``LiveProgress``: the shared progress bar, a no-op without a console."""

from __future__ import annotations

import io

from rich.console import Console

from onnx2fx.progress import LiveProgress


def test_without_a_console_every_call_is_a_no_op() -> None:
    with LiveProgress(None, "calibrating", 10, after_count="samples") as bar:
        assert not bar.shown
        bar.advance(3, loss="1")
        bar.update(loss="2")
        bar.restart("epoch 2", 10)
        bar.print("nothing")


def test_columns_fields_and_printed_lines() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None)
    with LiveProgress(console, "batch", 3, trailing=("{task.fields[counts]}",), counts="0 passed") as bar:
        assert bar.shown
        bar.print("[green]     ok[/] a.onnx")
        bar.advance(2, counts="2 passed")
        bar.advance(1, counts="3 passed")
    text = out.getvalue()
    assert "     ok a.onnx" in text
    last = text.strip().splitlines()[-1]
    assert "batch" in last and "3/3" in last and "3 passed" in last
