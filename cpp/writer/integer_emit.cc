// What the integer lowering writes: attributes, nodes, constants, nodes and initializers copied
// from the source, and the model message around the new graph.

#include <algorithm>
#include <cstring>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "ir/data_type.h"
#include "onnx/schema.h"
#include "onnx/wire.h"
#include "writer/integer_lowering.h"

namespace onnx2fx::integer_detail {

using namespace onnx_schema;
using namespace quant_writer;
using wire::Reader;

namespace {

constexpr std::string_view kMetadataKey = "onnx2fx.quantized";
constexpr std::int64_t kMinOpset = 13;  // integer Clip (12), per-axis DequantizeLinear (13)

}  // namespace

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

std::vector<wire::Writer> IntegerLowering::vec(wire::Writer attribute) {
  std::vector<wire::Writer> out;
  out.push_back(std::move(attribute));
  return out;
}

void IntegerLowering::emit(std::string_view op, const std::vector<std::string>& inputs,
                           const std::vector<std::string>& outputs, std::vector<wire::Writer> attributes,
                           std::string_view domain, std::span<const std::span<const std::byte>> attribute_views,
                           std::string name) {
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

std::string IntegerLowering::constant(const std::string& base, DataType type, std::vector<std::int64_t> dims,
                                      std::vector<std::byte> bytes) {
  std::string name = names_.fresh(base);
  initializers_out_.push_back(tensor_message(name, type, dims, std::move(bytes)));
  return name;
}

std::string IntegerLowering::int64_constant(const std::string& base, const std::vector<std::int64_t>& values,
                                            std::vector<std::int64_t> dims) {
  std::vector<std::byte> bytes(values.size() * 8);
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return constant(base, DataType::Int64, std::move(dims), std::move(bytes));
}

std::string IntegerLowering::scale_constant(const std::string& base, float scale) {
  std::vector<std::byte> bytes(4);
  std::memcpy(bytes.data(), &scale, 4);
  return constant(base + "_scale", DataType::Float, {}, std::move(bytes));
}

std::string IntegerLowering::zero_point_constant(const std::string& base, const QuantTypeInfo& type,
                                                 std::int64_t zero_point) {
  return constant(base + "_zero_point", type.type, {}, {eight_bits(zero_point)});
}

// Copies an initializer of the source the new graph reads as it is (shapes, indices, float
// constants of float islands); float data the plan replaced is written anew.
void IntegerLowering::use_source_initializer(const std::string& name) {
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

// The node as it is, with `renamed` inputs/outputs; its initializers are copied.
void IntegerLowering::copy_node(std::size_t index, const std::unordered_map<std::string, std::string>& inputs,
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

wire::Writer IntegerLowering::model_message() {
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

}  // namespace onnx2fx::integer_detail
