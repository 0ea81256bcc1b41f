#include "onnx/model_reader.h"

#include <memory>
#include <string>
#include <utility>

#include "onnx/errors.h"
#include "onnx/mapped_file.h"
#include "onnx/model_parser.h"
#include "onnx/schema.h"
#include "onnx/wire.h"

namespace onnx2fx::reader_detail {

using wire::Reader;
using namespace onnx_schema;  // the message types of onnx.proto

std::unique_ptr<Model> ModelReader::read() {
  auto model = std::make_unique<Model>();
  file_->advise(MappedFile::Access::Random);  // parsing reads headers; the weights stay on disk
  read_model(Reader(file_->bytes(), file_->bytes().data(), kModelProto), *model);
  file_->advise(MappedFile::Access::Normal);
  if (!model->graph)
    throw ParseError(file_->size() == 0 ? "model has no graph: the input is empty" : "model has no graph");
  if (model->ir_version >= 3 && model->opset_imports.empty()) throw ParseError("model has no opset_import");
  return model;
}

void ModelReader::read_model(Reader reader, Model& model) {
  while (reader.next()) switch (reader.tag()) {
      case ModelProto::ir_version: model.ir_version = reader.get_int64(); break;
      case ModelProto::producer_name: model.producer_name = reader.get_string(); break;
      case ModelProto::producer_version: model.producer_version = reader.get_string(); break;
      case ModelProto::domain: model.domain = reader.get_string(); break;
      case ModelProto::model_version: model.model_version = reader.get_int64(); break;
      case ModelProto::doc_string: model.doc_string = reader.get_string(); break;
      case ModelProto::graph: read_graph(reader.get_message(kGraphProto), merge_into(model.graph), 1); break;
      case ModelProto::opset_import:
        model.opset_imports.push_back(
            read_opset(reader.get_message(kOperatorSetIdProto, model.opset_imports.size())));
        break;
      case ModelProto::metadata_props:
        model.metadata_props.push_back(
            read_entry(reader.get_message(kStringStringEntryProto, model.metadata_props.size())));
        break;
      case ModelProto::functions:
        model.functions.push_back(read_function(reader.get_message(kFunctionProto, model.functions.size())));
        break;
      default: reader.skip();
    }
}

// Versions are small positive numbers; an absurd one is refused here rather than matched
// against the op table as "newer than everything".
OperatorSetId ModelReader::read_opset(Reader reader) {
  OperatorSetId opset;
  while (reader.next()) switch (reader.tag()) {
      case OperatorSetIdProto::domain: opset.domain = reader.get_string(); break;
      case OperatorSetIdProto::version: opset.version = reader.get_int64(); break;
      default: reader.skip();
    }
  if (opset.version < 1 || opset.version > kMaxOpsetVersion)
    throw ParseError("opset_import of domain '" + opset.domain + "' has version " + std::to_string(opset.version) +
                     ", outside 1.." + std::to_string(kMaxOpsetVersion) + " at " + reader.where());
  return opset;
}

std::pair<std::string, std::string> ModelReader::read_entry(Reader reader) {
  std::pair<std::string, std::string> entry;
  while (reader.next()) switch (reader.tag()) {
      case StringStringEntryProto::key: entry.first = reader.get_string(); break;
      case StringStringEntryProto::value: entry.second = reader.get_string(); break;
      default: reader.skip();
    }
  return entry;
}

// A message field given twice is merged, as protobuf does.
Graph& ModelReader::merge_into(std::shared_ptr<Graph>& graph) {
  if (!graph) graph = std::make_shared<Graph>();
  return *graph;
}

// Reads into `graph`. `depth` is 1 for the main graph, one more for each enclosing attribute.
void ModelReader::read_graph(Reader reader, Graph& graph, int depth) {
  if (depth > kMaxGraphDepth)
    throw ParseError("graphs nested deeper than " + std::to_string(kMaxGraphDepth) + " levels at " + reader.where());
  while (reader.next()) switch (reader.tag()) {
      case GraphProto::node:
        graph.nodes.push_back(read_node(reader.get_message(kNodeProto, graph.nodes.size()), depth));
        break;
      case GraphProto::name: graph.name = reader.get_string(); break;
      case GraphProto::initializer:
        graph.initializers.push_back(read_tensor(reader.get_message(kTensorProto, graph.initializers.size())));
        break;
      case GraphProto::doc_string: graph.doc_string = reader.get_string(); break;
      case GraphProto::input:
        graph.inputs.push_back(read_value_info(reader.get_message(kValueInfoProto, graph.inputs.size())));
        break;
      case GraphProto::output:
        graph.outputs.push_back(read_value_info(reader.get_message(kValueInfoProto, graph.outputs.size())));
        break;
      case GraphProto::value_info:
        graph.value_info.push_back(read_value_info(reader.get_message(kValueInfoProto, graph.value_info.size())));
        break;
      case GraphProto::sparse_initializer:
        graph.sparse_initializers.push_back(
            read_sparse_tensor(reader.get_message(kSparseTensorProto, graph.sparse_initializers.size())));
        break;
      default: reader.skip();
    }
}

std::shared_ptr<Node> ModelReader::read_node(Reader reader, int depth) {
  if (++node_count_ > kMaxNodes)
    throw ParseError("model has more than " + std::to_string(kMaxNodes) + " nodes at " + reader.where());
  auto node = std::make_shared<Node>();
  while (reader.next()) switch (reader.tag()) {
      case NodeProto::input: node->inputs.push_back(reader.get_string()); break;
      case NodeProto::output: node->outputs.push_back(reader.get_string()); break;
      case NodeProto::name: node->name = reader.get_string(); break;
      case NodeProto::op_type: node->op_type = reader.get_string(); break;
      case NodeProto::attribute:
        node->attributes.push_back(
            read_attribute(reader.get_message(kAttributeProto, node->attributes.size()), depth));
        break;
      case NodeProto::doc_string: node->doc_string = reader.get_string(); break;
      case NodeProto::domain: node->domain = reader.get_string(); break;
      case NodeProto::overload: node->overload = reader.get_string(); break;
      default: reader.skip();
    }
  return node;
}

Function ModelReader::read_function(Reader reader) {
  Function function;
  while (reader.next()) switch (reader.tag()) {
      case FunctionProto::name: function.name = reader.get_string(); break;
      case FunctionProto::input: function.inputs.push_back(reader.get_string()); break;
      case FunctionProto::output: function.outputs.push_back(reader.get_string()); break;
      case FunctionProto::attribute: function.attributes.push_back(reader.get_string()); break;
      case FunctionProto::node:
        function.nodes.push_back(read_node(reader.get_message(kNodeProto, function.nodes.size()), 1));
        break;
      case FunctionProto::doc_string: function.doc_string = reader.get_string(); break;
      case FunctionProto::opset_import:
        function.opset_imports.push_back(
            read_opset(reader.get_message(kOperatorSetIdProto, function.opset_imports.size())));
        break;
      case FunctionProto::domain: function.domain = reader.get_string(); break;
      case FunctionProto::attribute_proto:
        function.attribute_defaults.push_back(
            read_attribute(reader.get_message(kAttributeProto, function.attribute_defaults.size()), 1));
        break;
      case FunctionProto::overload: function.overload = reader.get_string(); break;
      default: reader.skip();
    }
  return function;
}

}  // namespace onnx2fx::reader_detail

namespace onnx2fx {

using reader_detail::ModelReader;

std::unique_ptr<Model> load_model(const std::filesystem::path& path) {
  std::shared_ptr<const MappedFile> file;
  return load_model(path, file);
}

std::unique_ptr<Model> load_model(const std::filesystem::path& path, std::shared_ptr<const MappedFile>& file) {
  const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : ".";
  std::shared_ptr<MappedFile> map = MappedFile::map(path);
  auto model = ModelReader(map, folder).read();
  model->path = path.string();
  file = std::move(map);
  return model;
}

std::unique_ptr<Model> load_model_from_bytes(std::span<const std::byte> bytes,
                                             std::optional<std::filesystem::path> base_dir) {
  return ModelReader(MappedFile::copy_of(bytes), std::move(base_dir)).read();
}

}  // namespace onnx2fx
