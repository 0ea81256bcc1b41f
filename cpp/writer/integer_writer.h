// Writes a post-training-quantized copy of an ONNX model whose quantized region computes with
// integer operators only, from the original graph plus the same plan the QDQ writer takes (with
// every quantized tensor's encoding listed under `activations`, shared ones included).
//
// Two forms:
// - fixed point: between the inputs' QuantizeLinear and the outputs' DequantizeLinear only integer
//   tensors and standard integer operators: ConvInteger / MatMulInteger into int32, an int32 bias
//   Add, requantization by an integer multiplier and a rounding right shift (int64 Mul, Add, Mod,
//   Sub, Div, Clip, Cast), ReLU as an integer clamp at the zero point, data movement (MaxPool,
//   Reshape, Flatten, Transpose, ...) on the 8-bit tensors, and 256-entry lookup tables (Gather)
//   for element-wise non-linearities;
// - QOperator: QLinearConv, QLinearMatMul, and onnxruntime's com.microsoft QGemm, QLinearAdd,
//   QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearConcat, QLinearSoftmax, as
//   onnxruntime's own quantizer writes them.
//
// The graph is rebuilt node by node (names of the graph inputs and outputs are kept); nothing is
// written when a node cannot be lowered, unless float islands are allowed: then the node runs in
// float between DequantizeLinear and QuantizeLinear and is listed in the result.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "onnx/errors.h"
#include "writer/qdq_plan.h"

namespace onnx2fx {

enum class IntegerFormat { FixedPoint, QOperator };

// One requantization of the fixed-point form: y = clamp(zp + round_half_up(acc * multiplier / 2^shift)).
struct IntegerRequantization {
  std::string node;    // the source node whose result is requantized (the last one of a fused group)
  std::string tensor;  // the quantized tensor it produces
  std::vector<double> rescale;              // per channel: input scale x weight scale / output scale
  std::vector<std::int64_t> multiplier;     // per channel, in [2^30, 2^31]
  std::vector<std::int64_t> shift;          // per channel
  double max_relative_error = 0;            // max over channels of |multiplier 2^-shift - rescale| / rescale
};

struct IntegerStats {
  std::vector<IntegerRequantization> requantizations;  // fixed point only
  std::vector<std::string> float_islands;              // "node (op)" run in float
  std::size_t nodes_written = 0;
  std::uint64_t bytes_written = 0;
};

// Writes the integer model to `output` (atomically). Throws QdqPlanError for a plan that does not
// fit the model, IntegerLoweringError naming the first node that cannot be lowered (both in
// onnx/errors.h), and the reader's and output errors as write_qdq_model does.
IntegerStats write_integer_model(const std::filesystem::path& source, const std::filesystem::path& output,
                                 const QdqPlan& plan, IntegerFormat format, bool allow_float_islands);

}  // namespace onnx2fx
