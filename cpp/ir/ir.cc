#include "ir/ir.h"

#include <array>

namespace onnx2fx {

std::string_view attribute_type_name(AttributeType type) {
  static constexpr std::array<std::string_view, 15> kNames{
      "UNDEFINED", "FLOAT",   "INT",    "STRING",        "TENSOR",         "GRAPH",      "FLOATS",      "INTS",
      "STRINGS",   "TENSORS", "GRAPHS", "SPARSE_TENSOR", "SPARSE_TENSORS", "TYPE_PROTO", "TYPE_PROTOS",
  };
  const auto index = static_cast<std::size_t>(type);
  return index < kNames.size() ? kNames[index] : std::string_view{};
}

std::string describe_node(const Node& node, std::size_t index) {
  const std::string label = node.name.empty() ? "#" + std::to_string(index) : node.name;
  return label + " (" + node.op_type + ")";
}

}  // namespace onnx2fx
