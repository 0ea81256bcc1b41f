"""Calibrators: pick a quantization range for a tensor from the values it takes on real data.

They stream: each batch updates a fixed-size state (running min/max, or a histogram whose range
grows when a batch falls outside it) and no activation is ever stored, so memory does not grow
with the number of calibration samples or with the batch size.

- ``minmax``: the observed range. Exact, but one outlier stretches the grid for every value.
- ``percentile``: keep the central ``p`` percent of the observed distribution, clip the tails.
- ``mse``: the range whose expected squared quantization error (rounding noise inside, clipping
  error outside) is smallest: it trades a clipped tail against finer steps.
- ``entropy``: the clipping threshold that minimises the KL divergence between the magnitude
  histogram and its quantized version (TensorRT's calibration).

Weights are static, so their ranges come straight from the tensor (:func:`weight_ranges`),
per output channel when the config asks for it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch

from .grid import Encoding, QuantGrid
from .weight_search import channel_rows, search_ranges


class Calibrator(ABC):
    """Statistics of one tensor over all calibration batches."""

    def __init__(self) -> None:
        self.min = float("inf")
        self.max = float("-inf")
        self.count = 0  # elements seen
        self.batches = 0
        self.non_finite = 0  # NaN / inf elements ignored

    def observe(self, x: torch.Tensor) -> None:
        """Add one batch of values (any shape).

        This runs on every quantized activation of every calibration batch, so it reads the data
        as few times as it can: one ``aminmax`` pass, whose result also shows that every value is
        finite (NaN propagates into it, infinities are its extremes); only a batch with NaN or
        infinities pays for a second pass that drops them.
        """
        values = x.detach().reshape(-1)
        if values.dtype != torch.float32:
            values = values.float()
        self.batches += 1
        if values.numel() == 0:
            return
        lo_t, hi_t = torch.aminmax(values)
        lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = torch.isfinite(values)
            self.non_finite += int(values.numel() - int(finite.sum()))
            values = values[finite]
            if values.numel() == 0:
                return
            lo_t, hi_t = torch.aminmax(values)
            lo, hi = float(lo_t), float(hi_t)
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += values.numel()
        self._update(values, lo, hi)

    def _update(self, values: torch.Tensor, lo: float, hi: float) -> None:  # noqa: B027 - optional hook
        """Subclasses accumulate more than min/max here (``lo``/``hi``: this batch's extremes)."""

    @property
    def observed(self) -> bool:
        return self.count > 0

    @abstractmethod
    def compute_range(self, grid: QuantGrid, symmetric: bool) -> tuple[float, float]:
        """The ``(lo, hi)`` range to quantize to; always within the observed ``[min, max]``."""

    def encoding(self, grid: QuantGrid, symmetric: bool) -> Encoding:
        lo, hi = self.compute_range(grid, symmetric)
        return Encoding.from_range(lo, hi, grid, symmetric)


class MinMaxCalibrator(Calibrator):
    """The full observed range."""

    def compute_range(self, grid: QuantGrid, symmetric: bool) -> tuple[float, float]:
        return self.min, self.max


class HistogramCalibrator(Calibrator):
    """A histogram of ``bins`` equal bins over ``[lo, hi]`` that widens when a batch falls outside.

    Widening re-bins the old counts assuming values are spread evenly inside each old bin (the
    cumulative counts are interpolated at the new edges), so the state is always ``bins`` numbers.
    Exact zeros are counted separately: ReLU outputs are often half zeros, and those are exactly
    representable, so range searches must not charge them rounding noise.
    """

    def __init__(self, bins: int = 2048) -> None:
        super().__init__()
        self.bins = bins
        self.hist = np.zeros(bins, dtype=np.float64)
        self.lo = 0.0
        self.hi = 0.0
        self.zeros = 0

    def _update(self, values: torch.Tensor, lo: float, hi: float) -> None:
        if self.hist.sum() == 0:
            self.lo, self.hi = _nonempty(lo, hi)
        elif lo < self.lo or hi > self.hi:
            new_lo, new_hi = _nonempty(min(lo, self.lo), max(hi, self.hi))
            self.hist = rebin(self.hist, self.lo, self.hi, new_lo, new_hi, self.bins)
            self.lo, self.hi = new_lo, new_hi
        self.zeros += add_to_histogram(values, self.lo, self.hi, self.hist)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    @property
    def centers(self) -> np.ndarray:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    def magnitude_histogram(self, magnitude: float, keep_zeros: bool = False) -> np.ndarray:
        """The histogram of ``|x|`` on ``bins`` equal bins over ``[0, magnitude]``; exact zeros
        are left out unless ``keep_zeros``."""
        new_edges = np.linspace(0.0, magnitude, self.bins + 1)
        cdf = np.concatenate([[0.0], np.cumsum(self.hist)])
        edges = self.edges
        # Mass of x in [0, e] plus mass of x in [-e, 0], from the interpolated cumulative counts.
        at_zero = np.interp(0.0, edges, cdf, left=0.0, right=cdf[-1])
        positive = np.interp(new_edges, edges, cdf, left=0.0, right=cdf[-1]) - at_zero
        negative = at_zero - np.interp(-new_edges, edges, cdf, left=0.0, right=cdf[-1])
        hist = np.diff(positive + negative)
        # Exact zeros (ReLU outputs) are exact on every grid; left in, their spike would dominate
        # the divergence and push the threshold far down.
        if not keep_zeros:
            hist[0] = max(hist[0] - self.zeros, 0.0)
        return hist


class PercentileCalibrator(HistogramCalibrator):
    """Keep the central ``p`` percent of the observed values and clip the rest: a handful of
    outliers no longer decides the step size.

    ``p`` means what it means in onnxruntime's calibrator (``p = 99.999`` is the default in both),
    so a percentile carried over from there clips the same mass: an asymmetric grid cuts
    ``(100 - p) / 2`` percent from each tail; a symmetric grid, whose range is set by the larger
    magnitude, cuts ``100 - p`` percent of the largest magnitudes.
    """

    def __init__(self, percentile: float = 99.999, bins: int = 2048) -> None:
        super().__init__(bins)
        self.percentile = percentile

    def compute_range(self, grid: QuantGrid, symmetric: bool) -> tuple[float, float]:
        if not self.observed:
            return 0.0, 0.0
        cut = 1.0 - self.percentile / 100.0
        if symmetric:
            magnitude = max(abs(self.min), abs(self.max))
            if magnitude == 0.0:
                return 0.0, 0.0
            edges = np.linspace(0.0, magnitude, self.bins + 1)
            cdf = np.concatenate([[0.0], np.cumsum(self.magnitude_histogram(magnitude, keep_zeros=True))])
            threshold = float(np.interp((1.0 - cut) * cdf[-1], cdf, edges))
            return max(-threshold, self.min), min(threshold, self.max)
        cdf = np.concatenate([[0.0], np.cumsum(self.hist)]) / self.hist.sum()
        lo = float(np.interp(cut / 2.0, cdf, self.edges))
        hi = float(np.interp(1.0 - cut / 2.0, cdf, self.edges))
        return max(lo, self.min), min(hi, self.max)


class MSECalibrator(HistogramCalibrator):
    """Search the range with the smallest expected squared quantization error.

    For a candidate grid with step ``s`` over ``[a, b]``, a value inside costs ``s^2 / 12`` (the
    variance of uniform rounding noise) and a value outside costs its squared distance to the
    nearest end. Candidates shrink the observed ends independently (asymmetric grids) or together
    (symmetric grids), first in ``steps`` coarse steps, then in tenths of a step around the best;
    each candidate is evaluated with its realised, zero-point-rounded grid.
    """

    def __init__(self, bins: int = 2048, steps: int = 40) -> None:
        super().__init__(bins)
        self.steps = steps

    def compute_range(self, grid: QuantGrid, symmetric: bool) -> tuple[float, float]:
        if not self.observed:
            return 0.0, 0.0
        lo0, hi0 = min(self.min, 0.0), max(self.max, 0.0)
        one_sided = symmetric and not grid.signed and lo0 == 0.0  # an unsigned grid from zero
        if symmetric and not one_sided:
            lo0, hi0 = -max(-lo0, hi0), max(-lo0, hi0)

        def candidates(lo_factors: np.ndarray, hi_factors: np.ndarray) -> list[tuple[float, float]]:
            if symmetric:  # both ends shrink together
                return [(0.0 if one_sided else lo0 * f, hi0 * f) for f in hi_factors]
            return [(lo0 * f, hi0 * g) for f in lo_factors for g in hi_factors]

        coarse = np.linspace(1.0 / self.steps, 1.0, self.steps)
        a, b = self._best(candidates(coarse, coarse), grid, symmetric)
        # Refine around the coarse optimum: a coarse step is 1/steps of the range, and at 8 bits
        # the optimum often lies between two coarse candidates close to the observed ends.
        offsets = np.linspace(-1.0, 1.0, 21) / self.steps
        near_lo = np.clip((a / lo0 if lo0 < 0 else 1.0) + offsets, 0.1 / self.steps, 1.0)
        near_hi = np.clip((b / hi0 if hi0 > 0 else 1.0) + offsets, 0.1 / self.steps, 1.0)
        a, b = self._best([(a, b), *candidates(near_lo, near_hi)], grid, symmetric)
        return max(a, self.min), min(b, self.max)

    def _best(self, candidates: list[tuple[float, float]], grid: QuantGrid, symmetric: bool) -> tuple[float, float]:
        """The candidate range whose realised grid has the smallest expected error (the first on ties)."""
        # one vectorised encoding for all candidates (the same float32 grids as one at a time)
        realised = Encoding.from_range(np.array([a for a, _ in candidates]), np.array([b for _, b in candidates]),
                                       grid, symmetric)
        step = realised.scale.astype(np.float64)
        return candidates[int(np.argmin(self.expected_errors(realised.min, realised.max, step)))]

    def expected_errors(self, lo: np.ndarray, hi: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Expected total squared error of each candidate grid ``[lo_i, hi_i]`` with step ``step_i``.

        Bin centres inside the grid cost ``step^2 / 12`` each; those below (above) cost their squared
        distance to the grid's end, summed from prefix sums of the counts, ``count * centre`` and
        ``count * centre^2`` (``sum n (c - lo)^2 = S2 - 2 lo S1 + lo^2 S0``), so a candidate costs two
        binary searches rather than a pass over every bin.
        """
        counts = self.hist.copy()
        centers = self.centers
        zero_bin = int(np.clip(np.searchsorted(self.edges, 0.0, side="right") - 1, 0, self.bins - 1))
        counts[zero_bin] = max(counts[zero_bin] - self.zeros, 0.0)
        s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(counts * centers ** k)]) for k in range(3))
        below = np.searchsorted(centers, lo, side="left")  # bins [0, below) lie under the grid
        above = np.searchsorted(centers, hi, side="right")  # bins [above, bins) lie over it
        inside = s0[above] - s0[below]
        under = s2[below] - 2.0 * lo * s1[below] + lo ** 2 * s0[below]
        over = (s2[-1] - s2[above]) - 2.0 * hi * (s1[-1] - s1[above]) + hi ** 2 * (s0[-1] - s0[above])
        return inside * step ** 2 / 12.0 + np.maximum(under, 0.0) + np.maximum(over, 0.0)


class EntropyCalibrator(HistogramCalibrator):
    """TensorRT's KL-divergence calibration on the histogram of magnitudes.

    For each candidate threshold ``T`` the reference distribution ``P`` is the magnitude histogram
    up to ``T`` with everything beyond added to the last bin; ``Q`` merges those bins into as many
    levels as the grid has on one side of zero and spreads each level back over its non-empty
    bins. The threshold with the smallest ``KL(P || Q)`` wins; the range is ``[-T, T]`` clipped to
    what was observed (``[0, T]`` for tensors that are never negative). Exact zeros are left out
    of ``P``: they are exact on any grid.
    """

    def __init__(self, bins: int = 2048, max_candidates: int = 256) -> None:
        super().__init__(bins)
        self.max_candidates = max_candidates

    def compute_range(self, grid: QuantGrid, symmetric: bool) -> tuple[float, float]:
        if not self.observed:
            return 0.0, 0.0
        magnitude = max(abs(self.min), abs(self.max))
        if magnitude == 0.0:
            return 0.0, 0.0
        hist = self.magnitude_histogram(magnitude)
        one_sided = self.min >= 0 or self.max <= 0
        levels = grid.levels if one_sided and not grid.signed else grid.levels // 2
        threshold = kl_threshold(hist, magnitude, levels, self.max_candidates)
        return max(-threshold, self.min), min(threshold, self.max)

def kl_threshold(hist: np.ndarray, magnitude: float, levels: int, max_candidates: int = 256) -> float:
    """The clipping threshold (in value units) minimising ``KL(P || Q)``; see :class:`EntropyCalibrator`."""
    bins = hist.size
    width = magnitude / bins
    if bins <= levels:
        return magnitude
    stride = max(1, (bins - levels) // max_candidates)
    best_kl, best_i = np.inf, bins
    for i in list(range(levels, bins, stride)) + [bins]:
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        total = p.sum()
        if total <= 0:
            continue
        chunk = (np.arange(i) * levels) // i
        used = (hist[:i] > 0).astype(np.float64)
        level_sum = np.bincount(chunk, weights=hist[:i], minlength=levels)
        level_used = np.bincount(chunk, weights=used, minlength=levels)
        q = np.where(used > 0, level_sum[chunk] / np.maximum(level_used[chunk], 1.0), 0.0)
        p /= total
        q_total = q.sum()
        if q_total <= 0:
            continue
        q /= q_total
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * width


def make_calibrator(scheme: str, *, percentile: float = 99.999, bins: int = 2048) -> Calibrator:
    if scheme == "minmax":
        return MinMaxCalibrator()
    if scheme == "percentile":
        return PercentileCalibrator(percentile, bins)
    if scheme == "mse":
        return MSECalibrator(bins)
    if scheme == "entropy":
        return EntropyCalibrator(bins)
    raise ValueError(f"unknown calibration scheme {scheme!r}")


# ---------------------------------------------------------------------------------- weights
def weight_ranges(weight: torch.Tensor, axis: int | None, grid: QuantGrid, symmetric: bool,
                  scheme: str = "minmax") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (``axis``) or per-tensor ``(lo, hi)`` of a weight tensor.

    ``mse`` searches each channel's clipped range for the smallest squared error of the quantized
    weights (:func:`.weight_search.search_ranges`); it is exact (no histogram), weights are small.
    """
    rows = channel_rows(weight, axis)
    if scheme == "minmax":
        return rows.amin(dim=1).clamp(max=0).double().numpy(), rows.amax(dim=1).clamp(min=0).double().numpy()
    lo, hi, _ = search_ranges(rows, grid, symmetric)
    return lo, hi


# ---------------------------------------------------------------------------------- helpers
def add_to_histogram(values: torch.Tensor, lo: float, hi: float, hist: np.ndarray) -> int:
    """Add the float32 ``values`` to ``hist`` (float64, equal bins over ``[lo, hi]``) as
    ``torch.histc`` bins them, and return how many are exactly zero.

    On the CPU this is the native kernel (``_core.add_to_histogram``): one pass over the data on
    torch's intra-op threads, where ``torch.histc`` plus a zero count take several passes and most
    of the calibration time of percentile, MSE and entropy. Other devices use ``torch.histc``.
    """
    if values.device.type == "cpu":
        from .. import _core

        return int(_core.add_to_histogram(values.contiguous().numpy(), lo, hi, hist, torch.get_num_threads()))
    hist += torch.histc(values, hist.size, lo, hi).double().cpu().numpy()
    return int(values.numel() - int(torch.count_nonzero(values)))


def rebin(hist: np.ndarray, lo: float, hi: float, new_lo: float, new_hi: float, bins: int) -> np.ndarray:
    """Counts of ``hist`` (over ``[lo, hi]``) on ``bins`` equal bins over ``[new_lo, new_hi]``,
    assuming values are spread evenly inside each old bin."""
    edges = np.linspace(lo, hi, hist.size + 1)
    cdf = np.concatenate([[0.0], np.cumsum(hist)])
    new_edges = np.linspace(new_lo, new_hi, bins + 1)
    return np.diff(np.interp(new_edges, edges, cdf, left=0.0, right=cdf[-1]))


def _nonempty(lo: float, hi: float) -> tuple[float, float]:
    """A histogram needs a range of positive width even when every value is equal."""
    if hi > lo:
        return lo, hi
    pad = max(abs(lo), 1.0) * 1e-6
    return lo - pad, hi + pad
