#include "writer/integer_writer.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>

#include "ir/data_type.h"
#include "ir/ir.h"
#include "onnx/mapped_file.h"
#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "onnx/wire.h"
#include "passes/check_graph.h"
#include "writer/wire_writer.h"
#include "writer/writer_common.h"

namespace onnx2fx {
namespace {

using namespace onnx_schema;
using namespace quant_writer;
using wire::Reader;

constexpr std::string_view kMetadataKey = "onnx2fx.quantized";
constexpr std::string_view kMicrosoft = "com.microsoft";
constexpr std::int64_t kMinOpset = 13;  // integer Clip (12), per-axis DequantizeLinear (13)
constexpr int kMultiplierBits = 31;     // multipliers in [2^30, 2^31]: |int32 acc x multiplier| < 2^62
constexpr std::uint64_t kMaxModelBytes = INT32_MAX;

// Ops whose output is their first input's integers rearranged or selected: they run on uint8/int8
// as they are and their output shares the input's encoding.
const std::unordered_set<std::string_view> kDataMovement = {
    "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather",
    "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Split"};
// Element-wise functions of one input computed as a 256-entry table in fixed point.
const std::unordered_set<std::string_view> kTableOps = {"Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu",
                                                        "LeakyRelu", "Elu", "Softplus", "Erf", "Exp"};
// onnxruntime's activations of the same kind: what a GELU or SiLU that the conversion recognised
// in its ONNX decomposition is written as (one function from the input's encoding to the output's).
const std::unordered_set<std::string_view> kMicrosoftTableOps = {"Gelu", "FastGelu", "QuickGelu"};

// A tensor's integer grid.
struct Grid {
  float scale = 0;
  std::int64_t zero_point = 0;
  const QuantTypeInfo* type = nullptr;
  bool same_as(const Grid& other) const {
    return scale == other.scale && zero_point == other.zero_point && type == other.type;
  }
};

// An integer tensor of the new graph.
struct IntegerValue {
  std::string name;
  Grid grid;
};

wire::Writer int_attribute(std::string_view name, std::int64_t value) {
  wire::Writer attribute;
  attribute.string(AttributeProto::name, name);
  attribute.int64(AttributeProto::i, value);
  attribute.varint(AttributeProto::type, static_cast<std::uint64_t>(AttributeType::Int));
  return attribute;
}

wire::Writer float_attribute(std::string_view name, float value) {
  wire::Writer attribute;
  attribute.string(AttributeProto::name, name);
  attribute.float32(AttributeProto::f, value);
  attribute.varint(AttributeProto::type, static_cast<std::uint64_t>(AttributeType::Float));
  return attribute;
}

// One int8 or uint8 value (every grid of the integer writers is 8 bits wide).
std::byte eight_bits(std::int64_t value) { return static_cast<std::byte>(static_cast<std::uint8_t>(value)); }

const Attribute* find_attribute(const Node& node, std::string_view name) {
  for (const Attribute& attribute : node.attributes)
    if (attribute.name == name) return &attribute;
  return nullptr;
}
std::int64_t int_or(const Node& node, std::string_view name, std::int64_t fallback) {
  const Attribute* attribute = find_attribute(node, name);
  return attribute ? attribute->i : fallback;
}
float float_or(const Node& node, std::string_view name, float fallback) {
  const Attribute* attribute = find_attribute(node, name);
  return attribute ? attribute->f : fallback;
}
std::string string_or(const Node& node, std::string_view name, std::string fallback) {
  const Attribute* attribute = find_attribute(node, name);
  return attribute ? attribute->s : fallback;
}

// The float function a table op computes, in double precision.
std::function<double(double)> table_function(const Node& node) {
  const std::string& op = node.op_type;
  if (op == "Sigmoid") return [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  if (op == "Tanh") return [](double x) { return std::tanh(x); };
  if (op == "Exp") return [](double x) { return std::exp(x); };
  if (op == "Erf") return [](double x) { return std::erf(x); };
  if (op == "Softplus") return [](double x) { return std::log1p(std::exp(x)); };
  if (op == "HardSigmoid") {
    const double alpha = float_or(node, "alpha", 0.2f), beta = float_or(node, "beta", 0.5f);
    return [=](double x) { return std::clamp(alpha * x + beta, 0.0, 1.0); };
  }
  if (op == "HardSwish") return [](double x) { return x * std::clamp(x / 6.0 + 0.5, 0.0, 1.0); };
  if (op == "QuickGelu") {  // x * sigmoid(alpha x); alpha 1 is SiLU
    const double alpha = float_or(node, "alpha", 1.702f);
    return [=](double x) { return x / (1.0 + std::exp(-alpha * x)); };
  }
  if (op == "FastGelu")
    return [](double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); };
  if (op == "LeakyRelu") {
    const double alpha = float_or(node, "alpha", 0.01f);
    return [=](double x) { return x >= 0 ? x : alpha * x; };
  }
  if (op == "Elu") {
    const double alpha = float_or(node, "alpha", 1.0f);
    return [=](double x) { return x >= 0 ? x : alpha * (std::exp(x) - 1.0); };
  }
  if (string_or(node, "approximate", "none") == "tanh")  // Gelu
    return [](double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); };
  return [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); };
}

class IntegerLowering {
 public:
  IntegerLowering(const Model& model, const MappedFile& file, const QdqPlan& plan, IntegerFormat format,
                  bool allow_float_islands)
      : model_(model), file_(file), format_(format), allow_islands_(allow_float_islands), names_(model) {
    index_source();
    index_plan(plan);
  }

  wire::Writer write() {
    lower_graph();
    return model_message();
  }

  IntegerStats stats() const {
    IntegerStats stats = stats_;
    stats.nodes_written = nodes_.size();
    return stats;
  }

 private:
  // --- the source ------------------------------------------------------------------------------

  void index_source() {
    const Graph& graph = *model_.graph;
    for (const Tensor& tensor : graph.initializers) initializers_.emplace(tensor.name, &tensor);
    for (const auto& node : graph.nodes)
      for (const std::string& input : node->inputs)
        if (!input.empty()) ++uses_[input];
    for (const ValueInfo& output : graph.outputs) ++uses_[output.name];
    for (std::size_t i = 0; i < graph.nodes.size(); ++i)
      for (const std::string& input : graph.nodes[i]->inputs) consumers_[input].push_back(i);
    for (const auto* infos : {&graph.value_info, &graph.outputs, &graph.inputs})
      for (const ValueInfo& info : *infos) types_[info.name] = &info.type;

    // The raw fields of the main graph: nodes' attributes, initializers, inputs and outputs.
    std::unordered_map<std::int64_t, const Tensor*> by_offset;
    for (const Tensor& tensor : graph.initializers) by_offset.emplace(tensor.proto_offset, &tensor);
    Reader reader(file_.bytes(), file_.bytes().data(), kModelProto);
    while (reader.next()) {
      if (reader.tag() != ModelProto::graph) {
        reader.skip();
        continue;
      }
      Reader body = reader.get_message(kGraphProto);
      std::size_t node_index = 0;
      while (body.next()) switch (body.tag()) {
          case GraphProto::node: {
            Reader node = body.get_message(kNodeProto, node_index++);
            auto& views = attribute_views_.emplace_back();
            std::size_t attribute_index = 0;
            while (node.next()) {
              if (node.tag() == NodeProto::attribute) {
                node.get_message(kAttributeProto, attribute_index++);
                views.push_back(node.field_bytes());
              } else {
                node.skip();
              }
            }
            break;
          }
          case GraphProto::initializer: {
            Reader tensor = body.get_message(kTensorProto);
            const auto offset = static_cast<std::int64_t>(tensor.offset_of(tensor.message_bytes().data()));
            if (const auto found = by_offset.find(offset); found != by_offset.end())
              initializer_fields_.emplace(found->second->name, body.field_bytes());
            break;
          }
          case GraphProto::name:
          case GraphProto::doc_string:
          case GraphProto::input:
          case GraphProto::output:
            body.skip();
            graph_fields_.push_back(body.field_bytes());
            break;
          case GraphProto::sparse_initializer:
            throw IntegerLoweringError("sparse initializers are not supported by the integer writers");
          default: body.skip();
        }
    }
    if (attribute_views_.size() != graph.nodes.size())
      throw IntegerLoweringError("the main graph's nodes could not be matched with the model's bytes");
  }

  void index_plan(const QdqPlan& plan) {
    for (const QdqActivation& activation : plan.activations) {
      const std::string what = "activation '" + activation.tensor + "'";
      Grid grid;
      grid.type = &quant_type_info(activation.dtype);
      if (grid.type->bits != 8)
        throw QdqPlanError(what + ": the integer writers need 8-bit activations, got '" + std::string(grid.type->name) +
                           "'");
      if (activation.scale.size() != 1 || activation.zero_point.size() != 1)
        throw QdqPlanError(what + ": activations need one scale and one zero point");
      grid.scale = static_cast<float>(activation.scale[0]);
      if (!(std::isfinite(activation.scale[0]) && grid.scale > 0))
        throw QdqPlanError(what + ": scale " + format_number(activation.scale[0]) + " is not a finite float32 > 0");
      grid.zero_point = activation.zero_point[0];
      if (grid.zero_point < grid.type->min || grid.zero_point > grid.type->max)
        throw QdqPlanError(what + ": zero point " + std::to_string(grid.zero_point) + " is outside " +
                           std::string(grid.type->name));
      if (!grids_.emplace(activation.tensor, grid).second)
        throw QdqPlanError(what + " appears more than once in the plan");
    }
    for (const QdqWeight& weight : plan.weights) {
      const Tensor* tensor = float_initializer("weight", weight.initializer);
      const QuantTypeInfo& type = quant_type_info(weight.dtype);
      if (type.bits != 8)
        throw QdqPlanError("weight '" + weight.initializer + "': the integer writers need 8-bit weights, got '" +
                           std::string(type.name) + "'");
      if (weight.values && weight.values->shape != tensor->dims)
        throw QdqPlanError("weight '" + weight.initializer + "': values have shape " +
                           format_list(weight.values->shape) + " but the initializer has dims " +
                           format_list(tensor->dims));
      weights_.emplace(weight.initializer, &weight);
    }
    for (const QdqBias& bias : plan.biases) {
      const Tensor* tensor = float_initializer("bias", bias.initializer);
      if (bias.values && bias.values->shape != tensor->dims)
        throw QdqPlanError("bias '" + bias.initializer + "': values have shape " + format_list(bias.values->shape) +
                           " but the initializer has dims " + format_list(tensor->dims));
      biases_.emplace(bias.initializer, &bias);
    }
    for (const QdqFloat& replaced : plan.floats) {
      const Tensor* tensor = float_initializer("float", replaced.initializer);
      if (replaced.values.shape != tensor->dims)
        throw QdqPlanError("float initializer '" + replaced.initializer + "': values have shape " +
                           format_list(replaced.values.shape) + " but the initializer has dims " +
                           format_list(tensor->dims));
      floats_.emplace(replaced.initializer, &replaced);
    }
  }

  const Tensor* float_initializer(std::string_view kind, const std::string& name) const {
    const auto found = initializers_.find(name);
    if (found == initializers_.end())
      throw QdqPlanError(std::string(kind) + " initializer '" + name + "' not found in the main graph");
    if (found->second->data_type != static_cast<std::int32_t>(DataType::Float))
      throw QdqPlanError(std::string(kind) + " initializer '" + name + "' is not FLOAT");
    return found->second;
  }

  // The float values of an initializer (new ones from the plan, or its stored data), C order.
  std::vector<float> float_values(const Tensor& tensor, const std::optional<FloatValues>& values) const {
    if (values) return {values->data.begin(), values->data.end()};
    std::vector<float> out(tensor.data.size() / sizeof(float));
    if (!out.empty()) std::memcpy(out.data(), tensor.data.data(), out.size() * sizeof(float));
    std::size_t count = 1;
    for (std::int64_t dim : tensor.dims) count *= static_cast<std::size_t>(dim);
    if (out.size() != count)
      throw QdqPlanError("initializer '" + tensor.name + "' holds " + std::to_string(out.size()) +
                         " floats for dims " + format_list(tensor.dims));
    return out;
  }

  // --- errors ----------------------------------------------------------------------------------

  std::string format_name() const { return format_ == IntegerFormat::FixedPoint ? "fixed-point" : "QOperator"; }

  [[noreturn]] void unsupported(const Node& node, const std::string& why) const {
    throw IntegerLoweringError("node '" + node.name + "' (" + node.op_type + "): " + why + " in the " + format_name() +
                               " format");
  }

  // --- emitting ----------------------------------------------------------------------------------

  void emit(std::string_view op, const std::vector<std::string>& inputs, const std::vector<std::string>& outputs,
            std::vector<wire::Writer> attributes = {}, std::string_view domain = "",
            std::span<const std::span<const std::byte>> attribute_views = {}, std::string name = "") {
    wire::Writer node;
    for (const std::string& input : inputs) node.string(NodeProto::input, input);
    for (const std::string& output : outputs) node.string(NodeProto::output, output);
    node.string(NodeProto::name, name.empty() ? names_.fresh(outputs.front() + "_" + std::string(op)) : name);
    node.string(NodeProto::op_type, op);
    for (wire::Writer& attribute : attributes) node.message(NodeProto::attribute, std::move(attribute));
    for (std::span<const std::byte> view : attribute_views) node.view(view);
    if (!domain.empty()) {
      node.string(NodeProto::domain, domain);
      uses_microsoft_ |= domain == kMicrosoft;
    }
    nodes_.push_back(std::move(node));
  }

  std::string constant(const std::string& base, DataType type, std::vector<std::int64_t> dims,
                       std::vector<std::byte> bytes) {
    std::string name = names_.fresh(base);
    initializers_out_.push_back(tensor_message(name, type, dims, std::move(bytes)));
    return name;
  }

  std::string int64_constant(const std::string& base, const std::vector<std::int64_t>& values,
                             std::vector<std::int64_t> dims = {}) {
    std::vector<std::byte> bytes(values.size() * 8);
    if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
    return constant(base, DataType::Int64, std::move(dims), std::move(bytes));
  }

  std::string scale_constant(const std::string& base, float scale) {
    std::vector<std::byte> bytes(4);
    std::memcpy(bytes.data(), &scale, 4);
    return constant(base + "_scale", DataType::Float, {}, std::move(bytes));
  }

  std::string zero_point_constant(const std::string& base, const QuantTypeInfo& type, std::int64_t zero_point) {
    return constant(base + "_zero_point", type.type, {}, {eight_bits(zero_point)});
  }

  // Copies an initializer of the source the new graph reads as it is (shapes, indices, float
  // constants of float islands); float data the plan replaced is written anew.
  void use_source_initializer(const std::string& name) {
    if (!initializers_.contains(name) || !copied_.insert(name).second) return;
    const Tensor& tensor = *initializers_.at(name);
    if (const auto found = floats_.find(name); found != floats_.end()) {
      const std::span<const std::byte> bytes = std::as_bytes(found->second->values.data);
      initializers_out_.push_back(
          tensor_message(name, DataType::Float, tensor.dims, std::vector<std::byte>(bytes.begin(), bytes.end())));
      return;
    }
    if (tensor.is_external())
      throw IntegerLoweringError("initializer '" + name + "' has external data, which the integer writers do not embed");
    wire::Writer field;
    field.view(initializer_fields_.at(name));
    initializers_out_.push_back(std::move(field));
    raw_initializer_fields_.insert(initializers_out_.size() - 1);
  }

  // --- lowering ----------------------------------------------------------------------------------

  const Grid* grid_of(const std::string& tensor) const {
    const auto found = grids_.find(tensor);
    return found != grids_.end() ? &found->second : nullptr;
  }

  // The single consumer of `tensor` (its only use), if it is a node.
  const Node* single_consumer(const std::string& tensor) const {
    const auto uses = uses_.find(tensor);
    const auto consumers = consumers_.find(tensor);
    if (uses == uses_.end() || uses->second != 1 || consumers == consumers_.end() || consumers->second.size() != 1)
      return nullptr;
    return model_.graph->nodes[consumers->second.front()].get();
  }

  const IntegerValue& quantized_input(const Node& node, std::size_t index) const {
    const std::string& name = index < node.inputs.size() ? node.inputs[index] : std::string();
    const auto found = values_.find(name);
    if (found == values_.end()) unsupported(node, "input '" + name + "' is not a quantized tensor");
    return found->second;
  }

  bool has_quantized_input(const Node& node) const {
    return std::ranges::any_of(node.inputs, [&](const std::string& input) { return values_.contains(input); });
  }

  void lower_graph() {
    const Graph& graph = *model_.graph;
    for (const ValueInfo& input : graph.inputs) {
      if (initializers_.contains(input.name)) continue;
      if (const Grid* grid = grid_of(input.name)) {
        const std::string name = names_.fresh(input.name + "_int");
        emit("QuantizeLinear", {input.name, scale_constant(input.name, grid->scale),
                                zero_point_constant(input.name, *grid->type, grid->zero_point)}, {name});
        values_.emplace(input.name, IntegerValue{name, *grid});
      }
    }
    for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
      if (absorbed_.contains(i)) continue;
      lower_node(i);
    }
    for (const ValueInfo& output : graph.outputs) {
      const auto found = values_.find(output.name);
      if (found == values_.end()) {
        if (!float_values_.contains(output.name) && !initializers_.contains(output.name))
          throw IntegerLoweringError("graph output '" + output.name + "' has no encoding");
        continue;
      }
      const Grid& grid = found->second.grid;
      emit("DequantizeLinear", {found->second.name, scale_constant(output.name, grid.scale),
                                zero_point_constant(output.name, *grid.type, grid.zero_point)}, {output.name});
    }
  }

  void lower_node(std::size_t index) {
    const Node& node = *model_.graph->nodes[index];
    const std::string& op = node.op_type;
    const bool standard = is_default_domain(node.domain);
    if (!has_quantized_input(node)) {
      if (std::ranges::any_of(node.outputs, [&](const std::string& output) { return grids_.contains(output); })) {
        // The last node of a float chain (a LayerNorm the conversion fused: only its input and
        // result have encodings) quantizes its result, where float nodes are allowed.
        if (allow_islands_ || format_ == IntegerFormat::QOperator) return float_island(index);
        unsupported(node, "an output has an encoding but no input is quantized");
      }
      return copy_node(index, {}, {});  // shape arithmetic and other integer or constant work
    }
    if (standard && (op == "Shape" || op == "Size")) {  // the same answer for the integer tensor
      const IntegerValue& x = quantized_input(node, 0);
      return copy_node(index, {{node.inputs[0], x.name}}, {});
    }
    if (standard && (op == "Add" || op == "Mul") && !all_inputs_quantized(node)) {
      // A float operand (a detector's anchor grid, computed from sizes alone, is not data and has
      // no encoding): the node runs in float, like any op without an integer form.
      if (!allow_islands_ && format_ == IntegerFormat::FixedPoint)
        unsupported(node, "an operand has no encoding (a float tensor, such as one computed from sizes alone)");
      return float_island(index);
    }
    if (standard && (op == "Conv" || op == "Gemm" || op == "MatMul")) return lower_linear(index);
    if (standard && op == "Relu") return lower_relu(node);
    if (standard && op == "Add") return lower_add(index);
    if (standard && op == "Mul") return lower_mul(node);
    if (standard && op == "AveragePool") return lower_average_pool(index);
    if (standard && op == "Concat") return lower_concat(index);
    if (standard && op == "GlobalAveragePool" && format_ == IntegerFormat::QOperator) return lower_qlinear_pool(node);
    if (standard && op == "GlobalAveragePool") return lower_global_average_pool(node);
    if (standard && kDataMovement.contains(op)) return lower_data_movement(index);
    // Nearest-neighbour resizing selects input elements: it runs on the integers (onnxruntime's
    // Resize and Upsample take uint8 and int8 in nearest mode).
    if (standard && (op == "Resize" || op == "Upsample") && string_or(node, "mode", "nearest") == "nearest")
      return lower_data_movement(index);
    if (standard && op == "Softmax" && format_ == IntegerFormat::QOperator) return lower_qlinear_softmax(index);
    if (standard && (op == "Sigmoid" || op == "LeakyRelu") && format_ == IntegerFormat::QOperator)
      return lower_qlinear_activation(node);
    if (((standard && kTableOps.contains(op)) || (node.domain == kMicrosoft && kMicrosoftTableOps.contains(op))) &&
        format_ == IntegerFormat::FixedPoint)
      return lower_table(node);
    // QOperator models keep such ops in float between DequantizeLinear and QuantizeLinear, as
    // onnxruntime's quantizer does; the fixed-point form does so only when asked.
    if (!allow_islands_ && format_ == IntegerFormat::FixedPoint) unsupported(node, "the operator has no integer form");
    float_island(index);
  }

  bool all_inputs_quantized(const Node& node) const {
    return std::ranges::all_of(node.inputs, [&](const std::string& input) {
      return input.empty() || values_.contains(input);
    });
  }

  // The node as it is, with `renamed` inputs/outputs; its initializers are copied.
  void copy_node(std::size_t index, const std::unordered_map<std::string, std::string>& inputs,
                 const std::unordered_map<std::string, std::string>& outputs) {
    const Node& node = *model_.graph->nodes[index];
    std::vector<std::string> in, out;
    for (const std::string& input : node.inputs) {
      const auto found = inputs.find(input);
      in.push_back(found != inputs.end() ? found->second : input);
      if (found == inputs.end()) use_source_initializer(input);
    }
    for (const std::string& output : node.outputs) {
      const auto found = outputs.find(output);
      out.push_back(found != outputs.end() ? found->second : output);
      float_values_.insert(out.back());
    }
    emit(node.op_type, in, out, {}, node.domain, attribute_views_[index], node.name);
  }

  // Dequantize the quantized inputs, run the node in float, quantize the outputs that have an encoding.
  void float_island(std::size_t index) {
    const Node& node = *model_.graph->nodes[index];
    std::unordered_map<std::string, std::string> inputs, outputs;
    for (const std::string& input : node.inputs) {
      const auto found = values_.find(input);
      if (found == values_.end() || inputs.contains(input)) continue;
      const std::string name = names_.fresh(input + "_float");
      const Grid& grid = found->second.grid;
      emit("DequantizeLinear", {found->second.name, scale_constant(name, grid.scale),
                                zero_point_constant(name, *grid.type, grid.zero_point)}, {name});
      inputs.emplace(input, name);
    }
    for (const std::string& output : node.outputs)
      if (grid_of(output)) outputs.emplace(output, names_.fresh(output + "_float"));
    copy_node(index, inputs, outputs);
    for (const auto& [output, float_name] : outputs) quantize_float(output, float_name);
    stats_.float_islands.push_back(node.name + " (" + node.op_type + ")");
  }

  void quantize_float(const std::string& tensor, const std::string& float_name) {
    const Grid& grid = *grid_of(tensor);
    const std::string name = names_.fresh(tensor + "_int");
    emit("QuantizeLinear", {float_name, scale_constant(name, grid.scale),
                            zero_point_constant(name, *grid.type, grid.zero_point)}, {name});
    values_.emplace(tensor, IntegerValue{name, grid});
  }

  // What follows a linear op inside its fused group: an Add of a planned bias, then a Relu, up to
  // the first tensor with an encoding.
  struct Tail {
    const QdqBias* bias = nullptr;  // from a following Add
    bool relu = false;
    std::string tensor;
    std::string node;
  };

  Tail fused_tail(const Node& node, bool add_bias_allowed) {
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

  void absorb(const Node& node) {
    for (std::size_t i = 0; i < model_.graph->nodes.size(); ++i)
      if (model_.graph->nodes[i].get() == &node) absorbed_.insert(i);
  }

  // Conv, Gemm and MatMul with a planned weight.
  void lower_linear(std::size_t index) {
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

  // int64 (acc x M0 + 2^(n-1)) floor-divided by 2^n, plus the zero point, clamped, cast to 8 bits.
  std::string requantize(const std::string& acc, bool acc_int64, const std::vector<double>& rescale,
                         const std::vector<std::int64_t>& channel_dims, const Grid& y, bool relu,
                         const std::string& node_name, const std::string& tensor, const std::string& base) {
    std::vector<std::pair<std::int64_t, std::int64_t>> factors;
    for (double r : rescale) factors.push_back(decompose(r, node_name));
    return requantize_by(acc, acc_int64, rescale, factors, channel_dims, y, relu, node_name, tensor, base);
  }

  // The same with the multipliers and shifts given (per channel, or one).
  std::string requantize_by(const std::string& acc, bool acc_int64, const std::vector<double>& rescale,
                            const std::vector<std::pair<std::int64_t, std::int64_t>>& factors,
                            const std::vector<std::int64_t>& channel_dims, const Grid& y, bool relu,
                            const std::string& node_name, const std::string& tensor, const std::string& base) {
    IntegerRequantization row{node_name, tensor, rescale, {}, {}, 0};
    std::vector<std::int64_t> halves, divisors;
    for (std::size_t c = 0; c < factors.size(); ++c) {
      const auto [multiplier, shift] = factors[c];
      const double r = rescale[std::min(c, rescale.size() - 1)];
      row.multiplier.push_back(multiplier);
      row.shift.push_back(shift);
      row.max_relative_error = std::max(
          row.max_relative_error, std::abs(std::ldexp(static_cast<double>(multiplier), -static_cast<int>(shift)) - r) / r);
      halves.push_back(std::int64_t{1} << (shift - 1));
      divisors.push_back(std::int64_t{1} << shift);
    }
    const bool unit = std::ranges::all_of(row.multiplier, [](std::int64_t m) { return m == 1; });
    std::string x = acc;
    if (!acc_int64) {
      x = names_.fresh(base + "_acc64");
      emit("Cast", {acc}, {x}, vec(int_attribute("to", static_cast<std::int64_t>(DataType::Int64))));
    }
    const auto step = [&](std::string_view op, const std::string& a, const std::string& b, std::string_view what) {
      const std::string out = names_.fresh(base + "_" + std::string(what));
      emit(op, {a, b}, {out});
      return out;
    };
    const std::string scaled =
        unit ? x : step("Mul", x, int64_constant(base + "_multiplier", row.multiplier, channel_dims), "scaled");
    const std::string rounded = step("Add", scaled, int64_constant(base + "_half", halves, channel_dims), "rounded");
    const std::string divisor = int64_constant(base + "_divisor", divisors, channel_dims);
    const std::string remainder = step("Mod", rounded, divisor, "remainder");  // fmod=0: sign of the divisor, >= 0
    const std::string exact = step("Sub", rounded, remainder, "floored");
    std::string shifted = step("Div", exact, divisor, "shifted");  // exact division: floor((acc M0 + 2^(n-1)) / 2^n)
    if (y.zero_point != 0) shifted = step("Add", shifted, int64_constant(base + "_zp", {y.zero_point}), "shifted_zp");
    const std::string clamped = names_.fresh(base + "_clamped");
    emit("Clip", {shifted, int64_constant(base + "_min", {relu ? std::max(y.zero_point, y.type->min) : y.type->min}),
                  int64_constant(base + "_max", {y.type->max})}, {clamped});
    const std::string out = names_.fresh(base);
    emit("Cast", {clamped}, {out}, vec(int_attribute("to", static_cast<std::int64_t>(y.type->type))));
    stats_.requantizations.push_back(std::move(row));
    return out;
  }

  static std::vector<wire::Writer> vec(wire::Writer attribute) {
    std::vector<wire::Writer> out;
    out.push_back(std::move(attribute));
    return out;
  }

  // rescale ~ multiplier x 2^-shift, multiplier in [2^30, 2^31], 1 <= shift <= 62.
  static std::pair<std::int64_t, std::int64_t> decompose(double rescale, const std::string& node_name) {
    if (!(std::isfinite(rescale) && rescale > 0))
      throw IntegerLoweringError("node '" + node_name + "': rescale " + format_number(rescale) + " is not finite and > 0");
    int exponent = 0;
    const double fraction = std::frexp(rescale, &exponent);  // rescale = fraction x 2^exponent, fraction in [0.5, 1)
    std::int64_t multiplier = std::llround(std::ldexp(fraction, kMultiplierBits));
    const std::int64_t shift = kMultiplierBits - exponent;
    if (shift < 1 || shift > 62)
      throw IntegerLoweringError("node '" + node_name + "': rescale " + format_number(rescale) +
                                 " is outside the range a 31-bit multiplier and a shift of 1 to 62 bits can express");
    return {multiplier, shift};
  }

  // Centred int64 copy of an integer tensor: x - zero point.
  std::string centred(const IntegerValue& x, const std::string& base) {
    const std::string wide = names_.fresh(base + "_i64");
    emit("Cast", {x.name}, {wide}, vec(int_attribute("to", static_cast<std::int64_t>(DataType::Int64))));
    if (x.grid.zero_point == 0) return wide;
    const std::string out = names_.fresh(base + "_centred");
    emit("Sub", {wide, int64_constant(base + "_in_zp", {x.grid.zero_point})}, {out});
    return out;
  }

  // `x` on the grid `y` (the same integers when the grids are equal).
  std::string regrid(const IntegerValue& x, const Grid& y, bool relu, const std::string& node_name,
                     const std::string& tensor) {
    if (x.grid.same_as(y) && !relu) return x.name;
    const std::string base = names_.fresh(tensor + "_int");
    if (x.grid.same_as(y)) {  // ReLU on the same grid: an integer clamp at the zero point
      const std::string out = names_.fresh(base);
      const std::string lo = constant(base + "_min", y.type->type, {}, {eight_bits(y.zero_point)});
      const std::string hi = constant(base + "_max", y.type->type, {}, {eight_bits(y.type->max)});
      emit("Clip", {x.name, lo, hi}, {out});
      return out;
    }
    if (format_ == IntegerFormat::QOperator) {  // dequantize and quantize again: what onnxruntime does
      const std::string f = names_.fresh(base + "_float");
      emit("DequantizeLinear", {x.name, scale_constant(f, x.grid.scale),
                                zero_point_constant(f, *x.grid.type, x.grid.zero_point)}, {f});
      std::string source = f;
      if (relu) {
        source = names_.fresh(base + "_relu");
        emit("Relu", {f}, {source});
      }
      const std::string out = names_.fresh(base);
      emit("QuantizeLinear", {source, scale_constant(out, y.scale), zero_point_constant(out, *y.type, y.zero_point)}, {out});
      return out;
    }
    return requantize(centred(x, base), true,
                      {static_cast<double>(x.grid.scale) / static_cast<double>(y.scale)}, {}, y, relu, node_name,
                      tensor, base);
  }

  void lower_relu(const Node& node) {
    const IntegerValue& x = quantized_input(node, 0);
    const std::string& output = node.outputs.at(0);
    const Grid* y = grid_of(output);
    const Grid grid = y ? *y : x.grid;
    values_.emplace(output, IntegerValue{regrid(x, grid, true, node.name, output), grid});
  }

  void lower_data_movement(std::size_t index) {
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

  void lower_add(std::size_t index) {
    const Node& node = *model_.graph->nodes[index];
    if (node.inputs.size() != 2 || !values_.contains(node.inputs[0]) || !values_.contains(node.inputs[1]))
      unsupported(node, "an Add needs two quantized inputs");
    const IntegerValue a = quantized_input(node, 0), b = quantized_input(node, 1);
    Tail tail{nullptr, false, node.outputs.at(0), node.name};
    if (!grid_of(tail.tensor))
      if (const Node* relu = single_consumer(tail.tensor); relu && relu->op_type == "Relu") {
        tail.relu = true;
        absorb(*relu);
        tail.tensor = relu->outputs.at(0);
        tail.node = relu->name;
      }
    if (!grid_of(tail.tensor)) unsupported(node, "output '" + tail.tensor + "' has no encoding");
    const Grid y = *grid_of(tail.tensor);
    const std::string base = names_.fresh(tail.tensor + "_int");
    if (format_ == IntegerFormat::QOperator) {
      std::string out = names_.fresh(base);
      emit("QLinearAdd", {a.name, scale_constant(base + "_a", a.grid.scale), zero_point_constant(base + "_a", *a.grid.type, a.grid.zero_point),
                          b.name, scale_constant(base + "_b", b.grid.scale), zero_point_constant(base + "_b", *b.grid.type, b.grid.zero_point),
                          scale_constant(base, y.scale), zero_point_constant(base, *y.type, y.zero_point)},
           {out}, {}, kMicrosoft);
      if (tail.relu && y.zero_point != y.type->min) out = regrid(IntegerValue{out, y}, y, true, tail.node, tail.tensor);
      values_.emplace(tail.tensor, IntegerValue{out, y});
      return;
    }
    // One shift for both terms: the larger rescale sets it, the other multiplier has fewer bits.
    const double ra = static_cast<double>(a.grid.scale) / y.scale, rb = static_cast<double>(b.grid.scale) / y.scale;
    const std::int64_t shift = decompose(std::max(ra, rb), node.name).second;
    const std::int64_t ma = std::llround(std::ldexp(ra, static_cast<int>(shift)));
    const std::int64_t mb = std::llround(std::ldexp(rb, static_cast<int>(shift)));
    const std::string sa = names_.fresh(base + "_a_scaled"), sb = names_.fresh(base + "_b_scaled");
    emit("Mul", {centred(a, base + "_a"), int64_constant(base + "_a_multiplier", {ma})}, {sa});
    emit("Mul", {centred(b, base + "_b"), int64_constant(base + "_b_multiplier", {mb})}, {sb});
    const std::string sum = names_.fresh(base + "_sum");
    emit("Add", {sa, sb}, {sum});
    // The sum needs only the rounding shift, zero point and clamp (multiplier 1).
    const std::string out = requantize_by(sum, true, {std::ldexp(1.0, -static_cast<int>(shift))}, {{1, shift}}, {}, y,
                                          tail.relu, tail.node, tail.tensor, base);
    IntegerRequantization& row = stats_.requantizations.back();
    row.rescale = {ra, rb};
    row.multiplier = {ma, mb};
    row.shift = {shift, shift};
    row.max_relative_error = std::max(std::abs(std::ldexp(static_cast<double>(ma), -static_cast<int>(shift)) - ra) / ra,
                                      std::abs(std::ldexp(static_cast<double>(mb), -static_cast<int>(shift)) - rb) / rb);
    values_.emplace(tail.tensor, IntegerValue{out, y});
  }

  // y = zp_y + round(s_a s_b / s_y (a - zp_a)(b - zp_b)): both inputs quantized.
  void lower_mul(const Node& node) {
    if (node.inputs.size() != 2 || !values_.contains(node.inputs[0]) || !values_.contains(node.inputs[1]))
      unsupported(node, "a Mul needs two quantized inputs");
    const IntegerValue a = quantized_input(node, 0), b = quantized_input(node, 1);
    const std::string& output = node.outputs.at(0);
    const Grid* y = grid_of(output);
    if (!y) unsupported(node, "output '" + output + "' has no encoding");
    const std::string base = names_.fresh(output + "_int");
    if (format_ == IntegerFormat::QOperator) {
      const std::string out = names_.fresh(base);
      emit("QLinearMul", {a.name, scale_constant(base + "_a", a.grid.scale), zero_point_constant(base + "_a", *a.grid.type, a.grid.zero_point),
                          b.name, scale_constant(base + "_b", b.grid.scale), zero_point_constant(base + "_b", *b.grid.type, b.grid.zero_point),
                          scale_constant(base, y->scale), zero_point_constant(base, *y->type, y->zero_point)},
           {out}, {}, kMicrosoft);
      values_.emplace(output, IntegerValue{out, *y});
      return;
    }
    const std::string product = names_.fresh(base + "_product");
    emit("Mul", {centred(a, base + "_a"), centred(b, base + "_b")}, {product});
    const double rescale = static_cast<double>(a.grid.scale) * static_cast<double>(b.grid.scale) / static_cast<double>(y->scale);
    values_.emplace(output, IntegerValue{requantize(product, true, {rescale}, {}, *y, false, node.name, output, base), *y});
  }

  // AveragePool: a depthwise ConvInteger with a kernel of ones (padding reads the zero point, so a
  // padded position adds 0), then a requantization that also divides by the kernel size.
  void lower_average_pool(std::size_t index) {
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

  void lower_concat(std::size_t index) {
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

  // Sum over the spatial positions (int64), then one requantization that divides by their count.
  void lower_global_average_pool(const Node& node) {
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

  void lower_qlinear_pool(const Node& node) {
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

  void lower_qlinear_activation(const Node& node) {
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

  void lower_qlinear_softmax(std::size_t index) {
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

  // y[q] for every input integer q: the float function between the two grids, rounded half to even.
  void lower_table(const Node& node) {
    const IntegerValue& x = quantized_input(node, 0);
    const std::string& output = node.outputs.at(0);
    const Grid* y = grid_of(output);
    if (!y) unsupported(node, "output '" + output + "' has no encoding");
    const auto f = table_function(node);
    std::vector<std::byte> table(256);
    for (std::int64_t q = x.grid.type->min; q <= x.grid.type->max; ++q) {
      const float input = static_cast<float>(q - x.grid.zero_point) * x.grid.scale;  // DequantizeLinear, float32
      const float value = static_cast<float>(f(static_cast<double>(input)));
      const double level = std::clamp(static_cast<double>(std::nearbyint(value / y->scale)) + static_cast<double>(y->zero_point),
                                      static_cast<double>(y->type->min), static_cast<double>(y->type->max));
      table[static_cast<std::size_t>(q - x.grid.type->min)] = eight_bits(static_cast<std::int64_t>(level));
    }
    const std::string base = names_.fresh(output + "_int");
    const std::string table_name = constant(base + "_table", y->type->type, {256}, std::move(table));
    std::string index = names_.fresh(base + "_index");
    emit("Cast", {x.name}, {index}, vec(int_attribute("to", static_cast<std::int64_t>(DataType::Int32))));
    if (x.grid.type->min != 0) {
      std::vector<std::byte> offset(4);
      store(kInt32Info, offset.data(), 0, -x.grid.type->min);
      const std::string shifted = names_.fresh(base + "_index_offset");
      emit("Add", {index, constant(base + "_offset", DataType::Int32, {}, std::move(offset))}, {shifted});
      index = shifted;
    }
    const std::string out = names_.fresh(base);
    emit("Gather", {table_name, index}, {out}, vec(int_attribute("axis", 0)));
    values_.emplace(output, IntegerValue{out, *y});
  }

  // QLinearConv / QLinearMatMul / com.microsoft QGemm with the weight as stored integers.
  void lower_qlinear(const Node& node, std::size_t index, const IntegerValue& x, const QdqWeight& weight,
                     const QuantTypeInfo& w_type, const std::vector<std::int64_t>& w_dims,
                     const std::vector<std::int64_t>& w_int, const std::vector<std::int64_t>& bias_int, const Tail& tail,
                     const Grid& y, const std::string& base, std::size_t channels) {
    std::vector<std::byte> w_bytes(w_int.size());
    for (std::size_t i = 0; i < w_int.size(); ++i) store(w_type, w_bytes.data(), i, w_int[i]);
    const std::string w_name = constant(weight.initializer + "_quantized", w_type.type, w_dims, std::move(w_bytes));
    const bool per_channel = weight.scale.size() > 1;
    std::vector<std::byte> scales(weight.scale.size() * 4), zeros(weight.zero_point.size());
    for (std::size_t c = 0; c < weight.scale.size(); ++c) {
      const float scale = static_cast<float>(weight.scale[c]);
      std::memcpy(scales.data() + 4 * c, &scale, 4);
    }
    for (std::size_t c = 0; c < weight.zero_point.size(); ++c) store(w_type, zeros.data(), c, weight.zero_point[c]);
    const std::vector<std::int64_t> w_param_dims = per_channel ? std::vector<std::int64_t>{static_cast<std::int64_t>(channels)}
                                                               : std::vector<std::int64_t>{};
    const std::string w_scale = constant(weight.initializer + "_scale", DataType::Float, w_param_dims, std::move(scales));
    const std::string w_zp = constant(weight.initializer + "_zero_point", w_type.type, w_param_dims, std::move(zeros));
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

  // The rank of a tensor from the graph's (inferred) types; -1 when unknown.
  std::int64_t input_rank(const std::string& tensor) const {
    const auto type = types_.find(tensor);
    if (type == types_.end() || !type->second->shape) return -1;
    return static_cast<std::int64_t>(type->second->shape->size());
  }

  // --- the model -------------------------------------------------------------------------------

  wire::Writer model_message() {
    std::int64_t current_opset = 0;
    for (const OperatorSetId& opset : model_.opset_imports)
      if (is_default_domain(opset.domain)) current_opset = std::max(current_opset, opset.version);
    const std::int64_t opset = std::max(current_opset, kMinOpset);
    Reader reader(file_.bytes(), file_.bytes().data(), kModelProto);
    wire::Writer out;
    bool saw_microsoft = false;
    while (reader.next()) switch (reader.tag()) {
        case ModelProto::ir_version: reader.skip(); break;  // ir_version, written below
        case ModelProto::graph: reader.skip(); break;  // the graph, written below
        case ModelProto::opset_import: {
          std::string domain;
          Reader entry = reader.get_message(kOperatorSetIdProto);
          while (entry.next()) {
            if (entry.tag() == OperatorSetIdProto::domain)
              domain = entry.get_string();
            else
              entry.skip();
          }
          if (is_default_domain(domain)) break;  // written below
          saw_microsoft |= domain == kMicrosoft;
          out.view(reader.field_bytes());
          break;
        }
        case ModelProto::metadata_props: {
          std::string key;
          Reader entry = reader.get_message(kStringStringEntryProto);
          while (entry.next()) {
            if (entry.tag() == StringStringEntryProto::key)
              key = entry.get_string();
            else
              entry.skip();
          }
          if (key != kMetadataKey) out.view(reader.field_bytes());
          break;
        }
        default:
          reader.skip();
          out.view(reader.field_bytes());
      }
    out.int64(ModelProto::ir_version, std::max(model_.ir_version, min_ir_version(opset)));
    wire::Writer default_opset;
    default_opset.string(OperatorSetIdProto::domain, "");
    default_opset.int64(OperatorSetIdProto::version, opset);
    out.message(ModelProto::opset_import, std::move(default_opset));
    if (uses_microsoft_ && !saw_microsoft) {
      wire::Writer microsoft;
      microsoft.string(OperatorSetIdProto::domain, kMicrosoft);
      microsoft.int64(OperatorSetIdProto::version, 1);
      out.message(ModelProto::opset_import, std::move(microsoft));
    }
    wire::Writer graph;
    for (wire::Writer& node : nodes_) graph.message(GraphProto::node, std::move(node));
    for (std::size_t i = 0; i < initializers_out_.size(); ++i) {
      if (raw_initializer_fields_.contains(i))
        graph.append(std::move(initializers_out_[i]));  // a whole field of the source
      else
        graph.message(GraphProto::initializer, std::move(initializers_out_[i]));
    }
    for (std::span<const std::byte> field : graph_fields_) graph.view(field);
    out.message(ModelProto::graph, std::move(graph));
    wire::Writer entry;
    entry.string(StringStringEntryProto::key, kMetadataKey);
    entry.string(StringStringEntryProto::value, format_ == IntegerFormat::FixedPoint ? "fixed-point" : "qoperator");
    out.message(ModelProto::metadata_props, std::move(entry));
    return out;
  }

  const Model& model_;
  const MappedFile& file_;
  IntegerFormat format_;
  bool allow_islands_;
  NameTable names_;
  std::unordered_map<std::string, const Tensor*> initializers_;
  std::unordered_map<std::string, std::span<const std::byte>> initializer_fields_;
  std::vector<std::vector<std::span<const std::byte>>> attribute_views_;
  std::vector<std::span<const std::byte>> graph_fields_;
  std::unordered_map<std::string, std::size_t> uses_;
  std::unordered_map<std::string, std::vector<std::size_t>> consumers_;
  std::unordered_map<std::string, const TypeInfo*> types_;
  std::unordered_map<std::string, Grid> grids_;
  std::unordered_map<std::string, const QdqWeight*> weights_;
  std::unordered_map<std::string, const QdqBias*> biases_;
  std::unordered_map<std::string, const QdqFloat*> floats_;
  std::unordered_map<std::string, IntegerValue> values_;  // source tensor -> its integer form
  std::unordered_set<std::string> float_values_;          // float tensors of the new graph
  std::unordered_set<std::size_t> absorbed_;              // nodes lowered with an earlier one
  std::unordered_set<std::string> copied_;
  std::vector<wire::Writer> nodes_;
  std::vector<wire::Writer> initializers_out_;
  std::unordered_set<std::size_t> raw_initializer_fields_;
  bool uses_microsoft_ = false;
  IntegerStats stats_;
};

}  // namespace

IntegerStats write_integer_model(const std::filesystem::path& source, const std::filesystem::path& output,
                                 const QdqPlan& plan, IntegerFormat format, bool allow_float_islands) {
  std::shared_ptr<const MappedFile> file;
  const std::unique_ptr<Model> model = load_model(source, file);
  check_graph(*model->graph);  // the nodes are in topological order, which the lowering follows
  IntegerLowering lowering(*model, *file, plan, format, allow_float_islands);
  const wire::Writer content = lowering.write();
  if (content.size() > kMaxModelBytes)
    throw QdqSizeError("the integer model would take " + std::to_string(content.size()) + " bytes; over 2 GB");
  write_atomically(output, content);
  IntegerStats stats = lowering.stats();
  stats.bytes_written = content.size();
  return stats;
}

}  // namespace onnx2fx
