// The QDQ plan checked against the model before anything is written: every named tensor exists
// and is FLOAT, scales and zero points fit their types and axes, and each entry gets its new names.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "ir/data_type.h"
#include "writer/qdq_rewriter.h"

namespace onnx2fx::qdq_detail {

using namespace quant_writer;

void QdqRewriter::prepare(const QdqPlan& plan) {
  const Graph& graph = *model_.graph;
  std::unordered_map<std::string_view, std::size_t> producer;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    for (const std::string& output : graph.nodes[i]->outputs)
      if (!output.empty()) producer.emplace(output, i);
  std::unordered_map<std::string_view, const Tensor*> initializers;
  for (const Tensor& tensor : graph.initializers) initializers.emplace(tensor.name, &tensor);
  std::unordered_map<std::string_view, const TypeInfo*> types;
  for (const auto* infos : {&graph.value_info, &graph.outputs, &graph.inputs})
    for (const ValueInfo& info : *infos) types[info.name] = &info.type;
  std::unordered_set<std::string_view> inputs, outputs;
  for (const ValueInfo& info : graph.inputs) inputs.insert(info.name);
  for (const ValueInfo& info : graph.outputs) outputs.insert(info.name);

  // Weights and biases first: activations may not name them.
  std::unordered_set<std::string_view> quantized_initializers;
  const auto check_initializer = [&](std::string_view kind, const std::string& name) -> const Tensor* {
    const auto found = initializers.find(name);
    if (found == initializers.end())
      throw QdqPlanError(std::string(kind) + " initializer '" + name + "' not found in the main graph");
    const Tensor& tensor = *found->second;
    if (tensor.data_type != static_cast<std::int32_t>(DataType::Float)) {
      const DataTypeInfo* info = data_type_info(tensor.data_type);
      throw QdqPlanError(std::string(kind) + " initializer '" + name + "' has data type " +
                         std::string(info ? info->name : "?") + "; only FLOAT initializers can be quantized");
    }
    if (!quantized_initializers.insert(tensor.name).second)
      throw QdqPlanError("initializer '" + name + "' appears more than once in the plan");
    if (inputs.contains(name))
      throw QdqPlanError(std::string(kind) + " initializer '" + name +
                         "' is also a graph input (an overridable default), which cannot be quantized");
    return &tensor;
  };
  for (const QdqWeight& weight : plan.weights) {
    InitializerEntry entry;
    entry.kind = "weight";
    entry.tensor = check_initializer("weight", weight.initializer);
    const std::string what = "weight '" + weight.initializer + "'";
    entry.type = &quant_type_info(weight.dtype);
    fill_scales(entry, what, weight.scale, weight.zero_point, weight.axis);
    entry.values = weight.values ? replacement(what, *entry.tensor, *weight.values)
                                 : std::as_bytes(std::span(entry.tensor->data));
    initializers_.push_back(std::move(entry));
  }
  for (const QdqBias& bias : plan.biases) {
    InitializerEntry entry;
    entry.kind = "bias";
    entry.tensor = check_initializer("bias", bias.initializer);
    entry.type = &kInt32Info;
    const std::string what = "bias '" + bias.initializer + "'";
    fill_scales(entry, what, bias.scale, std::vector<std::int64_t>(bias.scale.size(), 0), bias.axis);
    entry.values = bias.values ? replacement(what, *entry.tensor, *bias.values)
                               : std::as_bytes(std::span(entry.tensor->data));
    initializers_.push_back(std::move(entry));
  }

  std::unordered_set<std::string_view> activation_names;
  for (const QdqActivation& activation : plan.activations) {
    const std::string& name = activation.tensor;
    const std::string what = "activation '" + name + "'";
    const auto produced = producer.find(name);
    const bool has_producer = produced != producer.end();
    const bool is_initializer = initializers.contains(name);
    if (!has_producer && !inputs.contains(name) && !is_initializer)
      throw QdqPlanError("activation tensor '" + name + "' is not produced or consumed in the main graph");
    if (!activation_names.insert(name).second)
      throw QdqPlanError("activation tensor '" + name + "' appears more than once in the plan");
    if (quantized_initializers.contains(name))
      throw QdqPlanError(what + " is also quantized as a weight or bias");
    const bool is_output = outputs.contains(name);
    if (is_output && !has_producer)
      throw QdqPlanError(what + " is a graph output and a graph input or initializer; no node output can be " +
                         "renamed to keep the graph output's name");
    std::int32_t elem_type = 0;
    if (is_initializer) elem_type = initializers.at(name)->data_type;
    if (const auto type = types.find(name); type != types.end() && type->second->kind == "tensor")
      elem_type = type->second->elem_type;
    if (elem_type != 0 && elem_type != static_cast<std::int32_t>(DataType::Float)) {
      const DataTypeInfo* info = data_type_info(elem_type);
      throw QdqPlanError(what + " has element type " + std::string(info ? info->name : "?") +
                         "; only FLOAT tensors can be quantized");
    }

    ActivationEntry entry;
    entry.tensor = name;
    entry.type = &quant_type_info(activation.dtype);
    entry.has_producer = has_producer;
    if (activation.scale.size() != 1 || activation.zero_point.size() != 1)
      throw QdqPlanError(what + ": activations are quantized per tensor and need one scale and one zero point, got " +
                         std::to_string(activation.scale.size()) + " and " +
                         std::to_string(activation.zero_point.size()));
    entry.scale = check_scale(what, activation.scale[0]);
    entry.zero_point = check_zero_point(what, *entry.type, activation.zero_point[0]);

    entry.quantized = names_.fresh(name + "_quantized");
    entry.scale_name = names_.fresh(name + "_scale");
    entry.zero_point_name = names_.fresh(name + "_zero_point");
    entry.quantize_node = names_.fresh(name + "_QuantizeLinear");
    entry.dequantize_node = names_.fresh(name + "_DequantizeLinear");
    if (is_output) {  // the producer's output is renamed; DequantizeLinear takes over the name
      entry.source = names_.fresh(name + "_float");
      entry.dequantized = name;
      output_renames_.emplace(name, entry.source);
    } else {
      entry.source = name;
      entry.dequantized = names_.fresh(name + "_dequantized");
      consumer_renames_.emplace(name, entry.dequantized);
    }
    activations_.push_back(std::move(entry));
  }
  for (ActivationEntry& entry : activations_)
    if (entry.has_producer) after_producer_.emplace(entry.tensor, &entry);

  // After the activations: an activation may read an initializer whose float data is replaced.
  floats_.reserve(plan.floats.size());
  for (const QdqFloat& replaced : plan.floats) {
    FloatEntry& entry = floats_.emplace_back();
    entry.tensor = check_initializer("float", replaced.initializer);
    entry.values = replacement("float initializer '" + replaced.initializer + "'", *entry.tensor, replaced.values);
    float_by_offset_.emplace(entry.tensor->proto_offset, &entry);
  }

  for (InitializerEntry& entry : initializers_) {
    const std::string& name = entry.tensor->name;
    entry.quantized = names_.fresh(name + "_quantized");
    entry.scale_name = names_.fresh(name + "_scale");
    entry.zero_point_name = names_.fresh(name + "_zero_point");
    entry.dequantize_node = names_.fresh(name + "_DequantizeLinear");
    by_offset_.emplace(entry.tensor->proto_offset, &entry);
  }

  // The default-domain opset is raised, never lowered, and the IR version with it.
  std::int64_t current_opset = 0;
  for (const OperatorSetId& opset : model_.opset_imports)
    if (is_default_domain(opset.domain)) current_opset = std::max(current_opset, opset.version);
  target_opset_ = required_opset(plan);
  if (target_opset_ > 0)
    target_ir_version_ = std::max(model_.ir_version, min_ir_version(std::max(target_opset_, current_opset)));
}

// New float values for `tensor`, which must have its shape.
std::span<const std::byte> QdqRewriter::replacement(const std::string& what, const Tensor& tensor,
                                                           const FloatValues& values) {
  if (values.shape != tensor.dims)
    throw QdqPlanError(what + ": values have shape " + format_list(values.shape) + " but the initializer has dims " +
                       format_list(tensor.dims));
  // The shape is the caller's claim about `values`; the count is what the span holds.
  if (values.data.size() != tensor.data.size() / sizeof(float))
    throw QdqPlanError(what + ": values hold " + std::to_string(values.data.size()) + " floats but dims " +
                       format_list(tensor.dims) + " need " + std::to_string(tensor.data.size() / sizeof(float)));
  return std::as_bytes(values.data);
}

float QdqRewriter::check_scale(const std::string& what, double scale) {
  if (!(std::isfinite(scale) && scale > 0 && scale <= FLT_MAX) || static_cast<float>(scale) <= 0)
    throw QdqPlanError(what + ": scale " + format_number(scale) + " is not a finite float32 > 0");
  return static_cast<float>(scale);
}

std::int64_t QdqRewriter::check_zero_point(const std::string& what, const QuantTypeInfo& type,
                                           std::int64_t zero_point) {
  if (zero_point < type.min || zero_point > type.max)
    throw QdqPlanError(what + ": zero point " + std::to_string(zero_point) + " is outside the range of " +
                       std::string(type.name) + " [" + std::to_string(type.min) + ", " + std::to_string(type.max) +
                       "]");
  return zero_point;
}

void QdqRewriter::fill_scales(InitializerEntry& entry, const std::string& what, const std::vector<double>& scales,
                              const std::vector<std::int64_t>& zero_points, std::optional<std::int64_t> axis) {
  const auto& dims = entry.tensor->dims;
  std::size_t expected = 1;
  if (axis) {
    const auto rank = static_cast<std::int64_t>(dims.size());
    if (*axis < -rank || *axis >= rank)
      throw QdqPlanError(what + ": axis " + std::to_string(*axis) + " is out of range for dims " + format_list(dims));
    entry.axis = *axis < 0 ? *axis + rank : *axis;
    expected = static_cast<std::size_t>(dims[static_cast<std::size_t>(*entry.axis)]);
  }
  if (scales.size() != expected)
    throw QdqPlanError(what + ": " + std::to_string(scales.size()) + " scales given, expected " +
                       std::to_string(expected) +
                       (axis ? " (dims[" + std::to_string(*entry.axis) + "] of " + format_list(dims) + ")"
                             : std::string(" (per tensor)")));
  if (zero_points.size() != scales.size())
    throw QdqPlanError(what + ": " + std::to_string(zero_points.size()) + " zero points given for " +
                       std::to_string(scales.size()) + " scales");
  for (double scale : scales) entry.scales.push_back(check_scale(what, scale));
  for (std::int64_t zero_point : zero_points) entry.zero_points.push_back(check_zero_point(what, *entry.type, zero_point));
}

}  // namespace onnx2fx::qdq_detail
