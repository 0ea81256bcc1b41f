"""Input recipes: realistic data for each input of a corpus model, at any size.

A model that is only fed Gaussian noise can hide errors that real data exposes (saturated
activations, empty detections, silent frames), so each recipe makes data of the kind the model was
trained on: real photographs from scikit-image, rendered lines of text, speech-like audio, real
bytes of a text file, and zeros for recurrent states (what the packages feed at the first chunk).

A recipe is a frozen dataclass, so the corpus table stays data: its ``shape`` names the size
variables (``"batch"``, ``"h"``, ``"w"``, ``"samples"``...) that each size case binds, and
``describe()`` says in words what it feeds, for ``docs/real_models.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np

Dim = int | str
Sizes = Mapping[str, int]

# The photographs cycled through a batch: varied content (faces, animals, objects, scenes).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
TEXT_LINES = ("Invoice 2024-07 total: 1,284.50 EUR", "The quick brown fox jumps over 13 lazy dogs",
              "onnx2fx converts ONNX to PyTorch", "Tel. +49 30 1234567  Fax 7654321")
AUDIO_RATE = 16_000
# Real bytes: the start of a Python source file and of an HTML page, as a file-type model sees them.
SAMPLE_FILES = (
    b'#!/usr/bin/env python3\n"""Resize every image in a folder."""\nimport sys\nfrom pathlib import Path\n\n'
    b"from PIL import Image\n\n\ndef main(folder: str, width: int) -> None:\n    for path in sorted(Path(folder)"
    b'.glob("*.jpg")):\n        with Image.open(path) as image:\n            ratio = width / image.width\n'
    b"            image.resize((width, round(image.height * ratio))).save(path.with_suffix('.png'))\n\n\n"
    b'if __name__ == "__main__":\n    main(sys.argv[1], int(sys.argv[2]))\n',
    b'<!DOCTYPE html>\n<html lang="en">\n<head>\n  <meta charset="utf-8">\n  <title>Quarterly report</title>\n'
    b'  <link rel="stylesheet" href="style.css">\n</head>\n<body>\n  <h1>Results</h1>\n  <table>\n'
    b"    <tr><th>Quarter</th><th>Revenue</th></tr>\n    <tr><td>Q1</td><td>1.2M</td></tr>\n"
    b"    <tr><td>Q2</td><td>1.5M</td></tr>\n  </table>\n</body>\n</html>\n",
)


def resolve(shape: tuple[Dim, ...], sizes: Sizes) -> tuple[int, ...]:
    """Replace each named size in ``shape`` by its value in ``sizes``."""
    return tuple(sizes[d] if isinstance(d, str) else d for d in shape)


@cache
def _photo(name: str) -> np.ndarray:
    from skimage import color, data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = color.gray2rgb(image)
    return np.ascontiguousarray(image[..., :3])


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _text_image(text: str, height: int, width: int) -> np.ndarray:
    """Dark text on a light background: one line filling the height (an OCR crop), or for a tall
    image a page of lines (what a text detector sees)."""
    from PIL import Image, ImageDraw, ImageFont

    lines = max(1, height // 40)  # a crop of one line, or a page of several
    pitch = height / lines
    font = ImageFont.load_default(size=max(8, int(pitch * 0.6)))
    canvas = Image.new("RGB", (width, height), (236, 232, 225))
    draw = ImageDraw.Draw(canvas)
    for line in range(lines):
        words = TEXT_LINES[(TEXT_LINES.index(text) + line) % len(TEXT_LINES)]
        draw.text((2 + 7 * (line % 3), line * pitch + pitch * 0.15), words, fill=(20, 24, 32), font=font)
    return np.asarray(canvas)


def _normalise(images: np.ndarray, layout: str, mean: tuple[float, ...], std: tuple[float, ...],
               scale: float, gray: bool) -> np.ndarray:
    batch = images.astype(np.float32) * np.float32(scale)
    if gray:
        batch = batch @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        batch = batch[..., None]
        mean, std = mean[:1], std[:1]
    batch = (batch - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return np.ascontiguousarray(batch if layout == "NHWC" else batch.transpose(0, 3, 1, 2), dtype=np.float32)


def _image_size(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if layout == "NHWC" else (shape[0], shape[2], shape[3])


@dataclass(frozen=True)
class Photo:
    """Real photographs (scikit-image's sample images), resized and normalised as the package does."""

    shape: tuple[Dim, ...]
    layout: str = "NCHW"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1 / 255

    def make(self, sizes: Sizes) -> np.ndarray:
        batch, height, width = _image_size(resolve(self.shape, sizes), self.layout)
        images = np.stack([_resized(_photo(PHOTOS[i % len(PHOTOS)]), height, width) for i in range(batch)])
        return _normalise(images, self.layout, self.mean, self.std, self.scale, gray=False)

    def describe(self) -> str:
        return f"photos {self.layout} {_dims(self.shape)}, x*{self.scale:.4g} - {self.mean} / {self.std}"


@dataclass(frozen=True)
class TextImage:
    """Rendered lines of text (PIL's default font), as an OCR recogniser or detector receives them."""

    shape: tuple[Dim, ...]
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    scale: float = 1 / 255
    gray: bool = False

    def make(self, sizes: Sizes) -> np.ndarray:
        batch, height, width = _image_size(resolve(self.shape, sizes), "NCHW")
        images = np.stack([_text_image(TEXT_LINES[i % len(TEXT_LINES)], height, width) for i in range(batch)])
        return _normalise(images, "NCHW", self.mean, self.std, self.scale, gray=self.gray)

    def describe(self) -> str:
        return f"rendered text {'gray ' if self.gray else ''}{_dims(self.shape)}"


def speech_like(samples: int, seed: int) -> np.ndarray:
    """Voiced syllables: a harmonic series on a gliding pitch, under a 4 Hz syllable envelope,
    plus a little noise; peak about 0.5, as normalised 16 kHz speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples, dtype=np.float64) / AUDIO_RATE
    pitch = 120 + (30 * seed) % 90 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / AUDIO_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + seed), 0, None) ** 2
    signal = 0.35 * envelope * voiced + 0.01 * rng.standard_normal(samples)
    return signal.astype(np.float32)


@dataclass(frozen=True)
class Audio:
    """Speech-like audio, one clip per batch row; ``channel_last`` adds a trailing channel axis."""

    shape: tuple[Dim, ...]
    scale: float = 1.0

    def make(self, sizes: Sizes) -> np.ndarray:
        shape = resolve(self.shape, sizes)
        rows = [speech_like(shape[1], seed) * self.scale for seed in range(shape[0])]
        return np.stack(rows).reshape(shape).astype(np.float32)

    def describe(self) -> str:
        scale = f" x{self.scale:g}" if self.scale != 1.0 else ""
        return f"speech-like audio {_dims(self.shape)}{scale}"


@dataclass(frozen=True)
class AudioFrames:
    """Consecutive overlapping windows of one speech-like clip: ``(frames, width)``, each window
    starting ``hop`` samples after the previous one (a chunked VAD's context plus chunk)."""

    shape: tuple[Dim, ...]
    hop: int

    def make(self, sizes: Sizes) -> np.ndarray:
        frames, width = resolve(self.shape, sizes)
        clip = speech_like(self.hop * frames + width, seed=1)
        return np.stack([clip[i * self.hop:i * self.hop + width] for i in range(frames)])

    def describe(self) -> str:
        return f"speech-like audio windows {_dims(self.shape)}, hop {self.hop}"


@dataclass(frozen=True)
class Spectrogram:
    """Log-magnitude spectrogram of speech-like audio, pooled to ``shape[-2]`` frames by
    ``shape[-1]`` bands (or, with ``transpose``, bands by frames): the features a wake-word or
    keyword model reads, with a batch axis and optional trailing singleton axes."""

    shape: tuple[Dim, ...]
    frames_axis: int = 1
    scale: float = 1.0

    def make(self, sizes: Sizes) -> np.ndarray:
        shape = resolve(self.shape, sizes)
        core = [s for i, s in enumerate(shape) if i > 0 and s != 1]
        frames, bands = shape[self.frames_axis], int(np.prod(core)) // shape[self.frames_axis]
        out = []
        for seed in range(shape[0]):
            clip = speech_like(160 * frames + 400, seed)
            windows = np.stack([clip[i * 160:i * 160 + 400] * np.hanning(400) for i in range(frames)])
            magnitude = np.abs(np.fft.rfft(windows, axis=1))[:, 1:]
            pooled = np.stack([chunk.mean(axis=1) for chunk in np.array_split(magnitude, bands, axis=1)], axis=1)
            out.append(np.log(pooled + 1e-3) * self.scale)
        return np.stack(out).reshape(shape).astype(np.float32)

    def describe(self) -> str:
        return f"log spectrogram of speech-like audio {_dims(self.shape)}"


@dataclass(frozen=True)
class FileBytes:
    """Real file bytes as token ids (0..255), right-padded with ``pad`` to the model's width."""

    shape: tuple[Dim, ...]
    pad: int = 256
    dtype: str = "int32"

    def make(self, sizes: Sizes) -> np.ndarray:
        batch, width = resolve(self.shape, sizes)
        rows = np.full((batch, width), self.pad, dtype=self.dtype)
        for i in range(batch):
            content = np.frombuffer(SAMPLE_FILES[i % len(SAMPLE_FILES)], dtype=np.uint8)[:width]
            rows[i, :content.size] = content
        return rows

    def describe(self) -> str:
        return f"bytes of real text files {_dims(self.shape)} ({self.dtype}, pad {self.pad})"


@dataclass(frozen=True)
class Zeros:
    """A recurrent state at the start of a stream: what the packages pass for the first chunk."""

    shape: tuple[Dim, ...]

    def make(self, sizes: Sizes) -> np.ndarray:
        return np.zeros(resolve(self.shape, sizes), dtype=np.float32)

    def describe(self) -> str:
        return f"zero state {_dims(self.shape)}"


@dataclass(frozen=True)
class Scalar:
    """A 0-d input such as a sample rate; ``value`` may name a size variable."""

    value: Dim
    dtype: str = "int64"

    def make(self, sizes: Sizes) -> np.ndarray:
        return np.array(sizes[self.value] if isinstance(self.value, str) else self.value, dtype=self.dtype)

    def describe(self) -> str:
        return f"scalar {self.dtype} {self.value}"


Recipe = Photo | TextImage | Audio | AudioFrames | Spectrogram | FileBytes | Zeros | Scalar


def _dims(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
