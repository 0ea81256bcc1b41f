"""Quantization-aware fine-tuning (QFT), end to end.

``qft(model, train_data)`` starts from a PTQ result (``from_ptq="quantized/"``: its
``model_ptq.pt`` and ``encodings.json``) or runs :func:`~.ptq.ptq` first with the same options,
then trains the simulated model through its fake-quant ops:

- **What trains** (:mod:`.qft_params`): the quantized weights, with straight-through gradients
  through rounding; the biases and the normalization layers' scales and shifts (BatchNorm runs
  in eval mode: its statistics stay frozen); the weight quantizers' per-output-channel scales
  (LSQ, :mod:`.learnable`), and with ``range_learning="all"`` the activation quantizers' scales
  and zero points too. Each group has its own learning rate, all following one schedule
  (:mod:`.lr_schedule`: linear warm-up, then cosine decay). The QDQ export writes every trained
  value (:mod:`.qft_export`), so the exported ONNX computes what the fine-tuned model computes.
- **Start**: the PTQ result as it is (:mod:`.qft_start`): AdaRounded weights, corrected biases and
  equalized layers are the starting point, and its encodings file must list what its quantizers
  hold.
- **Objective** (:mod:`.losses`): distillation from the converted FP32 model on unlabeled data
  (the mean squared error of every float output by default, KL divergence of 2-D logits with
  ``distillation="kl"``), or cross-entropy when labels are given.
- **Data** (:mod:`.training_data`): streamed from memory-mapped arrays or the caller's iterable;
  the order of each epoch comes from ``(seed, epoch)``.
- **Loop** (:mod:`.qft_training`) with **checkpoints** (:mod:`.checkpoint`) at the end of every
  epoch; ``resume=True`` continues after the last finished one and gives the same weights as an
  uninterrupted run.
- **Several processes** (:mod:`.distributed`): under ``torchrun`` the model is wrapped in
  DistributedDataParallel; process 0 writes the checkpoint and the output folder.

With an output folder it writes (atomically, like PTQ)::

    model_qft.pt      the fine-tuned simulated GraphModule (fixed fake-quant, learned encodings)
    encodings.json    AIMET format, keyed by ONNX names
    model_qft.onnx    QDQ ONNX from the original graph, its weights the fine-tuned ones
    report.json/.md   quantization.ptq (the starting point) and quantization.qft
    checkpoint.pt     the last checkpoint (for resuming with more epochs)

4-bit weights: INT4 initializers need opset 21, and the QDQ writer raises the opset import
without converting other operators. ``int4_storage="auto"`` therefore writes them as INT4 when
the source model is opset 21 or newer and otherwise as INT8 (UINT8 for asymmetric grids)
initializers holding values in the 4-bit range; ``encodings.json`` records bit width 4 either way.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..conversion_record import conversion_record
from ..errors import QuantizationError
from . import distributed
from .checkpoint import CHECKPOINT_NAME
from .config import ENCODING_VERSIONS, QuantConfig
from .converted_model import base_report, load_converted_model, source_onnx
from .data import input_specs
from .encodings import encoded_names
from .fake_quant import FakeQuantize
from .integer import check_formats
from .learnable import freeze_ranges
from .lr_schedule import SCHEDULES
from .placement import OnnxGraphView, plan_placement
from .progress import show_progress
from .ptq import PTQResult, ptq
from .ptq_options import PtqOptions
from .qdq import build_plan, ort_session
from .qft_export import current_encodings, export_values, measure, objective_for, qft_report, sim_model
from .qft_params import RANGE_LEARNING, TRAINABLE, LearningRates, trainable_groups
from .qft_start import check_encodings, check_same_model, from_result, load_ptq_folder
from .qft_training import schedule_for
from .qft_training import train as train_model
from .training_data import stack_labels, training_data

INT4_STORAGE = ("auto", "int4", "int8")
OUTPUT_FILES = ("model_qft.pt", "encodings.json", "model_qft.onnx", "report.json", "report.md", "report.html",
                CHECKPOINT_NAME)
# One epoch over about a thousand unlabeled images (32 steps of 32) at W4A8: 1e-4 fitted the
# training images' sources at the cost of others on a text-direction classifier; 3e-5 raised the
# output SQNR on other sources by at least 1 dB on all four real-weight models of
# benchmarks/qft_compare.py and kept the digits models' recovery (docs/quantization.md).
DEFAULT_LR = 3e-5
RANGE_LR_FACTOR = 0.1  # a 4-bit weight scale is about a third of the weights' magnitude: it moves slower


@dataclass
class QFTResult(PTQResult):
    """The fine-tuned model, its encodings, the QDQ plan (with the fine-tuned weights) and the
    report section; :meth:`save` writes the output folder like :class:`PTQResult`."""

    STAGE: ClassVar[str] = "qft"

    eval_labels: torch.Tensor | None = field(default=None, repr=False)
    checkpoint: Path | None = None
    losses: list[float] = field(default_factory=list, repr=False)  # the mean loss of every step

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        files = super().save(out_dir)
        if self.checkpoint is not None and self.checkpoint.is_file():
            files[CHECKPOINT_NAME] = self.checkpoint
        return files

    def _qdq_extras(self, onnx_path: Path) -> dict[str, Any]:
        """The accuracy of the QDQ model in onnxruntime (basic optimizations), when labels are known."""
        if self.eval_labels is None or not self.eval_batches:
            return {}
        session = ort_session(onnx_path, optimized=False)
        predictions = []
        for batch in self.eval_batches:
            feed = {name: t.numpy() for name, t in zip(self.input_names, batch)}
            predictions.append(torch.from_numpy(session.run([self.output_names[0]], feed)[0]).argmax(1))
        accuracy = float((torch.cat(predictions) == self.eval_labels).double().mean())
        self.report.setdefault("accuracy", {})["qdq_onnxruntime"] = accuracy
        return {"accuracy": accuracy}


def qft(model: Any, train_data: Any = None, *, output_dir: str | os.PathLike[str] | None = None,
        from_ptq: str | os.PathLike[str] | PTQResult | None = None, labels: Any = None, epochs: int = 1,
        lr: float | None = None, range_learning: bool | str | None = None, range_lr: float | None = None,
        bias_lr: float | None = None, norm_lr: float | None = None, train: Sequence[str] = TRAINABLE,
        lr_schedule: str = "cosine", warmup: float = 0.1, batch_size: int | None = None, seed: int = 0,
        resume: bool = False,
        checkpoint: str | os.PathLike[str] | None = None, supervised: bool | None = None,
        distillation: str = "auto", eval_data: Any = None,
        eval_labels: Any = None, eval_samples: int = 256, onnx_path: str | os.PathLike[str] | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        config: QuantConfig | str | os.PathLike[str] | None = None, scheme: str | None = None,
        weight_bits: int | None = None, activation_bits: int | None = None, per_channel: bool | None = None,
        calibration_samples: int = 512, encoding_version: str | None = None, int4_storage: str = "auto",
        shuffle: bool = True, device: str | None = None, progress: bool | None = None,
        formats: str | Sequence[str] = ("qdq",), float_islands: bool = False) -> QFTResult:
    """Fine-tune a quantized model through its fake-quant ops.

    Args:
        model: the float ``GraphModule`` (or ``model_full.pt``) converted by onnx2fx: the teacher,
            and the model PTQ starts from when ``from_ptq`` is not given.
        train_data: a ``.npy``/``.npz`` file or a folder of them (memory-mapped), an array, or an
            iterable / DataLoader of batches (``x`` or ``(x, y)``).
        from_ptq: a folder written by ``ptq`` (``model_ptq.pt``, ``encodings.json``) or a
            :class:`PTQResult` to start from, as it is (AdaRounded weights, corrected biases);
            without it PTQ runs first on ``train_data`` with ``config``, ``scheme``, ``weight_bits``,
            ``activation_bits``, ``per_channel`` and ``calibration_samples``.
        labels: one class index per training sample (``.npy`` or array) for array data; with labels
            the objective is cross-entropy (unless ``supervised=False``), else distillation.
        distillation: the distillation loss per float output: ``auto`` and ``mse`` (the mean
            squared error of every float output) or ``kl`` (KL divergence for 2-D logits, MSE
            otherwise); see :mod:`.losses`.
        lr: the peak Adam learning rate of the weights (default ``DEFAULT_LR``, 3e-5).
        bias_lr, norm_lr: those of the biases and of the normalization parameters (default ``lr``).
        train: the groups that train, from ``weights``, ``biases`` and ``norms`` (default all three).
        range_learning: the quantizers whose ranges train (LSQ): ``"weights"`` (the default: every
            weight's per-output-channel scales), ``"all"`` or ``True`` (the activations' scales and
            zero points too), ``"none"`` or ``False``.
        range_lr: their peak learning rate (default ``RANGE_LR_FACTOR x lr``).
        lr_schedule, warmup: ``cosine`` (linear warm-up over the first ``warmup`` share of the
            steps, then a half cosine to zero) or ``constant``.
        batch_size: samples per step and process; default 32, or 16 or 8 where that leaves an
            epoch fewer than 100 steps per process (:func:`.training_data.default_batch_size`).
        resume: continue from ``checkpoint`` (default ``output_dir/checkpoint.pt``).
        eval_data, eval_labels: data for the before/after figures; default the first
            ``eval_samples`` training samples (and their labels).
        int4_storage: how 4-bit weights are stored in the QDQ ONNX: ``int4`` (opset 21), ``int8``
            (8-bit initializers holding 4-bit values) or ``auto`` (``int4`` from opset 21 on).
        formats, float_islands: the ONNX forms written, as for :func:`~.ptq.ptq`
            (``model_qft.onnx``, ``model_qft_qoperator.onnx``, ``model_qft_fixed_point.onnx``).
        device: where to train; default the process's GPU when there is one, else the CPU.
    """
    from ..validator import load_torch_model

    started = time.perf_counter()
    formats = check_formats(formats)
    rates, ranges = _check_options(epochs, lr, range_lr, bias_lr, norm_lr, train, range_learning, lr_schedule,
                                   warmup, batch_size, eval_samples, encoding_version, int4_storage, resume,
                                   output_dir, checkpoint)
    if from_ptq is not None:
        given = [name for name, value in (("config", config), ("scheme", scheme), ("weight_bits", weight_bits),
                                          ("activation_bits", activation_bits), ("per_channel", per_channel))
                 if value is not None]
        if given:
            raise QuantizationError(f"{', '.join(given)} set the PTQ that runs first; with --from the quantization "
                                    "settings are those of the PTQ folder")
    checkpoint_path = Path(checkpoint) if checkpoint is not None else \
        Path(output_dir) / CHECKPOINT_NAME if output_dir is not None else None
    if resume and (checkpoint_path is None or not checkpoint_path.is_file()):
        raise QuantizationError(f"nothing to resume: checkpoint {checkpoint_path} does not exist")
    ctx = distributed.setup(device)
    try:
        teacher, model_path = load_converted_model(model)
        start = None if from_ptq is None else from_result(from_ptq) if isinstance(from_ptq, PTQResult) else \
            load_ptq_folder(Path(from_ptq), load_torch_model)
        if start is not None:
            source = Path(onnx_path).resolve() if onnx_path is not None else source_onnx(start["sim"], None)
            if not source.is_file():
                raise QuantizationError(f"source ONNX model {source} does not exist")
            check_same_model(teacher, start["sim"])
        else:
            source = source_onnx(teacher, onnx_path)
        graph = OnnxGraphView.load(source)
        specs = input_specs(graph.inputs, graph.input_types, input_shapes)
        data = training_data(train_data, specs, labels=labels, batch_size=batch_size, seed=seed, shuffle=shuffle,
                             world=ctx.world)
        batch_size = data.batch_size
        use_labels = data.has_labels if supervised is None else supervised
        if use_labels and not data.has_labels:
            raise QuantizationError("supervised fine-tuning needs labels: give --labels or (inputs, labels) batches")
        if eval_data is not None:
            eval_source = training_data(eval_data, specs, labels=eval_labels, batch_size=batch_size, shuffle=False,
                                        what="evaluation data")
            evaluation, eval_description = eval_source.head(eval_samples), "evaluation data"
        else:
            evaluation, eval_description = data.head(eval_samples), "the first training samples"
        evaluation = evaluation or data.head(batch_size)
        eval_inputs = [b.inputs for b in evaluation]
        eval_y = stack_labels(evaluation)
        eval_info = {"data": eval_description, "samples": sum(b.size for b in evaluation),
                     "labels": eval_y is not None}

        if start is not None:
            cfg, sim_gm, ptq_report = start["config"], start["sim"], start["ptq_report"]
            version = encoding_version or start["encoding_version"]
            activation_names = [n for n in encoded_names(start["document"]) if n not in graph.initializers]
        else:
            ptq_options = PtqOptions(onnx_path=source, input_shapes=input_shapes, config=config, scheme=scheme,
                                     weight_bits=weight_bits, activation_bits=activation_bits,
                                     per_channel=per_channel, samples=calibration_samples, batch_size=batch_size,
                                     encoding_version=encoding_version or "1.0.0", eval_data=eval_inputs, seed=seed,
                                     progress=show_progress(progress) and ctx.main)
            ptq_result = ptq(model if model_path is None else model_path, data.calibration(calibration_samples),
                             options=ptq_options)
            cfg, sim_gm, ptq_report = ptq_result.config, ptq_result.sim_model, ptq_result.report
            calibration = ptq_report["calibration"]  # PTQ read the training data through our loader
            calibration.pop("type", None)
            calibration.update({k: v for k, v in data.description.items() if k in ("source", "type", "kind", "files")})
            version = encoding_version or ptq_result.encoding_version
            activation_names = list(ptq_result.activation_encodings)
        placement = plan_placement(graph, cfg, formats, idioms=conversion_record(sim_gm).idioms)
        sim = sim_model(sim_gm, graph, activation_names)
        before_encodings = current_encodings(sim, placement, graph, activation_names)
        if start is not None:
            check_encodings(start["document"], before_encodings, start["where"])

        before = measure(teacher, sim.gm, eval_inputs, eval_y, graph.outputs, with_float=True)
        objective = objective_for(teacher, eval_inputs, use_labels, graph.outputs, distillation)
        groups = trainable_groups(sim, graph, train, ranges)
        schedule = schedule_for(lr_schedule, data, ctx.world, epochs, warmup)
        fingerprint = {"lr": lr, "range_lr": range_lr, "learning_rates": rates.to_dict(), "train": sorted(train),
                       "lr_schedule": [lr_schedule, warmup], "batch_size": batch_size, "seed": seed,
                       "range_learning": ranges, "objective": objective.to_dict(graph.outputs),
                       "world_size": ctx.world, "samples": data.samples, "shuffle": shuffle,
                       "quantizers": sorted(n for n, m in sim.gm.named_modules() if isinstance(m, FakeQuantize))}
        training = train_model(sim, teacher, data, objective, groups, rates, schedule, ctx, epochs=epochs, seed=seed,
                               resume=resume, checkpoint=checkpoint_path, fingerprint=fingerprint,
                               progress=show_progress(progress) and ctx.main)

        frozen = freeze_ranges(sim.gm)
        sim.gm.eval()
        activation_encodings, weight_encodings, bias_encodings, quantized = current_encodings(sim, placement, graph,
                                                                                       activation_names)
        after = measure(teacher, sim.gm, eval_inputs, eval_y, graph.outputs, with_float=False)
        storage = ("int4" if graph.opset >= 21 else "int8") if int4_storage == "auto" else int4_storage
        # PTQ may have changed other initializers too (equalization, bias correction), and fine-tuning trained
        # biases and normalization parameters: the writer gets their current values
        changed = [*(ptq_report or {}).get("changed_initializers", []), *groups.exported]
        values = export_values(sim, graph, changed)
        plan = build_plan(quantized, weight_encodings, bias_encodings, values, storage)

        report = qft_report(source, model_path, start["where"] if start else None, cfg, version, data, eval_info,
                            objective, graph, training, before, after, ctx, rates=rates, schedule=schedule,
                            range_learning=ranges, batch_size=batch_size, seed=seed, epochs=epochs, groups=groups,
                            frozen=frozen, storage=storage, plan=plan, weight_encodings=weight_encodings,
                            started=started)
        base = base_report(model_path, source)
        base.setdefault("quantization", {"ptq": None, "qft": None})
        base["quantization"] = {**base["quantization"], "ptq": dict(ptq_report)}
        result = QFTResult(sim.gm, cfg, source, activation_encodings, {**weight_encodings, **bias_encodings}, plan,
                           report, version, eval_inputs, list(graph.inputs), list(graph.outputs), base, graph.opset,
                           formats=formats, float_islands=float_islands,
                           eval_labels=eval_y, losses=list(training["steps"]),
                           checkpoint=checkpoint_path if checkpoint_path is not None and checkpoint_path.is_file()
                           else None)
        if output_dir is not None:
            _save(result, Path(output_dir), ctx)
        return result
    finally:
        distributed.teardown(ctx)


def _save(result: QFTResult, output_dir: Path, ctx: distributed.DistContext) -> None:
    """Process 0 writes the output folder; every process learns whether that worked."""
    error: Exception | None = None
    if ctx.main:
        try:
            result.save(output_dir)
        except Exception as exc:
            error = exc
    if distributed.any_flag(error is not None, ctx):
        raise error if error is not None else QuantizationError("writing the output folder failed on process 0")


# ---------------------------------------------------------------------------------- inputs
def _check_options(epochs: int, lr: float | None, range_lr: float | None, bias_lr: float | None,
                   norm_lr: float | None, train: Sequence[str], range_learning: bool | str | None, lr_schedule: str,
                   warmup: float, batch_size: int | None, eval_samples: int, encoding_version: str | None,
                   int4_storage: str, resume: bool, output_dir: Any, checkpoint: Any) -> tuple[LearningRates, str]:
    """Check the options; the peak learning rates and the range-learning choice they resolve to."""
    if epochs < 1:
        raise QuantizationError(f"epochs must be at least 1, got {epochs}")
    for name, value in (("learning rate", lr), ("range learning rate", range_lr), ("bias learning rate", bias_lr),
                        ("normalization learning rate", norm_lr)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise QuantizationError(f"the {name} must be a positive number, got {value}")
    if isinstance(train, str) or set(train) - set(TRAINABLE):
        raise QuantizationError(f"train takes a list from {list(TRAINABLE)}, got {train!r}")
    ranges = range_learning if isinstance(range_learning, str) else \
        {None: "weights", True: "all", False: "none"}[range_learning]
    if ranges not in RANGE_LEARNING:
        raise QuantizationError(f"range learning {range_learning!r} is not one of {list(RANGE_LEARNING)} (or a bool)")
    if lr_schedule not in SCHEDULES:
        raise QuantizationError(f"learning-rate schedule {lr_schedule!r} is not one of {list(SCHEDULES)}")
    if not 0 <= warmup < 1:
        raise QuantizationError(f"warmup is a share of the steps in [0, 1), got {warmup}")
    if (batch_size is not None and batch_size <= 0) or eval_samples <= 0:
        raise QuantizationError("batch size and evaluation samples must be positive")
    if encoding_version is not None and encoding_version not in ENCODING_VERSIONS:
        raise QuantizationError(f"encoding version {encoding_version!r} is not one of {list(ENCODING_VERSIONS)}")
    if int4_storage not in INT4_STORAGE:
        raise QuantizationError(f"int4 storage {int4_storage!r} is not one of {list(INT4_STORAGE)}")
    if resume and output_dir is None and checkpoint is None:
        raise QuantizationError("resume needs the output folder or the checkpoint to resume from")
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise QuantizationError(f"output path {output_dir} exists and is not a folder")
    peak = lr or DEFAULT_LR
    rates = LearningRates(weights=peak, biases=bias_lr or peak, norms=norm_lr or peak,
                          ranges=range_lr or RANGE_LR_FACTOR * peak)
    return rates, ranges
