#include "onnx/model_reader.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <iterator>
#include <map>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "ir/data_type.h"
#include "onnx/errors.h"
#include "onnx/external_file.h"
#include "onnx/mapped_file.h"
#include "onnx/schema.h"
#include "onnx/wire.h"

namespace onnx2fx {
namespace {

using wire::Reader;
using namespace onnx_schema;  // the message types of onnx.proto

// The data fields of a TensorProto, gathered before the dims and type they depend on are known.
struct TensorData {
  std::optional<std::span<const std::byte>> raw_data;
  std::vector<float> float_data;
  std::vector<std::int32_t> int32_data;
  std::vector<std::int64_t> int64_data;
  std::vector<double> double_data;
  std::vector<std::uint64_t> uint64_data;
  std::int32_t data_location = 0;
  std::optional<std::string> location, offset, length;  // external_data entries
};

std::string format_dims(const std::vector<std::int64_t>& dims) {
  std::string text = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

// Copies each value's low `value_bytes` bytes (little-endian narrowing) into `out`.
template <class T>
void store_values(const std::vector<T>& values, std::size_t value_bytes, bool as_bool, std::byte* out) {
  if (as_bool) {
    std::ranges::transform(values, out, [](T value) { return std::byte{value != 0}; });
  } else if (value_bytes == sizeof(T)) {
    if (!values.empty()) std::memcpy(out, values.data(), values.size() * sizeof(T));
  } else {
    for (std::size_t i = 0; i < values.size(); ++i) std::memcpy(out + i * value_bytes, &values[i], value_bytes);
  }
}

class ModelReader {
 public:
  ModelReader(std::shared_ptr<MappedFile> file, std::optional<std::filesystem::path> base_dir)
      : file_(std::move(file)), base_dir_(std::move(base_dir)) {}

  std::unique_ptr<Model> read() {
    auto model = std::make_unique<Model>();
    file_->advise(MappedFile::Access::Random);  // parsing reads headers; the weights stay on disk
    read_model(Reader(file_->bytes(), file_->bytes().data(), kModelProto), *model);
    file_->advise(MappedFile::Access::Normal);
    if (!model->graph)
      throw ParseError(file_->size() == 0 ? "model has no graph: the input is empty" : "model has no graph");
    if (model->ir_version >= 3 && model->opset_imports.empty()) throw ParseError("model has no opset_import");
    return model;
  }

 private:
  void read_model(Reader reader, Model& model) {
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
  OperatorSetId read_opset(Reader reader) {
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

  std::pair<std::string, std::string> read_entry(Reader reader) {
    std::pair<std::string, std::string> entry;
    while (reader.next()) switch (reader.tag()) {
        case StringStringEntryProto::key: entry.first = reader.get_string(); break;
        case StringStringEntryProto::value: entry.second = reader.get_string(); break;
        default: reader.skip();
      }
    return entry;
  }

  // A message field given twice is merged, as protobuf does.
  static Graph& merge_into(std::shared_ptr<Graph>& graph) {
    if (!graph) graph = std::make_shared<Graph>();
    return *graph;
  }

  // Reads into `graph`. `depth` is 1 for the main graph, one more for each enclosing attribute.
  void read_graph(Reader reader, Graph& graph, int depth) {
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

  std::shared_ptr<Node> read_node(Reader reader, int depth) {
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

  // `depth` is that of the graph holding the node; subgraphs are one deeper.
  Attribute read_attribute(Reader reader, int depth) {
    Attribute attribute;
    bool has_type = false, has_f = false, has_i = false, has_s = false;
    while (reader.next()) switch (reader.tag()) {
        case AttributeProto::name: attribute.name = reader.get_string(); break;
        case AttributeProto::f:
          has_f = true;
          attribute.f = reader.get_float();
          break;
        case AttributeProto::i:
          has_i = true;
          attribute.i = reader.get_int64();
          break;
        case AttributeProto::s:
          has_s = true;
          attribute.s = reader.get_byte_string();
          break;
        case AttributeProto::t: attribute.t = read_tensor(reader.get_message(kTensorProto)); break;
        case AttributeProto::g: read_graph(reader.get_message(kGraphProto), merge_into(attribute.g), depth + 1); break;
        case AttributeProto::floats: reader.get_repeated_fixed(attribute.floats); break;
        case AttributeProto::ints: reader.get_repeated_varints(attribute.ints); break;
        case AttributeProto::strings: attribute.strings.push_back(reader.get_byte_string()); break;
        case AttributeProto::tensors:
          attribute.tensors.push_back(read_tensor(reader.get_message(kTensorProto, attribute.tensors.size())));
          break;
        case AttributeProto::graphs:
          read_graph(reader.get_message(kGraphProto, attribute.graphs.size()),
                     *attribute.graphs.emplace_back(std::make_shared<Graph>()), depth + 1);
          break;
        case AttributeProto::doc_string: attribute.doc_string = reader.get_string(); break;
        case AttributeProto::tp: attribute.tp = read_type(reader.get_message(kTypeProto), 1); break;
        case AttributeProto::type_protos:
          attribute.type_protos.push_back(read_type(reader.get_message(kTypeProto, attribute.type_protos.size()), 1));
          break;
        case AttributeProto::type:
          attribute.type = static_cast<AttributeType>(reader.get_int32());
          has_type = true;
          break;
        case AttributeProto::ref_attr_name: attribute.ref_attr_name = reader.get_string(); break;
        case AttributeProto::sparse_tensor:
          attribute.sparse_tensor = read_sparse_tensor(reader.get_message(kSparseTensorProto));
          break;
        case AttributeProto::sparse_tensors:
          attribute.sparse_tensors.push_back(
              read_sparse_tensor(reader.get_message(kSparseTensorProto, attribute.sparse_tensors.size())));
          break;
        default: reader.skip();
      }
    if (!has_type) {
      attribute.type = infer_attribute_type(attribute, has_f, has_i, has_s);
    } else if (attribute_type_name(attribute.type).empty()) {
      throw ParseError("attribute '" + attribute.name + "' has unknown type " +
                       std::to_string(static_cast<int>(attribute.type)) + " at " + reader.where());
    }
    return attribute;
  }

  // Old files omit AttributeProto.type; the field that is set tells it.
  static AttributeType infer_attribute_type(const Attribute& a, bool has_f, bool has_i, bool has_s) {
    using enum AttributeType;
    if (a.t) return Tensor;
    if (a.g) return Graph;
    if (a.sparse_tensor) return SparseTensor;
    if (a.tp) return TypeProto;
    if (!a.floats.empty()) return Floats;
    if (!a.ints.empty()) return Ints;
    if (!a.strings.empty()) return Strings;
    if (!a.tensors.empty()) return Tensors;
    if (!a.graphs.empty()) return Graphs;
    if (!a.sparse_tensors.empty()) return SparseTensors;
    if (!a.type_protos.empty()) return TypeProtos;
    if (has_s) return String;
    if (has_i) return Int;
    if (has_f) return Float;
    return Undefined;
  }

  ValueInfo read_value_info(Reader reader) {
    ValueInfo info;
    while (reader.next()) switch (reader.tag()) {
        case ValueInfoProto::name: info.name = reader.get_string(); break;
        case ValueInfoProto::type: info.type = read_type(reader.get_message(kTypeProto), 1); break;
        case ValueInfoProto::doc_string: info.doc_string = reader.get_string(); break;
        default: reader.skip();
      }
    return info;
  }

  TypeInfo read_type(Reader reader, int depth) {
    if (depth > kMaxTypeDepth)
      throw ParseError("types nested deeper than " + std::to_string(kMaxTypeDepth) + " levels at " + reader.where());
    TypeInfo type;
    while (reader.next()) switch (reader.tag()) {
        case TypeProto::tensor_type:
          type.kind = "tensor";
          read_tensor_type(reader.get_message(kTensorTypeProto), type);
          break;
        case TypeProto::sequence_type:
          type.kind = "sequence";
          type.element = read_element_type(reader.get_message(kSequenceTypeProto), depth);
          break;
        case TypeProto::map_type:
          type.kind = "map";
          read_map_type(reader.get_message(kMapTypeProto), type, depth);
          break;
        case TypeProto::opaque_type:
          type.kind = "opaque";
          reader.skip();
          break;
        case TypeProto::sparse_tensor_type:
          type.kind = "sparse_tensor";
          read_tensor_type(reader.get_message(kSparseTensorTypeProto), type);
          break;
        case TypeProto::optional_type:
          type.kind = "optional";
          type.element = read_element_type(reader.get_message(kOptionalTypeProto), depth);
          break;
        default: reader.skip();
      }
    return type;
  }

  void read_tensor_type(Reader reader, TypeInfo& type) {
    while (reader.next()) switch (reader.tag()) {
        case TensorTypeProto::elem_type: type.elem_type = reader.get_int32(); break;
        case TensorTypeProto::shape: type.shape = read_shape(reader.get_message(kTensorShapeProto)); break;
        default: reader.skip();
      }
  }

  // The elem_type of a TypeProto.Sequence or TypeProto.Optional.
  std::shared_ptr<const TypeInfo> read_element_type(Reader reader, int depth) {
    std::shared_ptr<const TypeInfo> element;
    while (reader.next()) switch (reader.tag()) {
        case SequenceTypeProto::elem_type:  // OptionalTypeProto::elem_type too
          element = std::make_shared<TypeInfo>(read_type(reader.get_message(kTypeProto), depth + 1));
          break;
        default: reader.skip();
      }
    return element;
  }

  void read_map_type(Reader reader, TypeInfo& type, int depth) {
    while (reader.next()) switch (reader.tag()) {
        case MapTypeProto::key_type: type.elem_type = reader.get_int32(); break;
        case MapTypeProto::value_type:
          type.element = std::make_shared<TypeInfo>(read_type(reader.get_message(kTypeProto), depth + 1));
          break;
        default: reader.skip();
      }
  }

  std::vector<Dimension> read_shape(Reader reader) {
    std::vector<Dimension> shape;
    while (reader.next()) switch (reader.tag()) {
        case TensorShapeProto::dim:
          if (shape.size() == kMaxRank)
            throw ParseError("shape has more than " + std::to_string(kMaxRank) + " dimensions at " + reader.where());
          shape.push_back(read_dimension(reader.get_message(kDimensionProto, shape.size())));
          break;
        default: reader.skip();
      }
    return shape;
  }

  Dimension read_dimension(Reader reader) {
    Dimension dimension;
    while (reader.next()) switch (reader.tag()) {
        case DimensionProto::dim_value: dimension = reader.get_int64(); break;
        case DimensionProto::dim_param: dimension = reader.get_string(); break;
        default: reader.skip();
      }
    return dimension;
  }

  Function read_function(Reader reader) {
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

  SparseTensor read_sparse_tensor(Reader reader) {
    SparseTensor sparse;
    while (reader.next()) switch (reader.tag()) {
        case SparseTensorProto::values: sparse.values = read_tensor(reader.get_message(kTensorProto)); break;
        case SparseTensorProto::indices: sparse.indices = read_tensor(reader.get_message(kTensorProto)); break;
        case SparseTensorProto::dims: reader.get_repeated_varints(sparse.dims); break;
        default: reader.skip();
      }
    if (std::ranges::any_of(sparse.dims, [](std::int64_t dim) { return dim < 0; }))
      throw ParseError("sparse tensor '" + sparse.values.name + "' has negative dims " + format_dims(sparse.dims) +
                       " at " + reader.where());
    return sparse;
  }

  Tensor read_tensor(Reader reader) {
    Tensor tensor;
    TensorData data;
    tensor.proto_offset = static_cast<std::int64_t>(reader.offset_of(reader.message_bytes().data()));
    tensor.proto_size = reader.message_bytes().size();
    while (reader.next()) switch (reader.tag()) {
        case TensorProto::dims: reader.get_repeated_varints(tensor.dims); break;
        case TensorProto::data_type: tensor.data_type = reader.get_int32(); break;
        case TensorProto::segment: reader.fail("unsupported", "segmented tensors are not supported");
        case TensorProto::float_data: reader.get_repeated_fixed(data.float_data); break;
        case TensorProto::int32_data: reader.get_repeated_varints(data.int32_data); break;
        case TensorProto::string_data: tensor.strings.push_back(reader.get_byte_string()); break;
        case TensorProto::int64_data: reader.get_repeated_varints(data.int64_data); break;
        case TensorProto::name: tensor.name = reader.get_string(); break;
        case TensorProto::raw_data: data.raw_data = reader.get_bytes(); break;
        case TensorProto::double_data: reader.get_repeated_fixed(data.double_data); break;
        case TensorProto::uint64_data: reader.get_repeated_varints(data.uint64_data); break;
        case TensorProto::doc_string: tensor.doc_string = reader.get_string(); break;
        case TensorProto::external_data:
          add_external_entry(read_entry(reader.get_message(kStringStringEntryProto)), data);
          break;
        case TensorProto::data_location: data.data_location = reader.get_int32(); break;
        default: reader.skip();
      }
    attach_data(tensor, data, reader);
    return tensor;
  }

  static void add_external_entry(std::pair<std::string, std::string> entry, TensorData& data) {
    auto& [key, value] = entry;
    if (key == "location") data.location = std::move(value);
    if (key == "offset") data.offset = std::move(value);
    if (key == "length") data.length = std::move(value);
  }

  // Validates the tensor's size and points its data at the bytes that hold it.
  void attach_data(Tensor& tensor, const TensorData& data, const Reader& reader) {
    const auto error = [&](const std::string& detail) {
      return ParseError("tensor '" + tensor.name + "'" + detail + " (" + reader.where() + ")");
    };
    const DataTypeInfo* info = data_type_info(tensor.data_type);
    if (!info) throw error(" has unknown data type " + std::to_string(tensor.data_type));
    if (tensor.dims.size() > kMaxRank)
      throw error(" has " + std::to_string(tensor.dims.size()) + " dimensions, more than " + std::to_string(kMaxRank));
    std::uint64_t count = 1;
    for (std::int64_t dim : tensor.dims) {
      if (dim < 0)
        throw error(" has negative dimension " + std::to_string(dim) + " in dims " + format_dims(tensor.dims));
      if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(dim), &count))
        throw error(": dims " + format_dims(tensor.dims) + " overflow the element count");
    }
    const std::optional<std::uint64_t> storage = storage_bytes(*info, count);
    if (!storage) throw error(": dims " + format_dims(tensor.dims) + " overflow the byte size");
    const std::uint64_t byte_size = *storage;
    const std::string need = "dims " + format_dims(tensor.dims) + " of " + std::string(info->name) + " need ";
    const bool is_string = tensor.data_type == static_cast<std::int32_t>(DataType::String);

    const std::array<std::pair<std::string_view, std::size_t>, 6> typed_fields{{
        {"float_data", data.float_data.size()},
        {"int32_data", data.int32_data.size()},
        {"string_data", tensor.strings.size()},
        {"int64_data", data.int64_data.size()},
        {"double_data", data.double_data.size()},
        {"uint64_data", data.uint64_data.size()},
    }};
    const auto typed = std::ranges::find_if(typed_fields, [](const auto& field) { return field.second > 0; });
    const bool has_typed = typed != typed_fields.end();

    if (data.data_location == kDataLocationExternal) {
      if (data.raw_data || has_typed) throw error(" has both external and embedded data");
      if (is_string) throw error(" is a STRING tensor, which cannot use external data");
      return attach_external_data(tensor, data, byte_size, need, reader);
    }
    if (data.raw_data) {
      if (has_typed) throw error(" has data in both raw_data and " + std::string(typed->first));
      if (is_string) throw error(" is a STRING tensor, which cannot use raw_data");
      if (byte_size > file_->size())
        throw error(": " + need + std::to_string(byte_size) + " bytes but the whole file has only " +
                    std::to_string(file_->size()));
      if (data.raw_data->size() != byte_size)
        throw error(": raw_data has " + std::to_string(data.raw_data->size()) + " bytes but " + need +
                    std::to_string(byte_size));
      const std::size_t offset = reader.offset_of(data.raw_data->data());
      if (byte_size > 0) tensor.data = {file_->bytes().data() + offset, data.raw_data->size()};
      tensor.owner = file_;
      tensor.source = file_.get();
      tensor.data_offset = static_cast<std::int64_t>(offset);
      return;
    }

    // Typed fields: each data type has one field, whose values each fill `value_bytes` of storage.
    const auto decode = [&]<class T>(const std::vector<T>& values, std::string_view field, std::size_t value_bytes) {
      for (const auto& [other, size] : typed_fields)
        if (size > 0 && other != field)
          throw error(" of type " + std::string(info->name) + " has values in " + std::string(other) + ", expected " +
                      std::string(field));
      const std::uint64_t expected = value_bytes ? byte_size / value_bytes : count;
      if (values.size() != expected) {
        if (values.empty()) throw error(" has no data but " + need + std::to_string(expected) + " values");
        throw error(": " + std::string(field) + " has " + std::to_string(values.size()) + " values but " + need +
                    std::to_string(expected));
      }
      if constexpr (!std::is_same_v<T, std::string>) {
        if (expected == 0) return;
        auto buffer = std::make_shared_for_overwrite<std::byte[]>(byte_size);
        store_values(values, value_bytes, tensor.data_type == static_cast<std::int32_t>(DataType::Bool), buffer.get());
        tensor.data = {buffer.get(), byte_size};
        tensor.owner = std::move(buffer);
      }
    };
    const std::size_t element_bytes = info->bits_per_element / 8;
    switch (static_cast<DataType>(tensor.data_type)) {
      case DataType::Float:
      case DataType::Complex64: return decode(data.float_data, "float_data", sizeof(float));
      case DataType::Double:
      case DataType::Complex128: return decode(data.double_data, "double_data", sizeof(double));
      case DataType::Int64: return decode(data.int64_data, "int64_data", sizeof(std::int64_t));
      case DataType::Uint32:
      case DataType::Uint64: return decode(data.uint64_data, "uint64_data", element_bytes);
      case DataType::String: return decode(tensor.strings, "string_data", 0);
      case DataType::Float6E2M3:
      case DataType::Float6E3M2:
        if (!data.int32_data.empty()) throw error(": int32_data is not supported for " + std::string(info->name));
        return decode(data.int32_data, "raw_data", 1);
      default:  // int32_data holds the narrower types, packed sub-byte types one byte per value
        return decode(data.int32_data, "int32_data", is_packed(*info) ? 1 : element_bytes);
    }
  }

  void attach_external_data(Tensor& tensor, const TensorData& data, std::uint64_t byte_size, const std::string& need,
                            const Reader& reader) {
    const std::string at = " (" + reader.where() + ")";
    const std::string of_tensor = " of tensor '" + tensor.name + "'";
    if (!data.location || data.location->empty())
      throw ExternalDataError("external data" + of_tensor + " has no location" + at);
    tensor.external_location = *data.location;
    const std::shared_ptr<MappedFile> file = open_external_file(*data.location, tensor.name, at);
    const auto parse_number = [&](const std::string& text, std::string_view key) {
      std::uint64_t value = 0;
      const auto [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (status != std::errc{} || end != text.data() + text.size())
        throw ExternalDataError("external data " + std::string(key) + " '" + text + "'" + of_tensor +
                                " is not a number" + at);
      return value;
    };
    const std::uint64_t offset = data.offset ? parse_number(*data.offset, "offset") : 0;
    const std::uint64_t available = offset <= file->size() ? file->size() - offset : 0;
    const std::uint64_t length = data.length ? parse_number(*data.length, "length") : available;
    if (offset > file->size() || length > available)
      throw ExternalDataError("external data" + of_tensor + " (offset " + std::to_string(offset) + ", length " +
                              std::to_string(length) + ") runs past the end of '" + *data.location + "' (" +
                              std::to_string(file->size()) + " bytes)" + at);
    if (length != byte_size)
      throw ExternalDataError("tensor '" + tensor.name + "': external data has " + std::to_string(length) +
                              " bytes but " + need + std::to_string(byte_size) + at);
    if (length > 0) {
      claim_external_range(*file, offset, length, tensor.name, *data.location, at);
      tensor.data = {file->bytes().data() + offset, length};
    }
    tensor.owner = file;
    tensor.source = file.get();
    tensor.data_offset = static_cast<std::int64_t>(offset);
  }

  // Records [offset, offset + length) of `file` for `tensor_name`, refusing a range that overlaps
  // one claimed before.
  void claim_external_range(const MappedFile& file, std::uint64_t offset, std::uint64_t length,
                            const std::string& tensor_name, const std::string& location, const std::string& at) {
    auto& ranges = external_ranges_[&file];
    const auto overlap = [&](const auto& other) {
      const auto& [other_offset, claim] = other;
      throw ExternalDataError("external data of tensor '" + tensor_name + "' (offset " + std::to_string(offset) +
                              ", length " + std::to_string(length) + ") overlaps that of tensor '" + claim.second +
                              "' (offset " + std::to_string(other_offset) + ", length " +
                              std::to_string(claim.first - other_offset) + ") in '" + location + "'" + at);
    };
    auto next = ranges.lower_bound(offset);
    if (next != ranges.end() && next->first < offset + length) overlap(*next);
    if (next != ranges.begin() && std::prev(next)->second.first > offset) overlap(*std::prev(next));
    ranges.emplace_hint(next, offset, std::pair{offset + length, tensor_name});
  }

  // Maps an external data file once per model, refusing locations outside the model folder
  // (external_file.h: containment, no symlinks, O_NOFOLLOW, one hard link).
  std::shared_ptr<MappedFile> open_external_file(const std::string& location, const std::string& tensor_name,
                                                 const std::string& at) {
    namespace fs = std::filesystem;
    if (!base_dir_)
      throw ExternalDataError("tensor '" + tensor_name +
                              "' has external data but the model was loaded from bytes without a base_dir" + at);
    if (!canonical_base_dir_) {
      std::error_code error;
      canonical_base_dir_ = fs::canonical(*base_dir_, error);
      if (error)
        throw ExternalDataError("model folder '" + base_dir_->string() + "' cannot be resolved: " + error.message());
    }
    const fs::path key = canonical_base_dir_->native() + "/" + fs::path(location).lexically_normal().native();
    auto& file = external_files_[key];
    if (!file) {
      try {
        file = map_external_file(*canonical_base_dir_, location,
                                 "external data location '" + location + "' of tensor '" + tensor_name + "'", at);
      } catch (...) {
        external_files_.erase(key);
        throw;
      }
    }
    return file;
  }

  std::shared_ptr<MappedFile> file_;
  std::optional<std::filesystem::path> base_dir_;
  std::optional<std::filesystem::path> canonical_base_dir_;
  std::map<std::filesystem::path, std::shared_ptr<MappedFile>> external_files_;  // by normalised location
  // Per external file: offset -> (end, tensor name) of every range a tensor views.
  std::map<const MappedFile*, std::map<std::uint64_t, std::pair<std::uint64_t, std::string>>> external_ranges_;
  std::size_t node_count_ = 0;
};

}  // namespace

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
