// The histogram kernel of the calibration observers (onnx2fx.quantization.calibrators).
//
// Percentile, MSE and entropy calibration keep a histogram of every quantized activation over all
// calibration batches, so each batch's values are binned once per activation: the observers cost
// as much as the model's own forward pass when this is slow. torch.histc takes tens of nanoseconds
// per value on the CPU, and counting the exact zeros (ReLU outputs, which the range searches treat
// apart) is another pass over the tensor; this kernel does both in one pass, split over threads,
// computing the bins of a block of values with SIMD arithmetic before counting them.
#pragma once

#include <cstdint>
#include <span>

namespace onnx2fx {

// Adds to `counts` the values of `values` that lie in [lo, hi] (NaN never does), binned into
// counts.size() equal bins exactly as torch.histc(values, counts.size(), lo, hi) bins float32
// values: bin = int((v - lo) * bins / (hi - lo)) in float32 arithmetic, and v == hi in the last
// bin. Returns the number of values equal to zero (counted whether or not zero is in range).
//
// `lo < hi` and at least one bin are required (std::invalid_argument otherwise). `threads` > 1
// splits large inputs into that many contiguous parts with private counts, merged at the end;
// integer counts make the result independent of the split.
std::int64_t add_to_histogram(std::span<const float> values, float lo, float hi, std::span<double> counts,
                              int threads = 1);

}  // namespace onnx2fx
