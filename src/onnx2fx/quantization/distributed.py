"""Several processes, one model: the torch.distributed setup that fine-tuning uses under torchrun.

``torchrun --nproc-per-node N ...`` (``python -m torch.distributed.run``) starts N copies of the
same command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in the
environment. :func:`setup` reads them and joins the process group (``nccl`` when the process has a
GPU, ``gloo`` on CPU) unless the caller did so already; without them it is one process and
nothing changes. The model is wrapped in ``DistributedDataParallel``, which averages gradients
across processes, so every process holds the same weights after each step; process 0 writes
checkpoints and the output folder, the others wait at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # we initialised the process group, so we destroy it

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world, "backend": self.backend, "device": str(self.device)}


def setup(device: str | torch.device | None = None) -> DistContext:
    """The process group this process belongs to (joined here when torchrun started us)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_available() or (not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) <= 1):
        return DistContext(device=_device(device, local_rank, False))
    if not dist.is_initialized():
        wants_gpu = device is None or torch.device(device).type == "cuda"
        backend = "nccl" if torch.cuda.is_available() and wants_gpu else "gloo"
        dist.init_process_group(backend=backend)
        owns = True
    backend = str(dist.get_backend())
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank,
                      _device(device, local_rank, backend == "nccl"), backend, owns)
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
    return ctx


def _device(device: str | torch.device | None, local_rank: int, nccl: bool) -> torch.device:
    if device is not None:
        chosen = torch.device(device)
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", local_rank)
        return chosen
    if torch.cuda.is_available() and (nccl or not dist.is_initialized()):
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def mean(value: float, ctx: DistContext) -> float:
    """The mean of ``value`` over all processes."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world


def any_flag(flag: bool, ctx: DistContext) -> bool:
    """Whether ``flag`` is set on any process (an error on one process stops them all)."""
    if not ctx.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return bool(tensor.item() > 0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
