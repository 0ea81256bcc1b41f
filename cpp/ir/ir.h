// The in-memory form of an ONNX model. Names and attributes are owned copies; tensor contents are
// views into the memory-mapped file (or into an owned buffer when decoded from typed fields).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace onnx2fx {

class MappedFile;
struct Graph;

struct Tensor {
  std::string name;
  std::string doc_string;
  std::int32_t data_type = 0;  // TensorProto.DataType
  std::vector<std::int64_t> dims;
  // Little-endian element bytes (packed for sub-byte types); empty for STRING tensors.
  std::span<std::byte> data;
  std::shared_ptr<const void> owner;  // keeps `data` alive: a file map or an owned buffer
  const MappedFile* source = nullptr; // the file `data` lies in (kept alive by `owner`); null when owned
  std::int64_t data_offset = -1;      // offset of `data` within its file; -1 when owned
  std::vector<std::string> strings;   // the elements of a STRING tensor
  std::string external_location;      // as written in the model; "" when stored in it
  // Where the TensorProto itself lies in the model's bytes (its payload, without tag and length).
  std::int64_t proto_offset = -1;
  std::uint64_t proto_size = 0;

  bool is_external() const { return !external_location.empty(); }
};

struct SparseTensor {
  Tensor values;
  Tensor indices;
  std::vector<std::int64_t> dims;
};

// One dimension of a shape: unknown, a fixed size (dim_value), or a symbol (dim_param).
using Dimension = std::variant<std::monostate, std::int64_t, std::string>;

struct TypeInfo {
  // "tensor", "sparse_tensor", "sequence", "map", "optional", "opaque", or "" when absent.
  std::string kind;
  std::int32_t elem_type = 0;                    // tensors; the key type of maps
  std::optional<std::vector<Dimension>> shape;   // tensors; nullopt when no shape is given
  std::shared_ptr<const TypeInfo> element;       // sequence and optional elements; map values
};

struct ValueInfo {
  std::string name;
  std::string doc_string;
  TypeInfo type;
};

// AttributeProto.AttributeType.
enum class AttributeType : std::int32_t {
  Undefined = 0,
  Float = 1,
  Int = 2,
  String = 3,
  Tensor = 4,
  Graph = 5,
  Floats = 6,
  Ints = 7,
  Strings = 8,
  Tensors = 9,
  Graphs = 10,
  SparseTensor = 11,
  SparseTensors = 12,
  TypeProto = 13,
  TypeProtos = 14,
};

// "FLOAT", "INTS", ...; empty for a value outside the enum.
std::string_view attribute_type_name(AttributeType type);

// All fields of an AttributeProto; `type` says which one holds the value.
struct Attribute {
  std::string name;
  std::string ref_attr_name;
  std::string doc_string;
  AttributeType type = AttributeType::Undefined;
  float f = 0;
  std::int64_t i = 0;
  std::string s;
  std::optional<Tensor> t;
  std::shared_ptr<Graph> g;
  std::optional<SparseTensor> sparse_tensor;
  std::optional<TypeInfo> tp;
  std::vector<float> floats;
  std::vector<std::int64_t> ints;
  std::vector<std::string> strings;
  std::vector<Tensor> tensors;
  std::vector<std::shared_ptr<Graph>> graphs;
  std::vector<SparseTensor> sparse_tensors;
  std::vector<TypeInfo> type_protos;
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;
  std::string overload;
  std::string doc_string;
  std::vector<std::string> inputs;  // "" for an omitted optional input
  std::vector<std::string> outputs;
  std::vector<Attribute> attributes;  // in file order
};

// Calls `visit(Graph&)` for each subgraph held by the attributes of `node`.
template <class Visit>
void for_each_subgraph(const Node& node, Visit&& visit) {
  for (const Attribute& attribute : node.attributes) {
    if (attribute.g) visit(*attribute.g);
    for (const auto& graph : attribute.graphs) visit(*graph);
  }
}

// "name (OpType)", or "#index (OpType)" for an unnamed node.
std::string describe_node(const Node& node, std::size_t index);

struct Graph {
  std::string name;
  std::string doc_string;
  // Shared so that passes may reorder and remove nodes while Python holds some of them.
  std::vector<std::shared_ptr<Node>> nodes;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
  std::vector<ValueInfo> value_info;
  std::vector<Tensor> initializers;
  std::vector<SparseTensor> sparse_initializers;
};

struct OperatorSetId {
  std::string domain;  // as written: "" and "ai.onnx" both mean the default domain
  std::int64_t version = 0;
};

struct Function {
  std::string name;
  std::string domain;
  std::string overload;
  std::string doc_string;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::vector<std::string> attributes;          // names of attributes without defaults
  std::vector<Attribute> attribute_defaults;    // attributes with default values
  std::vector<std::shared_ptr<Node>> nodes;
  std::vector<OperatorSetId> opset_imports;
};

struct Model {
  std::int64_t ir_version = 0;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  std::int64_t model_version = 0;
  std::string doc_string;
  std::vector<OperatorSetId> opset_imports;
  std::vector<std::pair<std::string, std::string>> metadata_props;
  std::shared_ptr<Graph> graph;
  std::vector<Function> functions;
  std::string path;  // the file it was loaded from; "" when loaded from bytes
};

}  // namespace onnx2fx
