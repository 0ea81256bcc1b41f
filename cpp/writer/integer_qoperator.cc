// The QOperator form's own operators, as onnxruntime's quantizer writes them: QLinearConv,
// QLinearMatMul, com.microsoft QGemm, QLinearGlobalAveragePool, QLinearSigmoid/LeakyRelu, QLinearSoftmax.

#include <algorithm>
#include <cstring>

#include "ir/data_type.h"
#include "writer/integer_lowering.h"

namespace onnx2fx::integer_detail {

using namespace onnx_schema;
using namespace quant_writer;

// QLinearConv / QLinearMatMul / com.microsoft QGemm with the weight as stored integers.
void IntegerLowering::lower_qlinear(const Node& node, std::size_t index, const IntegerValue& x, const QdqWeight& weight,
                                    const QuantTypeInfo& w_type, const std::vector<std::int64_t>& w_dims,
                                    const std::vector<std::int64_t>& w_int, const std::vector<std::int64_t>& bias_int, const Tail& tail,
                                    const Grid& y, const std::string& base, std::size_t channels) {
  // Signed weights under unsigned activations are stored as uint8, offset by 128 with their zero
  // points: onnxruntime's u8 x s8 kernels on x86-64 CPUs without VNNI (AVX2, AVX-512F) add pairs of
  // products in saturating int16 (vpmaddubsw), so full-range int8 weights can clip a sum there, while
  // its u8 x u8 kernels widen to int16 first and are exact on every CPU. The values dequantize alike.
  const bool offset = w_type.min < 0 && w_type.bits == 8 && x.grid.type->min >= 0;
  const QuantTypeInfo& stored = offset ? quant_type_info(QuantType::Uint8) : w_type;
  const std::int64_t shift = offset ? 128 : 0;
  std::vector<std::byte> w_bytes(w_int.size());
  for (std::size_t i = 0; i < w_int.size(); ++i) store(stored, w_bytes.data(), i, w_int[i] + shift);
  const std::string w_name = constant(weight.initializer + "_quantized", stored.type, w_dims, std::move(w_bytes));
  const bool per_channel = weight.scale.size() > 1;
  std::vector<std::byte> scales(weight.scale.size() * 4), zeros(weight.zero_point.size());
  for (std::size_t c = 0; c < weight.scale.size(); ++c) {
    const float scale = static_cast<float>(weight.scale[c]);
    std::memcpy(scales.data() + 4 * c, &scale, 4);
  }
  for (std::size_t c = 0; c < weight.zero_point.size(); ++c) store(stored, zeros.data(), c, weight.zero_point[c] + shift);
  const std::vector<std::int64_t> w_param_dims = per_channel ? std::vector<std::int64_t>{static_cast<std::int64_t>(channels)}
                                                             : std::vector<std::int64_t>{};
  const std::string w_scale = constant(weight.initializer + "_scale", DataType::Float, w_param_dims, std::move(scales));
  const std::string w_zp = constant(weight.initializer + "_zero_point", stored.type, w_param_dims, std::move(zeros));
  std::string b_name;
  if (!bias_int.empty()) {
    std::vector<std::byte> b_bytes(channels * 4);
    for (std::size_t c = 0; c < channels; ++c) store(kInt32Info, b_bytes.data(), c, bias_int[c]);
    b_name = constant(base + "_bias", DataType::Int32, {static_cast<std::int64_t>(channels)}, std::move(b_bytes));
  }
  const std::string x_scale = scale_constant(base + "_x", x.grid.scale);
  const std::string x_zp = zero_point_constant(base + "_x", *x.grid.type, x.grid.zero_point);
  const std::string y_scale = scale_constant(base, y.scale), y_zp = zero_point_constant(base, *y.type, y.zero_point);
  std::string out = names_.fresh(base);
  const std::string& op = node.op_type;
  if (op == "Conv") {
    std::vector<std::string> args{x.name, x_scale, x_zp, w_name, w_scale, w_zp, y_scale, y_zp};
    if (!b_name.empty()) args.push_back(b_name);
    emit("QLinearConv", args, {out}, {}, "", attribute_views_[index]);
  } else if (op == "Gemm" || !b_name.empty()) {
    if (op == "MatMul" && input_rank(node.inputs[0]) != 2)
      unsupported(node, "a MatMul with a fused bias needs a 2-D input for QGemm (input rank " +
                            std::to_string(input_rank(node.inputs[0])) + ", -1 when unknown)");
    std::vector<std::string> args{x.name, x_scale, x_zp, w_name, w_scale, w_zp, b_name, y_scale, y_zp};
    emit("QGemm", args, {out}, vec(int_attribute("transB", op == "Gemm" ? int_or(node, "transB", 0) : 0)), kMicrosoft);
  } else {
    emit("QLinearMatMul", {x.name, x_scale, x_zp, w_name, w_scale, w_zp, y_scale, y_zp}, {out});
  }
  // A fused ReLU is the clamp at the output's zero point; onnxruntime's quantizer relies on the
  // ReLU's encoding starting at zero, which makes it the saturation of the 8-bit output.
  if (tail.relu && y.zero_point != y.type->min) out = regrid(IntegerValue{out, y}, y, true, tail.node, tail.tensor);
  values_.emplace(tail.tensor, IntegerValue{out, y});
}

void IntegerLowering::lower_qlinear_pool(const Node& node) {
  const IntegerValue& x = quantized_input(node, 0);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  const std::string out = names_.fresh(output + "_int");
  emit("QLinearGlobalAveragePool", {x.name, scale_constant(out + "_x", x.grid.scale),
                                    zero_point_constant(out + "_x", *x.grid.type, x.grid.zero_point),
                                    scale_constant(out, y->scale), zero_point_constant(out, *y->type, y->zero_point)},
       {out}, vec(int_attribute("channels_last", 0)), kMicrosoft);
  values_.emplace(output, IntegerValue{out, *y});
}

void IntegerLowering::lower_qlinear_activation(const Node& node) {
  const IntegerValue& x = quantized_input(node, 0);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  const std::string out = names_.fresh(output + "_int");
  std::vector<wire::Writer> attributes;
  if (node.op_type == "LeakyRelu") attributes.push_back(float_attribute("alpha", float_or(node, "alpha", 0.01f)));
  emit("QLinear" + node.op_type, {x.name, scale_constant(out + "_x", x.grid.scale),
                                  zero_point_constant(out + "_x", *x.grid.type, x.grid.zero_point),
                                  scale_constant(out, y->scale), zero_point_constant(out, *y->type, y->zero_point)},
       {out}, std::move(attributes), kMicrosoft);
  values_.emplace(output, IntegerValue{out, *y});
}

void IntegerLowering::lower_qlinear_softmax(std::size_t index) {
  const Node& node = *model_.graph->nodes[index];
  const IntegerValue& x = quantized_input(node, 0);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  const std::string out = names_.fresh(output + "_int");
  std::int64_t opset = 13;
  for (const OperatorSetId& id : model_.opset_imports)
    if (is_default_domain(id.domain)) opset = std::max(opset, id.version);
  std::vector<wire::Writer> attributes;
  attributes.push_back(int_attribute("axis", int_or(node, "axis", -1)));
  attributes.push_back(int_attribute("opset", opset));
  emit("QLinearSoftmax", {x.name, scale_constant(out + "_x", x.grid.scale),
                          zero_point_constant(out + "_x", *x.grid.type, x.grid.zero_point),
                          scale_constant(out, y->scale), zero_point_constant(out, *y->type, y->zero_point)},
       {out}, std::move(attributes), kMicrosoft);
  values_.emplace(output, IntegerValue{out, *y});
}

}  // namespace onnx2fx::integer_detail
