// Small ONNX messages written by hand, for the writer tests and the writer fuzz target: value
// infos and nodes as wire messages, and helpers to save a model and list a graph's op types.
#pragma once

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "ir/ir.h"
#include "onnx/schema.h"
#include "writer/wire_writer.h"

namespace onnx2fx::test_models {

using onnx_schema::NodeProto;
using onnx_schema::ValueInfoProto;

// ValueInfoProto with only a name.
inline wire::Writer value_info(std::string_view name) {
  wire::Writer info;
  info.string(ValueInfoProto::name, name);
  return info;
}

// NodeProto with inputs, one output and an op_type.
inline wire::Writer node(std::string_view op_type, std::initializer_list<std::string_view> inputs,
                         std::string_view output) {
  wire::Writer message;
  for (std::string_view input : inputs) message.string(NodeProto::input, input);
  message.string(NodeProto::output, output);
  message.string(NodeProto::op_type, op_type);
  return message;
}

inline void write_file(const std::filesystem::path& path, const std::vector<std::byte>& data) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()),
                                              static_cast<std::streamsize>(data.size()));
}

inline std::vector<std::string> op_types(const Graph& graph) {
  std::vector<std::string> ops;
  for (const auto& node : graph.nodes) ops.push_back(node->op_type);
  return ops;
}

}  // namespace onnx2fx::test_models
