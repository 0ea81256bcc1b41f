"""ONNX axis attributes counted from the front, checked against the input's rank."""

from __future__ import annotations


def axis_index(axis: int, rank: int, *, end_included: bool = False) -> int:
    """``axis`` as a non-negative index (ONNX axes may count from the end).

    An axis outside ``[-rank, rank)`` (``[-rank, rank]`` with ``end_included``, as Flatten allows)
    is a ``ValueError``, which lowering reports as the node's ``ConversionError``: not every torch
    function checks a ``dim`` in its shape-only run (``torch.softmax`` does not), and a lowering that
    gives a result's sizes itself runs none, so an impossible axis would otherwise surface only when
    the converted model is called."""
    high = rank + 1 if end_included else max(rank, 1)
    if not -high <= axis < high:
        allowed = f"[{-high}, {high - 1}]"
        raise ValueError(f"axis {axis} is out of range for an input of rank {rank} (allowed: {allowed})")
    if axis >= 0:
        return axis
    return axis + rank if rank else 0  # a 0-d input has the one axis torch calls 0 or -1
