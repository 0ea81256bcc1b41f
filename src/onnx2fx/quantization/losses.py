"""The fine-tuning objective: distillation from the float model, or cross-entropy with labels.

Without labels the quantized model (student) learns to reproduce the converted FP32 model
(teacher) on unlabeled data, output by output, and the losses of all float outputs are added:

- ``mse`` (the default, ``distillation="auto"``): every float output, logits included, is matched
  with the mean squared error. On logits it also keeps their scale and offset, which KL ignores:
  measured on the digits CNN and ViT at W4A8 (benchmarks/qft_compare.py), KL distillation lowered
  the output SQNR below the PTQ's while MSE raised it and recovered at least as much accuracy;
- ``kl`` (``distillation="kl"``): a 2-D output with more than one column is taken as
  classification logits and matched with ``KL(softmax(teacher) || softmax(student))``
  (temperature 1, mean over the batch); other float outputs with the mean squared error.

With labels the objective is the cross-entropy of the first output (2-D logits) against the class
indices. The choice is recorded in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import QuantizationError

DISTILLATION = ("auto", "kl", "mse")


@dataclass
class Objective:
    supervised: bool
    kinds: list[str | None] = field(default_factory=list)  # per output: "kl", "mse", "cross_entropy" or None

    def to_dict(self, output_names: Sequence[str]) -> dict[str, Any]:
        return {"kind": "cross_entropy" if self.supervised else "distillation",
                "outputs": {name: kind for name, kind in zip(output_names, self.kinds) if kind is not None}}

    @property
    def needs_teacher(self) -> bool:
        return not self.supervised

    def __call__(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor] | None,
                 labels: torch.Tensor | None) -> torch.Tensor:
        if self.supervised:
            if labels is None:
                raise QuantizationError("a training batch has no labels")
            return F.cross_entropy(student[0].float(), labels.to(student[0].device))
        assert teacher is not None
        total: torch.Tensor | None = None
        for kind, s, t in zip(self.kinds, student, teacher):
            if kind == "kl":
                loss = F.kl_div(F.log_softmax(s.float(), dim=1), F.log_softmax(t.float(), dim=1), log_target=True,
                                reduction="batchmean")
            elif kind == "mse":
                loss = F.mse_loss(s.float(), t.float())
            else:
                continue
            total = loss if total is None else total + loss
        if total is None:
            raise QuantizationError("the model has no float output to distil")
        return total


def choose_objective(outputs: Sequence[torch.Tensor], supervised: bool, output_names: Sequence[str],
                     distillation: str = "auto") -> Objective:
    """The objective for a model whose outputs look like ``outputs`` (one batch of them);
    ``distillation`` picks the loss of every float output (``auto``: as described above)."""
    if supervised:
        first = outputs[0] if outputs else None
        if first is None or not first.is_floating_point() or first.dim() != 2:
            shape = None if first is None else list(first.shape)
            raise QuantizationError(f"labels need the first output to be 2-D classification logits [N, classes]; "
                                    f"output {output_names[0] if output_names else '?'!r} has shape {shape}")
        return Objective(True, ["cross_entropy"] + [None] * (len(outputs) - 1))
    if distillation not in DISTILLATION:
        raise QuantizationError(f"distillation {distillation!r} is not one of {list(DISTILLATION)}")
    kinds: list[str | None] = []
    for out in outputs:
        if not out.is_floating_point():
            kinds.append(None)
        elif distillation == "kl" and out.dim() == 2 and out.shape[1] > 1:
            kinds.append("kl")
        else:
            kinds.append("mse")
    if not any(kinds):
        raise QuantizationError("the model has no float output to distil from the float model")
    return Objective(False, kinds)
