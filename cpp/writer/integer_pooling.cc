// Pooling and data movement: AveragePool as a depthwise ConvInteger, GlobalAveragePool as an
// int64 ReduceSum, Concat on one grid, and ops that rearrange the 8-bit integers as they are.

#include <algorithm>
#include <span>
#include <unordered_map>
#include <variant>

#include "ir/data_type.h"
#include "writer/integer_lowering.h"

namespace onnx2fx::integer_detail {

using namespace onnx_schema;
using namespace quant_writer;

// AveragePool: a depthwise ConvInteger with a kernel of ones (padding reads the zero point, so a
// padded position adds 0), then a requantization that also divides by the kernel size.
void IntegerLowering::lower_average_pool(std::size_t index) {
  const Node& node = *model_.graph->nodes[index];
  const IntegerValue& x = quantized_input(node, 0);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  const std::string base = names_.fresh(output + "_int");
  if (format_ == IntegerFormat::QOperator) {
    const std::string out = names_.fresh(base);
    emit("QLinearAveragePool", {x.name, scale_constant(base + "_x", x.grid.scale),
                                zero_point_constant(base + "_x", *x.grid.type, x.grid.zero_point),
                                scale_constant(base, y->scale), zero_point_constant(base, *y->type, y->zero_point)},
         {out}, {}, kMicrosoft, attribute_views_[index]);
    values_.emplace(output, IntegerValue{out, *y});
    return;
  }
  const Attribute* kernel = find_attribute(node, "kernel_shape");
  const Attribute* pads = find_attribute(node, "pads");
  const bool padded = (pads && std::ranges::any_of(pads->ints, [](std::int64_t p) { return p != 0; })) ||
                      string_or(node, "auto_pad", "NOTSET") != "NOTSET";
  if (!kernel || kernel->ints.empty()) unsupported(node, "AveragePool without kernel_shape");
  if (int_or(node, "ceil_mode", 0) != 0) unsupported(node, "ceil_mode");
  if (padded && int_or(node, "count_include_pad", 0) == 0)
    unsupported(node, "padding that is not counted (count_include_pad = 0) divides border windows by fewer values");
  const std::int64_t channels = [&] {
    const auto type = types_.find(node.inputs[0]);
    if (type == types_.end() || !type->second->shape || type->second->shape->size() != kernel->ints.size() + 2)
      return std::int64_t{-1};
    const auto* size = std::get_if<std::int64_t>(&(*type->second->shape)[1]);
    return size ? *size : std::int64_t{-1};
  }();
  if (channels < 1) unsupported(node, "integer average pooling needs the input's channel count (shape inference)");
  if (x.grid.type->min < 0) unsupported(node, "signed activations: ConvInteger reads uint8 inputs in onnxruntime");
  std::int64_t count = 1;
  std::vector<std::int64_t> dims{channels, 1};
  for (std::int64_t k : kernel->ints) {
    count *= k;
    dims.push_back(k);
  }
  const QuantTypeInfo& u8 = quant_type_info(QuantType::Uint8);
  const std::string ones = constant(base + "_ones", DataType::Uint8, dims,
                                    std::vector<std::byte>(static_cast<std::size_t>(channels * count), std::byte{1}));
  std::vector<wire::Writer> attributes;
  attributes.push_back(int_attribute("group", channels));
  std::vector<std::span<const std::byte>> kept;  // kernel_shape, pads, strides, auto_pad, dilations as written
  for (std::size_t i = 0; i < node.attributes.size(); ++i)
    if (node.attributes[i].name != "ceil_mode" && node.attributes[i].name != "count_include_pad")
      kept.push_back(attribute_views_[index][i]);
  const std::string sum = names_.fresh(base + "_sum");
  emit("ConvInteger", {x.name, ones, zero_point_constant(base + "_x", *x.grid.type, x.grid.zero_point),
                       zero_point_constant(base + "_w", u8, 0)},
       {sum}, std::move(attributes), "", kept);
  const double rescale = static_cast<double>(x.grid.scale) / (static_cast<double>(y->scale) * static_cast<double>(count));
  values_.emplace(output, IntegerValue{requantize(sum, false, {rescale}, {}, *y, false, node.name, output, base), *y});
}

// Sum over the spatial positions (int64), then one requantization that divides by their count.
void IntegerLowering::lower_global_average_pool(const Node& node) {
  const IntegerValue& x = quantized_input(node, 0);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  const auto type = types_.find(node.inputs[0]);
  std::int64_t positions = 1;
  std::size_t rank = 0;
  if (type != types_.end() && type->second->shape) {
    const auto& shape = *type->second->shape;
    rank = shape.size();
    for (std::size_t d = 2; d < shape.size(); ++d) {
      const auto* size = std::get_if<std::int64_t>(&shape[d]);
      if (!size) unsupported(node, "integer average pooling needs static spatial dimensions");
      positions *= *size;
    }
  }
  if (rank < 3) unsupported(node, "integer average pooling needs the input's shape (run shape inference first)");
  const std::string base = names_.fresh(output + "_int");
  std::vector<std::int64_t> axes;
  for (std::size_t d = 2; d < rank; ++d) axes.push_back(static_cast<std::int64_t>(d));
  const std::string sum = names_.fresh(base + "_sum");
  emit("ReduceSum", {centred(x, base), int64_constant(base + "_axes", axes, {static_cast<std::int64_t>(axes.size())})},
       {sum}, vec(int_attribute("keepdims", 1)));
  const double rescale = static_cast<double>(x.grid.scale) / (static_cast<double>(y->scale) * static_cast<double>(positions));
  values_.emplace(output, IntegerValue{requantize(sum, true, {rescale}, {}, *y, false, node.name, output, base), *y});
}

void IntegerLowering::lower_concat(std::size_t index) {
  const Node& node = *model_.graph->nodes[index];
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  std::vector<IntegerValue> inputs;
  for (std::size_t i = 0; i < node.inputs.size(); ++i) inputs.push_back(quantized_input(node, i));
  const std::string out = names_.fresh(output + "_int");
  if (format_ == IntegerFormat::QOperator) {
    std::vector<std::string> args{scale_constant(out, y->scale), zero_point_constant(out, *y->type, y->zero_point)};
    for (const IntegerValue& x : inputs) {
      args.push_back(x.name);
      args.push_back(scale_constant(out + "_in", x.grid.scale));
      args.push_back(zero_point_constant(out + "_in", *x.grid.type, x.grid.zero_point));
    }
    emit("QLinearConcat", args, {out}, vec(int_attribute("axis", int_or(node, "axis", 0))), kMicrosoft);
  } else {
    std::vector<std::string> args;
    for (const IntegerValue& x : inputs) args.push_back(regrid(x, *y, false, node.name, output));
    emit("Concat", args, {out}, vec(int_attribute("axis", int_or(node, "axis", 0))));
  }
  values_.emplace(output, IntegerValue{out, *y});
}

void IntegerLowering::lower_data_movement(std::size_t index) {
  const Node& node = *model_.graph->nodes[index];
  const IntegerValue& x = quantized_input(node, 0);
  for (std::size_t i = 1; i < node.inputs.size(); ++i)
    if (values_.contains(node.inputs[i])) unsupported(node, "a quantized tensor feeds an operand other than the data");
  if (node.op_type == "MaxPool" && node.outputs.size() > 1 && !node.outputs[1].empty())
    unsupported(node, "MaxPool's Indices output");
  std::unordered_map<std::string, std::string> inputs{{node.inputs[0], x.name}}, outputs;
  for (const std::string& output : node.outputs)
    if (!output.empty()) outputs.emplace(output, names_.fresh(output + "_int"));
  const Grid grid = x.grid;
  copy_node(index, inputs, outputs);
  for (const std::string& output : node.outputs) {
    if (output.empty()) continue;
    float_values_.erase(outputs.at(output));
    IntegerValue moved{outputs.at(output), grid};
    if (const Grid* y = grid_of(output); y && !y->same_as(grid))
      moved = IntegerValue{regrid(moved, *y, false, node.name, output), *y};
    values_.emplace(output, moved);
  }
}

}  // namespace onnx2fx::integer_detail
