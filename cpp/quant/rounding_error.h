// The weight range search's inner loop (onnx2fx.quantization.weight_search).
//
// A per-channel search scores a few dozen candidate ranges for every output channel of every
// quantized layer; each score rounds the channel's weights on the candidate's grid and sums the
// error. Done with whole-tensor torch operations, that is ten passes over the layer's weights per
// candidate, each through memory; here each channel's row stays in the cache while every candidate
// is scored on it, in one pass per candidate.
#pragma once

#include <cstddef>
#include <span>

namespace onnx2fx {

// The rounding error of every row of `rows` (rows x width, row-major) on every candidate grid:
// `scale` and `zero_point` are candidates x rows. For candidate k and row r, each weight w becomes
//   e = (clamp(round(w / s) + z, qmin, qmax) - z) * s - w
// in float32, operation by operation as torch computes
// torch.div(w, s).round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s).sub_(w) (round half to even).
//
// The score written to out[k * rows + r] (double) is sum(e^2) when `mean` and `var` are empty; else
// sum(e^2 * var) + sum(e * mean)^2, the expected squared output error of a linear layer whose inputs
// have those per-position means and variances (independent inputs). `mean` and `var` are then
// groups x width, row r using group r / (rows / groups). Each of eight lanes sums 16 values in float
// at a time; those partial sums are added in double.
//
// Throws std::invalid_argument on inconsistent sizes. `threads` > 1 splits the rows.
void rounding_errors(std::span<const float> rows, std::size_t width, std::span<const float> scale,
                     std::span<const float> zero_point, float qmin, float qmax, std::span<const float> mean,
                     std::span<const float> var, std::span<double> out, int threads = 1);

}  // namespace onnx2fx
