"""Calibration data: from what the user has to batches of model inputs.

Accepted sources, all streamed batch by batch (files are read when their batch is needed):

- an iterable (a ``DataLoader``, a list, a generator) of batches: a tensor or array for a
  single-input model, a tuple/list (its first items are the inputs, so ``(image, label)`` works),
  or a dict keyed by input name;
- a ``.npy`` file (samples along the first axis) or a ``.npz`` file (one array per input name);
- a folder of ``.npy`` / ``.npz`` files (one sample or a batch each) or of images (``.png``,
  ``.jpg``, ... decoded with Pillow when it is installed, resized to the input's size, scaled to
  [0, 1] and normalised with the given mean/std; those options are recorded in the report);
- random data, only when asked for explicitly: its encodings say nothing about real inputs, so
  the report carries a warning.

Every sample is checked against the model's input shape (from ``--shape`` or the ONNX graph),
so a wrong shape is an error that names the input and both shapes, not a failure deep in torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import QuantizationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
_NUMPY_TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 2: np.uint8, 3: np.int8,
                9: np.bool_}


@dataclass
class InputSpec:
    """One model input: its name, element type and shape (``None`` where the size is free)."""

    name: str
    elem_type: int
    shape: list[int | None] | None
    fixed_batch: int | None = None  # the model's own batch size when its graph fixes one

    @property
    def numpy_dtype(self) -> Any:
        return _NUMPY_TYPES.get(self.elem_type, np.float32)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.from_numpy(np.zeros(0, self.numpy_dtype)).dtype

    def check(self, array: np.ndarray | torch.Tensor, what: str) -> None:
        """Raise unless ``array`` (a batch) fits this input."""
        shape = list(array.shape)
        if self.shape is None:
            return
        if len(shape) != len(self.shape) or any(e is not None and i > 0 and e != s
                                                for i, (e, s) in enumerate(zip(self.shape, shape))):
            expected = ["N" if i == 0 else "?" if e is None else e for i, e in enumerate(self.shape)]
            raise QuantizationError(f"{what}: input {self.name!r} expects shape {expected} "
                                    f"(N = batch), got {shape}")


@dataclass
class ImageOptions:
    """How image files become input tensors; recorded in the report."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    resample: str = "bilinear"


@dataclass
class CalibrationSource:
    """Batches of model inputs plus what the report should say about where they came from."""

    batches: Iterable[tuple[torch.Tensor, ...]]
    description: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def input_specs(graph_inputs: Sequence[str], input_types: Mapping[str, tuple[int, Any]],
                overrides: Mapping[str, Sequence[int]] | None = None) -> list[InputSpec]:
    """The model's inputs with ``overrides`` (full shapes, batch first) applied; an override must
    agree with every size the model fixes."""
    overrides = dict(overrides or {})
    if "" in overrides:
        if len(graph_inputs) != 1:
            raise QuantizationError(f"the model has inputs {list(graph_inputs)}: name them as --shape NAME=...")
        overrides[graph_inputs[0]] = overrides.pop("")
    unknown = sorted(set(overrides) - set(graph_inputs))
    if unknown:
        raise QuantizationError(f"--shape names unknown input(s) {unknown}; the inputs are {list(graph_inputs)}")
    specs = []
    for name in graph_inputs:
        elem_type, shape = input_types[name]
        dims: list[int | None] | None = None if shape is None else [d if isinstance(d, int) and d > 0 else None
                                                                     for d in shape]
        fixed_batch = dims[0] if dims else None
        if name in overrides:
            given = [int(d) for d in overrides[name]]
            if dims is not None:
                if len(given) != len(dims):
                    raise QuantizationError(f"--shape for input {name!r} has {len(given)} dims but the model's "
                                            f"input has {len(dims)} ({_show(dims)})")
                for i, (d, g) in enumerate(zip(dims, given)):
                    if d is not None and d != g and i > 0:
                        raise QuantizationError(f"--shape for input {name!r} gives {g} at dim {i} but the model "
                                                f"fixes it to {d} ({_show(dims)})")
            dims = [None] + [int(g) for g in given[1:]]
        elif dims:
            dims = [None, *dims[1:]]
        specs.append(InputSpec(name, elem_type, dims, fixed_batch))
    return specs


def calibration_source(source: Any, specs: list[InputSpec], *, samples: int, batch_size: int,
                       random: bool = False, seed: int = 0, image_options: ImageOptions | None = None,
                       what: str = "calibration data") -> CalibrationSource:
    """Batches from ``source`` (see the module docstring), at most ``samples`` samples in total."""
    if samples <= 0:
        raise QuantizationError(f"the number of {what} samples must be positive, got {samples}")
    if batch_size <= 0:
        raise QuantizationError(f"batch size must be positive, got {batch_size}")
    fixed = {s.fixed_batch for s in specs if s.fixed_batch is not None}
    if fixed:  # a graph with a fixed batch size (e.g. Reshape to [1, -1]) only runs on that size
        batch_size = min(fixed)
    if source is None:
        if not random:
            raise QuantizationError(f"no {what}: give a folder or a .npy/.npz file (--calib-data), an iterable "
                                    "of batches, or ask for random data explicitly (--random-calibration)")
        return _random_source(specs, samples, batch_size, seed)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise QuantizationError(f"{what} {path} does not exist")
        batches, description = _path_batches(path, specs, batch_size, image_options or ImageOptions(), what)
    elif isinstance(source, Iterable) and not isinstance(source, (torch.Tensor, np.ndarray, Mapping)):
        batches, description = _iterable_batches(source, specs), {"source": "iterable", "type": type(source).__name__}
    else:
        batches, description = iter([_as_batch(source, specs)]), {"source": "in-memory array"}
    return CalibrationSource(_checked(_capped(batches, samples, batch_size, exact=bool(fixed)), specs, samples, what),
                             {**description, "requested_samples": samples, "batch_size": batch_size})


# ---------------------------------------------------------------------------------- sources
def _random_source(specs: list[InputSpec], samples: int, batch_size: int, seed: int) -> CalibrationSource:
    for spec in specs:
        if spec.shape is None or any(d is None for d in spec.shape[1:]):
            raise QuantizationError(f"random calibration needs the full shape of input {spec.name!r}: "
                                    f"give --shape {spec.name}=N,...")

    def generate() -> Iterator[tuple[torch.Tensor, ...]]:
        generator = torch.Generator().manual_seed(seed)
        done = 0
        while done < samples:
            n = min(batch_size, samples - done)
            yield tuple(torch.randn([n, *spec.shape[1:]], generator=generator).to(spec.torch_dtype)  # type: ignore[misc]
                        if spec.torch_dtype.is_floating_point else
                        torch.zeros([n, *spec.shape[1:]], dtype=spec.torch_dtype)  # type: ignore[misc]
                        for spec in specs)
            done += n

    warning = ("calibrated on random normal data (--random-calibration): the encodings do not reflect real "
               "inputs and the accuracy figures say nothing about real data")
    return CalibrationSource(generate(), {"source": "random", "distribution": "normal(0, 1)", "seed": seed,
                                          "requested_samples": samples, "batch_size": batch_size}, [warning])


def _path_batches(path: Path, specs: list[InputSpec], batch_size: int, image_options: ImageOptions,
                  what: str) -> tuple[Iterator[tuple[torch.Tensor, ...]], dict[str, Any]]:
    if path.is_file():
        if path.suffix.lower() not in ARRAY_SUFFIXES:
            raise QuantizationError(f"{what} {path}: expected a folder, a .npy or a .npz file")
        return _array_file_batches([path], specs, batch_size, what), {"source": str(path), "kind": path.suffix[1:]}
    files = sorted(p for p in path.iterdir() if p.is_file())
    arrays = [p for p in files if p.suffix.lower() in ARRAY_SUFFIXES]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if arrays:
        return _array_file_batches(arrays, specs, batch_size, what), {"source": str(path), "kind": "arrays",
                                                                      "files": len(arrays)}
    if images:
        if importlib.util.find_spec("PIL") is None:
            raise QuantizationError(f"{what} {path} holds images but Pillow is not installed: "
                                    "install it or give .npy/.npz files")
        return _image_batches(images, specs, batch_size, image_options), {
            "source": str(path), "kind": "images", "files": len(images),
            "preprocessing": {"resize": "to the input's height x width", "resample": image_options.resample,
                              "scale": image_options.scale, "mean": list(image_options.mean),
                              "std": list(image_options.std), "layout": "NCHW"}}
    raise QuantizationError(f"{what} folder {path} holds no .npy, .npz or image files")


def _array_file_batches(files: list[Path], specs: list[InputSpec], batch_size: int,
                        what: str) -> Iterator[tuple[torch.Tensor, ...]]:
    """Samples from array files, regrouped into batches of ``batch_size``."""
    pending: list[list[np.ndarray]] = [[] for _ in specs]
    count = 0
    for path in files:
        try:
            arrays = _read_arrays(path, specs)
        except (OSError, ValueError) as exc:
            raise QuantizationError(f"{what} file {path} cannot be read: {exc}") from None
        n = None
        for i, (spec, array) in enumerate(zip(specs, arrays)):
            if spec.shape is not None and array.ndim == len(spec.shape) - 1:
                array = array[None]
            spec.check(array, f"{what} file {path.name}")
            if n is not None and array.shape[0] != n:
                raise QuantizationError(f"{what} file {path.name}: inputs have different sample counts")
            n = array.shape[0]
            pending[i].append(array)
        count += n or 0
        while count >= batch_size:
            yield _take(pending, batch_size)
            count -= batch_size
    if count:
        yield _take(pending, count)


def _read_arrays(path: Path, specs: list[InputSpec]) -> list[np.ndarray]:
    if path.suffix.lower() == ".npy":
        if len(specs) != 1:
            raise QuantizationError(f"{path.name}: a .npy file holds one array but the model has inputs "
                                    f"{[s.name for s in specs]}; use .npz files keyed by input name")
        return [np.load(path, allow_pickle=False)]
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if len(specs) == 1 and len(keys) == 1:
            return [archive[keys[0]]]
        missing = [s.name for s in specs if s.name not in keys]
        if missing:
            raise QuantizationError(f"{path.name} has arrays {keys} but not the input(s) {missing}")
        return [archive[s.name] for s in specs]


def _take(pending: list[list[np.ndarray]], n: int) -> tuple[torch.Tensor, ...]:
    out = []
    for i, chunks in enumerate(pending):
        whole = np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]
        out.append(torch.from_numpy(np.ascontiguousarray(whole[:n])))
        pending[i] = [whole[n:]] if whole.shape[0] > n else []
    return tuple(out)


def _image_batches(files: list[Path], specs: list[InputSpec], batch_size: int,
                   options: ImageOptions) -> Iterator[tuple[torch.Tensor, ...]]:
    from PIL import Image

    if len(specs) != 1 or specs[0].shape is None or len(specs[0].shape) != 4 or \
            any(d is None for d in specs[0].shape[1:]):
        raise QuantizationError("image calibration data needs a single NCHW input with known channels, height "
                                "and width: give --shape 1,C,H,W")
    _, channels, height, width = specs[0].shape
    if channels not in (1, 3):
        raise QuantizationError(f"image calibration data needs 1 or 3 channels, the input has {channels}")
    mean = np.asarray(options.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(options.std, dtype=np.float32).reshape(-1, 1, 1)
    resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "bicubic": Image.BICUBIC}[options.resample]
    batch: list[np.ndarray] = []
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L").resize((width, height), resample)  # type: ignore[arg-type]
            array = np.asarray(image, dtype=np.float32) * options.scale
        array = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
        batch.append((array - mean) / std)
        if len(batch) == batch_size:
            yield (torch.from_numpy(np.stack(batch)),)
            batch = []
    if batch:
        yield (torch.from_numpy(np.stack(batch)),)


def _iterable_batches(source: Iterable[Any], specs: list[InputSpec]) -> Iterator[tuple[torch.Tensor, ...]]:
    for item in source:
        yield _as_batch(item, specs)


def _as_batch(item: Any, specs: list[InputSpec]) -> tuple[torch.Tensor, ...]:
    if isinstance(item, Mapping):
        missing = [s.name for s in specs if s.name not in item]
        if missing:
            raise QuantizationError(f"a calibration batch is missing input(s) {missing}")
        values = [item[s.name] for s in specs]
    elif isinstance(item, (tuple, list)):
        if len(item) < len(specs):
            raise QuantizationError(f"a calibration batch has {len(item)} item(s); the model needs {len(specs)}")
        values = list(item[:len(specs)])
    else:
        values = [item]
        if len(specs) != 1:
            raise QuantizationError(f"the model has inputs {[s.name for s in specs]}: give batches as tuples or "
                                    "dicts keyed by input name")
    tensors = []
    for spec, value in zip(specs, values):
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if spec.shape is not None and tensor.dim() == len(spec.shape) - 1:
            tensor = tensor.unsqueeze(0)
        tensors.append(tensor.detach().cpu())
    return tuple(tensors)


# ---------------------------------------------------------------------------------- checks
def _capped(batches: Iterable[tuple[torch.Tensor, ...]], samples: int, batch_size: int,
            exact: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
    """At most ``samples`` samples, in batches of at most ``batch_size`` (of exactly
    ``batch_size`` when ``exact``: a model with a fixed batch size runs on nothing else, so
    samples that do not fill a batch are left out)."""
    done = 0
    pending: list[tuple[torch.Tensor, ...]] = []
    pending_count = 0
    for batch in batches:
        n = int(batch[0].shape[0]) if batch[0].dim() else 1
        if exact:
            pending.append(batch)
            pending_count += n
            if pending_count < batch_size:
                continue
            whole = tuple(torch.cat(parts) for parts in zip(*pending))
            usable = pending_count - pending_count % batch_size
            rest = tuple(t[usable:] for t in whole)
            pending, pending_count = ([rest], pending_count - usable) if pending_count > usable else ([], 0)
            batch, n = tuple(t[:usable] for t in whole), usable
        for start in range(0, n, batch_size):
            take = min(batch_size, n - start, samples - done)
            if take <= 0 or (exact and take < batch_size):
                return
            yield tuple(t[start:start + take] for t in batch)
            done += take
        if done >= samples:
            return


def _checked(batches: Iterator[tuple[torch.Tensor, ...]], specs: list[InputSpec], samples: int,
             what: str) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shape and dtype checks per batch; an empty source is an error, raised on first use."""
    seen = 0
    for batch in batches:
        converted = []
        for spec, tensor in zip(specs, batch):
            spec.check(tensor, what)
            dtype = spec.torch_dtype
            converted.append(tensor.to(dtype) if tensor.dtype != dtype else tensor)
        seen += int(batch[0].shape[0])
        yield tuple(converted)
    if seen == 0:
        raise QuantizationError(f"{what} is empty: no samples to calibrate on")


def _show(dims: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
