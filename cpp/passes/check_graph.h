// Validates the dataflow of a graph.
#pragma once

#include "ir/ir.h"

namespace onnx2fx {

// Checks that every non-empty node input and every graph output is a graph input, an initializer,
// an output of an earlier node, or (inside subgraphs) a value visible from an enclosing graph, and
// that no value is defined twice. `graph` is checked as a main graph; its subgraphs see its values.
// Throws UndefinedValueError for an undefined value and GraphError for a value defined twice.
void check_graph(const Graph& graph);

}  // namespace onnx2fx
