#include "passes/check_graph.h"

#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "onnx/errors.h"
#include "passes/pass_registry.h"

namespace onnx2fx {
namespace {

// The values defined so far in a graph, chained to those of the enclosing graphs.
struct Scope {
  const Scope* outer = nullptr;
  std::unordered_set<std::string_view> names;

  bool defines(std::string_view name) const { return names.contains(name) || (outer && outer->defines(name)); }
};

std::string label(const Node& node, std::size_t index) {
  if (node.name.empty()) return "node " + describe_node(node, index);
  return "node '" + node.name + "' (" + node.op_type + ")";
}

std::string in_graph(const Graph& graph) { return graph.name.empty() ? "" : " (in graph '" + graph.name + "')"; }

void check_in_scope(const Graph& graph, const Scope* outer) {
  Scope scope{outer, {}};
  for (const ValueInfo& input : graph.inputs) scope.names.insert(input.name);
  for (const Tensor& initializer : graph.initializers) scope.names.insert(initializer.name);
  for (const SparseTensor& initializer : graph.sparse_initializers) scope.names.insert(initializer.values.name);

  std::unordered_map<std::string_view, std::size_t> producer;  // for inputs used before they are produced
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    for (const std::string& output : graph.nodes[i]->outputs) producer.emplace(output, i);

  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = *graph.nodes[i];
    for (const std::string& input : node.inputs) {
      if (input.empty() || scope.defines(input)) continue;
      const auto later = producer.find(input);
      if (later != producer.end() && later->second >= i)
        throw UndefinedValueError(label(node, i) + " input '" + input + "' is used before " +
                                  label(*graph.nodes[later->second], later->second) +
                                  " produces it (the graph is not topologically sorted)" + in_graph(graph));
      throw UndefinedValueError(label(node, i) + " input '" + input +
                                "' is not produced by any node, input or initializer" + in_graph(graph));
    }
    for_each_subgraph(node, [&](const Graph& subgraph) { check_in_scope(subgraph, &scope); });
    for (const std::string& output : node.outputs)
      if (!output.empty() && !scope.names.insert(output).second)
        throw GraphError(label(node, i) + " output '" + output + "' is already defined; values must be assigned once" +
                         in_graph(graph));
  }
  for (const ValueInfo& output : graph.outputs)
    if (!scope.defines(output.name))
      throw UndefinedValueError("graph output '" + output.name + "' is not produced by any node, input or initializer" +
                                in_graph(graph));
}

}  // namespace

void check_graph(const Graph& graph) { check_in_scope(graph, nullptr); }

namespace {
const PassRegistration registration({
    .name = "check_graph",
    .method = "check",
    .kind = PassKind::Check,
    .summary = "Checks that every node input and graph output is defined before it is used (inside subgraphs, "
               "outer values count) and that no value is defined twice; raises GraphStructureError naming the "
               "value otherwise.",
    .run = [](Graph& graph) {
      check_graph(graph);
      return false;
    },
});
}  // namespace

}  // namespace onnx2fx
