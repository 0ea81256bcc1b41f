#include "writer/integer_writer.h"

#include <algorithm>
#include <climits>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "onnx/model_reader.h"
#include "passes/check_graph.h"
#include "writer/integer_lowering.h"
#include "writer/writer_common.h"

namespace onnx2fx::integer_detail {

using namespace quant_writer;

namespace {

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

}  // namespace

IntegerLowering::IntegerLowering(const Model& model, const MappedFile& file, const QdqPlan& plan, IntegerFormat format,
                                 bool allow_float_islands)
    : model_(model), file_(file), format_(format), allow_islands_(allow_float_islands), names_(model) {
  index_source();
  index_plan(plan);
}

wire::Writer IntegerLowering::write() {
  lower_graph();
  return model_message();
}

IntegerStats IntegerLowering::stats() const {
  IntegerStats stats = stats_;
  stats.nodes_written = nodes_.size();
  return stats;
}

std::string IntegerLowering::format_name() const {
  return format_ == IntegerFormat::FixedPoint ? "fixed-point" : "QOperator";
}

[[noreturn]] void IntegerLowering::unsupported(const Node& node, const std::string& why) const {
  throw IntegerLoweringError("node '" + node.name + "' (" + node.op_type + "): " + why + " in the " + format_name() +
                             " format");
}

const Grid* IntegerLowering::grid_of(const std::string& tensor) const {
  const auto found = grids_.find(tensor);
  return found != grids_.end() ? &found->second : nullptr;
}

// The single consumer of `tensor` (its only use), if it is a node.
const Node* IntegerLowering::single_consumer(const std::string& tensor) const {
  const auto uses = uses_.find(tensor);
  const auto consumers = consumers_.find(tensor);
  if (uses == uses_.end() || uses->second != 1 || consumers == consumers_.end() || consumers->second.size() != 1)
    return nullptr;
  return model_.graph->nodes[consumers->second.front()].get();
}

const IntegerValue& IntegerLowering::quantized_input(const Node& node, std::size_t index) const {
  const std::string& name = index < node.inputs.size() ? node.inputs[index] : std::string();
  const auto found = values_.find(name);
  if (found == values_.end()) unsupported(node, "input '" + name + "' is not a quantized tensor");
  return found->second;
}

bool IntegerLowering::has_quantized_input(const Node& node) const {
  return std::ranges::any_of(node.inputs, [&](const std::string& input) { return values_.contains(input); });
}

void IntegerLowering::lower_graph() {
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

void IntegerLowering::lower_node(std::size_t index) {
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
  if (standard && op == "MatMul" &&
      std::ranges::any_of(node.inputs, [&](const std::string& input) { return float_values_.contains(input); })) {
    // A product with a float operand: the scores or probabilities of an attention the conversion
    // fused have no encoding (never materialised), so its products run in float between encodings.
    if (!allow_islands_ && format_ == IntegerFormat::FixedPoint)
      unsupported(node, "an operand has no encoding (inside a function the conversion fused, such as attention)");
    return float_island(index);
  }
  if (standard && op == "MatMul" && (node.inputs.size() < 2 || !weights_.contains(node.inputs[1]))) {
    // A product of two activations (an attention's scores with its values): the integer layers
    // here take a weight initializer, so it runs in float between the operands' encodings.
    if (!allow_islands_ && format_ == IntegerFormat::FixedPoint)
      unsupported(node, "both operands are activations (no integer form for a product without a weight)");
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

bool IntegerLowering::all_inputs_quantized(const Node& node) const {
  return std::ranges::all_of(node.inputs, [&](const std::string& input) {
    return input.empty() || values_.contains(input);
  });
}

// Dequantize the quantized inputs, run the node in float, quantize the outputs that have an encoding.
void IntegerLowering::float_island(std::size_t index) {
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

void IntegerLowering::quantize_float(const std::string& tensor, const std::string& float_name) {
  const Grid& grid = *grid_of(tensor);
  const std::string name = names_.fresh(tensor + "_int");
  emit("QuantizeLinear", {float_name, scale_constant(name, grid.scale),
                          zero_point_constant(name, *grid.type, grid.zero_point)}, {name});
  values_.emplace(tensor, IntegerValue{name, grid});
}

}  // namespace onnx2fx::integer_detail

namespace onnx2fx {
namespace {

constexpr std::uint64_t kMaxModelBytes = INT32_MAX;

}  // namespace

IntegerStats write_integer_model(const std::filesystem::path& source, const std::filesystem::path& output,
                                 const QdqPlan& plan, IntegerFormat format, bool allow_float_islands) {
  std::shared_ptr<const MappedFile> file;
  const std::unique_ptr<Model> model = load_model(source, file);
  check_graph(*model->graph);  // the nodes are in topological order, which the lowering follows
  integer_detail::IntegerLowering lowering(*model, *file, plan, format, allow_float_islands);
  const wire::Writer content = lowering.write();
  if (content.size() > kMaxModelBytes)
    throw QdqSizeError("the integer model would take " + std::to_string(content.size()) + " bytes; over 2 GB");
  quant_writer::write_atomically(output, content);
  IntegerStats stats = lowering.stats();
  stats.bytes_written = content.size();
  return stats;
}

}  // namespace onnx2fx
