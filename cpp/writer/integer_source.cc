// The integer lowering's view of the source: the raw fields of the main graph that the new graph
// reuses as they are, and the plan's encodings, weights, biases and floats checked against the model.

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "ir/data_type.h"
#include "onnx/schema.h"
#include "onnx/wire.h"
#include "writer/integer_lowering.h"

namespace onnx2fx::integer_detail {

using namespace onnx_schema;
using namespace quant_writer;
using wire::Reader;

void IntegerLowering::index_source() {
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

void IntegerLowering::index_plan(const QdqPlan& plan) {
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

const Tensor* IntegerLowering::float_initializer(std::string_view kind, const std::string& name) const {
  const auto found = initializers_.find(name);
  if (found == initializers_.end())
    throw QdqPlanError(std::string(kind) + " initializer '" + name + "' not found in the main graph");
  if (found->second->data_type != static_cast<std::int32_t>(DataType::Float))
    throw QdqPlanError(std::string(kind) + " initializer '" + name + "' is not FLOAT");
  return found->second;
}

// The float values of an initializer (new ones from the plan, or its stored data), C order.
std::vector<float> IntegerLowering::float_values(const Tensor& tensor, const std::optional<FloatValues>& values) const {
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

// The rank of a tensor from the graph's (inferred) types; -1 when unknown.
std::int64_t IntegerLowering::input_rank(const std::string& tensor) const {
  const auto type = types_.find(tensor);
  if (type == types_.end() || !type->second->shape) return -1;
  return static_cast<std::int64_t>(type->second->shape->size());
}

}  // namespace onnx2fx::integer_detail
