"""Quantization-aware fine-tuning (QFT), end to end.

``qft(model, train_data)`` starts from a PTQ result (``from_ptq="quantized/"``: its
``model_ptq.pt`` and ``encodings.json``) or runs :func:`~.ptq.ptq` first with the same options,
then trains the simulated model through its fake-quant ops:

- **What trains.** The quantized weights, always, with straight-through gradients through
  rounding. With ``range_learning`` the quantizers' scales and zero points too
  (:mod:`.learnable`, LSQ). Everything the QDQ export does not re-quantize (biases,
  normalization parameters, layers left in float) stays frozen, so the exported ONNX computes
  exactly what the fine-tuned model computes. BatchNorm layers run in eval mode (frozen
  statistics).
- **Objective** (:mod:`.losses`): distillation from the converted FP32 model on unlabeled data
  (KL divergence for 2-D logits, MSE otherwise), or cross-entropy when labels are given.
- **Data** (:mod:`.training_data`): streamed from memory-mapped arrays or the caller's iterable;
  the order of each epoch comes from ``(seed, epoch)``.
- **Checkpoints** (:mod:`.checkpoint`) at the end of every epoch; ``resume=True`` continues
  after the last finished one and gives the same weights as an uninterrupted run.
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

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx
from torch import nn

from .._core import QdqPlan
from ..conversion_record import conversion_record, copy_converted, find_conversion_record
from ..errors import Onnx2FxError, QuantizationError
from . import distributed
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_rng, save_checkpoint
from .config import ENCODING_VERSIONS, QuantConfig
from .converted_model import base_report, load_converted_model, source_onnx
from .data import input_specs
from .encodings import encoded_names
from .fake_quant import FakeQuantize, SimModel, set_bias_encodings
from .grid import Encoding
from .initializers import initializer_values, onnx_layout
from .integer import check_formats
from .learnable import freeze_ranges, make_learnable, project_ranges
from .losses import Objective, choose_objective
from .metrics import evaluate, flatten_outputs
from .placement import OnnxGraphView, Placement, plan_placement
from .progress import EpochProgress, show_progress
from .ptq import PTQResult, ptq
from .ptq_options import PtqOptions
from .qdq import build_plan, ort_session
from .simulation import concat_shared_input, follow_shared, graph_order, int32_bias_encodings, run_model, weight_param
from .training_data import TrainBatch, TrainingData, stack_labels, training_data

INT4_STORAGE = ("auto", "int4", "int8")
OUTPUT_FILES = ("model_qft.pt", "encodings.json", "model_qft.onnx", "report.json", "report.md", "report.html",
                CHECKPOINT_NAME)
CURVE_POINTS = 50


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
        lr: float = 1e-5, range_learning: bool = False, range_lr: float | None = None, batch_size: int = 32,
        seed: int = 0, resume: bool = False, checkpoint: str | os.PathLike[str] | None = None,
        supervised: bool | None = None, eval_data: Any = None, eval_labels: Any = None, eval_samples: int = 256,
        onnx_path: str | os.PathLike[str] | None = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
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
            :class:`PTQResult` to start from;
            without it PTQ runs first on ``train_data`` with ``config``, ``scheme``, ``weight_bits``,
            ``activation_bits``, ``per_channel`` and ``calibration_samples``.
        labels: one class index per training sample (``.npy`` or array) for array data; with labels
            the objective is cross-entropy (unless ``supervised=False``), else distillation.
        range_learning: also train the quantizers' scales and zero points (learning rate
            ``range_lr``, default ``lr``).
        batch_size: samples per step and process.
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
    _check_options(epochs, lr, range_lr, batch_size, eval_samples, encoding_version, int4_storage, resume,
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
        start = None if from_ptq is None else _from_result(from_ptq) if isinstance(from_ptq, PTQResult) else \
            _load_ptq_folder(Path(from_ptq), load_torch_model)
        if start is not None:
            source = Path(onnx_path).resolve() if onnx_path is not None else source_onnx(start["sim"], None)
            if not source.is_file():
                raise QuantizationError(f"source ONNX model {source} does not exist")
            _check_same_model(teacher, start["sim"])
        else:
            source = source_onnx(teacher, onnx_path)
        graph = OnnxGraphView.load(source)
        specs = input_specs(graph.inputs, graph.input_types, input_shapes)
        data = training_data(train_data, specs, labels=labels, batch_size=batch_size, seed=seed, shuffle=shuffle)
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
        placement = plan_placement(graph, cfg, conversion_record(sim_gm).idioms)
        sim = _sim_model(sim_gm, graph, activation_names)
        before_encodings = _encodings(sim, placement, graph, activation_names)
        if start is not None:
            _check_encodings(start["document"], before_encodings, start["where"])

        before = _measure(teacher, sim.gm, eval_inputs, eval_y, graph.outputs, with_float=True)
        objective = _objective(teacher, eval_inputs, use_labels, graph.outputs)
        trainable, range_params = _trainable(sim, range_learning)
        fingerprint = {"lr": lr, "range_lr": range_lr, "batch_size": batch_size, "seed": seed,
                       "range_learning": range_learning, "objective": objective.to_dict(graph.outputs),
                       "world_size": ctx.world, "samples": data.samples, "shuffle": shuffle,
                       "quantizers": sorted(n for n, m in sim.gm.named_modules() if isinstance(m, FakeQuantize))}
        training = _train(sim, teacher, data, objective, trainable, range_params, ctx, epochs=epochs, lr=lr,
                          range_lr=range_lr, seed=seed, resume=resume, checkpoint=checkpoint_path,
                          fingerprint=fingerprint, progress=show_progress(progress) and ctx.main)

        frozen = freeze_ranges(sim.gm)
        sim.gm.eval()
        activation_encodings, weight_encodings, bias_encodings, quantized = _encodings(sim, placement, graph,
                                                                                       activation_names)
        after = _measure(teacher, sim.gm, eval_inputs, eval_y, graph.outputs, with_float=False)
        storage = ("int4" if graph.opset >= 21 else "int8") if int4_storage == "auto" else int4_storage
        # PTQ may have changed other initializers too (equalization, bias correction): export them as well
        changed = [n for n in (ptq_report or {}).get("changed_initializers", []) if n not in sim.weights]
        values = {**initializer_values(sim.gm, graph, changed), **_weight_values(sim, graph)}
        plan = build_plan(quantized, weight_encodings, bias_encodings, values, storage)

        report = _report(source, model_path, start["where"] if start else None, cfg, version, data, eval_info,
                         objective, graph, training, before, after, ctx, lr=lr, range_lr=range_lr,
                         range_learning=range_learning, batch_size=batch_size, seed=seed, epochs=epochs,
                         trainable=trainable, frozen=frozen, storage=storage, plan=plan,
                         weight_encodings=weight_encodings, started=started)
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
def _check_options(epochs: int, lr: float, range_lr: float | None, batch_size: int, eval_samples: int,
                   encoding_version: str | None, int4_storage: str, resume: bool, output_dir: Any,
                   checkpoint: Any) -> None:
    if epochs < 1:
        raise QuantizationError(f"epochs must be at least 1, got {epochs}")
    for name, value in (("learning rate", lr), ("range learning rate", range_lr)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise QuantizationError(f"the {name} must be a positive number, got {value}")
    if batch_size <= 0 or eval_samples <= 0:
        raise QuantizationError("batch size and evaluation samples must be positive")
    if encoding_version is not None and encoding_version not in ENCODING_VERSIONS:
        raise QuantizationError(f"encoding version {encoding_version!r} is not one of {list(ENCODING_VERSIONS)}")
    if int4_storage not in INT4_STORAGE:
        raise QuantizationError(f"int4 storage {int4_storage!r} is not one of {list(INT4_STORAGE)}")
    if resume and output_dir is None and checkpoint is None:
        raise QuantizationError("resume needs the output folder or the checkpoint to resume from")
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise QuantizationError(f"output path {output_dir} exists and is not a folder")


def _load_ptq_folder(folder: Path, loader: Any) -> dict[str, Any]:
    """``model_ptq.pt``, ``encodings.json`` and the settings from ``report.json`` of a PTQ folder."""
    if not folder.is_dir():
        raise QuantizationError(f"--from folder {folder} does not exist")
    missing = [n for n in ("model_ptq.pt", "encodings.json") if not (folder / n).is_file()]
    if missing:
        raise QuantizationError(f"--from folder {folder} holds no PTQ results (missing {', '.join(missing)}): "
                                "run `onnx2fx ptq` into it first")
    try:
        sim = loader(folder / "model_ptq.pt")
    except (Onnx2FxError, OSError, RuntimeError, EOFError, ValueError) as exc:
        raise QuantizationError(f"{folder / 'model_ptq.pt'} cannot be loaded: {exc}") from None
    if not isinstance(sim, torch.fx.GraphModule) or not any(isinstance(m, FakeQuantize) for m in sim.modules()):
        raise QuantizationError(f"{folder / 'model_ptq.pt'} is not a quantized model written by `onnx2fx ptq`")
    try:
        document = json.loads((folder / "encodings.json").read_text())
        names = encoded_names(document)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QuantizationError(f"{folder / 'encodings.json'} is not an encodings file: {exc}") from None
    ptq_report: dict[str, Any] | None = None
    if (folder / "report.json").is_file():
        try:
            ptq_report = json.loads((folder / "report.json").read_text())["quantization"]["ptq"]
        except (OSError, ValueError, KeyError, TypeError):
            ptq_report = None
    settings = dict((ptq_report or {}).get("settings") or {})
    version = settings.pop("encoding_version", None) or document.get("version", "1.0.0")
    config = QuantConfig.from_dict(settings, source=str(folder / "report.json")) if settings else QuantConfig()
    if not names:
        raise QuantizationError(f"{folder / 'encodings.json'} lists no encodings")
    return {"sim": sim, "document": document, "config": config, "encoding_version": version,
            "ptq_report": ptq_report or {"status": "ok", "from": str(folder)}, "where": str(folder)}


def _from_result(result: PTQResult) -> dict[str, Any]:
    """Start from an in-memory PTQ result (its simulated model is copied, not trained in place)."""
    from ..fx_tracer import restore_origins

    sim = copy_converted(result.sim_model)
    restore_origins(sim)
    return {"sim": sim, "document": result.encodings(), "config": result.config,
            "encoding_version": result.encoding_version, "ptq_report": result.report, "where": "the PTQ result"}


def _check_same_model(teacher: torch.fx.GraphModule, sim: torch.fx.GraphModule) -> None:
    if _initializers_by_parameter(teacher) != _initializers_by_parameter(sim):
        raise QuantizationError("the PTQ model in --from was not made from this float model (their parameters and "
                                "ONNX initializers differ)")


def _initializers_by_parameter(gm: torch.fx.GraphModule) -> dict[str, str | None]:
    record = find_conversion_record(gm)
    return {name: origin.initializer for name, origin in (record.parameters if record is not None else {}).items()}


def _check_encodings(document: Mapping[str, Any], current: tuple[dict[str, Encoding], ...], where: str) -> None:
    """The encodings the model's quantizers hold must be the ones its ``encodings.json`` lists."""
    activations, weights, biases, _ = current
    ours = {**activations, **weights, **biases}
    listed = encoded_names(document)
    missing = [n for n in listed if n not in ours]
    extra = [n for n in ours if n not in set(listed)]
    if missing or extra:
        raise QuantizationError(f"the encodings of {where} do not match its model: "
                                f"{len(missing)} name(s) the model does not quantize {missing[:3]}, "
                                f"{len(extra)} quantized name(s) it does not list {extra[:3]}")
    scales = _document_scales(document)
    for name, scale in scales.items():
        if not np.allclose(np.asarray(scale, dtype=np.float64), ours[name].scale.astype(np.float64), rtol=1e-6):
            raise QuantizationError(f"the encodings of {where} do not match its model: the scale of {name!r} differs")


def _document_scales(document: Mapping[str, Any]) -> dict[str, list[float]]:
    if document.get("version") == "2.0.0":
        return {e["name"]: list(np.atleast_1d(e["y_scale"])) for e in document["encodings"]}
    scales: dict[str, list[float]] = {}
    for section in ("activation_encodings", "param_encodings"):
        value = document.get(section, {})
        if isinstance(value, Mapping):
            scales.update({n: [e["scale"] for e in entries] for n, entries in value.items()})
        else:
            scales.update({e["name"]: list(e["scale"]) for e in value})
    return scales


# ---------------------------------------------------------------------------------- the simulated model
def _sim_model(gm: torch.fx.GraphModule, graph: OnnxGraphView, activation_names: Sequence[str]) -> SimModel:
    """The quantizers of a simulated GraphModule by ONNX name (what ``insert_fake_quant`` returned)."""
    sim = SimModel(gm)
    producers: dict[str, torch.fx.Node] = dict(zip(graph.inputs, [n for n in gm.graph.nodes if n.op == "placeholder"]))
    for node in gm.graph.nodes:
        for tensor in node.meta.get("onnx_outputs", []) or []:
            producers[tensor] = node
    after: dict[torch.fx.Node, FakeQuantize] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, FakeQuantize) and module.kind == "activation" and node.args:
                after[node.args[0]] = module  # type: ignore[index]
    parameters = {o.initializer: name for name, o in conversion_record(gm).parameters.items() if o.initializer}
    for module in gm.modules():
        if not isinstance(module, FakeQuantize):
            continue
        if module.kind == "activation":
            sim.activations.setdefault(module.onnx_name, module)
        elif module.kind == "bias":
            sim.biases[module.onnx_name] = module
        elif module.onnx_name in parameters:
            sim.weights[module.onnx_name] = module
            sim.weight_params[module.onnx_name] = parameters[module.onnx_name]
    for tensor in activation_names:  # a second ONNX name of an already quantized value
        node = producers.get(tensor)
        if tensor not in sim.activations and node is not None and node in after:
            sim.activations[tensor] = after[node]
    return sim


def _encodings(sim: SimModel, placement: Placement, graph: OnnxGraphView, names: Sequence[str]
               ) -> tuple[dict[str, Encoding], dict[str, Encoding], dict[str, Encoding], dict[str, Encoding]]:
    """Activation (incl. shared), weight and bias encodings as the quantizers hold them now, and the
    activations that get their own QuantizeLinear."""
    own = {t: q.encoding() for t, q in sim.activations.items() if q.enabled and q.initialized}
    shared = dict(placement.shared)
    producers = graph.producer_map()
    for tensor in placement.concats:
        if tensor in own or tensor not in producers:
            continue
        source = concat_shared_input(producers[tensor], own, shared)
        if source is not None:
            shared[tensor] = source
    wanted = set(names)
    activations: dict[str, Encoding] = {}
    for tensor in graph_order(graph):
        if tensor in wanted:
            encoding = own.get(tensor) or follow_shared(tensor, shared, own)
            if encoding is not None:
                activations[tensor] = encoding
    weights = {name: q.encoding() for name, q in sim.weights.items() if q.enabled and q.initialized}
    biases = int32_bias_encodings(sim, placement, activations, weights, graph)
    set_bias_encodings(sim, biases)  # learned ranges move the int32 bias scales the export uses
    quantized = {t: activations[t] for t in sim.activations if t in activations}
    return activations, weights, biases, quantized


@torch.no_grad()
def _weight_values(sim: SimModel, graph: OnnxGraphView) -> dict[str, np.ndarray]:
    """The fine-tuned weights on their grids, in the ONNX initializers' layout (undoing the
    ``transpose`` / ``reshape`` that made the torch parameter)."""
    record = conversion_record(sim.gm)
    values = {}
    for initializer, quantizer in sim.weights.items():
        name = sim.weight_params[initializer]
        weight = quantizer(weight_param(sim, initializer).detach().float().cpu())
        values[initializer] = onnx_layout(weight, name, initializer, record.transform_of(name), graph)
    return values


def _trainable(sim: SimModel, range_learning: bool) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Freeze every parameter, then let the quantized weights (and, with range learning, the
    quantizers' scales and zero points) train."""
    for param in sim.gm.parameters():
        param.requires_grad_(False)
    weights: list[nn.Parameter] = []
    for initializer, quantizer in sim.weights.items():
        weight = weight_param(sim, initializer)
        if quantizer.enabled and quantizer.initialized and isinstance(weight, nn.Parameter) and \
                all(weight is not p for p in weights):
            weight.requires_grad_(True)
            weights.append(weight)
    if not weights and not range_learning:
        raise QuantizationError("the model has no quantized weights to fine-tune")
    ranges = make_learnable(sim.quantizers()) if range_learning else []
    return weights, ranges


def _objective(teacher: torch.fx.GraphModule, batches: Sequence[tuple[torch.Tensor, ...]], supervised: bool,
               output_names: Sequence[str]) -> Objective:
    with torch.no_grad():
        outputs = flatten_outputs(run_model("running the float model", lambda: teacher(*batches[0])))
    return choose_objective(outputs, supervised, output_names)


@torch.no_grad()
def _measure(teacher: torch.fx.GraphModule, sim_gm: torch.fx.GraphModule, batches: list[tuple[torch.Tensor, ...]],
             labels: torch.Tensor | None, output_names: Sequence[str], with_float: bool) -> dict[str, Any]:
    """Output SQNR of the simulated model against the float model, and accuracies with labels."""
    sim_gm.eval()
    rows = run_model("evaluating", lambda: evaluate(teacher, sim_gm, batches, output_names, {}, {}))["outputs"]
    sqnrs = [r["sqnr_db"] for r in rows if r.get("sqnr_db") is not None]
    result: dict[str, Any] = {"sqnr_db": min(sqnrs) if sqnrs else None, "outputs": rows}
    if labels is not None:
        result["accuracy"] = _accuracy(sim_gm, batches, labels)
        if with_float:
            result["float_accuracy"] = _accuracy(teacher, batches, labels)
    return result


def _accuracy(model: nn.Module, batches: list[tuple[torch.Tensor, ...]], labels: torch.Tensor) -> float:
    predictions = torch.cat([flatten_outputs(model(*b))[0].argmax(1) for b in batches])
    return float((predictions == labels).double().mean())


# ---------------------------------------------------------------------------------- training
def _train(sim: SimModel, teacher: torch.fx.GraphModule, data: TrainingData, objective: Objective,
           weights: list[nn.Parameter], ranges: list[nn.Parameter], ctx: distributed.DistContext, *, epochs: int,
           lr: float, range_lr: float | None, seed: int, resume: bool, checkpoint: Path | None,
           fingerprint: Mapping[str, Any], progress: bool) -> dict[str, Any]:
    student = sim.gm.to(ctx.device)
    teacher = teacher.to(ctx.device)
    teacher.eval()
    groups = [{"params": weights, "lr": lr}]
    if ranges:
        groups.append({"params": ranges, "lr": range_lr or lr})
    optimizer = torch.optim.Adam(groups)
    history: dict[str, Any] = {"steps": [], "epochs": [], "samples": 0, "resumed_from_epoch": None}
    first_epoch = 0
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if resume:
        assert checkpoint is not None
        state = load_checkpoint(checkpoint, fingerprint)
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        history = {**history, **state["history"], "resumed_from_epoch": int(state["epoch"])}
        first_epoch = int(state["epoch"])
    model = distributed.wrap(student, ctx)
    quantizers = sim.quantizers()
    _train_mode(student)
    checkpoints = 0
    started = time.perf_counter()
    steps_per_epoch = data.steps(ctx.world)
    with EpochProgress(progress, steps_per_epoch) as bar:
        for epoch in range(first_epoch, epochs):
            bar.start_epoch(epoch, epochs)
            total, count = 0.0, 0
            for step, batch in enumerate(data.batches(epoch, ctx.rank, ctx.world)):
                loss = _step(model, teacher, objective, optimizer, batch, ctx, step)
                project_ranges(quantizers)
                value = distributed.mean(loss, ctx)
                if not math.isfinite(value):
                    raise QuantizationError(f"the loss is {value} at epoch {epoch + 1}, step {step + 1}: lower the "
                                            "learning rate")
                history["steps"].append(value)
                history["samples"] += batch.size * ctx.world
                total, count = total + value, count + 1
                bar.advance(total / count)
            history["epochs"].append(total / count if count else None)
            if checkpoint is not None:
                if ctx.main:
                    save_checkpoint(checkpoint, model=student, optimizer=optimizer, epoch=epoch + 1, history=history,
                                    fingerprint=fingerprint)
                distributed.barrier(ctx)
                checkpoints += 1
    student.eval()
    sim.gm = student.cpu()
    teacher.cpu()
    return {**history, "checkpoints": checkpoints, "seconds": round(time.perf_counter() - started, 3),
            "first_epoch": first_epoch}


def _train_mode(model: nn.Module) -> None:
    """Training mode, except BatchNorm layers: their statistics stay as converted."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _step(model: nn.Module, teacher: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
          batch: TrainBatch, ctx: distributed.DistContext, step: int) -> float:
    inputs = tuple(t.to(ctx.device) for t in batch.inputs)
    labels = batch.labels.to(ctx.device) if batch.labels is not None else None
    outputs = flatten_outputs(run_model(f"training step {step + 1} ({batch.size} samples)", lambda: model(*inputs)))
    target = None
    if objective.needs_teacher:
        with torch.no_grad():
            target = flatten_outputs(teacher(*inputs))
    loss = objective(outputs, target, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------- report
def _report(source: Path, model_path: Path | None, start: str | None, cfg: QuantConfig, version: str,
            data: TrainingData, eval_info: dict[str, Any], objective: Objective, graph: OnnxGraphView,
            training: dict[str, Any], before: dict[str, Any], after: dict[str, Any], ctx: distributed.DistContext, *,
            lr: float, range_lr: float | None, range_learning: bool, batch_size: int, seed: int, epochs: int,
            trainable: list[nn.Parameter], frozen: int, storage: str, plan: QdqPlan,
            weight_encodings: Mapping[str, Encoding], started: float) -> dict[str, Any]:
    steps = training["steps"]
    report: dict[str, Any] = {
        "status": "ok",
        "source_onnx": str(source),
        "model": str(model_path) if model_path else None,
        "start": {"from": start or "PTQ run first with the same options",
                  "ptq_sqnr_db": before["sqnr_db"]},
        "settings": {**cfg.to_dict(), "encoding_version": version, "epochs": epochs, "optimizer": "adam", "lr": lr,
                     "range_learning": range_learning, "range_lr": (range_lr or lr) if range_learning else None,
                     "batch_size": batch_size, "seed": seed, "batchnorm": "frozen (eval mode)",
                     "trained_weights": len(trainable),
                     "trained_parameters": int(sum(p.numel() for p in trainable)),
                     "learnable_quantizers": frozen, **ctx.describe()},
        "objective": objective.to_dict(graph.outputs),
        "data": {**data.description, "steps_per_epoch": data.steps(ctx.world),
                 "samples_seen": training["samples"]},
        "evaluation": eval_info,
        "loss": _loss_summary(steps, training["epochs"]),
        "sqnr_db": {"before": before["sqnr_db"], "after": after["sqnr_db"]},
        "outputs": {"before": before["outputs"], "after": after["outputs"]},
        "checkpoints": training["checkpoints"],
        "resumed_from_epoch": training["resumed_from_epoch"],
        "training_seconds": training["seconds"],
        "int4_storage": storage if any(e.grid.bits == 4 for e in weight_encodings.values()) else None,
        "qdq": None,
        "warnings": list(data.warnings),
        "seconds": 0.0,
    }
    if report["int4_storage"] == "int8":
        report["warnings"].append("4-bit weights are stored as 8-bit initializers holding 4-bit values (the source "
                                  f"model is opset {graph.opset}; INT4 initializers need opset 21)")
    if "accuracy" in before:
        report["accuracy"] = {"float": before["float_accuracy"], "ptq": before["accuracy"], "qft": after["accuracy"]}
    report["min_opset"] = plan.required_opset
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _loss_summary(steps: Sequence[float], epochs: Sequence[float | None]) -> dict[str, Any]:
    """First and last values, per-epoch means and the curve averaged into at most CURVE_POINTS buckets."""
    if not steps:
        return {"steps": 0, "per_epoch": list(epochs), "curve": []}
    window = max(1, len(steps) // 10)
    buckets = min(CURVE_POINTS, len(steps))
    edges = np.linspace(0, len(steps), buckets + 1).astype(int)
    curve = [{"step": int(hi), "loss": float(np.mean(steps[lo:hi]))}
             for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    return {"first": float(steps[0]), "last": float(steps[-1]), "min": float(min(steps)),
            "first_window_mean": float(np.mean(steps[:window])), "last_window_mean": float(np.mean(steps[-window:])),
            "window": window, "steps": len(steps), "per_epoch": list(epochs), "curve": curve}
