// Topological sort, dead-code elimination, graph checks and the pass manager on small graphs.
#include <memory>
#include <string>
#include <vector>

#include "ir/ir.h"
#include "onnx/errors.h"
#include "passes/check_graph.h"
#include "passes/dead_code_elimination.h"
#include "passes/pass_manager.h"
#include "passes/topological_sort.h"
#include "tests/check.h"

namespace {

using namespace onnx2fx;

std::shared_ptr<Node> node(std::string name, std::vector<std::string> inputs, std::vector<std::string> outputs) {
  auto result = std::make_shared<Node>();
  result->name = std::move(name);
  result->op_type = "Op";
  result->inputs = std::move(inputs);
  result->outputs = std::move(outputs);
  return result;
}

Graph graph_of(std::vector<std::shared_ptr<Node>> nodes, std::vector<std::string> outputs = {"y"}) {
  Graph graph;
  graph.inputs.push_back({.name = "x", .doc_string = "", .type = {}});
  for (auto& output : outputs) graph.outputs.push_back({.name = std::move(output), .doc_string = "", .type = {}});
  graph.nodes = std::move(nodes);
  return graph;
}

void attach_subgraph(Node& holder, std::shared_ptr<Graph> subgraph) {
  Attribute& attribute = holder.attributes.emplace_back();
  attribute.name = "branch";
  attribute.type = AttributeType::Graph;
  attribute.g = std::move(subgraph);
}

std::vector<std::string> names(const Graph& graph) {
  std::vector<std::string> result;
  for (const auto& n : graph.nodes) result.push_back(n->name);
  return result;
}

using Names = std::vector<std::string>;

void sorts_shuffled_graph() {
  Graph graph = graph_of({node("y", {"b", "c"}, {"y"}), node("c", {"a"}, {"c"}), node("b", {"a"}, {"b"}),
                          node("a", {"x"}, {"a"})});
  CHECK(topological_sort(graph));
  CHECK((names(graph) == Names{"a", "c", "b", "y"}));
  CHECK(!topological_sort(graph));
  check_graph(graph);
}

void keeps_valid_order() {
  Graph graph = graph_of({node("a", {"x"}, {"a"}), node("b", {"x"}, {"b"}), node("y", {"a", "b"}, {"y"})});
  CHECK(!topological_sort(graph));
  CHECK((names(graph) == Names{"a", "b", "y"}));
}

void sorts_by_subgraph_captures() {
  auto body = std::make_shared<Graph>(graph_of({node("inner", {"h"}, {"out"})}, {"out"}));
  auto holder = node("if", {""}, {"y"});
  attach_subgraph(*holder, body);
  Graph graph = graph_of({holder, node("h", {"x"}, {"h"})});
  CHECK(topological_sort(graph));
  CHECK((names(graph) == Names{"h", "if"}));
  check_graph(graph);
}

void reports_cycle() {
  Graph graph = graph_of({node("start", {"x"}, {"s"}), node("b", {"a"}, {"b"}), node("a", {"s", "b"}, {"a"}),
                          node("y", {"a"}, {"y"})});
  CHECK_THROWS(CycleError, topological_sort(graph), "graph contains a cycle through nodes: b (Op), a (Op)");
  Graph self_loop = graph_of({node("", {"y"}, {"y"})});
  CHECK_THROWS(CycleError, topological_sort(self_loop), "cycle through nodes: #0 (Op)");
}

void eliminates_dead_code() {
  Graph graph = graph_of({node("a", {"x"}, {"a"}), node("dead", {"a"}, {"d"}), node("dead_too", {"d"}, {"e"}),
                          node("y", {"a"}, {"y", "unused"})});
  CHECK(eliminate_dead_code(graph));
  CHECK((names(graph) == Names{"a", "y"}));
  CHECK(!eliminate_dead_code(graph));
}

void keeps_values_used_by_subgraphs() {
  auto body = std::make_shared<Graph>(
      graph_of({node("used", {"h"}, {"out"}), node("dead", {"h"}, {"unused"})}, {"out"}));
  auto holder = node("if", {}, {"y"});
  attach_subgraph(*holder, body);
  Graph graph = graph_of({node("h", {"x"}, {"h"}), holder});
  CHECK(eliminate_dead_code(graph));
  CHECK((names(graph) == Names{"h", "if"}));
  CHECK((names(*body) == Names{"used"}));
}

void checks_dataflow() {
  Graph undefined = graph_of({node("add1", {"x", "missing"}, {"y"})});
  undefined.nodes[0]->op_type = "Add";
  CHECK_THROWS(UndefinedValueError, check_graph(undefined),
               "node 'add1' (Add) input 'missing' is not produced by any node, input or initializer");
  Graph unsorted = graph_of({node("y", {"a"}, {"y"}), node("a", {"x"}, {"a"})});
  CHECK_THROWS(UndefinedValueError, check_graph(unsorted), "is used before node 'a' (Op) produces it");
  Graph twice = graph_of({node("a", {"x"}, {"y"}), node("b", {"x"}, {"y"})});
  CHECK_THROWS(GraphError, check_graph(twice), "node 'b' (Op) output 'y' is already defined");
  Graph optional_input = graph_of({node("y", {"x", ""}, {"y"})});
  check_graph(optional_input);
}

void pass_manager_names_failing_pass() {
  Graph graph = graph_of({node("a", {"y"}, {"a"}), node("y", {"a"}, {"y"})});
  std::vector<std::string> ran;
  PassManager passes;
  passes.add("first", [&](Graph&) { return ran.emplace_back("first"), false; })
      .add("topological_sort", topological_sort)
      .add("never", [&](Graph&) { return ran.emplace_back("never"), false; });
  CHECK_THROWS(CycleError, passes.run(graph), "pass 'topological_sort': graph contains a cycle");
  CHECK((ran == Names{"first"}));
}

}  // namespace

int main() {
  sorts_shuffled_graph();
  keeps_valid_order();
  sorts_by_subgraph_captures();
  reports_cycle();
  eliminates_dead_code();
  keeps_values_used_by_subgraphs();
  checks_dataflow();
  pass_manager_names_failing_pass();
  return onnx2fx::testing::report();
}
