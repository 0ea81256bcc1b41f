"""Weight range search: per output channel, the clipping range whose quantized weights change the
layer's output least, and (when the config allows it) the choice between a symmetric and an
asymmetric grid per tensor.

Weights are static, so the search is exact: every candidate range is realised as the encoding the
export writes (float32 scale, rounded zero point) and scored on the weights it reproduces, all
channels at once. Plain min/max keeps the largest weight of each channel exact and pays for it with
a coarse step for every other weight; at 4 bits (15 steps) one outlier per channel costs most of a
layer's signal, and clipping it is cheaper than the rounding noise it causes.

The score is the squared weight error, or, when the layer's input statistics were gathered during
calibration (:class:`LayerInputs`, done for the ``mse`` weight scheme), the expected squared error
of the layer's output, ``e^T E[x x^T] e``. The difference matters: a ReLU input is all positive and
neighbouring pixels move together, so the *sum* of a channel's weight errors reaches the output as
an offset, and a range that is best for the weights alone can be far from best for the output.

The squared error and the diagonal-and-mean form of the output error are scored by a native kernel
(``_core.rounding_errors``: every candidate on a channel's row while the row is in the cache, the
same float32 rounding as the export); a full matrix of input moments makes the exact score a matrix
product per candidate, so the search runs on a cheaper part of it and the best few ranges of each
channel are scored exactly (see :func:`search_ranges`).

The search is coarse-to-fine: ``coarse`` shrink factors of the smallest grid that covers the
channel (``1`` down to ``floor``; a signed symmetric grid uses its extra negative level), then
``fine`` factors within one coarse step of each channel's best. Asymmetric grids then move each end
on its own (one round of coordinate descent: the low end with the high end fixed, then the high
end), since a skewed channel wants a different clip on each side. The min/max encoding is always a
candidate, so the result never scores worse than min/max.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _core
from .grid import Encoding, QuantGrid

# An asymmetric grid costs integer kernels a zero-point correction per output channel: it is chosen
# over the configured symmetric grid only when it removes at least this share of the weight error.
ASYMMETRIC_GAIN = 0.1


def channel_rows(weight: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``weight`` as ``(channels, values)`` float32 rows: one row per channel along ``axis``, or a
    single row for a per-tensor encoding."""
    w = weight.detach().float()
    if axis is None:
        return w.reshape(1, -1)
    return w.movedim(axis, 0).reshape(w.shape[axis], -1)


def quantization_errors(rows: torch.Tensor, lo: np.ndarray, hi: np.ndarray, grid: QuantGrid,
                        symmetric: bool, moments: InputMoments | DiagonalMoments | None = None) -> torch.Tensor:
    """Error per channel of ``rows`` on the realised encodings of ``[lo, hi]`` (float64): the
    squared weight error, or with ``moments`` the expected squared error it causes in the layer's
    output, ``e^T E[x x^T] e`` (see :class:`InputMoments`).

    ``lo`` and ``hi`` are ``(channels,)``, or ``(candidates, channels)`` to score several ranges
    at once (the result is then ``(candidates, channels)``).
    """
    enc = Encoding.from_range(lo, hi, grid, symmetric)
    if rows.numel() == 0:  # no weights, no error (the kernel wants whole, non-empty rows)
        return torch.zeros(np.shape(lo), dtype=torch.float64)
    diagonal = moments.diagonal_terms() if moments is not None else None
    if moments is None or diagonal is not None:
        # the squared error, or the diagonal-and-mean form: the native kernel scores every candidate
        # on each row while the row is in the cache (the same float32 rounding as below)
        candidates = int(np.prod(np.shape(lo)[:-1], dtype=np.int64))
        out = np.empty((candidates, rows.shape[0]), dtype=np.float64)
        mean, var = diagonal if diagonal is not None else (None, None)
        _core.rounding_errors(_contiguous(rows), enc.scale.reshape(candidates, -1),
                              enc.zero_point.astype(np.float32).reshape(candidates, -1), float(grid.qmin),
                              float(grid.qmax), mean, var, out, torch.get_num_threads())
        return torch.from_numpy(out.reshape(np.shape(lo)))
    scale = torch.from_numpy(enc.scale.reshape(*np.shape(lo), 1))
    zero_point = torch.from_numpy(enc.zero_point.astype(np.float32).reshape(*np.shape(lo), 1))
    # in place: this runs for every candidate over every weight of the layer
    diff = torch.div(rows, scale).round_().add_(zero_point).clamp_(grid.qmin, grid.qmax)
    diff.sub_(zero_point).mul_(scale).sub_(rows)
    return moments.output_errors(diff)


def _contiguous(rows: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(rows.detach().numpy(), dtype=np.float32)


# Candidate ranges are scored together in chunks of at most this many weight values (a chunk's
# rounding errors are one tensor, and with input moments one matrix product).
CANDIDATE_VALUES = 1 << 20


def search_ranges(rows: torch.Tensor, grid: QuantGrid, symmetric: bool, coarse: int = 20, fine: int = 11,
                  floor: float = 0.1, moments: InputMoments | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, error)`` per row: the clipped range with the smallest squared weight error (or,
    with ``moments``, the smallest expected squared error of the layer's output).

    Ranges always contain zero (zero must be exact); ``error`` is the squared error of the chosen
    encoding, per row, so two grids can be compared on the same weights.

    With a full matrix of input moments over a wide patch, the exact score is a matrix product per
    candidate; the search then runs on its diagonal-and-principal-direction part (a pass over the
    weights per candidate), and only each row's :data:`EXACT_FINALISTS` best ranges by that score,
    with the min/max range, are scored exactly to pick the result.
    """
    if moments is not None and moments.matrix is not None and rows.shape[1] >= TWO_STAGE_WIDTH:
        proxy = moments.principal_proxy()
        seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        _search(rows, grid, symmetric, coarse, fine, floor, proxy, seen)
        lo, hi = _finalists(seen)
        err = quantization_errors(rows, lo, hi, grid, symmetric, moments).numpy()
        pick = np.argmin(err, axis=0)  # the first of equals: min/max (row 0) wins a tie, as in the search
        columns = np.arange(rows.shape[0])
        return lo[pick, columns], hi[pick, columns], err[pick, columns]
    return _search(rows, grid, symmetric, coarse, fine, floor, moments, None)


# A full-moment layer whose patch is at least this wide is searched on the cheaper score first (below
# it the exact product costs little more than the rounding itself).
TWO_STAGE_WIDTH = 128
# Ranges per row scored exactly after a search on the cheaper score (besides the min/max range).
EXACT_FINALISTS = 4


def _finalists(seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` as ``(1 + EXACT_FINALISTS, rows)``: the first range scored (min/max), then each
    row's best distinct ranges by the score they were searched on (repeated where a row has fewer)."""
    # (rows, candidates): each row's candidates lie together in memory for the sort
    lo = np.concatenate([np.broadcast_to(s[0], s[2].shape) for s in seen]).T
    hi = np.concatenate([np.broadcast_to(s[1], s[2].shape) for s in seen]).T
    err = np.concatenate([s[2] for s in seen]).T
    order = np.argsort(err, axis=1, kind="stable")
    lo, hi = np.take_along_axis(lo, order, axis=1), np.take_along_axis(hi, order, axis=1)
    # a range scored twice has the same score both times, so it sorts next to itself: its first place counts
    fresh = np.ones(lo.shape, dtype=bool)
    fresh[:, 1:] = (lo[:, 1:] != lo[:, :-1]) | (hi[:, 1:] != hi[:, :-1])
    place = np.cumsum(fresh, axis=1) - 1  # the place among the row's distinct ranges
    take = np.where(fresh & (place < EXACT_FINALISTS), place, EXACT_FINALISTS)  # EXACT_FINALISTS: not taken
    rows = np.arange(lo.shape[0])[:, None]
    best_lo = np.repeat(lo[:, :1], EXACT_FINALISTS + 1, axis=1)  # fewer distinct ranges: the best again
    best_hi = np.repeat(hi[:, :1], EXACT_FINALISTS + 1, axis=1)
    best_lo[rows, take], best_hi[rows, take] = lo, hi
    minmax_lo, minmax_hi, _ = seen[0]
    return (np.concatenate([minmax_lo, best_lo[:, :EXACT_FINALISTS].T]),
            np.concatenate([minmax_hi, best_hi[:, :EXACT_FINALISTS].T]))


def _search(rows: torch.Tensor, grid: QuantGrid, symmetric: bool, coarse: int, fine: int, floor: float,
            moments: InputMoments | DiagonalMoments | None, seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coarse-to-fine search of :func:`search_ranges` on the score ``moments`` gives; every range
    scored, with its scores, is appended to ``seen`` when given."""
    lo0 = rows.amin(dim=1).clamp(max=0).double().numpy()
    hi0 = rows.amax(dim=1).clamp(min=0).double().numpy()
    # what the minmax weight scheme writes (+-absmax on a symmetric grid): the search starts there
    minmax = (-np.maximum(-lo0, hi0), np.maximum(-lo0, hi0)) if symmetric else (lo0.copy(), hi0.copy())
    if symmetric:  # one scale for both sides: shrink both ends together
        # the smallest signed grid [qmin, qmax] x scale that covers the channel uses its extra
        # negative level: scale = max(-lo / -qmin, hi / qmax) (an unsigned grid starts at zero)
        magnitude = np.maximum(-lo0 * grid.qmax / -grid.qmin, hi0) if grid.signed else np.maximum(-lo0, hi0)
        lo0, hi0 = -magnitude, magnitude
    best_lo, best_hi = minmax
    best_err = quantization_errors(rows, best_lo, best_hi, grid, symmetric, moments).numpy()
    if seen is not None:
        seen.append((best_lo.copy()[None], best_hi.copy()[None], best_err.copy()[None]))
    native = moments is None or moments.diagonal_terms() is not None  # no large intermediate tensors

    def search(factors_of: np.ndarray, side: str) -> None:
        """Try every factor in ``factors_of`` (rows: candidates, columns: channels) on ``side``,
        scoring the candidates together (the exact matrix product in chunks of
        :data:`CANDIDATE_VALUES` weight values: its rounding errors are one tensor)."""
        base_lo, base_hi = best_lo.copy(), best_hi.copy()
        lo = lo0 * factors_of if side in ("both", "lo") else np.broadcast_to(base_lo, factors_of.shape)
        hi = hi0 * factors_of if side in ("both", "hi") else np.broadcast_to(base_hi, factors_of.shape)
        chunk = len(factors_of) if native else max(1, CANDIDATE_VALUES // max(rows.numel(), 1))
        for start in range(0, len(factors_of), chunk):
            part_lo, part_hi = lo[start:start + chunk], hi[start:start + chunk]
            err = quantization_errors(rows, part_lo, part_hi, grid, symmetric, moments).numpy()
            if seen is not None:
                seen.append((np.array(part_lo), np.array(part_hi), err))
            # candidate by candidate, in order: a tie keeps the earlier one, as one at a time did
            for k in range(len(err)):
                better = err[k] < best_err
                best_err[better] = err[k][better]
                best_lo[better] = part_lo[k][better]
                best_hi[better] = part_hi[k][better]

    def ratio(value: np.ndarray, full: np.ndarray) -> np.ndarray:
        return np.divide(value, full, out=np.ones_like(full), where=full != 0)

    channels = rows.shape[0]
    step = (1.0 - floor) / coarse
    coarse_factors = np.repeat(np.linspace(1.0, floor, coarse + 1)[:, None], channels, axis=1)
    search(coarse_factors, "both")
    best_f = ratio(best_hi, hi0) if symmetric else np.maximum(ratio(best_lo, lo0), ratio(best_hi, hi0))
    search(np.clip(best_f[None, :] + np.linspace(-step, step, fine)[:, None], floor / 2, 1.0), "both")
    if not symmetric:
        for side, full in (("lo", lo0), ("hi", hi0)):
            search(coarse_factors, side)
            f = ratio(best_lo if side == "lo" else best_hi, full)
            search(np.clip(f[None, :] + np.linspace(-step, step, fine)[:, None], floor / 2, 1.0), side)
    return best_lo, best_hi, best_err


def searched_encoding(weight: torch.Tensor, axis: int | None, onnx_axis: int | None, bits: int, symmetric: bool,
                      choose_symmetry: bool = False, moments: InputMoments | None = None) -> Encoding:
    """The encoding of ``weight`` from :func:`search_ranges`, per channel along ``axis`` (torch layout;
    ``onnx_axis`` is the same axis in the ONNX initializer).

    With ``choose_symmetry`` a symmetric configuration may become asymmetric for this tensor (on the
    unsigned grid), when that removes at least :data:`ASYMMETRIC_GAIN` of the squared error.
    """
    rows = channel_rows(weight, axis)
    grid = QuantGrid(bits, symmetric)
    if moments is not None and not moments.fits(rows):
        moments = None
    lo, hi, err = search_ranges(rows, grid, symmetric, moments=moments)
    if choose_symmetry and symmetric:
        other = QuantGrid(bits, False)
        a_lo, a_hi, a_err = search_ranges(rows, other, False, moments=moments)
        if a_err.sum() < (1.0 - ASYMMETRIC_GAIN) * err.sum():
            return Encoding.from_range(a_lo, a_hi, other, False, onnx_axis)
    return Encoding.from_range(lo, hi, grid, symmetric, onnx_axis)


def weight_encoding(weight: torch.Tensor, axis: int | None, onnx_axis: int | None, bits: int, symmetric: bool,
                    scheme: str, symmetry: str = "config", moments: InputMoments | None = None) -> Encoding:
    """The encoding of one weight tensor under the config's resolved ``weight_scheme`` (``minmax``
    or ``mse``) and ``weight_symmetry`` (``config`` keeps the configured grid, ``search`` lets the
    searched range pick an asymmetric grid when it is clearly better)."""
    if scheme == "minmax":
        rows = channel_rows(weight, axis)
        lo = rows.amin(dim=1).clamp(max=0).double().numpy()
        hi = rows.amax(dim=1).clamp(min=0).double().numpy()
        return Encoding.from_range(lo, hi, QuantGrid(bits, symmetric), symmetric, onnx_axis)
    if scheme != "mse":
        raise ValueError(f"unknown weight scheme {scheme!r}")
    return searched_encoding(weight, axis, onnx_axis, bits, symmetric, choose_symmetry=symmetry == "search",
                             moments=moments)


# ---------------------------------------------------------------------------------- layer inputs
# A layer whose input patch has at most this many values gets the full second-moment matrix; a
# larger one only the mean and mean square per input channel (a D x D matrix per layer costs
# D^2 per patch to gather, which for wide layers would cost more than the layer itself).
FULL_MOMENTS = 512
# The full matrix is gathered from at most this many patches per batch (evenly strided): a 3x3
# convolution over a large image has thousands of patches per image, far more than D^2 needs.
MAX_PATCHES = 2048


class InputMoments:
    """Second moments of one layer's input, gathered during calibration, so that the weight search
    can score a weight error ``e`` (one row per output channel) by what it does to the output:
    ``E[(e . x)^2] = e^T E[x x^T] e``.

    The matrix ``E[x x^T]`` over the layer's input patch (``Conv2d``: the unfolded receptive field;
    ``Linear``: the input features) is kept whole up to :data:`FULL_MOMENTS` values (from at most
    :data:`MAX_PATCHES` patches per batch); above that it
    is approximated by ``diag(var) + mean mean^T`` from per-input-channel statistics, which still
    sees the error's mean, the part a ReLU input (all positive) turns into an output offset.

    A grouped convolution (a depthwise one: one input channel per group) keeps one matrix per
    group: an output channel only sees its group's input channels, so its weight row is scored on
    that group's patch. Depthwise layers need this most: a row is a single ``k x k`` kernel whose
    taps all see neighbouring pixels of one channel, which move together, so the *sum* of the
    kernel's rounding errors reaches the output, and the squared weight error does not see that.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.count = 0
        self.matrix: torch.Tensor | None = None  # sum of x x^T per group (groups, D, D) ...
        self.sums: torch.Tensor | None = None  # ... or sums of x and x^2 per input channel
        self.squares: torch.Tensor | None = None
        self.per_channel = 1  # patch values per input channel (the kernel size of a convolution)
        self.groups = int(getattr(module, "groups", 1))
        self._cache: tuple[int, tuple[torch.Tensor, ...]] | None = None  # (count, _normalized())
        self._proxy: tuple[tuple[torch.Tensor, ...], DiagonalMoments] | None = None  # (of _normalized(), proxy)

    @staticmethod
    def supports(module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and isinstance(module.padding, tuple))

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        m = self.module
        groups = self.groups
        if isinstance(m, nn.Linear):
            if x.shape[-1] <= FULL_MOMENTS:
                self._add_gram(x.reshape(1, -1, x.shape[-1]))
                return
            flat, per_channel = x.reshape(-1, x.shape[-1]), 1  # (positions, features)
            s, q = flat.sum(dim=0).double(), torch.square(flat).sum(dim=0).double()
        else:
            per_channel = int(np.prod(m.kernel_size))
            if x.shape[1] // groups * per_channel <= FULL_MOMENTS:
                self._add_gram(self._group_patches(x))
                return
            runs = x.flatten(2)  # (samples, channels, positions)
            s = runs.sum(dim=-1).double().sum(dim=0)
            q = torch.linalg.vector_norm(runs, dim=-1).double().square().sum(dim=0)
        # Sums in float32 along the positions (torch reduces those fast, in cascade), then in float64
        # across samples: a float64 reduction over the batch and spatial dims at once took 30 times as
        # long as the layer's own convolution. The squares of a convolution's input come as norms along
        # each channel's contiguous positions, which torch computes without a squared copy.
        self.sums = s if self.sums is None else self.sums + s
        self.squares = q if self.squares is None else self.squares + q
        self.count += x.numel() // x.shape[-1 if isinstance(m, nn.Linear) else 1]
        self.per_channel = per_channel

    def _group_patches(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution's input patches, ``(groups, patches, group width)``: at most
        :data:`MAX_PATCHES` of the batch's patches, evenly strided, gathered tap by tap from the
        padded input (only the kept patches are built: unfolding the whole batch first would cost
        ``k x k`` times the input, most of it thrown away)."""
        m = self.module
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = m.kernel_size, m.stride, m.dilation, m.padding
        n, c, h, w = x.shape
        out_h, out_w = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        total = n * out_h * out_w
        index = torch.arange(0, total, -(-total // MAX_PATCHES) if total > MAX_PATCHES else 1)
        image, place = index // (out_h * out_w), index % (out_h * out_w)
        rows, cols = (place // out_w) * sh, (place % out_w) * sw
        padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x  # (a zero pad would copy the input)
        taps = [padded[image, :, rows + i * dh, cols + j * dw] for i in range(kh) for j in range(kw)]
        patches = torch.stack(taps, dim=-1)  # (P, C, kh * kw): unfold's (channel, row, column) order
        return patches.reshape(index.numel(), self.groups, -1).transpose(0, 1)

    def _add_gram(self, patches: torch.Tensor) -> None:
        """Add ``sum x x^T`` of ``patches`` ``(groups, patches, D)`` (strided to :data:`MAX_PATCHES`)."""
        if patches.shape[1] > MAX_PATCHES:
            patches = patches[:, ::-(-patches.shape[1] // MAX_PATCHES)]
        # one batch's products in float32 (at most MAX_PATCHES terms), the running sum in float64
        gram = (patches.transpose(1, 2) @ patches).double()
        self.matrix = gram if self.matrix is None else self.matrix + gram
        self.count += patches.shape[1]

    def fits(self, rows: torch.Tensor) -> bool:
        """Whether these statistics describe ``rows`` (output channels x input patch)."""
        if self.count == 0 or rows.shape[0] % self.groups:
            return False
        if self.matrix is not None:
            return rows.shape[1] == self.matrix.shape[-1]
        return self.sums is not None and rows.shape[1] * self.groups == self.sums.numel() * self.per_channel

    def output_errors(self, diff: torch.Tensor) -> torch.Tensor:
        """``e^T E[x x^T] e`` for every row ``e`` of ``diff`` (``(..., rows, D)``; float64), each row on
        its group's moments.

        The product runs in float32: it only ranks candidate ranges of one layer against each other,
        and float64 would double the cost of the search's largest step for digits past the seventh.
        """
        *lead, count, width = diff.shape
        e = diff.float().reshape(*lead, self.groups, count // self.groups, width)  # (..., groups, rows, D)
        normalized = self._normalized()
        if len(normalized) == 1:
            (matrix,) = normalized
            errors = ((e @ matrix) * e).sum(dim=-1, dtype=torch.float64)
        else:
            mean, var = normalized
            errors = (e.square() @ var).squeeze(-1).double() + (e @ mean).squeeze(-1).double().square()
        return errors.reshape(*lead, count)

    def principal_proxy(self) -> DiagonalMoments:
        """A cheaper score for a full matrix: per group, ``M`` as its principal direction plus what
        remains on the diagonal, ``diag(M - l v v^T) + l v v^T`` (``l, v``: the largest eigenvalue
        and its vector, by power iteration). It keeps the part of an input's second moment that its
        mean contributes (for a ReLU input, most of it) and scores in one pass over the weights."""
        assert self.matrix is not None
        normalized = self._normalized()
        if self._proxy is not None and self._proxy[0] is normalized:  # asked again (the asymmetric search)
            return self._proxy[1]
        (matrix,) = normalized
        m = matrix.double()
        v = torch.ones(*m.shape[:-1], 1, dtype=torch.float64)
        for _ in range(POWER_STEPS):
            v = m @ v
            v = v / v.norm(dim=-2, keepdim=True).clamp_min(1e-300)
        value = (v.transpose(-1, -2) @ m @ v).clamp_min(0)  # (groups, 1, 1)
        direction = (value.sqrt() * v).squeeze(-1)
        rest = (torch.diagonal(m, dim1=-2, dim2=-1) - direction.square()).clamp_min(0)
        self._proxy = (normalized, DiagonalMoments(direction.float().numpy(), rest.float().numpy()))
        return self._proxy[1]

    def diagonal_terms(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, var)`` as ``(groups, D)`` float32 arrays where the errors are scored on them (the
        native kernel's form); ``None`` where the full matrix is kept."""
        normalized = self._normalized()
        if len(normalized) == 1:
            return None
        mean, var = normalized
        return (np.ascontiguousarray(mean.reshape(self.groups, -1).numpy()),
                np.ascontiguousarray(var.reshape(self.groups, -1).numpy()))

    def _normalized(self) -> tuple[torch.Tensor, ...]:
        """The float32 moments the errors are scored on, made once after the last observed batch:
        ``(E[x x^T],)`` per group, or ``(mean, var)`` per patch value, as ``(groups, D, 1)`` columns."""
        if self._cache is None or self._cache[0] != self.count:
            if self.matrix is not None:
                normalized: tuple[torch.Tensor, ...] = ((self.matrix / self.count).float(),)
            else:
                assert self.sums is not None and self.squares is not None
                mean = (self.sums / self.count).repeat_interleave(self.per_channel)
                var = (self.squares / self.count).repeat_interleave(self.per_channel) - mean.square()
                normalized = tuple(v.reshape(self.groups, -1, 1).float() for v in (mean, var.clamp(min=0)))
            self._cache = (self.count, normalized)
        return self._cache[1]


# Power iterations for the principal direction of a layer's input moments (an input's mean makes
# the largest eigenvalue stand far apart, so few are needed; the direction is only a search's guide).
POWER_STEPS = 30


class DiagonalMoments:
    """Input statistics of the diagonal-and-mean form, ``diag(var) + mean mean^T`` per group (see
    :meth:`InputMoments.principal_proxy`)."""

    matrix = None

    def __init__(self, mean: np.ndarray, var: np.ndarray) -> None:
        self._terms = (np.ascontiguousarray(mean, dtype=np.float32), np.ascontiguousarray(var, dtype=np.float32))

    def diagonal_terms(self) -> tuple[np.ndarray, np.ndarray]:
        return self._terms


class LayerInputs:
    """Gathers :class:`InputMoments` for the layers whose weights are quantized, while the
    calibration batches run (forward pre-hooks; the model runs in float then)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.moments = {name: InputMoments(m) for name, m in modules.items() if InputMoments.supports(m)}
        self._handles: list[Any] = []

    @classmethod
    def of_weights(cls, gm: nn.Module, weight_params: dict[str, str]) -> LayerInputs:
        """One entry per weight initializer that is the ``weight`` of a supported layer of ``gm``
        (``weight_params``: initializer -> parameter name)."""
        modules = {}
        for initializer, param in weight_params.items():
            path, _, attr = param.rpartition(".")
            if attr == "weight" and path:
                modules[initializer] = gm.get_submodule(path)
        return cls(modules)

    def __enter__(self) -> LayerInputs:
        for moments in self.moments.values():
            self._handles.append(moments.module.register_forward_pre_hook(
                lambda _module, args, moments=moments: moments.observe(args[0])))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
