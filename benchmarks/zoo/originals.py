"""The PyTorch module each zoo file was exported from, rebuilt with the same seeded weights.

A zoo entry's ``export`` builds its module inside the defining library's own export path
(ultralytics fuses Conv + BatchNorm and switches its head to export mode before calling
``torch.onnx.export``; transformers models are wrapped to return the exported fields). Rebuilding
the module by hand would have to repeat each of those steps. Instead the entry's ``export`` runs
again under the registry's seed with ``torch.onnx.export`` replaced by a function that keeps the
module and example arguments it is given and stops the export there: what comes back is the very
module object the exporter would have traced, with the weights the ONNX file holds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.zoo.registry import load_all, seed_everything


class _ExportReached(Exception):
    """Raised in place of the export, carrying the module and the example arguments."""

    def __init__(self, module: torch.nn.Module, example_args: tuple[Any, ...]) -> None:
        # The message is what a library's own logging prints when it reports the stopped export.
        super().__init__("stopped at torch.onnx.export: benchmarks.zoo.originals keeps the module, writes no file")
        self.module = module
        self.example_args = example_args


def build_original(name: str) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    """The module zoo model ``name`` exports (in eval mode) and the example arguments of its export.

    Raises RuntimeError when the entry's export finishes without calling ``torch.onnx.export``.
    """
    model = load_all()[name]

    def intercept(module: torch.nn.Module, args: Any, *rest: Any, **kwargs: Any) -> None:
        raise _ExportReached(module, args if isinstance(args, tuple) else (args,))

    real_export = torch.onnx.export
    seed_everything()  # as export_model does before every export
    torch.onnx.export = intercept
    try:
        with tempfile.TemporaryDirectory() as scratch:
            model.export(Path(scratch) / f"{name}.onnx", False)
    except _ExportReached as reached:
        return reached.module.eval(), reached.example_args
    finally:
        torch.onnx.export = real_export
    raise RuntimeError(f"the export of {name} did not call torch.onnx.export")
