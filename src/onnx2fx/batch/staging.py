"""The batch's output folder: one writer at a time, and no leftovers from an interrupted run.

Each model folder is written through :class:`onnx2fx.atomic_folder.StagedFolder`: a worker fills
``OUTPUT/a/.b.partial-XXXX/b``, the parent adds ``batch.json`` and installs it as ``OUTPUT/a/b``,
moving an older folder away only then. Ctrl-C or SIGTERM deletes the staging folders of running
workers; after a hard kill, :func:`remove_leftovers` deletes them at the start of the next run.
A lock file keeps two batches from writing to one output folder, since each would delete the
other's staging folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..atomic_folder import STAGING_MARK, is_staging_name
from ..errors import BatchError

LOCK_NAME = ".onnx2fx-batch.lock"

__all__ = ["LOCK_NAME", "STAGING_MARK", "output_lock", "remove_leftovers"]


def remove_leftovers(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete staging folders (and half-written summary files) an interrupted run left behind."""
    output_dir = Path(output_dir)
    removed: list[Path] = []
    if not output_dir.is_dir():
        return removed
    for dirpath, dirnames, _ in os.walk(output_dir):
        for name in list(dirnames):
            if is_staging_name(name):
                shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
                removed.append(Path(dirpath) / name)
                dirnames.remove(name)
    for item in output_dir.iterdir():
        if item.is_file() and item.name.startswith((".summary.json.", ".summary.md.")):
            item.unlink(missing_ok=True)
            removed.append(item)
    return removed


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """One batch at a time per output folder (each removes the other's staging folders)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(output_dir / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchError(f"another onnx2fx batch is writing to {output_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
