#include "writer/qdq_writer.h"

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string_view>

#include "ir/data_type.h"
#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "passes/check_graph.h"
#include "passes/value_uses.h"
#include "writer/qdq_rewriter.h"

namespace onnx2fx::qdq_detail {

using namespace onnx_schema;
using namespace quant_writer;
using wire::Reader;

namespace {

constexpr std::string_view kMetadataKey = "onnx2fx.quantized";
constexpr std::string_view kMetadataValue = "qdq";

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

}  // namespace

QdqRewriter::QdqRewriter(const Model& model, const MappedFile& file, const QdqPlan& plan)
    : model_(model), file_(file), names_(model), external_(model) {
  prepare(plan);
}

wire::Writer QdqRewriter::rewrite_model() {
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

QdqStats QdqRewriter::stats() const {
  QdqStats stats;
  stats.quantized_activations = activations_.size();
  for (const InitializerEntry& entry : initializers_)
    ++(entry.kind == "bias" ? stats.quantized_biases : stats.quantized_weights);
  return stats;
}

wire::Writer QdqRewriter::rewrite_main_graph(Reader&& reader) {
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

bool QdqRewriter::needs_rewrite(const Node& node) const {
  for (std::string_view name : used_names(node))
    if (consumer_renames_.contains(std::string(name))) return true;
  for (const std::string& output : node.outputs)
    if (output_renames_.contains(output)) return true;
  return !external_.empty() && ExternalTensors::in_node(node);
}

// Before the first node: the DequantizeLinear of each weight and bias, and the Q/DQ pairs of
// activations that no node produces (graph inputs, initializers).
void QdqRewriter::write_prologue(wire::Writer& out) {
  prologue_written_ = true;
  for (const InitializerEntry& entry : initializers_)
    out.message(GraphProto::node, node_message(entry.dequantize_node, "DequantizeLinear",
                                {entry.quantized, entry.scale_name, entry.zero_point_name}, entry.tensor->name,
                                entry.axis));
  for (const ActivationEntry& entry : activations_)
    if (!entry.has_producer) write_qdq_nodes(out, entry);
}

void QdqRewriter::write_qdq_nodes(wire::Writer& out, const ActivationEntry& entry) {
  out.message(GraphProto::node, node_message(entry.quantize_node, "QuantizeLinear",
                              {entry.source, entry.scale_name, entry.zero_point_name}, entry.quantized,
                              std::nullopt));
  out.message(GraphProto::node, node_message(entry.dequantize_node, "DequantizeLinear",
                              {entry.quantized, entry.scale_name, entry.zero_point_name}, entry.dequantized,
                              std::nullopt));
}

void QdqRewriter::write_new_initializers(wire::Writer& out) {
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

}  // namespace onnx2fx::qdq_detail

namespace onnx2fx {
namespace {

constexpr std::uint64_t kMaxModelBytes = INT32_MAX;  // protobuf refuses larger messages

}  // namespace

QdqStats write_qdq_model(const std::filesystem::path& source, const std::filesystem::path& output,
                         const QdqPlan& plan) {
  std::shared_ptr<const MappedFile> file;
  const std::unique_ptr<Model> model = load_model(source, file);
  check_graph(*model->graph);  // also proves the nodes are in topological order, which the output keeps
  qdq_detail::QdqRewriter rewriter(*model, *file, plan);
  const wire::Writer content = rewriter.rewrite_model();
  if (content.size() > kMaxModelBytes)
    throw QdqSizeError("the quantized model would take " + std::to_string(content.size()) +
                       " bytes; models over 2 GB are not supported by the QDQ writer yet");
  quant_writer::write_atomically(output, content);
  QdqStats stats = rewriter.stats();
  stats.bytes_written = content.size();
  return stats;
}

}  // namespace onnx2fx
