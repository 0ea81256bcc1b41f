"""Output folders are written whole or not at all.

Every folder onnx2fx writes (a converted model, a PTQ or QFT result, a batch's model folder, an
evaluation) is assembled in a private staging folder beside its destination and moved into place
only once it is complete. A failure or an interrupt therefore leaves the destination as it was
(its previous content, or nothing), and a hard kill leaves at most a hidden
``.<name>.partial-XXXX/`` folder next to it, which ``onnx2fx batch`` deletes on its next run.

Staging beside the destination keeps every move on one file system, where a rename is atomic.
The staged folder already has the destination's name (``.<name>.partial-XXXX/<name>``), so what
is written there never depends on the folder being renamed later.

What happens to a destination that already exists is the caller's choice:

- ``merge=False``: the destination becomes exactly the new folder. An older folder is moved away
  only at the very end and then deleted; nothing of it stays.
- ``merge=True``: each new file replaces the file of the same name and other files stay (a
  model converted again into a folder that also holds its quantized results). Each file is
  always whole, old or new. A new or empty destination is installed with a single rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

STAGING_MARK = ".partial-"

__all__ = ["STAGING_MARK", "StagedFolder", "atomic_folder", "is_staging_name"]


def is_staging_name(name: str) -> bool:
    """Whether a file or folder name is one of the staging folders this module creates."""
    return name.startswith(".") and STAGING_MARK in name


class StagedFolder:
    """A folder being written beside ``target``: fill :attr:`path`, then :meth:`install` it or
    :meth:`discard` it.

    :func:`atomic_folder` is the usual way to use it; the object itself serves writers whose
    folder outlives one block of code (a batch worker fills it in another process).
    :attr:`area` is the private staging folder that holds :attr:`path`: files put there beside
    :attr:`path` (logs, notes for the writer) are deleted with it and never installed.
    """

    def __init__(self, target: str | os.PathLike[str], *, merge: bool = False) -> None:
        self.target = Path(target)
        self.merge = merge
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.area = Path(tempfile.mkdtemp(prefix=f".{self.target.name}{STAGING_MARK}", dir=self.target.parent))
        self.path = self.area / self.target.name
        self.path.mkdir()

    def install(self) -> None:
        """Move the finished folder to :attr:`target` (see the module docstring for what happens
        to an existing one), then delete the staging folder."""
        if self.merge:
            self._merge()
        else:
            self._replace()
        self.discard()

    def discard(self) -> None:
        """Delete the staging folder and whatever is still in it (nothing, after :meth:`install`)."""
        shutil.rmtree(self.area, ignore_errors=True)

    def _replace(self) -> None:
        target = self.target
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            os.replace(target, self.area / ".previous")  # deleted with the staging folder
        os.replace(self.path, target)

    def _merge(self) -> None:
        target = self.target
        if not target.exists() or (target.is_dir() and not any(target.iterdir())):
            if target.exists():
                target.rmdir()
            os.replace(self.path, target)
            return
        if not target.is_dir():
            raise NotADirectoryError(f"output path {target} exists and is not a folder")
        for item in self.path.iterdir():
            os.replace(item, target / item.name)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str], *, merge: bool = False) -> Iterator[Path]:
    """Write a folder at ``target`` atomically: the block fills the folder it is given, which is
    installed when the block ends normally and deleted when it raises.

    ``merge``: keep the files of an existing ``target`` that the block does not write (see the
    module docstring).
    """
    staged = StagedFolder(target, merge=merge)
    try:
        yield staged.path
        staged.install()
    finally:
        staged.discard()
