"""``python -m onnx2fx.cli``: the same as the ``onnx2fx`` command."""

from . import main

main()
