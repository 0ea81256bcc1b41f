// Clears the doc strings of nodes, here and in subgraphs.
#include "ir/ir.h"
#include "passes/pass_registry.h"

namespace onnx2fx {
namespace {

bool strip_doc_strings(Graph& graph) {
  bool changed = false;
  for (const auto& node : graph.nodes) {
    changed |= !node->doc_string.empty();
    node->doc_string.clear();
    for_each_subgraph(*node, [&](Graph& subgraph) { changed |= strip_doc_strings(subgraph); });
  }
  return changed;
}

const PassRegistration registration({
    .name = "strip_doc_strings",
    .method = "strip_doc_strings",
    .kind = PassKind::Transform,
    .summary = "Clears the doc strings of nodes, in subgraphs too. Returns whether any was set.",
    .run = strip_doc_strings,
});

}  // namespace
}  // namespace onnx2fx
