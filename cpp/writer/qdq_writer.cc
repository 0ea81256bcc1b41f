#include "writer/qdq_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "ir/data_type.h"
#include "ir/ir.h"
#include "onnx/mapped_file.h"
#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "onnx/wire.h"
#include "passes/check_graph.h"
#include "passes/value_uses.h"
#include "writer/wire_writer.h"
#include "writer/writer_common.h"

namespace onnx2fx {
namespace {

namespace fs = std::filesystem;
using namespace onnx_schema;
using wire::Reader;
using Renames = std::unordered_map<std::string, std::string>;
using namespace quant_writer;

constexpr std::string_view kMetadataKey = "onnx2fx.quantized";
constexpr std::string_view kMetadataValue = "qdq";
constexpr std::uint64_t kMaxModelBytes = INT32_MAX;  // protobuf refuses larger messages

// --- external data -------------------------------------------------------------------------------

// Tensors with external data, by the offset of their TensorProto in the model file.
class ExternalTensors {
 public:
  explicit ExternalTensors(const Model& model) {
    add_graph(*model.graph);
    for (const Function& function : model.functions) {
      for (const auto& node : function.nodes) add_attributes(node->attributes);
      add_attributes(function.attribute_defaults);
    }
  }

  const Tensor* find(std::int64_t proto_offset) const {
    const auto found = by_offset_.find(proto_offset);
    return found != by_offset_.end() ? found->second : nullptr;
  }
  bool empty() const { return by_offset_.empty(); }

  static bool in_node(const Node& node) {
    for (const Attribute& attribute : node.attributes) {
      if (attribute.t && attribute.t->is_external()) return true;
      if (std::ranges::any_of(attribute.tensors, &Tensor::is_external)) return true;
      if (attribute.sparse_tensor && in_sparse(*attribute.sparse_tensor)) return true;
      if (std::ranges::any_of(attribute.sparse_tensors, in_sparse)) return true;
      if (attribute.g && in_graph(*attribute.g)) return true;
      if (std::ranges::any_of(attribute.graphs, [](const auto& graph) { return in_graph(*graph); })) return true;
    }
    return false;
  }

 private:
  static bool in_sparse(const SparseTensor& tensor) { return tensor.values.is_external() || tensor.indices.is_external(); }
  static bool in_graph(const Graph& graph) {
    return std::ranges::any_of(graph.initializers, &Tensor::is_external) ||
           std::ranges::any_of(graph.sparse_initializers, in_sparse) ||
           std::ranges::any_of(graph.nodes, [](const auto& node) { return in_node(*node); });
  }

  void add(const Tensor& tensor) {
    if (tensor.is_external()) by_offset_.emplace(tensor.proto_offset, &tensor);
  }
  void add_sparse(const SparseTensor& tensor) {
    add(tensor.values);
    add(tensor.indices);
  }
  void add_graph(const Graph& graph) {
    for (const Tensor& tensor : graph.initializers) add(tensor);
    for (const SparseTensor& tensor : graph.sparse_initializers) add_sparse(tensor);
    for (const auto& node : graph.nodes) add_attributes(node->attributes);
  }
  void add_attributes(const std::vector<Attribute>& attributes) {
    for (const Attribute& attribute : attributes) {
      if (attribute.t) add(*attribute.t);
      for (const Tensor& tensor : attribute.tensors) add(tensor);
      if (attribute.sparse_tensor) add_sparse(*attribute.sparse_tensor);
      for (const SparseTensor& tensor : attribute.sparse_tensors) add_sparse(tensor);
      if (attribute.g) add_graph(*attribute.g);
      for (const auto& graph : attribute.graphs) add_graph(*graph);
    }
  }

  std::unordered_map<std::int64_t, const Tensor*> by_offset_;
};

// --- the checked plan ----------------------------------------------------------------------------

struct ActivationEntry {
  std::string tensor;
  const QuantTypeInfo* type = nullptr;
  float scale = 0;
  std::int64_t zero_point = 0;
  bool has_producer = false;
  std::string source;       // what QuantizeLinear reads: the tensor, or its renamed producer output
  std::string quantized;    // QuantizeLinear's output
  std::string dequantized;  // DequantizeLinear's output: what consumers read (the tensor for a graph output)
  std::string scale_name, zero_point_name, quantize_node, dequantize_node;
};

// A weight or a bias.
struct InitializerEntry {
  std::string_view kind;  // "weight" or "bias", for messages
  const Tensor* tensor = nullptr;
  const QuantTypeInfo* type = nullptr;
  std::vector<float> scales;
  std::vector<std::int64_t> zero_points;
  std::optional<std::int64_t> axis;  // normalized
  std::span<const std::byte> values;  // float32, C order
  std::string quantized, scale_name, zero_point_name, dequantize_node;
};

// A FLOAT initializer whose data is replaced, staying in float.
struct FloatEntry {
  const Tensor* tensor = nullptr;
  std::span<const std::byte> values;  // float32, C order
};

// saturate(round_half_to_even(x / scale) + zero_point), in float32 as QuantizeLinear computes it.
std::vector<std::byte> quantize(const InitializerEntry& entry) {
  const QuantTypeInfo& type = *entry.type;
  const std::size_t count = entry.values.size() / sizeof(float);
  const std::size_t channels = entry.scales.size();
  std::size_t inner = 1;  // elements per step along the axis
  if (entry.axis)
    for (std::size_t d = static_cast<std::size_t>(*entry.axis) + 1; d < entry.tensor->dims.size(); ++d)
      inner *= static_cast<std::size_t>(entry.tensor->dims[d]);
  std::vector<std::byte> out(storage_size(type, count));
  for (std::size_t i = 0; i < count; ++i) {
    float value;
    std::memcpy(&value, entry.values.data() + i * sizeof(float), sizeof(float));  // raw_data may be unaligned
    const std::size_t channel = channels == 1 ? 0 : (i / inner) % channels;
    const float scaled = std::nearbyint(value / entry.scales[channel]);  // ties to even
    if (std::isnan(scaled))
      throw QdqPlanError(std::string(entry.kind) + " '" + entry.tensor->name + "': element " + std::to_string(i) +
                         " is NaN");
    // In double: exact for every integer involved, and the clamp keeps the conversion defined.
    const double shifted = std::clamp(static_cast<double>(scaled) + static_cast<double>(entry.zero_points[channel]),
                                      static_cast<double>(type.min), static_cast<double>(type.max));
    store(type, out.data(), i, static_cast<std::int64_t>(shifted));
  }
  return out;
}

// --- new messages --------------------------------------------------------------------------------

wire::Writer node_message(std::string_view name, std::string_view op_type, std::initializer_list<std::string_view> inputs,
                          std::string_view output, std::optional<std::int64_t> axis) {
  wire::Writer node;
  for (std::string_view input : inputs) node.string(NodeProto::input, input);
  node.string(NodeProto::output, output);
  node.string(NodeProto::name, name);
  node.string(NodeProto::op_type, op_type);
  if (axis) {
    wire::Writer attribute;
    attribute.string(AttributeProto::name, "axis");
    attribute.int64(AttributeProto::i, *axis);
    attribute.varint(AttributeProto::type, static_cast<std::uint64_t>(AttributeType::Int));
    node.message(NodeProto::attribute, std::move(attribute));
  }
  return node;
}

// --- the rewriter --------------------------------------------------------------------------------

// Builds the body of a message field by field: unchanged fields as views of the source, the others
// re-encoded. `changed` tells whether anything differs from the source.
struct MessageBuilder {
  wire::Writer out;
  bool changed = false;

  // The field `reader` just read or skipped, unchanged.
  void keep(const Reader& reader) { out.view(reader.field_bytes()); }
  // The message field `reader` just read: rewritten as `body`, or unchanged when `body` is empty.
  void put(const Reader& reader, std::optional<wire::Writer> body) {
    if (!body) return keep(reader);
    out.message(reader.tag(), std::move(*body));
    changed = true;
  }
  std::optional<wire::Writer> result() {
    if (!changed) return std::nullopt;
    return std::optional<wire::Writer>(std::move(out));
  }
};

class QdqRewriter {
 public:
  QdqRewriter(const Model& model, const MappedFile& file, const QdqPlan& plan)
      : model_(model), file_(file), names_(model), external_(model) {
    prepare(plan);
  }

  wire::Writer rewrite_model() {
    Reader reader(file_.bytes(), file_.bytes().data(), kModelProto);
    wire::Writer out;
    bool saw_ir_version = false, saw_default_opset = false;
    while (reader.next()) switch (reader.tag()) {
        case ModelProto::ir_version:
          saw_ir_version = true;
          if (reader.get_int64() < target_ir_version_)
            out.int64(ModelProto::ir_version, target_ir_version_);
          else
            out.view(reader.field_bytes());
          break;
        case ModelProto::graph:
          out.message(ModelProto::graph, rewrite_main_graph(reader.get_message(kGraphProto)));
          break;
        case ModelProto::opset_import: {
          MessageBuilder builder;
          builder.put(reader, rewrite_opset(reader.get_message(kOperatorSetIdProto), saw_default_opset));
          out.append(std::move(builder.out));
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
          if (key != kMetadataKey) out.view(reader.field_bytes());  // an older entry is replaced below
          break;
        }
        case ModelProto::functions: {
          Reader function = reader.get_message(kFunctionProto);
          MessageBuilder builder;
          builder.put(reader, rewrite_function(function));
          out.append(std::move(builder.out));
          break;
        }
        default:
          reader.skip();
          out.view(reader.field_bytes());
      }
    if (!saw_ir_version && target_ir_version_ > 0) out.int64(ModelProto::ir_version, target_ir_version_);
    if (!saw_default_opset && target_opset_ > 0)
      out.message(ModelProto::opset_import, opset_message("", target_opset_));
    wire::Writer entry;
    entry.string(StringStringEntryProto::key, kMetadataKey);
    entry.string(StringStringEntryProto::value, kMetadataValue);
    out.message(ModelProto::metadata_props, std::move(entry));
    return out;
  }

  QdqStats stats() const {
    QdqStats stats;
    stats.quantized_activations = activations_.size();
    for (const InitializerEntry& entry : initializers_)
      ++(entry.kind == "bias" ? stats.quantized_biases : stats.quantized_weights);
    return stats;
  }

 private:
  // --- checking the plan against the model -------------------------------------------------------

  void prepare(const QdqPlan& plan) {
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
  static std::span<const std::byte> replacement(const std::string& what, const Tensor& tensor,
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

  static float check_scale(const std::string& what, double scale) {
    if (!(std::isfinite(scale) && scale > 0 && scale <= FLT_MAX) || static_cast<float>(scale) <= 0)
      throw QdqPlanError(what + ": scale " + format_number(scale) + " is not a finite float32 > 0");
    return static_cast<float>(scale);
  }

  static std::int64_t check_zero_point(const std::string& what, const QuantTypeInfo& type, std::int64_t zero_point) {
    if (zero_point < type.min || zero_point > type.max)
      throw QdqPlanError(what + ": zero point " + std::to_string(zero_point) + " is outside the range of " +
                         std::string(type.name) + " [" + std::to_string(type.min) + ", " + std::to_string(type.max) +
                         "]");
    return zero_point;
  }

  static void fill_scales(InitializerEntry& entry, const std::string& what, const std::vector<double>& scales,
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

  // --- the main graph ----------------------------------------------------------------------------

  wire::Writer rewrite_main_graph(Reader&& reader) {
    wire::Writer out;
    const bool first = !main_graph_seen_;  // a graph field given twice is merged by readers
    main_graph_seen_ = true;
    while (reader.next()) switch (reader.tag()) {
        case GraphProto::node: {
          if (!prologue_written_) write_prologue(out);
          const std::size_t index = main_node_index_++;
          const Node& node = *model_.graph->nodes.at(index);  // the IR keeps file order
          if (needs_rewrite(node)) {
            MessageBuilder builder;
            builder.put(reader, rewrite_node(reader.get_message(kNodeProto, index), consumer_renames_, &output_renames_));
            out.append(std::move(builder.out));
          } else {
            reader.skip();
            out.view(reader.field_bytes());
          }
          for (const std::string& output : node.outputs)
            if (const auto found = after_producer_.find(output); found != after_producer_.end())
              write_qdq_nodes(out, *found->second);
          break;
        }
        case GraphProto::initializer: {
          Reader tensor = reader.get_message(kTensorProto);
          const auto offset = static_cast<std::int64_t>(tensor.offset_of(tensor.message_bytes().data()));
          MessageBuilder builder;
          if (const auto found = by_offset_.find(offset); found != by_offset_.end())
            builder.put(reader, rewrite_quantized_initializer(tensor, *found->second));
          else if (const auto replaced = float_by_offset_.find(offset); replaced != float_by_offset_.end())
            builder.put(reader, rewrite_float_initializer(tensor, *replaced->second));
          else
            builder.put(reader, rewrite_tensor(std::move(tensor)));
          out.append(std::move(builder.out));
          break;
        }
        case GraphProto::sparse_initializer: {
          MessageBuilder builder;
          builder.put(reader, rewrite_sparse_tensor(reader.get_message(kSparseTensorProto)));
          out.append(std::move(builder.out));
          break;
        }
        default:
          reader.skip();
          out.view(reader.field_bytes());
      }
    if (first) {
      if (!prologue_written_) write_prologue(out);
      write_new_initializers(out);
    }
    return out;
  }

  bool needs_rewrite(const Node& node) const {
    for (std::string_view name : used_names(node))
      if (consumer_renames_.contains(std::string(name))) return true;
    for (const std::string& output : node.outputs)
      if (output_renames_.contains(output)) return true;
    return !external_.empty() && ExternalTensors::in_node(node);
  }

  // Before the first node: the DequantizeLinear of each weight and bias, and the Q/DQ pairs of
  // activations that no node produces (graph inputs, initializers).
  void write_prologue(wire::Writer& out) {
    prologue_written_ = true;
    for (const InitializerEntry& entry : initializers_)
      out.message(GraphProto::node, node_message(entry.dequantize_node, "DequantizeLinear",
                                  {entry.quantized, entry.scale_name, entry.zero_point_name}, entry.tensor->name,
                                  entry.axis));
    for (const ActivationEntry& entry : activations_)
      if (!entry.has_producer) write_qdq_nodes(out, entry);
  }

  void write_qdq_nodes(wire::Writer& out, const ActivationEntry& entry) {
    out.message(GraphProto::node, node_message(entry.quantize_node, "QuantizeLinear",
                                {entry.source, entry.scale_name, entry.zero_point_name}, entry.quantized,
                                std::nullopt));
    out.message(GraphProto::node, node_message(entry.dequantize_node, "DequantizeLinear",
                                {entry.quantized, entry.scale_name, entry.zero_point_name}, entry.dequantized,
                                std::nullopt));
  }

  void write_new_initializers(wire::Writer& out) {
    for (const ActivationEntry& entry : activations_) {
      out.message(GraphProto::initializer,
                  tensor_message(entry.scale_name, DataType::Float, {}, encode_floats({entry.scale})));
      out.message(GraphProto::initializer, tensor_message(entry.zero_point_name, entry.type->type, {},
                                    encode_integers(*entry.type, {entry.zero_point})));
    }
    for (const InitializerEntry& entry : initializers_) {
      std::vector<std::int64_t> dims;
      if (entry.axis) dims.push_back(static_cast<std::int64_t>(entry.scales.size()));
      out.message(GraphProto::initializer,
                  tensor_message(entry.scale_name, DataType::Float, dims, encode_floats(entry.scales)));
      out.message(GraphProto::initializer, tensor_message(entry.zero_point_name, entry.type->type, dims,
                                    encode_integers(*entry.type, entry.zero_points)));
    }
  }

  // The integer initializer that replaces a weight or bias, keeping its doc_string and metadata.
  std::optional<wire::Writer> rewrite_quantized_initializer(Reader& reader, const InitializerEntry& entry) {
    wire::Writer out = tensor_message(entry.quantized, entry.type->type, entry.tensor->dims, quantize(entry));
    while (reader.next()) {
      reader.skip();
      if (reader.tag() == TensorProto::doc_string || reader.tag() == TensorProto::metadata_props)
        out.view(reader.field_bytes());
    }
    return std::optional<wire::Writer>(std::move(out));
  }

  // A FLOAT initializer with new data (embedded), keeping its name, doc_string and metadata.
  static std::optional<wire::Writer> rewrite_float_initializer(Reader& reader, const FloatEntry& entry) {
    const std::span<const std::byte> values = entry.values;
    wire::Writer out = tensor_message(entry.tensor->name, DataType::Float, entry.tensor->dims,
                                      std::vector<std::byte>(values.begin(), values.end()));
    while (reader.next()) {
      reader.skip();
      if (reader.tag() == TensorProto::doc_string || reader.tag() == TensorProto::metadata_props)
        out.view(reader.field_bytes());
    }
    return std::optional<wire::Writer>(std::move(out));
  }

  // --- nodes, attributes, subgraphs --------------------------------------------------------------

  // Renames the node's inputs by `inputs` and its outputs by `outputs` (main graph only), and
  // rewrites its attributes; nullopt when nothing changes.
  std::optional<wire::Writer> rewrite_node(Reader&& reader, const Renames& inputs, const Renames* outputs) {
    MessageBuilder builder;
    std::size_t attribute_index = 0;
    while (reader.next()) switch (reader.tag()) {
        case NodeProto::input:
        case NodeProto::output: {
          const std::uint32_t field = reader.tag();
          const Renames* renames = field == NodeProto::input ? &inputs : outputs;
          const std::string name = reader.get_string();
          const auto found = renames ? renames->find(name) : Renames::const_iterator{};
          if (renames && found != renames->end()) {
            builder.out.string(field, found->second);
            builder.changed = true;
          } else {
            builder.keep(reader);
          }
          break;
        }
        case NodeProto::attribute:
          builder.put(reader, rewrite_attribute(reader.get_message(kAttributeProto, attribute_index++), inputs));
          break;
        default:
          reader.skip();
          builder.keep(reader);
      }
    return builder.result();
  }

  std::optional<wire::Writer> rewrite_attribute(Reader&& reader, const Renames& renames) {
    MessageBuilder builder;
    while (reader.next()) switch (reader.tag()) {
        case AttributeProto::t: builder.put(reader, rewrite_tensor(reader.get_message(kTensorProto))); break;
        case AttributeProto::g: builder.put(reader, rewrite_subgraph(reader.get_message(kGraphProto), renames)); break;
        case AttributeProto::tensors: builder.put(reader, rewrite_tensor(reader.get_message(kTensorProto))); break;
        case AttributeProto::graphs:
          builder.put(reader, rewrite_subgraph(reader.get_message(kGraphProto), renames));
          break;
        case AttributeProto::sparse_tensor:
          builder.put(reader, rewrite_sparse_tensor(reader.get_message(kSparseTensorProto)));
          break;
        case AttributeProto::sparse_tensors:
          builder.put(reader, rewrite_sparse_tensor(reader.get_message(kSparseTensorProto)));
          break;
        default:
          reader.skip();
          builder.keep(reader);
      }
    return builder.result();
  }

  // A subgraph reads values of enclosing graphs by name; those in `outer` are renamed, unless the
  // subgraph defines a value of the same name itself, which hides the outer one.
  std::optional<wire::Writer> rewrite_subgraph(Reader&& reader, const Renames& outer) {
    Renames narrowed;
    const Renames* renames = &outer;
    if (!outer.empty()) {
      const std::unordered_set<std::string> locals = local_names(reader.message_bytes());
      if (std::ranges::any_of(outer, [&](const auto& rename) { return locals.contains(rename.first); })) {
        for (const auto& rename : outer)
          if (!locals.contains(rename.first)) narrowed.insert(rename);
        renames = &narrowed;
      }
    }
    if (renames->empty() && external_.empty()) return std::nullopt;
    MessageBuilder builder;
    std::size_t node_index = 0;
    while (reader.next()) switch (reader.tag()) {
        case GraphProto::node:
          builder.put(reader, rewrite_node(reader.get_message(kNodeProto, node_index++), *renames, nullptr));
          break;
        case GraphProto::initializer: builder.put(reader, rewrite_tensor(reader.get_message(kTensorProto))); break;
        case GraphProto::output:
          builder.put(reader, rewrite_value_info(reader.get_message(kValueInfoProto), *renames));
          break;
        case GraphProto::sparse_initializer:
          builder.put(reader, rewrite_sparse_tensor(reader.get_message(kSparseTensorProto)));
          break;
        default:
          reader.skip();
          builder.keep(reader);
      }
    return builder.result();
  }

  // The names a graph defines: inputs, initializers, node outputs.
  std::unordered_set<std::string> local_names(std::span<const std::byte> graph) const {
    std::unordered_set<std::string> names;
    Reader reader(graph, file_.bytes().data(), kGraphProto);
    const auto read_name = [&](Reader&& message, std::uint32_t field) {
      while (message.next()) {
        if (message.tag() == field)
          names.insert(message.get_string());
        else
          message.skip();
      }
    };
    while (reader.next()) switch (reader.tag()) {
        case GraphProto::node: read_name(reader.get_message(kNodeProto), NodeProto::output); break;
        case GraphProto::initializer: read_name(reader.get_message(kTensorProto), TensorProto::name); break;
        case GraphProto::input: read_name(reader.get_message(kValueInfoProto), ValueInfoProto::name); break;
        case GraphProto::sparse_initializer: {
          Reader sparse = reader.get_message(kSparseTensorProto);
          while (sparse.next()) {
            if (sparse.tag() == SparseTensorProto::values)
              read_name(sparse.get_message(kTensorProto), TensorProto::name);
            else
              sparse.skip();
          }
          break;
        }
        default: reader.skip();
      }
    return names;
  }

  // A subgraph output that names an outer value being renamed.
  std::optional<wire::Writer> rewrite_value_info(Reader&& reader, const Renames& renames) {
    MessageBuilder builder;
    while (reader.next()) {
      if (reader.tag() == ValueInfoProto::name) {
        const std::string name = reader.get_string();
        if (const auto found = renames.find(name); found != renames.end()) {
          builder.out.string(ValueInfoProto::name, found->second);
          builder.changed = true;
          continue;
        }
      } else {
        reader.skip();
      }
      builder.keep(reader);
    }
    return builder.result();
  }

  // The default-domain opset raised to the target, if lower; `saw_default` is set for that domain.
  std::optional<wire::Writer> rewrite_opset(Reader&& reader, bool& saw_default) {
    std::string domain;
    std::int64_t version = 0;
    while (reader.next()) switch (reader.tag()) {
        case OperatorSetIdProto::domain: domain = reader.get_string(); break;
        case OperatorSetIdProto::version: version = reader.get_int64(); break;
        default: reader.skip();
      }
    if (!is_default_domain(domain)) return std::nullopt;
    saw_default = true;
    if (version >= target_opset_) return std::nullopt;
    return opset_message(domain, target_opset_);
  }

  // Functions import the default domain at the model's version (the checker insists), so theirs
  // is raised too; their tensors with external data are embedded.
  std::optional<wire::Writer> rewrite_function(Reader& reader) {
    if (external_.empty() && target_opset_ == 0) return std::nullopt;
    MessageBuilder builder;
    std::size_t node_index = 0;
    bool saw_default_opset = false;
    while (reader.next()) switch (reader.tag()) {
        case FunctionProto::opset_import:
          builder.put(reader, rewrite_opset(reader.get_message(kOperatorSetIdProto), saw_default_opset));
          break;
        case FunctionProto::node:
          builder.put(reader, rewrite_node(reader.get_message(kNodeProto, node_index++), kNoRenames, nullptr));
          break;
        case FunctionProto::attribute_proto:
          builder.put(reader, rewrite_attribute(reader.get_message(kAttributeProto), kNoRenames));
          break;
        default:
          reader.skip();
          builder.keep(reader);
      }
    return builder.result();
  }

  // --- tensors -----------------------------------------------------------------------------------

  // Embeds the data of a tensor stored externally; nullopt for any other tensor.
  std::optional<wire::Writer> rewrite_tensor(Reader&& reader) {
    const Tensor* tensor = external_.find(static_cast<std::int64_t>(reader.offset_of(reader.message_bytes().data())));
    if (!tensor) return std::nullopt;
    wire::Writer out;
    while (reader.next()) {
      reader.skip();
      if (reader.tag() != TensorProto::external_data && reader.tag() != TensorProto::data_location)
        out.view(reader.field_bytes());
    }
    out.bytes_view(TensorProto::raw_data, tensor->data);  // straight from the external file's map
    return std::optional<wire::Writer>(std::move(out));
  }

  std::optional<wire::Writer> rewrite_sparse_tensor(Reader&& reader) {
    if (external_.empty()) return std::nullopt;
    MessageBuilder builder;
    while (reader.next()) switch (reader.tag()) {
        case SparseTensorProto::values: builder.put(reader, rewrite_tensor(reader.get_message(kTensorProto))); break;
        case SparseTensorProto::indices: builder.put(reader, rewrite_tensor(reader.get_message(kTensorProto))); break;
        default:
          reader.skip();
          builder.keep(reader);
      }
    return builder.result();
  }

  wire::Writer opset_message(std::string_view domain, std::int64_t version) {
    wire::Writer opset;
    opset.string(OperatorSetIdProto::domain, domain);
    opset.int64(OperatorSetIdProto::version, version);
    return opset;
  }

  inline static const Renames kNoRenames;

  const Model& model_;
  const MappedFile& file_;
  NameTable names_;
  ExternalTensors external_;
  std::vector<ActivationEntry> activations_;
  std::vector<InitializerEntry> initializers_;
  Renames consumer_renames_;  // activation -> its DequantizeLinear output
  Renames output_renames_;    // graph output activation -> its producer's new output name
  std::unordered_map<std::string, const ActivationEntry*> after_producer_;  // by the activation's name
  std::unordered_map<std::int64_t, const InitializerEntry*> by_offset_;     // by TensorProto offset
  std::vector<FloatEntry> floats_;  // reserved up front: float_by_offset_ points into it
  std::unordered_map<std::int64_t, const FloatEntry*> float_by_offset_;     // by TensorProto offset
  std::int64_t target_opset_ = 0;
  std::int64_t target_ir_version_ = 0;
  bool main_graph_seen_ = false;
  bool prologue_written_ = false;
  std::size_t main_node_index_ = 0;
};

}  // namespace

QdqStats write_qdq_model(const fs::path& source, const fs::path& output, const QdqPlan& plan) {
  std::shared_ptr<const MappedFile> file;
  const std::unique_ptr<Model> model = load_model(source, file);
  check_graph(*model->graph);  // also proves the nodes are in topological order, which the output keeps
  QdqRewriter rewriter(*model, *file, plan);
  const wire::Writer content = rewriter.rewrite_model();
  if (content.size() > kMaxModelBytes)
    throw QdqSizeError("the quantized model would take " + std::to_string(content.size()) +
                       " bytes; models over 2 GB are not supported by the QDQ writer yet");
  write_atomically(output, content);
  QdqStats stats = rewriter.stats();
  stats.bytes_written = content.size();
  return stats;
}

}  // namespace onnx2fx
