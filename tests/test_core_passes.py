"""Graph passes of the native core: topological sort, dead-code elimination, checks, pass manager."""

from __future__ import annotations

import random

import onnx
import pytest
from onnx import TensorProto, helper

from onnx2fx import _core
from onnx2fx.errors import GraphStructureError


def tensor_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def load(nodes, inputs=("x",), outputs=("y",), *, run_passes: bool = False) -> _core.Model:
    graph = helper.make_graph(
        nodes, "main", [tensor_info(n) for n in inputs], [tensor_info(n) for n in outputs]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return _core.load_model_from_bytes(model.SerializeToString(), run_passes=run_passes)


def relu(name: str, source: str, target: str | None = None) -> onnx.NodeProto:
    return helper.make_node("Relu", [source], [target or name], name=name)


def add(name: str, left: str, right: str, target: str | None = None) -> onnx.NodeProto:
    return helper.make_node("Add", [left, right], [target or name], name=name)


def names(graph: _core.Graph) -> list[str]:
    return [node.name for node in graph.nodes]


def assert_valid_order(graph: _core.Graph) -> None:
    defined = {value.name for value in graph.inputs} | {tensor.name for tensor in graph.initializers}
    for node in graph.nodes:
        assert all(name in defined for name in node.inputs if name), node.name
        defined.update(node.outputs)


def diamond() -> list[onnx.NodeProto]:
    return [
        relu("a", "x"),
        relu("b", "a"),
        relu("c", "a"),
        add("d", "b", "c"),
        relu("e", "x"),
        add("y", "d", "e"),
    ]


@pytest.mark.parametrize("seed", range(10))
def test_topological_sort_of_shuffled_graph(seed: int):
    nodes = diamond()
    random.Random(seed).shuffle(nodes)
    graph = load(nodes).graph
    was_sorted = names(graph)
    changed = graph.topological_sort()
    assert_valid_order(graph)
    assert changed == (names(graph) != was_sorted)
    assert graph.topological_sort() is False


def test_topological_sort_keeps_valid_order():
    graph = load(diamond()).graph
    assert graph.topological_sort() is False
    assert names(graph) == ["a", "b", "c", "d", "e", "y"]


def test_topological_sort_is_stable():
    # "q" needs "late", which comes after it: "q" waits, the ready nodes keep their file order.
    nodes = [relu("p", "x"), relu("q", "late"), relu("r", "x"), relu("late", "x"), add("y", "q", "r")]
    graph = load(nodes).graph
    assert graph.topological_sort() is True
    assert names(graph) == ["p", "r", "late", "q", "y"]


def test_load_passes_sort_the_file_order():
    nodes = [add("y", "b", "c"), relu("c", "a"), relu("b", "a"), relu("a", "x")]
    model = load(nodes, run_passes=True)
    assert names(model.graph) == ["a", "c", "b", "y"]
    assert names(load(nodes).graph) == ["y", "c", "b", "a"]  # run_passes=False keeps the file order


def branch(name: str, op: str, captured: str) -> onnx.GraphProto:
    return helper.make_graph(
        [helper.make_node(op, [captured], [f"{name}_out"], name=f"{name}_node")],
        name,
        [],
        [tensor_info(f"{name}_out")],
    )


def test_subgraph_captures_are_dependencies():
    # The If's branches read "h" from the outer graph, so its producer must come first.
    if_node = helper.make_node(
        "If",
        ["cond"],
        ["y"],
        name="if",
        then_branch=branch("then", "Relu", "h"),
        else_branch=branch("else", "Neg", "h"),
    )
    model = load([if_node, relu("h", "x")], inputs=("x", "cond"), run_passes=True)
    assert names(model.graph) == ["h", "if"]


def test_subgraphs_are_sorted():
    body = helper.make_graph(
        [relu("inner_b", "inner_a"), relu("inner_a", "x")], "body", [], [tensor_info("inner_b")]
    )
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=body, else_branch=body)
    graph = load([node], inputs=("x", "cond")).graph
    assert graph.topological_sort() is True
    assert names(graph.nodes[0].attributes["then_branch"].value) == ["inner_a", "inner_b"]


def test_dead_code_elimination():
    nodes = [
        relu("a", "x"),
        relu("unused", "a"),
        relu("unused_too", "unused"),
        relu("b", "a"),
        helper.make_node("Split", ["b"], ["y", "half_unused"], name="split"),
    ]
    graph = load(nodes).graph
    assert graph.eliminate_dead_code() is True
    assert names(graph) == ["a", "b", "split"]
    assert graph.eliminate_dead_code() is False
    graph.check()


def test_dead_code_elimination_in_subgraphs():
    body = helper.make_graph(
        [relu("used", "h", "body_out"), relu("dead", "h", "dead_out")], "body", [], [tensor_info("body_out")]
    )
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=body, else_branch=body)
    graph = load([relu("h", "x"), relu("unrelated", "x"), node], inputs=("x", "cond")).graph
    assert graph.eliminate_dead_code() is True
    assert names(graph) == ["h", "if"]  # "h" is used only by the subgraph
    assert names(graph.nodes[1].attributes["then_branch"].value) == ["used"]


def test_nodes_held_by_python_survive_passes():
    graph = load([relu("y", "a"), relu("a", "x"), relu("dead", "x")]).graph
    held = graph.nodes
    graph.topological_sort()
    graph.eliminate_dead_code()
    assert names(graph) == ["a", "y"]
    assert [node.name for node in held] == ["y", "a", "dead"]
    assert held[2].inputs == ["x"]


def test_check_accepts_outer_scope_values():
    body = branch("then", "Relu", "x")
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=body, else_branch=body)
    load([node], inputs=("x", "cond")).graph.check()


def test_check_rejects_undefined_value_in_subgraph():
    body = branch("then", "Relu", "nowhere")
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=body, else_branch=body)
    with pytest.raises(
        GraphStructureError, match="node 'then_node' \\(Relu\\) input 'nowhere' is not produced"
    ):
        load([node], inputs=("x", "cond")).graph.check()


def test_check_reports_use_before_definition():
    graph = load([relu("y", "a"), relu("a", "x")]).graph
    with pytest.raises(GraphStructureError, match="input 'a' is used before node 'a' \\(Relu\\) produces it"):
        graph.check()
    graph.topological_sort()
    graph.check()


def test_pass_manager_names_the_failing_pass():
    with pytest.raises(GraphStructureError, match="^pass 'topological_sort': graph contains a cycle"):
        load([relu("a", "b"), relu("b", "a"), relu("y", "a")], run_passes=True)
    with pytest.raises(GraphStructureError, match="^pass 'check_graph': node 'y' \\(Relu\\) input 'missing'"):
        load([relu("y", "missing")], run_passes=True)
