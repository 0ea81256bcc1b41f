"""Training data for quantization fine-tuning: streamed batches of inputs (and labels), per epoch
and per process.

Nothing is loaded whole:

- **Arrays** (a ``.npy``/``.npz`` file, a folder of them, or an in-memory array): every file is
  memory-mapped (``.npy`` with ``mmap_mode="r"``; members of an uncompressed ``.npz``, as
  ``np.savez`` writes them, at their offset inside the archive) and a batch reads just its rows.
  Samples are shuffled each epoch by a permutation seeded with ``(seed, epoch)``, so an epoch's
  order does not depend on what ran before (a resumed run sees the same order). Labels come
  from a ``.npy`` file (or array) with one integer class per sample, memory-mapped as well.
  A compressed ``.npz`` member cannot be mapped: it is decompressed when its rows are needed (one
  file at a time) and the description says so.
- **Iterables** (a ``DataLoader``, a list of batches): iterated again every epoch in the order they
  give. A batch is a tensor or array (single-input model), a tuple/list whose first items are the
  inputs and whose next item, if any, holds the labels (``(x, y)``), or a dict keyed by input name
  (labels under ``"label"`` or ``"labels"``).

With several processes (``torchrun``), each takes its share: array samples are split after the
shuffle (``order[rank::world]``, cut to the same count on every process), iterable batches
round-robin (batch ``i`` goes to process ``i % world``, and a last incomplete round is dropped),
so every process runs the same number of steps, as DistributedDataParallel needs.
"""

from __future__ import annotations

import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import QuantizationError
from .data import ARRAY_SUFFIXES, InputSpec

LABEL_KEYS = ("label", "labels")
MAX_OPEN_FILES = 64
# The default batch: the largest of these that still gives an epoch MIN_STEPS steps per process.
BATCH_SIZES = (32, 16, 8)
MIN_STEPS = 100


def default_batch_size(samples: int | None, world: int = 1) -> int:
    """Samples per step when the caller gives none.

    One epoch is the same compute at any batch size, but a short fine-tune on about a thousand
    images fits its objective better with more, smaller steps (benchmarks/qft_compare.py: batches of
    8 against 32 on 1024 images, docs/quantization.md). So the batch is 32 only where an epoch still
    has ``MIN_STEPS`` steps per process, then 16, and 8 below that. Unknown counts (iterables bring
    their own batches) keep 32.
    """
    if samples is None:
        return BATCH_SIZES[0]
    per_process = samples // max(world, 1)
    return next((b for b in BATCH_SIZES if per_process // b >= MIN_STEPS), BATCH_SIZES[-1])


@dataclass
class TrainBatch:
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.inputs[0].shape[0]) if self.inputs and self.inputs[0].dim() else 1


class TrainingData(ABC):
    """Where the training batches come from."""

    has_labels: bool = False
    samples: int | None = None  # known for arrays
    batch_size: int
    description: dict[str, Any]
    warnings: list[str]

    @abstractmethod
    def batches(self, epoch: int, rank: int = 0, world: int = 1) -> Iterator[TrainBatch]:
        """The batches of one epoch for process ``rank`` of ``world``."""

    @abstractmethod
    def steps(self, world: int = 1) -> int | None:
        """Batches per epoch and process, when known in advance."""

    @abstractmethod
    def first(self, samples: int) -> Iterator[TrainBatch]:
        """The first ``samples`` samples in their stored order, streamed."""

    def head(self, samples: int) -> list[TrainBatch]:
        """The first ``samples`` samples in their stored order, as a list (for evaluation)."""
        return list(self.first(samples))

    def calibration(self, samples: int) -> Iterable[tuple[torch.Tensor, ...]]:
        """The inputs of the first ``samples`` samples, re-iterable and streamed (for PTQ)."""
        return _Inputs(self, samples)


def training_data(source: Any, specs: list[InputSpec], *, labels: Any = None, batch_size: int | None = None,
                  seed: int = 0, shuffle: bool = True, what: str = "training data", world: int = 1) -> TrainingData:
    """Wrap ``source`` (see the module docstring); check shapes, label counts and types up front.

    ``batch_size`` None: :func:`default_batch_size` of the sample count over ``world`` processes.
    """
    if batch_size is not None and batch_size <= 0:
        raise QuantizationError(f"batch size must be positive, got {batch_size}")
    fixed = {s.fixed_batch for s in specs if s.fixed_batch is not None}
    exact = bool(fixed)
    if fixed:  # a graph with a fixed batch size only runs on that size
        batch_size = min(fixed)
    if source is None:
        raise QuantizationError(f"no {what}: give a folder or a .npy/.npz file (--train-data), an array, or an "
                                "iterable / DataLoader of batches")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise QuantizationError(f"{what} {path} does not exist")
        table = _ArrayTable.from_path(path, specs, what)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        table = _ArrayTable.from_arrays([_numpy(source)], specs, what)
    elif isinstance(source, Mapping) and all(isinstance(v, (np.ndarray, torch.Tensor)) for v in source.values()):
        missing = [s.name for s in specs if s.name not in source]
        if missing:
            raise QuantizationError(f"{what} has arrays {list(source)} but not the input(s) {missing}")
        table = _ArrayTable.from_arrays([_numpy(source[s.name]) for s in specs], specs, what)
    elif isinstance(source, Iterable):
        if labels is not None:
            raise QuantizationError(f"labels for an iterable of batches come with the batches, as (inputs, labels); "
                                    f"do not pass them separately ({what})")
        if iter(source) is source:
            raise QuantizationError(f"{what} is a one-shot iterator ({type(source).__name__}): give something that "
                                    "can be iterated once per epoch, such as a list or a DataLoader")
        return _IterableData(source, specs, batch_size or default_batch_size(None), exact, what)
    else:
        raise QuantizationError(f"{what}: expected a path, an array or an iterable of batches, "
                                f"got {type(source).__name__}")
    label_column = _labels(labels, table.samples, what) if labels is not None else None
    return _ArrayData(table, specs, label_column, batch_size or default_batch_size(table.samples, world), exact, seed,
                      shuffle)


# ---------------------------------------------------------------------------------- arrays
class _ArrayTable:
    """Rows of each input across files, read on demand from memory-mapped arrays."""

    def __init__(self, columns: list[list[Any]], offsets: np.ndarray, description: dict[str, Any],
                 warnings: list[str]) -> None:
        self.columns = columns  # per input, per file: an array or a _Member to open when needed
        self.offsets = offsets  # first row of each file, plus the total at the end
        self.description = description
        self.warnings = warnings
        self._open: dict[tuple[int, int], tuple[np.ndarray, bool]] = {}

    @property
    def samples(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], specs: list[InputSpec], what: str) -> _ArrayTable:
        if len(arrays) != len(specs):
            raise QuantizationError(f"{what}: the model has inputs {[s.name for s in specs]}; give a dict of arrays "
                                    "keyed by input name")
        arrays = [_with_batch_axis(a, spec) for a, spec in zip(arrays, specs)]
        for a, spec in zip(arrays, specs):
            spec.check(a, what)
        counts = {a.shape[0] for a in arrays}
        if len(counts) != 1:
            raise QuantizationError(f"{what}: inputs have different sample counts {sorted(counts)}")
        return cls([[a] for a in arrays], np.array([0, arrays[0].shape[0]]), {"source": "in-memory array"}, [])

    @classmethod
    def from_path(cls, path: Path, specs: list[InputSpec], what: str) -> _ArrayTable:
        if path.is_file():
            if path.suffix.lower() not in ARRAY_SUFFIXES:
                raise QuantizationError(f"{what} {path}: expected a folder, a .npy or a .npz file")
            files, description = [path], {"source": str(path), "kind": path.suffix[1:]}
        else:
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in ARRAY_SUFFIXES)
            if not files:
                raise QuantizationError(f"{what} folder {path} holds no .npy or .npz files")
            description = {"source": str(path), "kind": "arrays", "files": len(files)}
        columns: list[list[Any]] = [[] for _ in specs]
        counts = [0]
        compressed = 0
        for file in files:
            try:
                members = _members(file, specs)
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise QuantizationError(f"{what} file {file} cannot be read: {exc}") from None
            n = None
            for i, (spec, member) in enumerate(zip(specs, members)):
                shape = list(member.shape)
                if spec.shape is not None and len(shape) == len(spec.shape) - 1:
                    member.add_batch_axis = True
                    shape = [1, *shape]
                spec.check(np.empty([0, *shape[1:]]), f"{what} file {file.name}")
                if n is not None and shape[0] != n:
                    raise QuantizationError(f"{what} file {file.name}: inputs have different sample counts")
                n = shape[0]
                compressed += member.compressed
                columns[i].append(member)
            counts.append(counts[-1] + (n or 0))
        warnings = []
        if compressed:
            warnings.append(f"{what}: {compressed} compressed .npz member(s) cannot be memory-mapped and are "
                            "decompressed whole when their rows are needed; save with np.savez or .npy to stream")
            description["compressed_members"] = compressed
        return cls(columns, np.asarray(counts, dtype=np.int64), description, warnings)

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """The rows ``indices`` of every input, in that order."""
        files = np.searchsorted(self.offsets, indices, side="right") - 1
        out = []
        for column_index, column in enumerate(self.columns):
            parts: np.ndarray | None = None
            for f in np.unique(files):
                mask = files == f
                array = self._array(column_index, int(f), column[f])
                values = np.asarray(array[indices[mask] - self.offsets[f]])
                if parts is None:
                    parts = np.empty((len(indices), *values.shape[1:]), dtype=values.dtype)
                parts[mask] = values
            out.append(parts if parts is not None else np.empty((0,)))
        return tuple(out)

    def _array(self, column: int, file: int, item: Any) -> np.ndarray:
        if isinstance(item, np.ndarray):
            return item
        key = (column, file)
        if key not in self._open:
            # a bounded number of maps open at a time, and one decompressed member per input
            stale = [k for k, m in self._open.items() if k[0] == column and item.compressed and m[1]]
            if len(self._open) >= MAX_OPEN_FILES:
                stale.append(next(iter(self._open)))
            for old in dict.fromkeys(stale):
                del self._open[old]
            self._open[key] = (item.open(), item.compressed)
        return self._open[key][0]


class _Member:
    """One array inside a file, opened (memory-mapped) on first use."""

    def __init__(self, path: Path, key: str | None, shape: tuple[int, ...], dtype: np.dtype, fortran: bool,
                 offset: int | None) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype
        self.fortran, self.offset = fortran, offset
        self.add_batch_axis = False

    @property
    def compressed(self) -> bool:
        return self.key is not None and self.offset is None

    def open(self) -> np.ndarray:
        if self.key is None:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        elif self.offset is not None:
            array = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                              order="F" if self.fortran else "C")
        else:
            with np.load(self.path, allow_pickle=False) as archive:
                array = archive[self.key]
        return array[None] if self.add_batch_axis else array


def _members(path: Path, specs: list[InputSpec]) -> list[_Member]:
    if path.suffix.lower() == ".npy":
        if len(specs) != 1:
            raise QuantizationError(f"{path.name}: a .npy file holds one array but the model has inputs "
                                    f"{[s.name for s in specs]}; use .npz files keyed by input name")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return [_Member(path, None, array.shape, array.dtype, False, None)]
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        keys = [k for k in infos if k not in LABEL_KEYS]
        if len(specs) == 1 and len(keys) == 1:
            wanted = keys
        else:
            missing = [s.name for s in specs if s.name not in infos]
            if missing:
                raise QuantizationError(f"{path.name} has arrays {list(infos)} but not the input(s) {missing}")
            wanted = [s.name for s in specs]
        members = []
        with open(path, "rb") as raw:
            for key in wanted:
                info = infos[key]
                with archive.open(info) as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0  # 3.0 differs only in the header's encoding
                    shape, fortran, dtype = read_header(stream)
                    header = stream.tell() if info.compress_type == zipfile.ZIP_STORED else None
                offset = None
                if header is not None and not dtype.hasobject:
                    raw.seek(info.header_offset + 26)  # local file header: name and extra field lengths
                    name_length, extra_length = np.frombuffer(raw.read(4), dtype="<u2")
                    offset = info.header_offset + 30 + int(name_length) + int(extra_length) + header
                members.append(_Member(path, key, tuple(shape), dtype, fortran, offset))
    return members


def _labels(labels: Any, samples: int, what: str) -> np.ndarray:
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise QuantizationError(f"labels file {path} does not exist")
        if path.suffix.lower() != ".npy":
            raise QuantizationError(f"labels file {path}: expected a .npy file with one class index per sample")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise QuantizationError(f"labels file {path} cannot be read: {exc}") from None
    else:
        array = _numpy(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise QuantizationError(f"labels must be one integer class index per sample, got shape {list(array.shape)} "
                                f"of {array.dtype}")
    if array.shape[0] != samples:
        raise QuantizationError(f"{array.shape[0]} labels for {samples} {what} samples: the counts must match")
    return array


def _with_batch_axis(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    return array[None] if spec.shape is not None and array.ndim == len(spec.shape) - 1 else array


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class _ArrayData(TrainingData):
    def __init__(self, table: _ArrayTable, specs: list[InputSpec], labels: np.ndarray | None, batch_size: int,
                 exact: bool, seed: int, shuffle: bool) -> None:
        self.table, self.specs, self.labels = table, specs, labels
        self.batch_size, self.exact, self.seed, self.shuffle = batch_size, exact, seed, shuffle
        self.has_labels = labels is not None
        self.samples = table.samples
        self.description = {**table.description, "samples": table.samples, "batch_size": batch_size,
                            "shuffle": shuffle, "labels": self.has_labels, "memory_mapped": True}
        self.warnings = list(table.warnings)
        if table.samples == 0:
            raise QuantizationError("training data is empty: no samples to train on")

    def _order(self, epoch: int, rank: int, world: int) -> np.ndarray:
        n = self.table.samples
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        per = n // world
        return order[:per * world][rank::world]

    def steps(self, world: int = 1) -> int | None:
        per = self.table.samples // world
        return per // self.batch_size if self.exact else -(-per // self.batch_size)

    def batches(self, epoch: int, rank: int = 0, world: int = 1) -> Iterator[TrainBatch]:
        order = self._order(epoch, rank, world)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.exact and len(idx) < self.batch_size:
                return
            yield self._batch(idx)

    def first(self, samples: int) -> Iterator[TrainBatch]:
        n = min(samples, self.table.samples)
        for start in range(0, n, self.batch_size):
            idx = np.arange(start, min(start + self.batch_size, n))
            if self.exact and len(idx) < self.batch_size:
                return
            yield self._batch(idx)

    def _batch(self, idx: np.ndarray) -> TrainBatch:
        inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(spec.torch_dtype)
                       for a, spec in zip(self.table.rows(idx), self.specs))
        labels = None
        if self.labels is not None:
            labels = torch.from_numpy(np.ascontiguousarray(self.labels[idx]).astype(np.int64))
        return TrainBatch(inputs, labels)


# ---------------------------------------------------------------------------------- iterables
class _IterableData(TrainingData):
    def __init__(self, source: Iterable[Any], specs: list[InputSpec], batch_size: int, exact: bool,
                 what: str) -> None:
        self.source, self.specs, self.batch_size, self.exact, self.what = source, specs, batch_size, exact, what
        self.description = {"source": "iterable", "type": type(source).__name__}
        self.warnings = []
        first = next(iter(self._parsed()), None)
        if first is None:
            raise QuantizationError(f"{what} is empty: no batches to train on")
        self.has_labels = first.labels is not None
        self.description["labels"] = self.has_labels
        try:
            self._count: int | None = len(source)  # type: ignore[arg-type]
        except TypeError:
            self._count = None

    def _parsed(self) -> Iterator[TrainBatch]:
        for item in self.source:
            yield _as_train_batch(item, self.specs, self.what)

    def steps(self, world: int = 1) -> int | None:
        return None if self._count is None else self._count // world

    def batches(self, epoch: int, rank: int = 0, world: int = 1) -> Iterator[TrainBatch]:
        mine: TrainBatch | None = None
        for i, batch in enumerate(self._parsed()):
            if self.has_labels != (batch.labels is not None):
                raise QuantizationError(f"{self.what}: some batches have labels and some do not")
            if i % world == rank:
                mine = batch
            if i % world == world - 1:
                assert mine is not None
                yield mine
                mine = None

    def first(self, samples: int) -> Iterator[TrainBatch]:
        seen = 0
        for batch in self._parsed():
            if seen >= samples:
                return
            take = min(batch.size, samples - seen)
            if take < batch.size and not self.exact:
                batch = TrainBatch(tuple(t[:take] for t in batch.inputs),
                                   None if batch.labels is None else batch.labels[:take])
            yield batch
            seen += batch.size


class _Inputs:
    """Re-iterable input batches of the first samples of a source."""

    def __init__(self, data: TrainingData, samples: int) -> None:
        self.data, self.samples = data, samples

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return (batch.inputs for batch in self.data.first(self.samples))


def _as_train_batch(item: Any, specs: list[InputSpec], what: str) -> TrainBatch:
    labels: Any = None
    if isinstance(item, Mapping):
        missing = [s.name for s in specs if s.name not in item]
        if missing:
            raise QuantizationError(f"a {what} batch is missing input(s) {missing}")
        values = [item[s.name] for s in specs]
        labels = next((item[k] for k in LABEL_KEYS if k in item), None)
    elif isinstance(item, (tuple, list)):
        if len(item) < len(specs):
            raise QuantizationError(f"a {what} batch has {len(item)} item(s); the model needs {len(specs)}")
        values = list(item[:len(specs)])
        labels = item[len(specs)] if len(item) > len(specs) else None
    else:
        if len(specs) != 1:
            raise QuantizationError(f"the model has inputs {[s.name for s in specs]}: give batches as tuples or "
                                    "dicts keyed by input name")
        values = [item]
    tensors = []
    for spec, value in zip(specs, values):
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if spec.shape is not None and tensor.dim() == len(spec.shape) - 1:
            tensor = tensor.unsqueeze(0)
        spec.check(tensor, what)
        tensors.append(tensor.detach().cpu().to(spec.torch_dtype))
    label_tensor = None
    if labels is not None:
        label_tensor = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
        label_tensor = label_tensor.detach().cpu().reshape(-1)
        if label_tensor.is_floating_point() or label_tensor.dtype == torch.bool:
            raise QuantizationError(f"{what}: labels must be integer class indices, got {label_tensor.dtype}")
        if label_tensor.numel() != tensors[0].shape[0]:
            raise QuantizationError(f"{what}: a batch of {tensors[0].shape[0]} samples has {label_tensor.numel()} "
                                    "labels: the counts must match")
        label_tensor = label_tensor.long()
    return TrainBatch(tuple(tensors), label_tensor)


def stack_labels(batches: Sequence[TrainBatch]) -> torch.Tensor | None:
    if not batches or any(b.labels is None for b in batches):
        return None
    return torch.cat([b.labels for b in batches])  # type: ignore[misc]
