#include "passes/topological_sort.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "onnx/errors.h"
#include "passes/pass_registry.h"
#include "passes/value_uses.h"

namespace onnx2fx {
namespace {

// For each node, the indices of the nodes producing values it uses (without repeats).
std::vector<std::vector<std::size_t>> find_producers(const Graph& graph) {
  std::unordered_map<std::string_view, std::size_t> producer;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    for (const std::string& output : graph.nodes[i]->outputs)
      if (!output.empty()) producer.emplace(output, i);
  std::vector<std::vector<std::size_t>> producers(graph.nodes.size());
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    for (std::string_view name : used_names(*graph.nodes[i]))
      if (const auto found = producer.find(name); found != producer.end()) producers[i].push_back(found->second);
    std::ranges::sort(producers[i]);
    const auto repeats = std::ranges::unique(producers[i]);
    producers[i].erase(repeats.begin(), repeats.end());
  }
  return producers;
}

// Walks back from an unsorted node through unsorted producers until a node repeats: a cycle.
[[noreturn]] void throw_cycle(const Graph& graph, const std::vector<std::vector<std::size_t>>& producers,
                              const std::vector<std::size_t>& pending) {
  std::vector<std::size_t> path;
  std::vector<bool> on_path(graph.nodes.size());
  std::size_t node = static_cast<std::size_t>(std::ranges::find_if(pending, [](std::size_t n) { return n > 0; }) -
                                              pending.begin());
  while (!on_path[node]) {
    on_path[node] = true;
    path.push_back(node);
    node = *std::ranges::find_if(producers[node], [&](std::size_t p) { return pending[p] > 0; });
  }
  std::vector<std::size_t> cycle(std::ranges::find(path, node), path.end());
  std::ranges::sort(cycle);
  std::string message = "graph contains a cycle through nodes: ";
  for (std::size_t i = 0; i < cycle.size(); ++i)
    message += (i ? ", " : "") + describe_node(*graph.nodes[cycle[i]], cycle[i]);
  if (!graph.name.empty()) message += " (in graph '" + graph.name + "')";
  throw CycleError(message);
}

}  // namespace

bool topological_sort(Graph& graph) {
  bool changed = false;
  for (const auto& node : graph.nodes)
    for_each_subgraph(*node, [&](Graph& subgraph) { changed |= topological_sort(subgraph); });

  const auto producers = find_producers(graph);
  std::vector<std::vector<std::size_t>> consumers(graph.nodes.size());
  std::vector<std::size_t> pending(graph.nodes.size());  // producers not yet placed
  std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> ready;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    for (std::size_t producer : producers[i]) consumers[producer].push_back(i);
    pending[i] = producers[i].size();
    if (pending[i] == 0) ready.push(i);
  }
  std::vector<std::size_t> order;
  order.reserve(graph.nodes.size());
  while (!ready.empty()) {
    const std::size_t node = ready.top();
    ready.pop();
    order.push_back(node);
    for (std::size_t consumer : consumers[node])
      if (--pending[consumer] == 0) ready.push(consumer);
  }
  if (order.size() < graph.nodes.size()) throw_cycle(graph, producers, pending);
  if (std::ranges::is_sorted(order)) return changed;

  std::vector<std::shared_ptr<Node>> sorted;
  sorted.reserve(order.size());
  for (std::size_t index : order) sorted.push_back(std::move(graph.nodes[index]));
  graph.nodes = std::move(sorted);
  return true;
}

namespace {
const PassRegistration registration({
    .name = "topological_sort",
    .method = "topological_sort",
    .kind = PassKind::Transform,
    .summary = "Orders the nodes (and, recursively, those of subgraphs) so that each follows the producers of "
               "what it reads; a stable sort, so a valid order is kept. Returns whether any order changed; a "
               "cycle raises GraphStructureError naming its nodes.",
    .run = topological_sort,
});
}  // namespace

}  // namespace onnx2fx
