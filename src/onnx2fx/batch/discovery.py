"""Which models a batch runs, and where each one's folder goes.

Every ``.onnx`` file under the models folder is a model (searched recursively, in sorted order);
``models/a/b.onnx`` gets the output folder ``OUTPUT/a/b/``. Names are checked before anything
runs, because two models that would share a folder, or nest one inside the other, would
overwrite each other's results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..atomic_folder import is_staging_name
from ..errors import BatchError

__all__ = ["check_output_names", "find_models", "output_name"]


def find_models(models_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Paths (relative, ``/``-separated, sorted) of every ``.onnx`` file under ``models_dir``.

    When ``output_dir`` lies inside ``models_dir`` its files are not models; staging folders are
    skipped everywhere.
    """
    models_dir = Path(models_dir)
    root = models_dir.resolve()
    prune: Path | None = None
    if output_dir is not None:
        out = Path(output_dir).resolve()
        if out != root and out.is_relative_to(root):
            prune = out
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(models_dir):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not is_staging_name(d)
                             and (prune is None or (here / d).resolve() != prune))
        for name in filenames:
            if name.lower().endswith(".onnx") and not is_staging_name(name) and (here / name).is_file():
                found.append((here / name).relative_to(models_dir).as_posix())
    return sorted(found)


def output_name(rel: str) -> str:
    """The output folder of the model at ``rel``, relative to the output folder."""
    return rel[:-5] if rel.lower().endswith(".onnx") else rel


def check_output_names(rels: Sequence[str]) -> None:
    """Every model gets a folder of its own, none inside another's; else a :class:`BatchError`."""
    owners: dict[str, str] = {}
    for rel in rels:
        out = output_name(rel)
        if not out or out.endswith("/") or out.rsplit("/", 1)[-1] in ("", ".", ".."):
            raise BatchError(f"model {rel!r} has no usable name for its output folder")
        if out in owners:
            raise BatchError(f"models {owners[out]!r} and {rel!r} would share the output folder {out!r}")
        owners[out] = rel
    for out, rel in owners.items():
        parts = out.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in owners:
                raise BatchError(f"the output folder of {rel!r} ({out!r}) would lie inside the output folder of "
                                 f"{owners[parent]!r}; rename one of them")
