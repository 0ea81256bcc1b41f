// Reading attributes (subgraphs included), value infos and types, with the nesting limits of
// model_reader.h.

#include <memory>
#include <string>

#include "onnx/errors.h"
#include "onnx/model_parser.h"
#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "onnx/wire.h"

namespace onnx2fx::reader_detail {

using wire::Reader;
using namespace onnx_schema;  // the message types of onnx.proto

// `depth` is that of the graph holding the node; subgraphs are one deeper.
Attribute ModelReader::read_attribute(Reader reader, int depth) {
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
AttributeType ModelReader::infer_attribute_type(const Attribute& a, bool has_f, bool has_i, bool has_s) {
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

ValueInfo ModelReader::read_value_info(Reader reader) {
  ValueInfo info;
  while (reader.next()) switch (reader.tag()) {
      case ValueInfoProto::name: info.name = reader.get_string(); break;
      case ValueInfoProto::type: info.type = read_type(reader.get_message(kTypeProto), 1); break;
      case ValueInfoProto::doc_string: info.doc_string = reader.get_string(); break;
      default: reader.skip();
    }
  return info;
}

TypeInfo ModelReader::read_type(Reader reader, int depth) {
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

void ModelReader::read_tensor_type(Reader reader, TypeInfo& type) {
  while (reader.next()) switch (reader.tag()) {
      case TensorTypeProto::elem_type: type.elem_type = reader.get_int32(); break;
      case TensorTypeProto::shape: type.shape = read_shape(reader.get_message(kTensorShapeProto)); break;
      default: reader.skip();
    }
}

// The elem_type of a TypeProto.Sequence or TypeProto.Optional.
std::shared_ptr<const TypeInfo> ModelReader::read_element_type(Reader reader, int depth) {
  std::shared_ptr<const TypeInfo> element;
  while (reader.next()) switch (reader.tag()) {
      case SequenceTypeProto::elem_type:  // OptionalTypeProto::elem_type too
        element = std::make_shared<TypeInfo>(read_type(reader.get_message(kTypeProto), depth + 1));
        break;
      default: reader.skip();
    }
  return element;
}

void ModelReader::read_map_type(Reader reader, TypeInfo& type, int depth) {
  while (reader.next()) switch (reader.tag()) {
      case MapTypeProto::key_type: type.elem_type = reader.get_int32(); break;
      case MapTypeProto::value_type:
        type.element = std::make_shared<TypeInfo>(read_type(reader.get_message(kTypeProto), depth + 1));
        break;
      default: reader.skip();
    }
}

std::vector<Dimension> ModelReader::read_shape(Reader reader) {
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

Dimension ModelReader::read_dimension(Reader reader) {
  Dimension dimension;
  while (reader.next()) switch (reader.tag()) {
      case DimensionProto::dim_value: dimension = reader.get_int64(); break;
      case DimensionProto::dim_param: dimension = reader.get_string(); break;
      default: reader.skip();
    }
  return dimension;
}

}  // namespace onnx2fx::reader_detail
