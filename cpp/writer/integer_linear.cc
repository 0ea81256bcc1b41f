// Conv, Gemm and MatMul with a planned weight: ConvInteger / MatMulInteger into int32, the bias
// Add and ReLU they absorb, and the requantization (the QOperator form hands over to lower_qlinear).

#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "ir/data_type.h"
#include "writer/integer_lowering.h"

namespace onnx2fx::integer_detail {

using namespace onnx_schema;
using namespace quant_writer;

Tail IntegerLowering::fused_tail(const Node& node, bool add_bias_allowed) {
  Tail tail{nullptr, false, node.outputs.at(0), node.name};
  if (!grid_of(tail.tensor) && add_bias_allowed) {
    if (const Node* add = single_consumer(tail.tensor); add && add->op_type == "Add" && add->inputs.size() == 2) {
      const std::string& other = add->inputs[0] == tail.tensor ? add->inputs[1] : add->inputs[0];
      if (const auto found = biases_.find(other); found != biases_.end()) {
        tail.bias = found->second;
        absorb(*add);
        tail.tensor = add->outputs.at(0);
        tail.node = add->name;
      }
    }
  }
  if (!grid_of(tail.tensor)) {
    if (const Node* relu = single_consumer(tail.tensor); relu && relu->op_type == "Relu") {
      tail.relu = true;
      absorb(*relu);
      tail.tensor = relu->outputs.at(0);
      tail.node = relu->name;
    }
  }
  if (!grid_of(tail.tensor)) unsupported(node, "output '" + tail.tensor + "' has no encoding");
  return tail;
}

void IntegerLowering::absorb(const Node& node) {
  for (std::size_t i = 0; i < model_.graph->nodes.size(); ++i)
    if (model_.graph->nodes[i].get() == &node) absorbed_.insert(i);
}

// Conv, Gemm and MatMul with a planned weight.
void IntegerLowering::lower_linear(std::size_t index) {
  const Node& node = *model_.graph->nodes[index];
  const std::string& op = node.op_type;
  const IntegerValue& x = quantized_input(node, 0);
  if (node.inputs.size() < 2 || !weights_.contains(node.inputs[1]))
    unsupported(node, "the second input is not a quantized weight initializer");
  const QdqWeight& weight = *weights_.at(node.inputs[1]);
  const Tensor& w_tensor = *initializers_.at(weight.initializer);
  std::vector<std::int64_t> dims = w_tensor.dims;
  bool transpose = false;
  if (op == "Gemm") {
    if (int_or(node, "transA", 0) != 0 || float_or(node, "alpha", 1.0f) != 1.0f ||
        (node.inputs.size() > 2 && !node.inputs[2].empty() && float_or(node, "beta", 1.0f) != 1.0f))
      unsupported(node, "transA, alpha or beta other than 0, 1, 1");
    // Fixed point reads the weight as MatMulInteger's [K, N]; QGemm keeps it as stored, like onnxruntime.
    transpose = int_or(node, "transB", 0) != 0 && format_ == IntegerFormat::FixedPoint;
  }
  if ((op != "Conv" && dims.size() != 2) || (op == "Conv" && dims.size() < 3))
    unsupported(node, "weight '" + weight.initializer + "' has dims " + format_list(dims));
  // The output channel axis of the weight as stored (per-channel scales run along it).
  const bool transposed_b = op == "Gemm" && int_or(node, "transB", 0) != 0;
  const std::size_t channel_axis = op == "Conv" ? 0 : transposed_b ? 0 : 1;
  const std::size_t channels = static_cast<std::size_t>(dims[channel_axis]);
  if (weight.axis && static_cast<std::size_t>(*weight.axis < 0 ? *weight.axis + static_cast<std::int64_t>(dims.size())
                                                                 : *weight.axis) != channel_axis)
    unsupported(node, "weight '" + weight.initializer + "' is quantized along an axis other than its output channels");
  if (weight.scale.size() != 1 && weight.scale.size() != channels)
    throw QdqPlanError("weight '" + weight.initializer + "': " + std::to_string(weight.scale.size()) +
                       " scales for " + std::to_string(channels) + " channels");
  const QuantTypeInfo& w_type = quant_type_info(weight.dtype);
  std::vector<float> w_scales;
  for (double scale : weight.scale) w_scales.push_back(static_cast<float>(scale));
  const auto w_scale = [&](std::size_t c) { return w_scales[w_scales.size() == 1 ? 0 : c]; };
  const auto w_zero = [&](std::size_t c) { return weight.zero_point[weight.zero_point.size() == 1 ? 0 : c]; };

  // Quantized weight in the layout the integer op reads ([K, N] for Gemm with transB).
  const std::vector<float> w_values = float_values(w_tensor, weight.values);
  std::vector<std::int64_t> out_dims = dims;
  if (transpose) std::swap(out_dims[0], out_dims[1]);
  std::size_t inner = 1;
  for (std::size_t d = channel_axis + 1; d < dims.size(); ++d) inner *= static_cast<std::size_t>(dims[d]);
  std::vector<std::int64_t> w_int(w_values.size());
  for (std::size_t i = 0; i < w_values.size(); ++i) {
    const std::size_t c = (i / inner) % channels;
    const float scaled = std::nearbyint(w_values[i] / w_scale(c));
    if (std::isnan(scaled)) throw QdqPlanError("weight '" + weight.initializer + "' holds NaN");
    const double q = std::clamp(static_cast<double>(scaled) + static_cast<double>(w_zero(c)),
                                static_cast<double>(w_type.min), static_cast<double>(w_type.max));
    const std::size_t target = transpose ? (i % inner) * channels + i / inner : i;
    w_int[target] = static_cast<std::int64_t>(q);
  }

  Tail tail = fused_tail(node, node.inputs.size() < 3 || node.inputs[2].empty());
  const QdqBias* bias = tail.bias;
  if (node.inputs.size() > 2 && !node.inputs[2].empty()) {
    if (!biases_.contains(node.inputs[2])) unsupported(node, "bias '" + node.inputs[2] + "' is not quantized");
    bias = biases_.at(node.inputs[2]);
  }
  const Grid& y = *grid_of(tail.tensor);
  const std::string base = names_.fresh(tail.tensor + "_int");

  // Bias as int32, with the plan's scale (input scale x weight scale).
  std::vector<std::int64_t> bias_int;
  if (bias) {
    const Tensor& b_tensor = *initializers_.at(bias->initializer);
    const std::vector<float> b_values = float_values(b_tensor, bias->values);
    if (b_values.size() != channels)
      unsupported(node, "bias '" + bias->initializer + "' has " + std::to_string(b_values.size()) + " values for " +
                            std::to_string(channels) + " channels");
    for (std::size_t c = 0; c < channels; ++c) {
      const float scale = static_cast<float>(bias->scale[bias->scale.size() == 1 ? 0 : c]);
      const double q = std::clamp(static_cast<double>(std::nearbyint(b_values[c] / scale)),
                                  static_cast<double>(INT32_MIN), static_cast<double>(INT32_MAX));
      bias_int.push_back(static_cast<std::int64_t>(q));
    }
  }
  if (format_ == IntegerFormat::QOperator) return lower_qlinear(node, index, x, weight, w_type, out_dims, w_int,
                                                                bias_int, tail, y, base, channels);

  // Fixed point: the op stores unsigned weights offset by 128 when they are signed and
  // symmetric, which every onnxruntime build runs (ConvInteger has only u8 x u8 kernels).
  const QuantTypeInfo& u8 = quant_type_info(QuantType::Uint8);
  const bool offset = w_type.min < 0;
  for (std::size_t c = 0; c < channels; ++c)
    if (offset && w_zero(c) != 0) unsupported(node, "signed weights with a zero point other than 0");
  std::vector<std::byte> w_bytes(w_int.size());
  for (std::size_t i = 0; i < w_int.size(); ++i) store(u8, w_bytes.data(), i, offset ? w_int[i] + 128 : w_int[i]);
  std::int64_t w_zp = offset ? 128 : w_zero(0);
  for (std::size_t c = 0; c < channels; ++c)
    if (!offset && w_zero(c) != w_zp) unsupported(node, "per-channel weight zero points");
  const std::string w_name = constant(weight.initializer + "_int", DataType::Uint8, out_dims, std::move(w_bytes));
  const std::string x_zp = zero_point_constant(base + "_x", *x.grid.type, x.grid.zero_point);
  const std::string w_zp_name = zero_point_constant(base + "_w", u8, w_zp);
  if (op == "Conv" && x.grid.type->min < 0)
    unsupported(node, "signed activations: ConvInteger reads uint8 inputs in onnxruntime");
  const std::string acc = names_.fresh(base + "_acc");
  if (op == "Conv")
    emit("ConvInteger", {x.name, w_name, x_zp, w_zp_name}, {acc}, {}, "", attribute_views_[index]);
  else
    emit("MatMulInteger", {x.name, w_name, x_zp, w_zp_name}, {acc});
  // Per-channel constants broadcast along axis 1 of a convolution's output, the last of a matmul's.
  std::vector<std::int64_t> channel_dims{static_cast<std::int64_t>(channels)};
  if (op == "Conv") channel_dims.resize(dims.size() - 1, 1);
  std::string sum = acc;
  if (bias) {
    std::vector<std::byte> b_bytes(channels * 4);
    for (std::size_t c = 0; c < channels; ++c) store(kInt32Info, b_bytes.data(), c, bias_int[c]);
    const std::string b_name = constant(bias->initializer + "_int32", DataType::Int32, channel_dims, std::move(b_bytes));
    sum = names_.fresh(base + "_biased");
    emit("Add", {acc, b_name}, {sum});
  }
  std::vector<double> rescale;
  for (std::size_t c = 0; c < channels; ++c)
    rescale.push_back(static_cast<double>(x.grid.scale) * static_cast<double>(w_scale(c)) / static_cast<double>(y.scale));
  if (w_scales.size() == 1) {
    rescale.resize(1);
    channel_dims = {};
  }
  const std::string out = requantize(sum, false, rescale, channel_dims, y, tail.relu, tail.node, tail.tensor, base);
  values_.emplace(tail.tensor, IntegerValue{out, y});
}

}  // namespace onnx2fx::integer_detail
