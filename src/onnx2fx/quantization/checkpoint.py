"""Fine-tuning checkpoints: everything needed to continue after the last finished epoch.

A checkpoint holds the quantized model's ``state_dict`` (weights and, with range learning, the
learned scales and zero points), the optimizer state, the number of finished epochs, the loss
history, the random number generator states (torch, numpy, Python) and a fingerprint of the
settings it was made with. Resuming with other settings (learning rate, batch size, seed, range
learning, the objective, the number of processes, the quantizers) is an error rather than a
silent mix. The file is written to a temporary name and renamed, so it is always whole, and it
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import QuantizationError

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
                             "python": _plain(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    history: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> Path:
    """Write the checkpoint after ``epoch`` finished epochs (atomically)."""
    state = {"format": FORMAT_VERSION, "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": rng_state(), "history": dict(history),
             "fingerprint": dict(fingerprint)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Path, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check that it was made with the same settings."""
    if not path.is_file():
        raise QuantizationError(f"nothing to resume: checkpoint {path} does not exist")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizationError(f"checkpoint {path} cannot be read: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise QuantizationError(f"{path} is not a fine-tuning checkpoint of this version")
    recorded = state.get("fingerprint", {})
    changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
    if changed:
        details = ", ".join(f"{k}: {recorded.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
        raise QuantizationError(f"checkpoint {path} was made with other settings ({details}): resume with the same "
                                "settings, or start again without --resume")
    return state


def _plain(value: Any) -> Any:
    """Python's RNG state as lists (loadable with weights_only=True)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
