// The strip_doc_strings pass, found through the registry.
#include <memory>

#include "ir/ir.h"
#include "passes/pass_manager.h"
#include "passes/pass_registry.h"
#include "tests/check.h"

int main() {
  using namespace onnx2fx;
  Graph graph;
  auto node = std::make_shared<Node>();
  node->doc_string = "made by hand";
  graph.nodes.push_back(node);
  CHECK(PassManager().add("strip_doc_strings").run(graph));
  CHECK(node->doc_string.empty());
  CHECK(!registered_pass("strip_doc_strings").run(graph));
  return onnx2fx::testing::report();
}
