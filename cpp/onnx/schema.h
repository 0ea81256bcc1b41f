// The message types of onnx.proto as the wire reader needs them: their names and the names of their
// fields, so that errors read like ModelProto.graph.initializer[3].raw_data. Shared by the model
// reader and the writers that walk a model's bytes again.
#pragma once

#include "onnx/wire.h"

namespace onnx2fx::onnx_schema {

using wire::FieldName;
using wire::MessageSchema;

inline constexpr FieldName kModelFields[] = {
    {1, "ir_version"}, {2, "producer_name"}, {3, "producer_version"}, {4, "domain"},
    {5, "model_version"}, {6, "doc_string"}, {7, "graph"}, {8, "opset_import"},
    {14, "metadata_props"}, {20, "training_info"}, {25, "functions"}, {26, "configuration"}};
inline constexpr FieldName kOperatorSetIdFields[] = {{1, "domain"}, {2, "version"}};
inline constexpr FieldName kStringStringEntryFields[] = {{1, "key"}, {2, "value"}};
inline constexpr FieldName kGraphFields[] = {
    {1, "node"}, {2, "name"}, {5, "initializer"}, {10, "doc_string"}, {11, "input"}, {12, "output"},
    {13, "value_info"}, {14, "quantization_annotation"}, {15, "sparse_initializer"}, {16, "metadata_props"}};
inline constexpr FieldName kNodeFields[] = {
    {1, "input"}, {2, "output"}, {3, "name"}, {4, "op_type"}, {5, "attribute"}, {6, "doc_string"},
    {7, "domain"}, {8, "overload"}, {9, "metadata_props"}, {10, "device_configurations"}};
inline constexpr FieldName kAttributeFields[] = {
    {1, "name"}, {2, "f"}, {3, "i"}, {4, "s"}, {5, "t"}, {6, "g"}, {7, "floats"}, {8, "ints"},
    {9, "strings"}, {10, "tensors"}, {11, "graphs"}, {13, "doc_string"}, {14, "tp"}, {15, "type_protos"},
    {20, "type"}, {21, "ref_attr_name"}, {22, "sparse_tensor"}, {23, "sparse_tensors"}};
inline constexpr FieldName kTensorFields[] = {
    {1, "dims"}, {2, "data_type"}, {3, "segment"}, {4, "float_data"}, {5, "int32_data"},
    {6, "string_data"}, {7, "int64_data"}, {8, "name"}, {9, "raw_data"}, {10, "double_data"},
    {11, "uint64_data"}, {12, "doc_string"}, {13, "external_data"}, {14, "data_location"},
    {16, "metadata_props"}};
inline constexpr FieldName kSparseTensorFields[] = {{1, "values"}, {2, "indices"}, {3, "dims"}};
inline constexpr FieldName kValueInfoFields[] = {{1, "name"}, {2, "type"}, {3, "doc_string"}, {4, "metadata_props"}};
inline constexpr FieldName kTypeFields[] = {
    {1, "tensor_type"}, {4, "sequence_type"}, {5, "map_type"}, {6, "denotation"},
    {7, "opaque_type"}, {8, "sparse_tensor_type"}, {9, "optional_type"}};
inline constexpr FieldName kTensorTypeFields[] = {{1, "elem_type"}, {2, "shape"}};
inline constexpr FieldName kElementTypeFields[] = {{1, "elem_type"}};
inline constexpr FieldName kMapTypeFields[] = {{1, "key_type"}, {2, "value_type"}};
inline constexpr FieldName kShapeFields[] = {{1, "dim"}};
inline constexpr FieldName kDimensionFields[] = {{1, "dim_value"}, {2, "dim_param"}, {3, "denotation"}};
inline constexpr FieldName kFunctionFields[] = {
    {1, "name"}, {4, "input"}, {5, "output"}, {6, "attribute"}, {7, "node"}, {8, "doc_string"},
    {9, "opset_import"}, {10, "domain"}, {11, "attribute_proto"}, {12, "value_info"}, {13, "overload"},
    {14, "metadata_props"}};

inline constexpr MessageSchema kModelProto{"ModelProto", kModelFields};
inline constexpr MessageSchema kOperatorSetIdProto{"OperatorSetIdProto", kOperatorSetIdFields};
inline constexpr MessageSchema kStringStringEntryProto{"StringStringEntryProto", kStringStringEntryFields};
inline constexpr MessageSchema kGraphProto{"GraphProto", kGraphFields};
inline constexpr MessageSchema kNodeProto{"NodeProto", kNodeFields};
inline constexpr MessageSchema kAttributeProto{"AttributeProto", kAttributeFields};
inline constexpr MessageSchema kTensorProto{"TensorProto", kTensorFields};
inline constexpr MessageSchema kSparseTensorProto{"SparseTensorProto", kSparseTensorFields};
inline constexpr MessageSchema kValueInfoProto{"ValueInfoProto", kValueInfoFields};
inline constexpr MessageSchema kTypeProto{"TypeProto", kTypeFields};
inline constexpr MessageSchema kTensorTypeProto{"TypeProto.Tensor", kTensorTypeFields};
inline constexpr MessageSchema kSparseTensorTypeProto{"TypeProto.SparseTensor", kTensorTypeFields};
inline constexpr MessageSchema kSequenceTypeProto{"TypeProto.Sequence", kElementTypeFields};
inline constexpr MessageSchema kOptionalTypeProto{"TypeProto.Optional", kElementTypeFields};
inline constexpr MessageSchema kMapTypeProto{"TypeProto.Map", kMapTypeFields};
inline constexpr MessageSchema kTensorShapeProto{"TensorShapeProto", kShapeFields};
inline constexpr MessageSchema kDimensionProto{"TensorShapeProto.Dimension", kDimensionFields};
inline constexpr MessageSchema kFunctionProto{"FunctionProto", kFunctionFields};

}  // namespace onnx2fx::onnx_schema
