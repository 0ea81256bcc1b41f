#include "passes/value_uses.h"

#include <unordered_set>

namespace onnx2fx {
namespace {

// Appends the names `graph` (and its subgraphs) use without defining them.
void collect_captured_names(const Graph& graph, std::vector<std::string_view>& out) {
  std::unordered_set<std::string_view> defined;
  for (const ValueInfo& input : graph.inputs) defined.insert(input.name);
  for (const Tensor& initializer : graph.initializers) defined.insert(initializer.name);
  for (const SparseTensor& initializer : graph.sparse_initializers) defined.insert(initializer.values.name);
  for (const auto& node : graph.nodes) defined.insert(node->outputs.begin(), node->outputs.end());
  for (const auto& node : graph.nodes)
    for (std::string_view name : used_names(*node))
      if (!defined.contains(name)) out.push_back(name);
  for (const ValueInfo& output : graph.outputs)
    if (!defined.contains(output.name)) out.push_back(output.name);
}

}  // namespace

std::vector<std::string_view> used_names(const Node& node) {
  std::vector<std::string_view> names;
  for (const std::string& input : node.inputs)
    if (!input.empty()) names.push_back(input);
  for_each_subgraph(node, [&](const Graph& subgraph) { collect_captured_names(subgraph, names); });
  return names;
}

}  // namespace onnx2fx
