"""The fine-tuning loop: Adam over the parameter groups of :mod:`.qft_params`, the learning rate of
:mod:`.lr_schedule` set before every step, the objective of :mod:`.losses`, a checkpoint after
every epoch (:mod:`.checkpoint`) and DistributedDataParallel under ``torchrun``
(:mod:`.distributed`).

The schedule is a function of the global step (``epoch x steps per epoch + step``), so a run
resumed from a checkpoint sets the same rates as an uninterrupted one. It spans the epochs of the
call: resuming with more epochs stretches the rest of it. Without a step count known in advance (an
iterable without ``len``) the rates stay constant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from ..errors import QuantizationError
from . import distributed
from .checkpoint import load_checkpoint, restore_rng, save_checkpoint
from .fake_quant import SimModel
from .learnable import project_ranges
from .losses import Objective
from .lr_schedule import LrSchedule
from .metrics import flatten_outputs
from .progress import EpochProgress
from .qft_params import LearningRates, TrainableGroups
from .simulation import run_model
from .training_data import TrainBatch, TrainingData


def schedule_for(kind: str, data: TrainingData, world: int, epochs: int, warmup: float) -> LrSchedule:
    """The schedule over every step of this call (constant when the step count is unknown)."""
    steps = data.steps(world)
    if steps is None:
        return LrSchedule("constant", 1)
    return LrSchedule(kind, max(steps * epochs, 1), warmup)


def train(sim: SimModel, teacher: torch.fx.GraphModule, data: TrainingData, objective: Objective,
          groups: TrainableGroups, rates: LearningRates, schedule: LrSchedule, ctx: distributed.DistContext, *,
          epochs: int, seed: int, resume: bool, checkpoint: Path | None, fingerprint: Mapping[str, Any],
          progress: bool) -> dict[str, Any]:
    """Train ``sim.gm`` in place (on ``ctx.device``, back on the CPU afterwards); the loss history."""
    student = sim.gm.to(ctx.device)
    teacher = teacher.to(ctx.device)
    teacher.eval()
    param_groups, peaks = groups.optimizer_groups(rates)
    optimizer = torch.optim.Adam(param_groups)
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
    train_mode(student)
    checkpoints = 0
    started = time.perf_counter()
    steps_per_epoch = data.steps(ctx.world)
    global_step = len(history["steps"])
    with EpochProgress(progress, steps_per_epoch) as bar:
        for epoch in range(first_epoch, epochs):
            bar.start_epoch(epoch, epochs)
            total, count = 0.0, 0
            for step, batch in enumerate(data.batches(epoch, ctx.rank, ctx.world)):
                schedule.apply(optimizer, peaks, global_step)
                loss = _step(model, teacher, objective, optimizer, batch, ctx, step)
                project_ranges(quantizers)
                value = distributed.mean(loss, ctx)
                if not math.isfinite(value):
                    raise QuantizationError(f"the loss is {value} at epoch {epoch + 1}, step {step + 1}: lower the "
                                            "learning rate")
                history["steps"].append(value)
                history["samples"] += batch.size * ctx.world
                total, count, global_step = total + value, count + 1, global_step + 1
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


def train_mode(model: nn.Module) -> None:
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
