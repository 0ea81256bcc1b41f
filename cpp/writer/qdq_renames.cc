// Nodes, attributes, subgraphs and functions of the QDQ output: consumers read the dequantized
// activations (subgraphs too, unless a local name hides the outer one), opsets are raised, and
// tensors with external data inside attributes are embedded.

#include <algorithm>
#include <span>
#include <string_view>
#include <unordered_set>

#include "onnx/schema.h"
#include "writer/qdq_rewriter.h"

namespace onnx2fx::qdq_detail {

using namespace onnx_schema;
using namespace quant_writer;
using wire::Reader;

// Renames the node's inputs by `inputs` and its outputs by `outputs` (main graph only), and
// rewrites its attributes; nullopt when nothing changes.
std::optional<wire::Writer> QdqRewriter::rewrite_node(Reader&& reader, const Renames& inputs,
                                                      const Renames* outputs) {
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

std::optional<wire::Writer> QdqRewriter::rewrite_attribute(Reader&& reader, const Renames& renames) {
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
std::optional<wire::Writer> QdqRewriter::rewrite_subgraph(Reader&& reader, const Renames& outer) {
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
std::unordered_set<std::string> QdqRewriter::local_names(std::span<const std::byte> graph) const {
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
std::optional<wire::Writer> QdqRewriter::rewrite_value_info(Reader&& reader, const Renames& renames) {
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
std::optional<wire::Writer> QdqRewriter::rewrite_opset(Reader&& reader, bool& saw_default) {
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
std::optional<wire::Writer> QdqRewriter::rewrite_function(Reader& reader) {
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

wire::Writer QdqRewriter::opset_message(std::string_view domain, std::int64_t version) {
  wire::Writer opset;
  opset.string(OperatorSetIdProto::domain, domain);
  opset.int64(OperatorSetIdProto::version, version);
  return opset;
}

}  // namespace onnx2fx::qdq_detail
