// Tensors in the QDQ output: weights and biases quantized to integer initializers, float data the
// plan replaces, and tensors with external data embedded from the external file's map.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ir/data_type.h"
#include "onnx/schema.h"
#include "writer/qdq_rewriter.h"

namespace onnx2fx::qdq_detail {

using namespace onnx_schema;
using namespace quant_writer;
using wire::Reader;

namespace {

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

}  // namespace

ExternalTensors::ExternalTensors(const Model& model) {
  add_graph(*model.graph);
  for (const Function& function : model.functions) {
    for (const auto& node : function.nodes) add_attributes(node->attributes);
    add_attributes(function.attribute_defaults);
  }
}

bool ExternalTensors::in_node(const Node& node) {
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

bool ExternalTensors::in_sparse(const SparseTensor& tensor) {
  return tensor.values.is_external() || tensor.indices.is_external();
}

bool ExternalTensors::in_graph(const Graph& graph) {
  return std::ranges::any_of(graph.initializers, &Tensor::is_external) ||
         std::ranges::any_of(graph.sparse_initializers, in_sparse) ||
         std::ranges::any_of(graph.nodes, [](const auto& node) { return in_node(*node); });
}

void ExternalTensors::add(const Tensor& tensor) {
  if (tensor.is_external()) by_offset_.emplace(tensor.proto_offset, &tensor);
}

void ExternalTensors::add_sparse(const SparseTensor& tensor) {
  add(tensor.values);
  add(tensor.indices);
}

void ExternalTensors::add_graph(const Graph& graph) {
  for (const Tensor& tensor : graph.initializers) add(tensor);
  for (const SparseTensor& tensor : graph.sparse_initializers) add_sparse(tensor);
  for (const auto& node : graph.nodes) add_attributes(node->attributes);
}

void ExternalTensors::add_attributes(const std::vector<Attribute>& attributes) {
  for (const Attribute& attribute : attributes) {
    if (attribute.t) add(*attribute.t);
    for (const Tensor& tensor : attribute.tensors) add(tensor);
    if (attribute.sparse_tensor) add_sparse(*attribute.sparse_tensor);
    for (const SparseTensor& tensor : attribute.sparse_tensors) add_sparse(tensor);
    if (attribute.g) add_graph(*attribute.g);
    for (const auto& graph : attribute.graphs) add_graph(*graph);
  }
}

// The integer initializer that replaces a weight or bias, keeping its doc_string and metadata.
std::optional<wire::Writer> QdqRewriter::rewrite_quantized_initializer(Reader& reader,
                                                                       const InitializerEntry& entry) {
  wire::Writer out = tensor_message(entry.quantized, entry.type->type, entry.tensor->dims, quantize(entry));
  while (reader.next()) {
    reader.skip();
    if (reader.tag() == TensorProto::doc_string || reader.tag() == TensorProto::metadata_props)
      out.view(reader.field_bytes());
  }
  return std::optional<wire::Writer>(std::move(out));
}

// A FLOAT initializer with new data (embedded), keeping its name, doc_string and metadata.
std::optional<wire::Writer> QdqRewriter::rewrite_float_initializer(Reader& reader, const FloatEntry& entry) {
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

// Embeds the data of a tensor stored externally; nullopt for any other tensor.
std::optional<wire::Writer> QdqRewriter::rewrite_tensor(Reader&& reader) {
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

std::optional<wire::Writer> QdqRewriter::rewrite_sparse_tensor(Reader&& reader) {
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

}  // namespace onnx2fx::qdq_detail
