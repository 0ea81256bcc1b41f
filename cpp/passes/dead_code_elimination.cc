#include "passes/dead_code_elimination.h"

#include <string_view>
#include <unordered_map>
#include <vector>

#include "passes/pass_registry.h"
#include "passes/value_uses.h"

namespace onnx2fx {

bool eliminate_dead_code(Graph& graph) {
  // Subgraphs first: what they stop using may make nodes of this graph dead.
  bool changed = false;
  for (const auto& node : graph.nodes)
    for_each_subgraph(*node, [&](Graph& subgraph) { changed |= eliminate_dead_code(subgraph); });

  std::unordered_map<std::string_view, std::size_t> producer;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    for (const std::string& output : graph.nodes[i]->outputs)
      if (!output.empty()) producer.emplace(output, i);

  std::vector<bool> live(graph.nodes.size());
  std::vector<std::string_view> needed;
  for (const ValueInfo& output : graph.outputs) needed.push_back(output.name);
  while (!needed.empty()) {
    const auto found = producer.find(needed.back());
    needed.pop_back();
    if (found == producer.end() || live[found->second]) continue;
    live[found->second] = true;
    const auto uses = used_names(*graph.nodes[found->second]);
    needed.insert(needed.end(), uses.begin(), uses.end());
  }

  std::size_t kept = 0;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    if (live[i]) graph.nodes[kept++] = std::move(graph.nodes[i]);
  if (kept == graph.nodes.size()) return changed;
  graph.nodes.resize(kept);
  return true;
}

namespace {
const PassRegistration registration({
    .name = "dead_code_elimination",
    .method = "eliminate_dead_code",
    .kind = PassKind::Transform,
    .summary = "Removes the nodes none of whose outputs reach a graph output (subgraph captures count as uses), "
               "in subgraphs too. Returns whether any were removed.",
    .run = eliminate_dead_code,
});
}  // namespace

}  // namespace onnx2fx
