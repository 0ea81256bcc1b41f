// The message types of onnx.proto as the wire reader and the writers need them. Each field number
// is written once, here: `TensorProto::raw_data` is 9 wherever a reader switches on a tag or a
// writer encodes a field, and `kTensorProto` names the same fields in errors, so that they read
// like ModelProto.graph.initializer[3].raw_data.
#pragma once

#include <cstdint>

#include "onnx/wire.h"

namespace onnx2fx::onnx_schema {

using wire::FieldName;
using wire::MessageSchema;

// ONNX2FX_MESSAGE(Type, "name", FIELDS) declares `struct Type` whose enum gives each field's number
// under the field's name, and `kType`, the MessageSchema with the same names for errors. FIELDS is
// a macro that applies its argument X to every field as X(name, number).
#define ONNX2FX_FIELD_NUMBER(name, number) name = (number),
#define ONNX2FX_FIELD_NAME(name, number) FieldName{(number), #name},
#define ONNX2FX_MESSAGE(Type, type_name, FIELDS)                          \
  struct Type {                                                             \
    enum Field : std::uint32_t { FIELDS(ONNX2FX_FIELD_NUMBER) };            \
    static constexpr FieldName kFieldNames[] = {FIELDS(ONNX2FX_FIELD_NAME)}; \
  };                                                                        \
  inline constexpr MessageSchema k##Type{type_name, Type::kFieldNames};

#define ONNX2FX_MODEL_FIELDS(X)                                                                        \
  X(ir_version, 1) X(producer_name, 2) X(producer_version, 3) X(domain, 4) X(model_version, 5)         \
  X(doc_string, 6) X(graph, 7) X(opset_import, 8) X(metadata_props, 14) X(training_info, 20)           \
  X(functions, 25) X(configuration, 26)
#define ONNX2FX_OPERATOR_SET_ID_FIELDS(X) X(domain, 1) X(version, 2)
#define ONNX2FX_STRING_STRING_ENTRY_FIELDS(X) X(key, 1) X(value, 2)
#define ONNX2FX_GRAPH_FIELDS(X)                                                                        \
  X(node, 1) X(name, 2) X(initializer, 5) X(doc_string, 10) X(input, 11) X(output, 12)                 \
  X(value_info, 13) X(quantization_annotation, 14) X(sparse_initializer, 15) X(metadata_props, 16)
#define ONNX2FX_NODE_FIELDS(X)                                                                         \
  X(input, 1) X(output, 2) X(name, 3) X(op_type, 4) X(attribute, 5) X(doc_string, 6) X(domain, 7)      \
  X(overload, 8) X(metadata_props, 9) X(device_configurations, 10)
#define ONNX2FX_ATTRIBUTE_FIELDS(X)                                                                    \
  X(name, 1) X(f, 2) X(i, 3) X(s, 4) X(t, 5) X(g, 6) X(floats, 7) X(ints, 8) X(strings, 9)             \
  X(tensors, 10) X(graphs, 11) X(doc_string, 13) X(tp, 14) X(type_protos, 15) X(type, 20)              \
  X(ref_attr_name, 21) X(sparse_tensor, 22) X(sparse_tensors, 23)
#define ONNX2FX_TENSOR_FIELDS(X)                                                                       \
  X(dims, 1) X(data_type, 2) X(segment, 3) X(float_data, 4) X(int32_data, 5) X(string_data, 6)         \
  X(int64_data, 7) X(name, 8) X(raw_data, 9) X(double_data, 10) X(uint64_data, 11) X(doc_string, 12)   \
  X(external_data, 13) X(data_location, 14) X(metadata_props, 16)
#define ONNX2FX_SPARSE_TENSOR_FIELDS(X) X(values, 1) X(indices, 2) X(dims, 3)
#define ONNX2FX_VALUE_INFO_FIELDS(X) X(name, 1) X(type, 2) X(doc_string, 3) X(metadata_props, 4)
#define ONNX2FX_TYPE_FIELDS(X)                                                                         \
  X(tensor_type, 1) X(sequence_type, 4) X(map_type, 5) X(denotation, 6) X(opaque_type, 7)              \
  X(sparse_tensor_type, 8) X(optional_type, 9)
#define ONNX2FX_TENSOR_TYPE_FIELDS(X) X(elem_type, 1) X(shape, 2)
#define ONNX2FX_ELEMENT_TYPE_FIELDS(X) X(elem_type, 1)
#define ONNX2FX_MAP_TYPE_FIELDS(X) X(key_type, 1) X(value_type, 2)
#define ONNX2FX_SHAPE_FIELDS(X) X(dim, 1)
#define ONNX2FX_DIMENSION_FIELDS(X) X(dim_value, 1) X(dim_param, 2) X(denotation, 3)
#define ONNX2FX_FUNCTION_FIELDS(X)                                                                     \
  X(name, 1) X(input, 4) X(output, 5) X(attribute, 6) X(node, 7) X(doc_string, 8) X(opset_import, 9)   \
  X(domain, 10) X(attribute_proto, 11) X(value_info, 12) X(overload, 13) X(metadata_props, 14)

ONNX2FX_MESSAGE(ModelProto, "ModelProto", ONNX2FX_MODEL_FIELDS)
ONNX2FX_MESSAGE(OperatorSetIdProto, "OperatorSetIdProto", ONNX2FX_OPERATOR_SET_ID_FIELDS)
ONNX2FX_MESSAGE(StringStringEntryProto, "StringStringEntryProto", ONNX2FX_STRING_STRING_ENTRY_FIELDS)
ONNX2FX_MESSAGE(GraphProto, "GraphProto", ONNX2FX_GRAPH_FIELDS)
ONNX2FX_MESSAGE(NodeProto, "NodeProto", ONNX2FX_NODE_FIELDS)
ONNX2FX_MESSAGE(AttributeProto, "AttributeProto", ONNX2FX_ATTRIBUTE_FIELDS)
ONNX2FX_MESSAGE(TensorProto, "TensorProto", ONNX2FX_TENSOR_FIELDS)
ONNX2FX_MESSAGE(SparseTensorProto, "SparseTensorProto", ONNX2FX_SPARSE_TENSOR_FIELDS)
ONNX2FX_MESSAGE(ValueInfoProto, "ValueInfoProto", ONNX2FX_VALUE_INFO_FIELDS)
ONNX2FX_MESSAGE(TypeProto, "TypeProto", ONNX2FX_TYPE_FIELDS)
ONNX2FX_MESSAGE(TensorTypeProto, "TypeProto.Tensor", ONNX2FX_TENSOR_TYPE_FIELDS)
ONNX2FX_MESSAGE(SparseTensorTypeProto, "TypeProto.SparseTensor", ONNX2FX_TENSOR_TYPE_FIELDS)
ONNX2FX_MESSAGE(SequenceTypeProto, "TypeProto.Sequence", ONNX2FX_ELEMENT_TYPE_FIELDS)
ONNX2FX_MESSAGE(OptionalTypeProto, "TypeProto.Optional", ONNX2FX_ELEMENT_TYPE_FIELDS)
ONNX2FX_MESSAGE(MapTypeProto, "TypeProto.Map", ONNX2FX_MAP_TYPE_FIELDS)
ONNX2FX_MESSAGE(TensorShapeProto, "TensorShapeProto", ONNX2FX_SHAPE_FIELDS)
ONNX2FX_MESSAGE(DimensionProto, "TensorShapeProto.Dimension", ONNX2FX_DIMENSION_FIELDS)
ONNX2FX_MESSAGE(FunctionProto, "FunctionProto", ONNX2FX_FUNCTION_FIELDS)

#undef ONNX2FX_MESSAGE
#undef ONNX2FX_MODEL_FIELDS
#undef ONNX2FX_OPERATOR_SET_ID_FIELDS
#undef ONNX2FX_STRING_STRING_ENTRY_FIELDS
#undef ONNX2FX_GRAPH_FIELDS
#undef ONNX2FX_NODE_FIELDS
#undef ONNX2FX_ATTRIBUTE_FIELDS
#undef ONNX2FX_TENSOR_FIELDS
#undef ONNX2FX_SPARSE_TENSOR_FIELDS
#undef ONNX2FX_VALUE_INFO_FIELDS
#undef ONNX2FX_TYPE_FIELDS
#undef ONNX2FX_TENSOR_TYPE_FIELDS
#undef ONNX2FX_ELEMENT_TYPE_FIELDS
#undef ONNX2FX_MAP_TYPE_FIELDS
#undef ONNX2FX_SHAPE_FIELDS
#undef ONNX2FX_DIMENSION_FIELDS
#undef ONNX2FX_FUNCTION_FIELDS
#undef ONNX2FX_FIELD_NAME
#undef ONNX2FX_FIELD_NUMBER

// TensorProto.DataLocation
inline constexpr std::int32_t kDataLocationExternal = 1;

}  // namespace onnx2fx::onnx_schema
