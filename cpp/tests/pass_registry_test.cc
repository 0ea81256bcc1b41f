// The pass registry: the passes of cpp/passes/ register themselves, the pass manager runs them by
// name, and a name no pass registered is an error.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ir/ir.h"
#include "onnx/errors.h"
#include "passes/pass_manager.h"
#include "passes/pass_registry.h"
#include "tests/check.h"

namespace {

using namespace onnx2fx;

std::shared_ptr<Node> node(std::string name, std::vector<std::string> inputs, std::string output) {
  auto result = std::make_shared<Node>();
  result->name = std::move(name);
  result->op_type = "Op";
  result->inputs = std::move(inputs);
  result->outputs = {std::move(output)};
  return result;
}

// y = b(a(x)) stored backwards, plus a node nothing reads.
Graph unsorted_graph() {
  Graph graph;
  graph.inputs.push_back({.name = "x", .doc_string = "", .type = {}});
  graph.outputs.push_back({.name = "y", .doc_string = "", .type = {}});
  graph.nodes = {node("b", {"a"}, "y"), node("a", {"x"}, "a"), node("unused", {"x"}, "unused")};
  return graph;
}

// Other passes may be registered too: this test must not change when one is added.
void lists_the_passes_sorted_by_name() {
  std::vector<std::string> names;
  for (const PassInfo& pass : registered_passes()) {
    names.emplace_back(pass.name);
    CHECK(!pass.method.empty() && !pass.summary.empty() && pass.run);
  }
  CHECK(std::ranges::is_sorted(names));
  CHECK(registered_pass("check_graph").method == "check");
  CHECK(registered_pass("check_graph").kind == PassKind::Check);
  CHECK(registered_pass("dead_code_elimination").method == "eliminate_dead_code");
  CHECK(registered_pass("topological_sort").method == "topological_sort");
  CHECK(registered_pass("topological_sort").kind == PassKind::Transform);
}

void runs_registered_passes_by_name() {
  Graph graph = unsorted_graph();
  CHECK(PassManager().add("topological_sort").add("dead_code_elimination").add("check_graph").run(graph));
  CHECK(graph.nodes.size() == 2 && graph.nodes[0]->name == "a" && graph.nodes[1]->name == "b");
  CHECK(!registered_pass("topological_sort").run(graph));

  Graph unsorted = unsorted_graph();
  CHECK_THROWS(UndefinedValueError, PassManager().add("check_graph").run(unsorted),
               "pass 'check_graph': node 'b' (Op) input 'a' is used before node 'a' (Op) produces it");
}

void refuses_unknown_names_and_second_registrations() {
  const std::size_t registered = registered_passes().size();
  CHECK_THROWS(std::out_of_range, PassManager().add("constant_folding"),
               "no graph pass is registered as 'constant_folding'");
  CHECK_THROWS(std::logic_error,
               PassRegistration({.name = "topological_sort", .method = "sort_again", .summary = "again",
                                 .run = [](Graph&) { return false; }}),
               "graph pass 'topological_sort' takes the name or method of pass 'topological_sort'");
  CHECK(registered_passes().size() == registered);
}

}  // namespace

int main() {
  lists_the_passes_sorted_by_name();
  runs_registered_passes_by_name();
  refuses_unknown_names_and_second_registrations();
  return onnx2fx::testing::report();
}
