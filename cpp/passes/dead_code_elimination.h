// Removes nodes whose results are never used.
#pragma once

#include "ir/ir.h"

namespace onnx2fx {

// Removes the nodes of `graph` none of whose outputs reach a graph output, directly or through
// other nodes (subgraph captures count as uses). Subgraphs are cleaned the same way, their own
// outputs being the roots. Returns whether anything was removed.
bool eliminate_dead_code(Graph& graph);

}  // namespace onnx2fx
