"""``quantization.ptq`` of report.json, as a typed record.

The report was a plain dictionary before it had a type, and its readers (the batch summary, the
command line, benchmarks, users' scripts) index it by its JSON keys. :class:`PtqReport` keeps
that: it is a mapping from the JSON keys to its fields (``report["sqnr_db"]``, ``{**report}``,
``"fixed_point" in report``), and :meth:`PtqReport.to_dict` is the JSON object, keys in the order
the report has always had them.

Sections written by :meth:`~.ptq.PTQResult.save` (``files``, ``qoperator``, ``fixed_point``)
are absent, not null, until it writes them; ``qdq`` is null until then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(eq=False)
class PtqReport(MutableMapping[str, Any]):
    """What post-training quantization did and what it costs (see the module docstring).

    Equality is the mapping's: a report equals a dictionary with the same keys and values."""

    WRITTEN_BY_SAVE: ClassVar[tuple[str, ...]] = ("files", "qoperator", "fixed_point")

    status: str
    source_onnx: str
    model: str | None  # the model_full.pt it was loaded from; None for an in-memory GraphModule
    settings: dict[str, Any]  # the QuantConfig and the encoding version
    calibration: dict[str, Any]  # data source, scheme, samples, batches, seconds (the pass), range_search_seconds
    evaluation: dict[str, Any]  # samples and data of the figures below
    counts: dict[str, int]  # placement and quantizer counts
    sqnr_db: float | None  # the worst output's SQNR against the float model
    outputs: list[dict[str, Any]]  # per model output: SQNR, agreement
    per_layer: list[dict[str, Any]]  # per quantized tensor: SQNR against the float model
    weights: list[dict[str, Any]]  # per quantized weight: SQNR, bits, channels (worst first)
    fused: dict[str, str]  # tensor -> the node it is fused into
    shared: dict[str, str]  # tensor -> the tensor whose encoding it shares
    excluded_nodes: list[str]  # nodes the config leaves in float
    unmapped: list[str]  # planned names without an FX counterpart
    not_float: list[str]  # planned tensors never computed in float
    equalization: dict[str, Any] | None  # cross-layer equalization, when it ran
    adaround: dict[str, Any] | None  # AdaRound, when it ran
    bias_correction: dict[str, Any] | None  # bias correction, when it ran
    changed_initializers: list[str]  # initializers the QDQ model takes from the torch model
    mixed_precision: dict[str, Any] | None = None  # the promoted layers, when a target SQNR was given
    sensitivity: dict[str, Any] | None = None  # the per-layer sensitivity table, when asked for
    qdq: dict[str, Any] | None = None  # the QDQ model's writer and check, once written
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    files: dict[str, str] | None = None  # written file names, once saved
    qoperator: dict[str, Any] | None = None  # the QOperator model, once written
    fixed_point: dict[str, Any] | None = None  # the fixed-point model, once written

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``quantization.ptq`` (sections shared, not copied)."""
        return {key: getattr(self, key) for key in self}

    # the mapping over the JSON keys
    def __getitem__(self, key: str) -> Any:
        if not self._present(key):
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _FIELDS:
            raise KeyError(f"{key!r} is not a section of the PTQ report")
        setattr(self, key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self.WRITTEN_BY_SAVE:
            raise TypeError(f"the PTQ report always has {key!r}")
        if getattr(self, key) is None:
            raise KeyError(key)
        setattr(self, key, None)

    def __iter__(self) -> Iterator[str]:
        return (key for key in _FIELDS if self._present(key))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _present(self, key: str) -> bool:
        return key in _FIELDS and (key not in self.WRITTEN_BY_SAVE or getattr(self, key) is not None)


_FIELDS = tuple(f.name for f in dataclasses.fields(PtqReport))
