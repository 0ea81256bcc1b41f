// Orders nodes so that each comes after the producers of the values it uses.
#pragma once

#include "ir/ir.h"

namespace onnx2fx {

// Stable Kahn sort of `graph` and, recursively, its subgraphs: among the nodes ready at each step
// the one earliest in the current order goes first, so an already valid order is kept.
// Values no node of the graph produces (inputs, initializers, outer scopes) count as defined.
// Returns whether any order changed; throws CycleError naming the nodes of a cycle.
bool topological_sort(Graph& graph);

}  // namespace onnx2fx
